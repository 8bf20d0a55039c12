"""One small registry used for adapters, datasets and backbones.

    ADAPTERS = Registry("adapter")

    @ADAPTERS.register("dann")
    class DANN: ...

    ADAPTERS.get("dan")   # UserError: unknown adapter 'dan'; did you mean 'dann'? (choices: ...)
"""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Iterator, TypeVar

from da_toolkit.errors import UserError

T = TypeVar("T")


def did_you_mean(value: str, choices: list[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry:
    """Maps names to objects (classes or factory functions), each with a one-line description.

    The description is the first line of the object's docstring unless given explicitly.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[object, str]] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = description or (inspect.getdoc(obj) or "").strip().split("\n")[0]
            self._entries[name] = (obj, doc)
            return obj

        return decorator

    def get(self, name: str, key: str | None = None):
        """The object registered as `name`; a UserError naming `key` and the choices otherwise."""
        if name not in self._entries:
            raise UserError(self.unknown_message(name, key))
        return self._entries[name][0]

    def unknown_message(self, name: str, key: str | None = None) -> str:
        where = f"{key}: " if key else ""
        return (
            f"{where}unknown {self.kind} '{name}'{did_you_mean(str(name), self.names())} "
            f"(choices: {', '.join(self.names())})"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> Iterator[tuple[str, str]]:
        """(name, one-line description) pairs, sorted by name."""
        for name in self.names():
            yield name, self._entries[name][1]

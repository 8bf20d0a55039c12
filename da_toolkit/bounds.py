"""The values a schema field allows, declared with the field (recipe.py's dataclasses and every
adapter's Options): ``Annotated[float, Range(0, 1)]``, checked by recipe.build_dataclass when a recipe
is read. A module of its own, importing nothing of the toolkit, so that adapters declare bounds
without importing the recipe module (which imports the adapters' registry).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a schema field allows, declared with it: ``Annotated[float, Range(0, 1)]``.

    `low`/`high` are inclusive unless `low_open`/`high_open`; None leaves that side unbounded (NaN
    is never allowed). `why` is said in the refusal. `build_dataclass` checks a recipe's value (each
    item of a list of them) against it; null, where the field allows null, is not checked."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def admits(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below and value == value

    def refusal(self, key: str, value: Any) -> str:
        why = f" ({self.why})" if self.why else ""
        return f"{key}: must {self.allowed()}{why}, got {value}"

    def allowed(self) -> str:
        if self.high is None:
            if self.low == 0:
                return "be positive" if self.low_open else "be zero or more"
            return f"be more than {self.low}" if self.low_open else f"be {self.low} or more"
        if self.low is None:
            return f"be less than {self.high}" if self.high_open else f"be {self.high} or less"
        return (f"lie in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}")


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
WIDTH = Range(1, 2**16, why="units of a layer")
SEED_RANGE = Range(0, 2**32 - 1, why="numpy's seed range, the narrowest of the generators a run seeds")

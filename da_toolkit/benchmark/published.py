"""Published reference numbers (benchmarks/published.yaml): target accuracies by task, method and paper."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from da_toolkit.benchmark.spec import check_keys, read_mapping
from da_toolkit.errors import UserError


@dataclass
class PublishedNumber:
    accuracy: float  # percent target accuracy
    reported_as: str  # the method's name in the paper
    match: Literal["same", "closest", "approximate"]  # how well our method matches the paper's


@dataclass
class Published:
    """Published target accuracies by (task, method), one column per source paper."""

    columns: dict[str, str]  # source id -> column heading
    citations: dict[str, str]  # source id -> full reference
    note: str
    numbers: dict[tuple[str, str, str], PublishedNumber]  # (task, method, source id) -> number

    def get(self, task: str, method: str, source: str) -> PublishedNumber | None:
        return self.numbers.get((task, method, source))

    def for_tasks(self, tasks: list[str]) -> "Published | None":
        """The numbers of `tasks` and the sources that have any (a benchmark's columns); None when there are none."""
        numbers = {key: number for key, number in self.numbers.items() if key[0] in tasks}
        if not numbers:
            return None
        used = {source for _, _, source in numbers}
        return Published({s: c for s, c in self.columns.items() if s in used},
                         {s: c for s, c in self.citations.items() if s in used}, self.note, numbers)


ENTRY_KEYS = ("task", "method", "source", "accuracy", "reported_as", "match")
MATCHES = ("same", "closest", "approximate")


def load_published(path: Path) -> Published:
    raw = read_mapping(path, "published numbers")
    check_keys(raw, ("note", "sources", "results"), f"{path}: ")
    sources = raw.get("sources") or {}
    for source, body in sources.items():
        if not isinstance(body, dict) or not {"column", "citation"} <= set(body):
            raise UserError(f"{path}: sources.{source}: needs 'column' (a short heading) and 'citation'")
    numbers = {}
    for index, entry in enumerate(raw.get("results") or []):
        where = f"{path}: results[{index}]."
        if not isinstance(entry, dict):
            raise UserError(f"{where[:-1]}: expected a mapping with {', '.join(ENTRY_KEYS)}")
        check_keys(entry, ENTRY_KEYS, where)
        if entry.get("source") not in sources:
            raise UserError(f"{where}source: unknown source {entry.get('source')!r} (sources: {', '.join(sources)})")
        if not isinstance(entry.get("accuracy"), (int, float)):
            raise UserError(f"{where}accuracy: expected a number (percent), got {entry.get('accuracy')!r}")
        match = entry.get("match", "same")
        if match not in MATCHES:
            raise UserError(f"{where}match: expected one of {', '.join(MATCHES)}, got {match!r}")
        numbers[(entry["task"], entry["method"], entry["source"])] = PublishedNumber(
            float(entry["accuracy"]), str(entry.get("reported_as", entry["method"])), match)
    return Published({s: b["column"] for s, b in sources.items()}, {s: b["citation"] for s, b in sources.items()},
                     str(raw.get("note", "")).strip(), numbers)


def published_text(number: PublishedNumber | None) -> str:
    """'95.6', '95.6*' (closest match) or '≈95.6' (approximate match); '' when there is none."""
    if number is None:
        return ""
    prefix, suffix = {"approximate": ("≈", ""), "closest": ("", "*")}.get(number.match, ("", ""))
    return f"{prefix}{number.accuracy:.1f}{suffix}"

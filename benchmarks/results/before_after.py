"""Before/after table of two `da-toolkit compare` results.json files (target accuracy, mean ± std).

    python benchmarks/results/before_after.py BEFORE.json AFTER.json [--label-preservation RUNS]

Rows: method (and k); columns: task, "before → after". Of a sweep's results (digits_sweep.yaml) only the cells
at the recipes' own values count (not the sampled configurations, method@i). With --label-preservation, the mean oracle label
preservation of AFTER's pixel-stage cells (`label_preservation.rate` in each metrics.json under
RUNS, a diagnostic that uses target labels; one per trained translator: the `cyclegan` cells) is
added per task.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def summary(path: Path) -> dict[tuple[str, str, int | None], list[float]]:
    cells = json.loads(path.read_text())["cells"]
    out: dict = defaultdict(list)
    for cell in cells:
        if cell.get("configuration", cell["method"]) != cell["method"]:  # a sweep's sampled configuration
            continue
        if cell["status"] == "done" and cell["target_accuracy"] is not None:
            out[(cell["task"], cell["method"], cell.get("k"))].append(100 * cell["target_accuracy"])
    return out


def text(values: list[float] | None) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def label_preservation(runs: Path) -> dict[str, list[float]]:
    rates: dict = defaultdict(list)
    for metrics in sorted(runs.glob("*/*/seed*/metrics.json")):
        if metrics.parts[-3] not in ("cyclegan", "cyclegan_k0"):  # the cells that trained a translator
            continue
        rate = (json.loads(metrics.read_text()).get("label_preservation") or {}).get("rate")
        if rate is not None:
            rates[metrics.parts[-4]].append(100 * rate)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--label-preservation", type=Path, metavar="RUNS")
    args = parser.parse_args()
    before, after = summary(args.before), summary(args.after)
    keys = list(dict.fromkeys([*after, *before]))
    tasks = list(dict.fromkeys(task for task, _, _ in keys))
    methods = list(dict.fromkeys((method, k) for _, method, k in keys))
    name = {(m, k): m if k is None else f"{m} k={k}" for m, k in methods}
    print("| method | " + " | ".join(tasks) + " |")
    print("|---" * (len(tasks) + 1) + "|")
    for method, k in methods:
        row = []
        for task in tasks:
            old, new = before.get((task, method, k)), after.get((task, method, k))
            row.append(text(new) if not old else f"{text(old)} → {text(new)}")
        print(f"| {name[(method, k)]} | " + " | ".join(row) + " |")
    if args.label_preservation:
        print("\nOracle label preservation of the translated source (after), per task:")
        for task, rates in label_preservation(args.label_preservation).items():
            print(f"* {task}: {text(rates)} % ({len(rates)} pixel stages)")


if __name__ == "__main__":
    main()

"""Each validator's recommendation over every committed benchmark grid: which default is robust across tasks?

Reads the cells of every `benchmarks/results/*/results.json` whose runs recorded validator scores and
runs the recommendation study on each grid as `compare` does (`benchmark/recommend.study`: the mean
score over seeds of each run's returned model, collapse alarm, no harm), then, per validator, pools
the (grid, task) cases: how many it could score, its mean and worst regret (points of target accuracy
below the hindsight best method), and its harmful picks (> 5 points below source-only). Hindsight
from target test labels judges the validators; it picks nothing. Grids overlap (digits-cpu-syndigits
re-ran digits-cpu's core methods on its two tasks; the sweep's tasks are digits-cpu's), so the cases
are not independent. Run from the repository root, nothing else needed:

    python benchmarks/validator_robustness.py          # writes benchmarks/results/validator-robustness.md
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from da_toolkit.benchmark import recommend

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def grid_records(path: Path) -> list[dict]:
    """The finished cells of a results.json as recommendation records (a sweep's configuration is its method)."""
    cells = json.loads(path.read_text())["cells"]
    records = []
    for cell in cells:
        if cell.get("status") != "done":
            continue
        record = {**cell, "collapsed": bool(cell.get("collapsed"))}
        if cell.get("k"):  # the scarce-label grid: one task per number of labeled target images
            record["task"] = f"{cell['task']} k={cell['k']}"
        record["method"] = cell.get("configuration") or cell["method"]
        records.append(record)
    return records


RECOMMENDATION = "the recommendation"  # each case's default validator (recommend.default_validator)


def cases() -> dict[str, dict[str, dict]]:
    """{grid: {task: {validator: task study}}} of every grid whose runs have validator scores, with the
    recommendation's: the study of the task's default validator (seed agreement where every method has it)."""
    out = {}
    for path in sorted(RESULTS.glob("*/results.json")):
        records = grid_records(path)
        if records and recommend.validators_of(records):
            result = recommend.study(records)
            out[path.parent.name] = {
                task: {**entries, **({RECOMMENDATION: entries[result["defaults"][task]]}
                                     if result["defaults"][task] in entries else {})}
                for task, entries in result["tasks"].items()}
    return out


def summary(studied: dict[str, dict[str, dict]]) -> list[tuple[str, int, float, float, str, int, float | None]]:
    """Per validator: (name, cases scored, mean regret, worst regret, the worst case, harmful picks, mean Spearman ρ
    between its method scores and the methods' accuracies)."""
    validators = list(dict.fromkeys(v for tasks in studied.values() for entries in tasks.values() for v in entries))
    rows = []
    for validator in validators:
        scored = [(f"{grid}/{task}", entries[validator]) for grid, tasks in studied.items()
                  for task, entries in tasks.items() if entries.get(validator, {}).get("regret") is not None]
        if not scored:
            continue
        regrets = [entry["regret"] for _, entry in scored]
        worst = max(scored, key=lambda item: item[1]["regret"])
        rhos = [entry["method_spearman"] for _, entry in scored if entry.get("method_spearman") is not None]
        rows.append((validator, len(scored), statistics.fmean(regrets), worst[1]["regret"], worst[0],
                     sum(bool(entry.get("harmful")) for _, entry in scored), statistics.fmean(rhos) if rhos else None))
    return rows


def common_means(studied: dict[str, dict[str, dict]]) -> tuple[int, dict[str, float]]:
    """Per validator, the mean regret over the cases that every validator of `summary` scored (validators added
    later have no score on the older grids: a like-for-like comparison), and how many such cases there are."""
    validators = [row[0] for row in summary(studied)]
    common = [entries for tasks in studied.values() for entries in tasks.values()
              if all(entries.get(v, {}).get("regret") is not None for v in validators)]
    if not common:
        return 0, {}
    return len(common), {v: statistics.fmean(entries[v]["regret"] for entries in common) for v in validators}


def markdown(studied: dict[str, dict[str, dict]]) -> str:
    shared, like_for_like = common_means(studied)
    lines = ["# Validators across every committed grid", "",
             "Written by `python benchmarks/validator_robustness.py` from the committed `benchmarks/results/*/results.json`",
             "(no run is made). Per validator, the (grid, task) cases whose runs it scored; the regret of its method pick",
             "(points of target test accuracy below the hindsight best method of the case), its mean and worst; harmful:",
             "a pick more than 5 points below source-only; ρ over methods: Spearman's rank correlation of the methods'",
             "mean scores with their mean target accuracies, per case (how well it ranks all methods, not only the top).",
             "The picks follow `compare`'s rule (mean score over seeds of each",
             "run's returned model, collapse alarm, no harm); target test labels judge the picks, they choose nothing.",
             "Cases overlap (digits-cpu-syndigits re-ran digits-cpu's core methods; the sweep's tasks are digits-cpu's):",
             "they are not independent tasks, and four digit tasks are all there is here. Each grid's rows are as its",
             "committed table made them, with the code of its day (its README says which): tables made before the digit",
             "optimiser became TLlib's (2026-12-04), before syndigits version 2 (2026-12-04) or before the joint methods",
             "sent each domain's batch on its own (2026-12-05) keep their figures of then.", "",
             f"| validator | cases | mean regret (pts) | mean regret on the {shared} cases all scored (pts) | "
             "worst regret (pts) | worst case | harmful picks | mean ρ over methods |",
             "|---|---|---|---|---|---|---|---|"]
    for name, count, mean, worst, where, harmful, rho in summary(studied):
        label = f"**{name}** (seed agreement where every method has it, else class_ami)" if name == RECOMMENDATION else name
        lines.append(f"| {label} | {count} | {mean:.2f} | {like_for_like[name]:.2f} | {worst:.2f} | {where} | {harmful} | "
                     + ("–" if rho is None else f"{rho:.3f}") + " |")
    lines += ["", "Per case (regret in points; –: not scored):", ""]
    validators = [row[0] for row in summary(studied)]
    lines += ["| grid | task | best (hindsight) | " + " | ".join(validators) + " |",
              "|---|---|---|" + "---|" * len(validators)]
    for grid, tasks in studied.items():
        for task, entries in tasks.items():
            best = next((e["best"] for e in entries.values() if e.get("best")), "–")
            cells = [f"{entries[v]['regret']:.2f}" if entries.get(v, {}).get("regret") is not None else "–"
                     for v in validators]
            lines.append(f"| {grid} | {task} | {best} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "validator-robustness.md")
    args = parser.parse_args()
    text = markdown(cases())
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

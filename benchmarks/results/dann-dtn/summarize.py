"""Table of the cpu32 cells: python summarize.py RUNS_DIR  (prints markdown: mean ± std over the seeds found)."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main(runs: Path) -> None:
    print("| task | method | seeds | source acc. % | target acc. % | per seed (source / target) | wall s (mean) |")
    print("|---|---|---|---|---|---|---|")
    for task in sorted(p.name for p in runs.iterdir() if p.is_dir()):
        for method in ("source_only", "dann"):
            cells = sorted((runs / task / method).glob("seed*/metrics.json"))
            metrics = [json.loads(c.read_text()) for c in cells]
            if not metrics:
                continue
            source = [m["source_accuracy"] for m in metrics]
            target = [m["target_accuracy"] for m in metrics]
            seeds = ",".join(str(m["seed"]) for m in metrics)
            each = "; ".join(f"{100 * s:.2f} / {100 * t:.2f}" for s, t in zip(source, target))
            wall = statistics.mean(m["wall_time_s"] for m in metrics)
            print(f"| {task} | {method} | {seeds} | {fmt(source)} | {fmt(target)} | {each} | {wall:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

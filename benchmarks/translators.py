"""A markdown table of a benchmark's translators, read from its pixel cells' metrics.json: per task and seed,
the oracle's label preservation (beside its read of the raw source), f_S's agreement with the translated
labels (what the label filter keeps), the seconds of the pixel stage's parts, and whether the cell trained
its translator or borrowed one (compare's sharing). Reads no image and trains nothing.

    python benchmarks/translators.py BENCH_DIR [--method stargan]

BENCH_DIR is a compare output directory (BENCH_DIR/runs/<task>/<method>/seed<s>).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def rows(bench_dir: Path, method: str) -> list[str]:
    lines = ["| task | seed | oracle label preservation (%) | oracle on raw source (%) | f_S agreement = kept (%) "
             "| label warning | pixel-stage seconds | translator |",
             "|---|---|---|---|---|---|---|---|"]
    for run_dir in sorted((bench_dir / "runs").glob(f"*/{method}/seed*")):
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text())
        preservation = metrics.get("label_preservation") or {}
        label_filter = metrics.get("label_filter") or {}
        seconds = {stage: s for stage, s in metrics["stages"]["wall_time_s"].items() if stage.startswith("pixel")}
        trained = "pixel" in seconds
        lines.append(f"| {metrics['task']} | {metrics['seed']} | {percent(preservation.get('rate'))} "
                     f"| {percent(preservation.get('oracle_on_raw_source'))} | {percent(label_filter.get('agreement'))} "
                     f"| {'yes' if label_filter.get('warning') else 'no'} "
                     f"| {', '.join(f'{stage} {s:.0f}' for stage, s in seconds.items()) or '–'} "
                     f"| {'trained here' if trained else 'borrowed'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("--method", default="stargan", help="the pixel method's cells (default: stargan)")
    args = parser.parse_args()
    print("\n".join(rows(args.bench_dir, args.method)))


if __name__ == "__main__":
    main()

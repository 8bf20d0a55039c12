"""`da-toolkit compare`: the benchmark file -> cells -> scheduler -> results."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from da_toolkit.benchmark.grid import Cell, expand, share_translators
from da_toolkit.benchmark.report import cell_rows, write_results
from da_toolkit.benchmark.scheduler import Outcome, launch_cell, run_cells
from da_toolkit.benchmark.spec import choose_profile, load_benchmark
from da_toolkit.errors import UserError


def compare(benchmark_path: str | Path, profile: str | None = None, jobs: int = 1, output: str | Path | None = None,
            dry_run: bool = False, launch=launch_cell) -> list[dict]:
    """Run (with dry_run: list) the benchmark's cells and write the results; returns the per-cell rows.

    The benchmark directory is `output`, else <output_dir>/<name>[-<profile>]. When a cell did not
    finish, raises UserError after writing the results, so that scripts see a non-zero exit status.
    """
    benchmark = load_benchmark(benchmark_path)
    profile = choose_profile(benchmark, profile)
    bench_dir = Path(output) if output else benchmark.output_dir / (benchmark.name + (f"-{profile}" if profile else ""))
    cells, skipped = expand(benchmark, profile, bench_dir)
    share_translators(cells)
    if dry_run:
        for cell in cells:
            state = "finished" if cell.finished else "started, will resume" if cell.started else "new"
            shared = f"  (reuses the translator of {cell.owner.name})" if cell.owner else ""
            print(f"{cell.name:<44} {state}{shared}")
        print(f"{len(cells)} cells in {bench_dir}" + (f"; not applicable: {', '.join(skipped)}" if skipped else ""))
        return []
    command = shlex.join(["da-toolkit", "compare", str(benchmark_path), *(["--profile", profile] if profile else []),
                          "--jobs", str(jobs), *(["-o", str(output)] if output else [])])
    print(f"benchmark {benchmark.name}" + (f", profile {profile}" if profile else "") +
          f": {len(cells)} cells in {bench_dir}, {jobs} at a time", file=sys.stderr)
    outcomes: dict[Cell, Outcome] = {}
    try:
        run_cells(cells, jobs, outcomes, launch)
    finally:
        rows = cell_rows(cells, outcomes)
        write_results(bench_dir, benchmark, profile, command, rows, skipped)
        print(f"results: {bench_dir / 'results.md'} (and .csv, .json); "
              f"TensorBoard: tensorboard --logdir {bench_dir / 'runs'}", file=sys.stderr)
    unfinished = [r for r in rows if r["status"] != "done"]
    if unfinished:
        raise UserError(f"{len(unfinished)} of {len(rows)} cells did not finish: " +
                        "; ".join(f"{r['cell']}: {r['error']}" for r in unfinished) +
                        ". Fix the cause and run the same command again (finished cells are skipped)")
    return rows

"""`da-toolkit compare`: the benchmark file -> cells -> scheduler -> results."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from fnmatch import fnmatchcase
from pathlib import Path

from da_toolkit.benchmark import recommend
from da_toolkit.benchmark.cluster import ClusterLauncher, ClusterOptions
from da_toolkit.benchmark.grid import Cell, expand, share_translators
from da_toolkit.benchmark.report import cell_rows, selection_records, sweep_record, write_results
from da_toolkit.benchmark.scheduler import Outcome, launch_cell, recorded_outcomes, run_cells
from da_toolkit.benchmark.spec import choose_profile, load_benchmark
from da_toolkit.benchmark.sweep import hyper_parameter_text
from da_toolkit.benchmark.verify import differences, recorded_cells, verified_cells
from da_toolkit.errors import UserError
from da_toolkit.training.checkpoint import write_json_atomic


def compare(benchmark_path: str | Path, profile: str | None = None, jobs: int | None = None,
            output: str | Path | None = None, dry_run: bool = False, launch=None, only: str | None = None,
            seeds: list[int] | None = None, verify: str | Path | None = None, tolerance: float = 0.0,
            reports: bool = False, cluster: ClusterOptions | None = None, finished_only: bool = False) -> list[dict]:
    """Run (with dry_run: list) the benchmark's cells and write the results; returns the per-cell rows.

    The benchmark directory is `output`, else <output_dir>/<name>[-<profile>][-verify]. `only`: a
    glob over cell names (task/method[@i][_k<k>]/seed<s>) that selects the cells; `seeds`: instead of the
    benchmark file's (more seeds of a contested cell, say); `finished_only`: of those,
    the ones tried so far, nothing run (the results of a grid still running or partly run: the finished
    cells, and as not finished those still running or stopped, e.g. by the divergence guard, with the
    error their log ends with). Otherwise, when a cell did not finish, raises UserError after writing
    the results, so that scripts see a non-zero exit status.
    With `verify` (a results.json), also when a cell's target accuracy differs from the recorded
    one by more than `tolerance` percentage points. With `reports`, each finished cell also gets its
    run report (`da-toolkit report`, beside the source-only cell of its task and seed), linked from
    results.md.

    Cells run as local processes (`launch`, by default `launch_cell`), `jobs` at a time (default
    1), or with `cluster` as jobs of a scheduler (`ClusterLauncher`: Slurm through submitit),
    `jobs` in the queue at a time (default: every cell).
    """
    benchmark = load_benchmark(benchmark_path)
    if seeds is not None:
        benchmark = dataclasses.replace(benchmark, seeds=list(seeds))
    profile = choose_profile(benchmark, profile)
    verified = recorded_cells(verify) if verify is not None else None
    bench_dir = Path(output) if output else benchmark.output_dir / (
        benchmark.name + (f"-{profile}" if profile else "") + ("-verify" if verify is not None else ""))
    cells, skipped = expand(benchmark, profile, bench_dir)
    if finished_only:  # the translators' owners of the whole grid, which its cells' runs recorded (pixel_from)
        share_translators(cells)
    if only is not None:
        cells = [cell for cell in cells if fnmatchcase(cell.name, only)]
        if not cells:
            raise UserError(f"--only: no cell of {benchmark_path} matches '{only}' (cell names: task/method/seed<s>, "
                            f"e.g. mnist2usps/adda/seed0, or mnist2usps/dann@3/seed0 for configuration 3 of a "
                            f"sweep; see --dry-run)")
    if verified is not None:
        cells = verified_cells(cells, verified, verify, only)
    recorded = recorded_outcomes(cells) if finished_only else {}
    if finished_only:
        cells = [cell for cell in cells if cell in recorded]
        if not any(outcome.status == "done" for outcome in recorded.values()):
            raise UserError(f"--finished: no cell of {benchmark_path}{' matching --only' if only else ''} has finished "
                            f"in {bench_dir}")
    else:
        share_translators(cells)
    if dry_run:
        for cell in cells:
            state = "finished" if cell.finished else "started, will resume" if cell.started else "new"
            shared = f"  (reuses the translator of {cell.owner.name})" if cell.owner else ""
            shared += f"  (after {cell.after.name})" if cell.after else ""
            shared += "".join(f"  (reads the run of {source.name})" for source in cell.inputs)
            swept = f"  [{hyper_parameter_text(cell.hyper_parameters)}]" if cell.hyper_parameters else ""
            print(f"{cell.name:<44} {state}{swept}{shared}")
        print(f"{len(cells)} cells in {bench_dir}" + (f"; not applicable: {', '.join(skipped)}" if skipped else ""))
        return []
    jobs = jobs or (max(1, len(cells)) if cluster else 1)
    if launch is None:
        launch = ClusterLauncher(bench_dir / "submitit", cluster) if cluster else launch_cell
    command = shlex.join(["da-toolkit", "compare", str(benchmark_path), *(["--profile", profile] if profile else []),
                          "--jobs", str(jobs), *(["-o", str(output)] if output else []),
                          *(["--only", only] if only is not None else []),
                          *(["--seeds", ",".join(map(str, seeds))] if seeds is not None else []),
                          *(["--finished"] if finished_only else []),
                          *(cluster.arguments() if cluster else [])])
    where = f"as {cluster.cluster} jobs (submitit files in {bench_dir / 'submitit'})" if cluster else "as processes"
    print(f"benchmark {benchmark.name}" + (f", profile {profile}" if profile else "") +
          f": {len(cells)} cells in {bench_dir}, {jobs} at a time {where}", file=sys.stderr)
    if benchmark.sweeps:
        bench_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(bench_dir / "sweeps.json", sweep_record(benchmark)["sweeps"])
    outcomes: dict[Cell, Outcome] = dict(recorded)
    try:
        if not finished_only:
            run_cells(cells, jobs, outcomes, launch)
        if reports:
            write_cell_reports(cells, outcomes)
    finally:
        rows = cell_rows(cells, outcomes)
        write_results(bench_dir, benchmark, profile, command, rows, skipped)
        print(f"results: {bench_dir / 'results.md'} (and .csv, .json); "
              f"TensorBoard: tensorboard --logdir {bench_dir / 'runs'}", file=sys.stderr)
    print_picks(rows, bench_dir)
    unfinished = [r for r in rows if r["status"] != "done"]
    if unfinished and finished_only:
        print(f"{len(unfinished)} of {len(rows)} cells tried did not finish (running or stopped): "
              f"{', '.join(r['cell'] for r in unfinished)}; see 'Not finished' in results.md", file=sys.stderr)
    elif unfinished:
        raise UserError(f"{len(unfinished)} of {len(rows)} cells did not finish: " +
                        "; ".join(f"{r['cell']}: {r['error']}" for r in unfinished) +
                        ". Fix the cause and run the same command again (finished cells are skipped)")
    if verified is not None:
        differ = differences(verified, rows, tolerance)
        if differ:
            raise UserError(f"--verify: {len(differ)} of {len(rows)} cells differ from {verify} (tolerance "
                            f"{tolerance:g} pp): " + "; ".join(differ))
        print(f"verified: the {len(rows)} cells reproduce {verify} (tolerance {tolerance:g} pp)", file=sys.stderr)
    return rows


def print_picks(rows: list[dict], bench_dir: Path) -> None:
    """The recommendation in one line per task (results.md has every validator's, with the hindsight)."""
    records = selection_records(rows)
    if records:
        result = recommend.study(records)
        names = {row["configuration"]: f"{row['configuration']} ({hyper_parameter_text(row['hyper_parameters'])})"
                 for row in rows if row.get("hyper_parameters")}  # a sweep's pick says its hyper-parameters
        print("\n".join(recommend.one_line_picks(records, result, names)))
        print(f"({recommend.picked_by(result)})")
        print(f"(every validator's pick, with the hindsight from target test labels: {bench_dir / 'results.md'})")


def write_cell_reports(cells: list[Cell], outcomes: dict[Cell, Outcome]) -> None:
    """`da-toolkit report` of every finished cell into <its run dir>/report, beside the finished
    source-only cell of the same task, seed and k when there is one; a report that cannot be
    written is a line on stderr, not a failed benchmark."""
    from da_toolkit.report import write_report

    done = [cell for cell in cells if outcomes.get(cell, Outcome("not run")).status == "done"]
    baselines = {(c.task, c.seed, c.k): c for c in done if c.configuration == "source_only"}
    for cell in done:
        baseline = baselines.get((cell.task, cell.seed, cell.k))
        try:
            write_report(cell.run_dir, None if baseline in (None, cell) else baseline.run_dir)
        except UserError as error:
            print(f"report of {cell.name} not written: {error}", file=sys.stderr)

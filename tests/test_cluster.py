"""`da-toolkit compare --executor slurm`: cells as submitit jobs (here through submitit's LocalExecutor)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from submitit.core.utils import FailedJobError, UncompletedJobError

from da_toolkit import benchmark as bench
from da_toolkit.benchmark import cluster
from da_toolkit.benchmark.cluster import ClusterJob, ClusterOptions, parse_minutes
from da_toolkit.cli import main
from da_toolkit.errors import UserError
from test_benchmark import benchmark_file, three_real_cells, toy_recipes  # noqa: F401 (a fixture)

LOCAL = ClusterOptions(time_min=10, gpus=0, cpus=1, cluster="local")


def submitted_jobs(bench_dir: Path) -> list[Path]:
    return [d for d in (bench_dir / "submitit").iterdir() if d.name.isdigit()]


def test_fake_cells_as_submitit_jobs_owner_first_finished_skipped_failed_reported(tmp_path, toy_recipes,
                                                                                   monkeypatch):
    """The scheduling through submitit's local executor, with a tiny command in place of `da-toolkit
    run` (it writes the cell's recipe.yaml and metrics.json, or fails for one cell)."""
    def fake_argv(cell):
        (cell.run_dir / "recipe.yaml").write_text(yaml.safe_dump(cell.expected_recipe))
        if cell.name == "toy/cyclegan_wide/seed0":
            return [sys.executable, "-c", "import sys; sys.exit('error: boom')"]
        metrics = json.dumps({"target_accuracy": 0.5, "wall_time_s": 1.0, "hardware": "CPU: toy",
                              "selection": "final model", "collapse": {"collapsed": False}})
        return [sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1], 'metrics.json').write_text("
                                      "sys.argv[2])", str(cell.run_dir), metrics]

    monkeypatch.setattr(cluster, "cell_argv", fake_argv)
    path = benchmark_file(tmp_path, methods=["cyclegan_ft", "cyclegan", "cyclegan_wide"], seeds=[0])
    with pytest.raises(UserError, match="1 of 3 cells did not finish: toy/cyclegan_wide/seed0: error: boom"):
        bench.compare(path, output=tmp_path / "b", cluster=LOCAL)
    runs = tmp_path / "b" / "runs" / "toy"
    owner_done = (runs / "cyclegan" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert (runs / "cyclegan_ft" / "seed0" / "recipe.yaml").stat().st_mtime_ns >= owner_done  # submitted after
    assert "--executor local" in (tmp_path / "b" / "results.md").read_text()
    assert len(submitted_jobs(tmp_path / "b")) == 3

    with pytest.raises(UserError, match="1 of 3 cells did not finish"):
        bench.compare(path, output=tmp_path / "b", cluster=LOCAL)
    assert len(submitted_jobs(tmp_path / "b")) == 4  # only the failed cell is submitted again


@pytest.mark.slow
def test_real_cells_run_as_submitit_jobs_share_a_translator_and_are_not_run_twice(tmp_path):
    """source_only, cyclegan and cyclegan_ft (which reuses cyclegan's translator) as jobs of
    submitit's local executor: all finish, cyclegan_ft is submitted only after cyclegan finished
    and trains no CycleGAN of its own; a second compare submits nothing."""
    path = three_real_cells(tmp_path)

    rows = bench.compare(path, output=tmp_path / "b", cluster=LOCAL)
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    runs = tmp_path / "b" / "runs" / "uci"
    assert not (runs / "cyclegan_ft" / "seed0" / "checkpoints" / "pixel.pt").exists()
    shared = json.loads((runs / "cyclegan_ft" / "seed0" / "metrics.json").read_text())
    assert shared["stages"]["pixel"]["translation_cache"] == "hit"
    assert len(submitted_jobs(tmp_path / "b")) == 3
    reuser_log = (runs / "cyclegan_ft" / "seed0" / "cell.log").read_text()
    assert reuser_log.startswith("=== ") and "pixel_from=" in reuser_log.splitlines()[0]

    logs = [(runs / m / "seed0" / "cell.log").read_text() for m in ("source_only", "cyclegan", "cyclegan_ft")]
    rows = bench.compare(path, output=tmp_path / "b", cluster=LOCAL)
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert [(runs / m / "seed0" / "cell.log").read_text() for m in ("source_only", "cyclegan", "cyclegan_ft")] == logs
    assert len(submitted_jobs(tmp_path / "b")) == 3


class FakeJob:
    job_id = "4711"

    def __init__(self, error, state):
        self.error, self.state = error, state

    def done(self):
        return True

    def exception(self):
        return self.error


def test_a_job_the_scheduler_ended_names_why_in_the_cell_log(tmp_path):
    log = tmp_path / "cell.log"
    log.write_text("=== 2026-01-01T00:00:00 da-toolkit run r.yaml\niteration 100\n")
    timed_out = ClusterJob(FakeJob(UncompletedJobError("Job 4711 (task: 0) with path /x has not produced any "
                                                       "output (state: TIMEOUT)\nError stream produced: ..."),
                                   "TIMEOUT"), log)
    assert timed_out.poll() == 1
    assert bench.scheduler.last_error_line(log) == (
        "error: job 4711 ended before the run did (TIMEOUT): Job 4711 (task: 0) with path /x has not produced any "
        "output (state: TIMEOUT)")
    # a run that failed by itself printed its error into cell.log already: nothing is added
    log.write_text("=== 2026-01-01T00:00:00 da-toolkit run r.yaml\nerror: data.source.root: not found\n")
    assert ClusterJob(FakeJob(FailedJobError(""), "FAILED"), log).poll() == 1
    assert bench.scheduler.last_error_line(log) == "error: data.source.root: not found"
    assert ClusterJob(FakeJob(None, "COMPLETED"), log).poll() == 0


def test_slurm_options_on_the_command_line(tmp_path, monkeypatch):
    assert [parse_minutes(t) for t in ("90", "1:30:00", "2-00:00:00", "0:00:30")] == [90, 90, 2880, 1]
    for bad in ("1h", "0", "1:3:00"):
        with pytest.raises(UserError, match="--slurm-time: "):
            parse_minutes(bad)
    seen = {}
    monkeypatch.setattr(bench, "compare", lambda *args, **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(main, ["compare", "b.yaml", "--executor", "slurm", "--slurm-partition", "gpu",
                                       "--slurm-time", "2:00:00", "--slurm-gpus", "2"])
    assert result.exit_code == 0, result.output
    assert seen["cluster"] == ClusterOptions("gpu", 120, 2, 8, None) and seen["jobs"] is None
    result = CliRunner().invoke(main, ["compare", "b.yaml", "--slurm-partition", "gpu"])
    assert result.exit_code == 2 and "--slurm-partition and --slurm-mem-gb need --executor slurm" in result.output


def test_each_cell_asks_slurm_for_the_options_given(tmp_path, monkeypatch):
    """Without Slurm, --executor slurm is one line; with `srun` on the PATH, the batch script a cell
    would be submitted with asks for the partition, time, GPUs, CPUs and memory."""
    options = ClusterOptions("gpu", 90, 2, 8, 32)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match='--executor slurm: Could not detect "srun".*login node'):
        cluster.ClusterLauncher(tmp_path / "submitit", options)
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    script = cluster.ClusterLauncher(tmp_path / "submitit", options).executor._executor \
        ._make_submission_file_text("CMD", "0")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=32GB",
                 "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in script

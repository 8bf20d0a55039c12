"""`da-toolkit compare`: run a grid of tasks × methods × seeds (× k labeled target images per class)
and write an honest comparison.

A benchmark file (YAML, see benchmarks/README.md) names tasks, methods, seeds, overrides and
profiles. Each *cell* (task, method, seed[, k]) is an ordinary run directory

    <bench_dir>/runs/<task>/<method>[_k<k>]/seed<s>/

made by ``da-toolkit run recipes/<task>_<method>.yaml <overrides> seed=<s> -o <dir> -q`` in a
process of its own, ``--jobs`` at a time. A re-run skips finished cells (metrics.json), resumes
interrupted ones (recipe.yaml without metrics.json) and retries failed ones; a failing cell is
reported and the others go on.

Pixel once, features many: cells whose pixel stage would be trained identically (same task, seed,
pixel section, data, classifier and device; any k) share one translator. The first of them (a cell
with the plain source_only feature stage when there is one) trains it; the others run with
``pixel_from=<its run dir>`` after it finished, restoring its pixel checkpoints and reading its
translated-source cache.

Results go to <bench_dir>/results.{md,csv,json}, results.png (bar chart) and, with a k axis,
learning_curve.png.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from tqdm import tqdm

from da_toolkit.errors import UserError
from da_toolkit.recipe import Recipe, load_recipe
from da_toolkit.registry import did_you_mean
from da_toolkit.training.checkpoint import write_json_atomic, write_text_atomic

SCHEDULER_POLL_S = 0.2


# ----------------------------------------------------------------------------------------------
# The benchmark file


@dataclass
class Profile:
    """Overrides for one kind of machine (e.g. cpu: small budgets; gpu: the recipes' own)."""

    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Benchmark:
    path: Path
    name: str
    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    recipe_dir: Path  # holds <task>_<method>.yaml
    output_dir: Path = Path("benchmarks/runs")
    label_counts: list[int] | None = None  # the target_labels_per_class axis (scarce-label study)
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    method_recipes: dict[str, str] = field(default_factory=dict)  # method -> method whose recipe it starts from
    profiles: dict[str, Profile] = field(default_factory=dict)
    published: Path | None = None

    def recipe_path(self, task: str, method: str) -> Path:
        return self.recipe_dir / f"{task}_{self.method_recipes.get(method, method)}.yaml"

    def cell_overrides(self, method: str, profile: str | None) -> list[str]:
        """In order: the method's own, the benchmark's, the profile's, the profile's for the method."""
        chosen = self.profiles[profile] if profile else Profile()
        return [*self.method_overrides.get(method, []), *self.overrides, *chosen.overrides,
                *chosen.method_overrides.get(method, [])]


BENCHMARK_KEYS = ("name", "tasks", "methods", "seeds", "target_labels_per_class", "recipe_dir", "output_dir",
                  "overrides", "method_overrides", "method_recipes", "profiles", "published")
PROFILE_KEYS = ("overrides", "method_overrides")


def _read_mapping(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} file must be a mapping of keys")
    return data


def _check_keys(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise UserError(f"{where}{key}: unknown key{did_you_mean(str(key), list(allowed))} "
                            f"(allowed: {', '.join(allowed)})")


def _list_of(raw: dict, key: str, kind: type, where: str, required: bool = False) -> list | None:
    """raw[key] checked to be a list of `kind`; nested lists are flattened (to reuse a YAML anchor)."""
    value = raw.get(key)
    if value is None:
        if required:
            raise UserError(f"{where}{key}: missing (a list of {kind.__name__})")
        return None
    if isinstance(value, list):
        value = [v for item in value for v in (item if isinstance(item, list) else [item])]
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise UserError(f"{where}{key}: expected a list of {kind.__name__}, got {value!r}")
    return value


def _method_overrides(raw: dict, methods: list[str], where: str) -> dict[str, list[str]]:
    value = raw.get("method_overrides") or {}
    if not isinstance(value, dict):
        raise UserError(f"{where}method_overrides: expected a mapping method -> list of overrides")
    for method in value:
        if method not in methods:
            raise UserError(f"{where}method_overrides.{method}: not a method of this benchmark"
                            f"{did_you_mean(str(method), methods)} (methods: {', '.join(methods)})")
    return {method: _list_of(value, method, str, f"{where}method_overrides.") or [] for method in value}


def load_benchmark(path: str | Path) -> Benchmark:
    """Read and check a benchmark file; UserError naming the key for anything wrong."""
    path = Path(path)
    raw = _read_mapping(path, "benchmark")
    where = f"{path}: "
    _check_keys(raw, BENCHMARK_KEYS, where)
    tasks = _list_of(raw, "tasks", str, where, required=True)
    methods = _list_of(raw, "methods", str, where, required=True)
    seeds = _list_of(raw, "seeds", int, where) or [0]
    label_counts = _list_of(raw, "target_labels_per_class", int, where)
    if label_counts is not None and any(k < 0 for k in label_counts):
        raise UserError(f"{where}target_labels_per_class: counts must be 0 or more, got {label_counts}")
    for key, items in (("tasks", tasks), ("methods", methods), ("seeds", seeds)):
        if not items:
            raise UserError(f"{where}{key}: must name at least one")
    method_recipes = raw.get("method_recipes") or {}
    if not isinstance(method_recipes, dict) or not all(isinstance(v, str) for v in method_recipes.values()):
        raise UserError(f"{where}method_recipes: expected a mapping method -> method whose recipe it starts from")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise UserError(f"{where}profiles: expected a mapping profile name -> {{overrides, method_overrides}}")
    parsed_profiles = {}
    for name, body in profiles.items():
        body = body or {}
        if not isinstance(body, dict):
            raise UserError(f"{where}profiles.{name}: expected a mapping with {' and/or '.join(PROFILE_KEYS)}")
        _check_keys(body, PROFILE_KEYS, f"{where}profiles.{name}.")
        parsed_profiles[str(name)] = Profile(_list_of(body, "overrides", str, f"{where}profiles.{name}.") or [],
                                             _method_overrides(body, methods, f"{where}profiles.{name}."))
    published = raw.get("published")
    return Benchmark(
        path=path, name=str(raw.get("name") or path.stem), tasks=tasks, methods=methods, seeds=seeds,
        recipe_dir=path.parent / raw.get("recipe_dir", "../recipes"),
        output_dir=Path(raw.get("output_dir", "benchmarks/runs")), label_counts=label_counts,
        overrides=_list_of(raw, "overrides", str, where) or [],
        method_overrides=_method_overrides(raw, methods, where), method_recipes=method_recipes,
        profiles=parsed_profiles, published=path.parent / published if published else None)


def choose_profile(benchmark: Benchmark, profile: str | None) -> str | None:
    """The named profile (checked); without a name, 'gpu' on a CUDA machine or 'cpu' otherwise, when defined."""
    if profile is not None:
        if profile not in benchmark.profiles:
            allowed = ", ".join(benchmark.profiles) or "none: this file defines no profiles"
            raise UserError(f"--profile: unknown profile '{profile}' for {benchmark.path}"
                            f"{did_you_mean(profile, list(benchmark.profiles))} (allowed: {allowed})")
        return profile
    import torch

    machine = "gpu" if torch.cuda.is_available() else "cpu"
    return machine if machine in benchmark.profiles else None


# ----------------------------------------------------------------------------------------------
# Cells


@dataclass(eq=False)
class Cell:
    task: str
    method: str
    seed: int
    k: int | None  # labeled target images per class, on the scarce-label axis
    recipe_path: Path
    base_overrides: list[str]  # benchmark/profile/method overrides, k and seed
    run_dir: Path
    recipe: Recipe
    owner: Cell | None = None  # the cell whose translator this one reuses (pixel_from)

    @property
    def name(self) -> str:
        variant = self.method if self.k is None else f"{self.method}_k{self.k}"
        return f"{self.task}/{variant}/seed{self.seed}"

    @property
    def overrides(self) -> list[str]:
        shared = [f"pixel_from={self.owner.run_dir}"] if self.owner is not None else []
        return [*self.base_overrides, *shared]

    @property
    def expected_recipe(self) -> dict:
        """The resolved recipe this cell's run directory records (recipe.yaml)."""
        resolved = self.recipe.to_dict()
        resolved["pixel_from"] = str(self.owner.run_dir) if self.owner is not None else None
        return resolved

    @property
    def log_path(self) -> Path:
        return self.run_dir / "cell.log"

    @property
    def finished(self) -> bool:
        return (self.run_dir / "metrics.json").exists()

    @property
    def started(self) -> bool:
        return (self.run_dir / "recipe.yaml").exists()

    def changed_keys(self) -> list[str]:
        """Top-level recipe keys in which a started run directory differs from this cell's recipe."""
        if not self.started:
            return []
        before = yaml.safe_load((self.run_dir / "recipe.yaml").read_text()) or {}
        now = self.expected_recipe
        return sorted(k for k in set(before) | set(now) if k != "output_dir" and before.get(k) != now.get(k))

    def arguments(self) -> list[str]:
        """The `da-toolkit` arguments that run (or, when started, resume) this cell."""
        resume = ["--resume"] if self.started else []
        return ["run", str(self.recipe_path), *self.overrides, "-o", str(self.run_dir), "-q", *resume]

    def command_line(self) -> str:
        return shlex.join(["da-toolkit", *self.arguments()])


def expand(benchmark: Benchmark, profile: str | None, bench_dir: Path) -> tuple[list[Cell], list[str]]:
    """The grid's cells in order (task, k, method, seed), and the names of cells skipped as not applicable.

    Every cell's recipe is loaded now, so a missing recipe file or a bad override stops the
    benchmark before anything runs. A target_only cell at k = 0 has no labeled target image to
    train on and is skipped.
    """
    missing = sorted({str(benchmark.recipe_path(t, m)) for t in benchmark.tasks for m in benchmark.methods
                      if not benchmark.recipe_path(t, m).is_file()})
    if missing:
        raise UserError(f"{benchmark.path}: recipe files not found: {', '.join(missing)} (a method's recipe is "
                        f"<recipe_dir>/<task>_<method>.yaml; recipe_dir is {benchmark.recipe_dir}; "
                        f"method_recipes maps a method onto another method's recipe)")
    cells, skipped = [], []
    runs = bench_dir.resolve() / "runs"
    for task in benchmark.tasks:
        for k in benchmark.label_counts or [None]:
            for method in benchmark.methods:
                for seed in benchmark.seeds:
                    overrides = benchmark.cell_overrides(method, profile)
                    overrides += [f"data.target_labels_per_class={k}"] if k is not None else []
                    overrides += [f"seed={seed}"]
                    path = benchmark.recipe_path(task, method)
                    variant = method if k is None else f"{method}_k{k}"
                    try:
                        recipe = load_recipe(path, overrides)
                    except UserError as error:
                        raise UserError(f"{benchmark.path}: cell {task}/{variant}/seed{seed} ({path}): {error}") \
                            from None
                    cell = Cell(task, method, seed, k, path, overrides, runs / task / variant / f"seed{seed}", recipe)
                    if recipe.feature.adapter == "target_only" and recipe.data.target_labels_per_class == 0:
                        skipped.append(cell.name)
                        continue
                    cells.append(cell)
    return cells, skipped


def pixel_signature(recipe: Recipe) -> str | None:
    """What the pixel stage's result depends on, as a comparable string; None without a pixel stage.

    The pixel section, the data, the seed, the classifier (the pixel stage's semantic and oracle
    classifiers use it) and where and how precisely it runs. Not the number of labeled target
    images: CycleGAN learns from the images and never reads target labels, so the cells of all k
    share one translator. The train section's optimisation keys matter only to a
    semantic-consistency classifier.
    """
    if recipe.pixel is None:
        return None
    resolved = recipe.to_dict()
    train = resolved["train"]
    data = {key: value for key, value in resolved["data"].items() if key != "target_labels_per_class"}
    depends = {"pixel": resolved["pixel"], "data": data, "seed": recipe.seed,
               "classifier": resolved["classifier"], "device": train["device"], "precision": train["precision"]}
    if getattr(recipe.pixel.options, "semantic_weight", 0) > 0:
        depends["train"] = {k: v for k, v in train.items() if k not in ("iterations", "log_every", "eval_batch_size")}
    return json.dumps(depends, sort_keys=True)


def share_translators(cells: list[Cell]) -> None:
    """Give every group of cells with the same pixel signature one owner; the others reuse its translator.

    The owner is the cell likely to finish first, so that the others can start soon: a plain
    source_only feature stage (the pixel-only method) with the fewest iterations, else the first.
    """
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        signature = pixel_signature(cell.recipe)
        if signature is not None:
            groups.setdefault(signature, []).append(cell)
    for group in groups.values():
        owner = min(group, key=lambda c: (c.recipe.feature.adapter != "source_only", c.recipe.train.iterations))
        for cell in group:
            cell.owner = None if cell is owner else owner


# ----------------------------------------------------------------------------------------------
# Running cells, each in its own process


@dataclass
class Outcome:
    status: str  # done | failed | blocked | interrupted | not run
    error: str | None = None


def child_environment(jobs: int) -> dict:
    """The environment of a cell process: CPU threads split between the jobs unless the user set them."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


LAUNCHER_ENV = "DA_TOOLKIT_LAUNCHER_PID"  # set in a cell's environment: the compare process it must die with
LAUNCHER_POLL_S = 1.0
LAUNCHER_GRACE_S = 30.0  # after its launcher died, the time a cell has to save a checkpoint before SIGKILL
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def launch_cell(cell: Cell, env: dict, argv: list[str] | None = None) -> subprocess.Popen:
    """Start `da-toolkit run` for `cell` (or `argv`) in a process of its own, its output appended to cell.log.

    The process gets a session of its own, so a Ctrl-C at the terminal reaches it only through
    run_cells, once. Its environment names this process as its launcher: the cell entry point
    (``python -m da_toolkit.benchmark``) calls die_with_launcher, so the cell stops when compare
    dies, even by SIGKILL.
    """
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    argv = argv or [sys.executable, "-m", "da_toolkit.benchmark", *cell.arguments()]
    with open(cell.log_path, "a") as log:
        log.write(f"=== {datetime.now().isoformat(timespec='seconds')} {cell.command_line()}\n")
        log.flush()
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**env, LAUNCHER_ENV: str(os.getpid())},
                                start_new_session=True)


def die_with_launcher(poll_s: float = LAUNCHER_POLL_S, grace_s: float = LAUNCHER_GRACE_S) -> None:
    """In a cell process: stop when the compare process that launched it dies, however it dies.

    On Linux the kernel sends the cell SIGINT when its parent dies (prctl PR_SET_PDEATHSIG); the
    run then saves a checkpoint after its current step and exits, like after a Ctrl-C. Everywhere
    a daemon thread also watches the parent: once it is gone, the thread sends SIGINT itself
    where the kernel could not, and SIGKILL after `grace_s` if the cell is still alive. A process
    not started by launch_cell (no DA_TOOLKIT_LAUNCHER_PID) is left alone.
    """
    launcher = os.environ.pop(LAUNCHER_ENV, None)
    if not (launcher and launcher.isdigit()):
        return
    launcher = int(launcher)
    kernel_signals = _set_parent_death_signal(signal.SIGINT)
    if os.getppid() != launcher:  # the launcher died before the signal was armed
        os._exit(130)
    threading.Thread(target=_watch_launcher, args=(launcher, kernel_signals, poll_s, grace_s), daemon=True,
                     name="watch-launcher").start()


def _set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send `signum` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_launcher(launcher: int, kernel_signals: bool, poll_s: float, grace_s: float) -> None:
    while os.getppid() == launcher:
        time.sleep(poll_s)
    if not kernel_signals:
        os.kill(os.getpid(), signal.SIGINT)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


def cell_main(arguments: list[str]) -> None:
    """The entry point of a cell process: `da-toolkit <arguments>` bound to the life of its launcher."""
    from da_toolkit.cli import main

    die_with_launcher()
    main(arguments, prog_name="da-toolkit")


def last_error_line(log_path: Path) -> str:
    """The last non-empty line of the cell log's latest attempt (the error a failed run printed)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    attempt = text.rsplit("\n=== ", 1)[-1].splitlines()[1:]
    lines = [line.strip() for line in attempt if line.strip()]
    return lines[-1] if lines else "no output (see the cell log)"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM both stop a benchmark cleanly, even when it was started in the background
    (where the shell makes it ignore SIGINT), so `kill PID` and Ctrl-C behave the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_cells(cells: list[Cell], jobs: int, outcomes: dict[Cell, Outcome], launch=launch_cell,
              env: dict | None = None) -> None:
    """Run the unfinished cells, `jobs` at a time; a cell sharing a translator waits for its owner.

    Fills `outcomes` with every cell's outcome as it becomes known (finished cells are skipped;
    a run directory started with another recipe is a failure). Ctrl-C (or SIGTERM) sends SIGINT
    to the running cells (each saves a checkpoint and exits), waits for them and raises Interrupted.
    """
    from da_toolkit.training.loop import Interrupted

    env = env if env is not None else child_environment(jobs)
    for cell in cells:
        changed = cell.changed_keys()
        if changed:
            outcomes[cell] = Outcome("failed", f"{cell.run_dir} holds a run of a different recipe (differs in: "
                                               f"{', '.join(changed)}); delete it or pass -o DIR for a new benchmark")
        elif cell.finished:
            outcomes[cell] = Outcome("done")
    owners = {cell.owner for cell in cells if cell.owner is not None}
    pending = sorted((c for c in cells if c not in outcomes), key=lambda c: (c not in owners, cells.index(c)))
    running: dict[Cell, subprocess.Popen] = {}
    bar = tqdm(total=len(cells), initial=len(outcomes), unit="cell",
               desc="cells", smoothing=0, dynamic_ncols=True, file=sys.stderr)

    def finish(cell: Cell, outcome: Outcome) -> None:
        outcomes[cell] = outcome
        bar.update(1)
        if outcome.status != "done":
            tqdm.write(f"{outcome.status}: {cell.name}: {outcome.error}", file=sys.stderr)

    def show() -> None:
        failed = sum(o.status in ("failed", "blocked") for o in outcomes.values())
        text = f"done {sum(o.status == 'done' for o in outcomes.values())}, running {len(running)}, failed {failed}"
        if text != bar.postfix:  # redraw on change only: a log file gets one line per change, not per poll
            bar.set_postfix_str(text)

    with stop_signals():
        try:
            while pending or running:
                for cell, process in list(running.items()):
                    if process.poll() is not None:
                        del running[cell]
                        finish(cell, Outcome("done") if process.returncode == 0 and cell.finished
                               else Outcome("failed", f"{last_error_line(cell.log_path)} (log: {cell.log_path})"))
                for cell in list(pending):
                    owner = outcomes.get(cell.owner) if cell.owner is not None else None
                    if owner is not None and owner.status != "done":
                        pending.remove(cell)
                        finish(cell, Outcome("blocked", f"not run: {cell.owner.name}, whose translator it shares, "
                                                        f"did not finish"))
                for cell in [c for c in pending if c.owner is None or c.owner.finished][:jobs - len(running)]:
                    pending.remove(cell)
                    running[cell] = launch(cell, env)
                show()
                time.sleep(SCHEDULER_POLL_S)
        except KeyboardInterrupt:
            bar.close()
            stopped = _stop(running)
            for cell in stopped:
                outcomes[cell] = Outcome("interrupted", "stopped by Ctrl-C after saving a checkpoint")
            for cell in pending:
                outcomes[cell] = Outcome("not run", "stopped by Ctrl-C before it started")
            raise Interrupted(f"{len(stopped)} running cell(s) saved a checkpoint and stopped; run the same command "
                              f"again to continue (finished cells are skipped, interrupted ones resumed)") from None
    bar.close()


def _stop(running: dict[Cell, subprocess.Popen]) -> list[Cell]:
    """SIGINT to every running cell (train_loop checkpoints and exits), then wait; a second Ctrl-C kills them."""
    tqdm.write(f"Ctrl-C: stopping {len(running)} running cell(s) after their current step "
               f"(Ctrl-C again to kill them)", file=sys.stderr)
    for process in running.values():
        process.send_signal(signal.SIGINT)
    try:
        for process in running.values():
            process.wait()
    except KeyboardInterrupt:
        for process in running.values():
            process.kill()
            process.wait()
    return list(running)


# ----------------------------------------------------------------------------------------------
# Published reference numbers


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


ENTRY_KEYS = ("task", "method", "source", "accuracy", "reported_as", "match")
MATCHES = ("same", "closest", "approximate")


def load_published(path: Path) -> Published:
    raw = _read_mapping(path, "published numbers")
    _check_keys(raw, ("note", "sources", "results"), f"{path}: ")
    sources = raw.get("sources") or {}
    for source, body in sources.items():
        if not isinstance(body, dict) or not {"column", "citation"} <= set(body):
            raise UserError(f"{path}: sources.{source}: needs 'column' (a short heading) and 'citation'")
    numbers = {}
    for index, entry in enumerate(raw.get("results") or []):
        where = f"{path}: results[{index}]."
        if not isinstance(entry, dict):
            raise UserError(f"{where[:-1]}: expected a mapping with {', '.join(ENTRY_KEYS)}")
        _check_keys(entry, ENTRY_KEYS, where)
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


# ----------------------------------------------------------------------------------------------
# Results


def cell_rows(cells: list[Cell], outcomes: dict[Cell, Outcome]) -> list[dict]:
    """One row per cell: its key, status and what its metrics.json says."""
    rows = []
    for cell in cells:
        outcome = outcomes.get(cell, Outcome("not run"))
        metrics = json.loads((cell.run_dir / "metrics.json").read_text()) if outcome.status == "done" else {}
        rows.append({"cell": cell.name, "task": cell.task, "method": cell.method, "seed": cell.seed, "k": cell.k,
                     "status": outcome.status, "target_accuracy": metrics.get("target_accuracy"),
                     "wall_time_s": metrics.get("wall_time_s"), "hardware": metrics.get("hardware"),
                     "selection": metrics.get("selection"), "collapsed": metrics.get("collapse", {}).get("collapsed"),
                     "error": outcome.error, "run_dir": str(cell.run_dir),
                     "translator_from": str(cell.owner.run_dir) if cell.owner else None,
                     "command": cell.command_line()})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (task, method, k): target accuracy in %, mean and sample std (ddof 1) over the finished seeds, and
    how many of those seeds collapsed (metrics.json's collapse alarm)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["k"]), []).append(row)
    summary = []
    for (task, method, k), members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        accuracies = [100 * r["target_accuracy"] for r in done]
        times = [r["wall_time_s"] for r in done]
        summary.append({
            "task": task, "method": method, "k": k, "seeds": len(members), "n": len(done),
            "mean": round(statistics.fmean(accuracies), 2) if accuracies else None,
            "std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
            "wall_time_s": round(statistics.fmean(times), 1) if times else None,
            "collapsed": sum(bool(r["collapsed"]) for r in done),
            "shared_translator": any(r["translator_from"] for r in members)})
    return summary


def _numbers(published: Published | None, entry: dict) -> list[PublishedNumber | None]:
    """The published numbers of a summary entry, one per source column (none on the k axis)."""
    if published is None:
        return []
    return [published.get(entry["task"], entry["method"], s) if entry["k"] is None else None
            for s in published.columns]


def _blank(value) -> str:
    return "" if value is None else str(value)


def write_csv(path: Path, summary: list[dict], published: Published | None) -> None:
    """The summary table; published columns hold the plain numbers (results.md marks approximate matches)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "method", "k", "n_seeds", "mean_accuracy_pct", "std_accuracy_pct", "mean_wall_time_s",
                     "n_collapsed", *(f"published_{s}" for s in (published.columns if published else []))])
    for e in summary:
        writer.writerow([e["task"], e["method"], _blank(e["k"]), e["n"], _blank(e["mean"]), _blank(e["std"]),
                         _blank(e["wall_time_s"]), e["collapsed"],
                         *(_blank(n and n.accuracy) for n in _numbers(published, e))])
    write_text_atomic(path, buffer.getvalue())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(benchmark: Benchmark, profile: str | None, command: str, rows: list[dict], summary: list[dict],
             skipped: list[str], published: Published | None, bench_dir: Path, plots: list[str]) -> str:
    with_k = benchmark.label_counts is not None
    done = [r for r in rows if r["status"] == "done"]
    lines = [f"# Benchmark `{benchmark.name}`" + (f", profile `{profile}`" if profile else ""), "",
             "Target-domain test accuracy in %: mean ± sample standard deviation over the finished seeds "
             "(n = finished / planned seeds); wall time: mean per cell."]
    if published:
        lines.append("Published numbers in the right-hand columns (* closest match to our method, ≈ approximate "
                     "match; see below) come from other backbones, budgets and protocols: context, not a "
                     "like-for-like comparison.")
    lines.append("")
    header = ["task", "method", *(["k"] if with_k else []), "ours (%)", "n",
              *(published.columns.values() if published else []), "wall time / cell (s)"]
    lines += _table(header, [
        [e["task"], e["method"] + (" ↻" if e["shared_translator"] else ""), *([str(e["k"])] if with_k else []),
         "–" if e["mean"] is None else f"{e['mean']:.2f}" + ("" if e["std"] is None else f" ± {e['std']:.2f}")
         + (f" ⚠{e['collapsed']}" if e["collapsed"] else ""),
         f"{e['n']}/{e['seeds']}", *(published_text(n) for n in _numbers(published, e)),
         "–" if e["wall_time_s"] is None else f"{e['wall_time_s']:.0f}"] for e in summary])
    lines += ["", *(f"![{name}]({name})" for name in plots), ""]

    chosen = benchmark.profiles[profile] if profile else Profile()
    hardware = sorted({r["hardware"] for r in done if r["hardware"]})
    selection = sorted({r["selection"] for r in done if r["selection"]})
    lines += ["## Setup", "",
              f"* Date: {datetime.now().isoformat(timespec='minutes')}",
              f"* Command: `{command}` (every cell's own `da-toolkit run` command is in results.json)",
              f"* Hardware: {'; '.join(hardware) or 'unknown (no finished cell)'}",
              f"* Wall time of the finished cells, summed: {sum(r['wall_time_s'] or 0 for r in done):.0f} s",
              f"* Model selection: {'; '.join(selection) or '–'}",
              f"* Overrides of every cell: `{' '.join(benchmark.overrides + chosen.overrides) or '(none)'}`"]
    for method in benchmark.methods:
        own = benchmark.method_overrides.get(method, []) + chosen.method_overrides.get(method, [])
        if own or method in benchmark.method_recipes:
            start = f"recipe of {benchmark.method_recipes[method]}, " if method in benchmark.method_recipes else ""
            lines.append(f"  * {method}: {start}`{' '.join(own)}`")
    if any(e["collapsed"] for e in summary):
        lines.append("* ⚠n: n of the finished seeds collapsed: the classifier put most target images in one class "
                     "(the collapse alarm in the cell's metrics.json, no target label used); their accuracy is "
                     "in the mean, but they are failed runs, not the method's result")
    lines += ["* ↻: cells of this method reused the translator (CycleGAN checkpoints and translated source) of the "
              "cell of the same task and seed with the same pixel stage (`pixel_from`); their wall time excludes "
              "the translator's training.",
              f"* TensorBoard, every cell under one log root: `tensorboard --logdir {bench_dir / 'runs'}`"]
    if skipped:
        lines.append(f"* Not applicable, not run: {', '.join(skipped)} (target_only trains on the k labeled target "
                     f"images per class alone, so it needs k ≥ 1)")
    if published:
        lines += ["", "## Published numbers", "", published.note, ""]
        lines += [f"* **{heading}**: {published.citations[s]}" for s, heading in published.columns.items()]
        mapping = sorted({(m, published.columns[s], n.reported_as, n.match)
                          for (_, m, s), n in published.numbers.items() if m in benchmark.methods})
        lines += [f"* {m} ↔ {heading}: {reported} ({match} match)" for m, heading, reported, match in mapping]
    lines += ["", "## Cells", ""]
    lines += _table(["cell", "status", "target acc. (%)", "wall time (s)", "hardware"], [
        [r["cell"] + (" ↻" if r["translator_from"] else ""), r["status"] + (" ⚠ collapsed" if r["collapsed"] else ""),
         "–" if r["target_accuracy"] is None else f"{100 * r['target_accuracy']:.2f}",
         "–" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}", r["hardware"] or "–"] for r in rows])
    unfinished = [r for r in rows if r["status"] != "done"]
    if unfinished:
        lines += ["", "## Not finished", "", *(f"* {r['cell']}: {r['status']}: {r['error']}" for r in unfinished)]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, summary: list[dict], published: Published | None) -> None:
    """Grouped bars per task (one per method, std as error bars); the first published number as a black tick."""
    import numpy as np

    plt = _pyplot()
    tasks = list(dict.fromkeys(e["task"] for e in summary))
    methods = list(dict.fromkeys(e["method"] for e in summary))
    by_key = {(e["task"], e["method"]): e for e in summary}
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.45 * len(tasks) * len(methods) + 2), 4.5))
    published_label = "published (first column that has it)"
    for index, method in enumerate(methods):
        offsets = np.arange(len(tasks)) + (index - (len(methods) - 1) / 2) * width
        entries = [by_key.get((task, method)) for task in tasks]
        means = [e["mean"] if e and e["mean"] is not None else np.nan for e in entries]
        stds = [e["std"] if e and e["std"] is not None else 0 for e in entries]
        axes.bar(offsets, means, width, yerr=stds, capsize=2, label=method)
        for offset, entry in zip(offsets, entries):
            number = next((n for n in _numbers(published, entry) if n), None) if entry else None
            if number:
                axes.hlines(number.accuracy, offset - width / 2, offset + width / 2, colors="black", linewidth=2,
                            label=published_label)
                published_label = None
    axes.set_xticks(np.arange(len(tasks)), tasks)
    axes.set_ylabel("target accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title("target accuracy, mean ± std over seeds")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def learning_curve(path: Path, summary: list[dict], methods: list[str]) -> None:
    """Target accuracy vs k labeled target images per class: one panel per task, one line per method."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(e["task"] for e in summary))
    label_counts = sorted({e["k"] for e in summary})
    figure, panels = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axes, task in zip(panels[0], tasks):
        for method in methods:
            points = sorted((e["k"], e["mean"], e["std"] or 0) for e in summary
                            if e["task"] == task and e["method"] == method and e["mean"] is not None)
            if points:
                ks, means, stds = zip(*points)
                axes.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=method)
        axes.set_xscale("symlog", linthresh=1)
        axes.set_xticks(label_counts, [str(k) for k in label_counts])
        axes.set_xlabel("labeled target images per class (k)")
        axes.set_ylabel("target accuracy (%)")
        axes.set_title(task)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(bench_dir: Path, benchmark: Benchmark, profile: str | None, command: str, rows: list[dict],
                  skipped: list[str]) -> list[dict]:
    """results.json/csv/md and the plot (bar chart, or learning curve with a k axis); returns the summary."""
    published = load_published(benchmark.published) if benchmark.published else None
    summary = summarize(rows)
    plots = []
    if any(e["mean"] is not None for e in summary):
        plot = "learning_curve.png" if benchmark.label_counts is not None else "results.png"
        if benchmark.label_counts is not None:
            learning_curve(bench_dir / plot, summary, benchmark.methods)
        else:
            bar_chart(bench_dir / plot, summary, published)
        plots.append(plot)
    write_json_atomic(bench_dir / "results.json", {"benchmark": benchmark.name, "profile": profile,
                                                   "command": command, "cells": rows, "summary": summary,
                                                   "not_applicable": skipped})
    write_csv(bench_dir / "results.csv", summary, published)
    write_text_atomic(bench_dir / "results.md", markdown(benchmark, profile, command, rows, summary, skipped,
                                                         published, bench_dir, plots))
    return summary


# ----------------------------------------------------------------------------------------------
# The command


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


if __name__ == "__main__":
    cell_main(sys.argv[1:])

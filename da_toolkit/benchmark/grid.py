"""The grid: one cell (task, method, seed[, k]) per run directory, and translator sharing between cells.

Pixel once, features many: cells whose pixel stage would be trained identically (same task, seed,
pixel section, data, classifier and device; any k) share one translator. The first of them (a cell
with the plain source_only feature stage when there is one) trains it; the others run with
``pixel_from=<its run dir>`` after it finished, restoring its pixel checkpoints and reading its
translated-source cache. A translator that serves several tasks (its adapter's `translator_data`
leaves the task's datasets out) is shared by the cells of all of them: in each other task, the first
of its cells trains that task's own pixel stages beside the translator and translates its source,
and the task's other cells start after it and read them. Those first cells run one after another, so
that no two cells write the translator's run directory at once (two tasks may share a source, whose
stages they would both write).

A cell can also read another cell's run directory: an override value `{cell:METHOD}` (e.g. SHOT's
``feature.source_checkpoint={cell:source_only}``) stands for the run directory of that method's cell
of the same task, seed and k, and the cell starts once that one finished.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from da_toolkit.adapters.pixel import pixel_adapter
from da_toolkit.benchmark.spec import Benchmark
from da_toolkit.benchmark.sweep import yaml_value
from da_toolkit.errors import UserError
from da_toolkit.recipe import Recipe, load_recipe, normalised_recipe
from da_toolkit.rundir import RunDir
from da_toolkit.training.precision import requested_precision


@dataclass(eq=False)
class Cell:
    task: str
    method: str
    seed: int
    k: int | None  # labeled target images per class, on the scarce-label axis
    recipe_path: Path
    base_overrides: list[str]  # benchmark/profile/method overrides, the sweep configuration's, k and seed
    run_dir: Path
    recipe: Recipe
    owner: Cell | None = None  # the cell whose translator this one reuses (pixel_from)
    # a cell sharing the owner's translator across tasks that must finish before this one starts: for a
    # task's first cell, the previous task's first cell; for the task's other cells, its first cell (which
    # trained the task's own pixel stages and translated its source, read by this one)
    after: Cell | None = None
    inputs: list[Cell] = field(default_factory=list)  # the cells whose run directories a `{cell:METHOD}` override names
    configuration: str = ""  # the method, or method@i for configuration i of its sweep (sweep.py)
    hyper_parameters: dict = field(default_factory=dict)  # the sweep configuration's values, by recipe key

    def __post_init__(self):
        self.configuration = self.configuration or self.method

    @property
    def prerequisites(self) -> list[Cell]:
        """The cells that must finish before this one starts."""
        return [*(cell for cell in (self.owner, self.after) if cell is not None), *self.inputs]

    @property
    def name(self) -> str:
        return f"{self.task}/{variant_name(self.configuration, self.k)}/seed{self.seed}"

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
        return RunDir(self.run_dir).finished

    @property
    def started(self) -> bool:
        return RunDir(self.run_dir).started

    def changed_keys(self) -> list[str]:
        """Top-level recipe keys in which a started run directory differs from this cell's recipe. A key naming
        another cell's run directory (pixel_from, SHOT's source checkpoint) is compared by the cell it names, so
        that a benchmark directory moved or copied from another machine (a cluster, a lent GPU) keeps its cells."""
        if not self.started:
            return []
        expected, runs = self.expected_recipe, self.run_dir.parents[2]
        return RunDir(self.run_dir).recipe_changes(
            expected, lambda saved: relocated(normalised_recipe(saved), expected, runs))

    def arguments(self) -> list[str]:
        """The `da-toolkit` arguments that run (or, when started, resume) this cell."""
        resume = ["--resume"] if self.started else []
        return ["run", str(self.recipe_path), *self.overrides, "-o", str(self.run_dir), "-q", *resume]

    def command_line(self) -> str:
        return shlex.join(["da-toolkit", *self.arguments()])


def relocated(saved, expected, runs: Path):
    """`saved` (a recipe, or a value of one) with each path that names a cell's run directory as `expected` does, but
    under another runs/ folder (the benchmark directory where the run was made), replaced by the `expected` path."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        return {key: relocated(value, expected[key], runs) if key in expected else value for key, value in saved.items()}
    if isinstance(saved, str) and isinstance(expected, str) and saved != expected:
        try:
            below = Path(expected).relative_to(runs).parts
        except ValueError:
            return saved
        if Path(saved).parts[-len(below) - 1:] == (runs.name, *below):
            return expected
    return saved


def variant_name(configuration: str, k: int | None) -> str:
    """The cell's folder below its task: the configuration (method or method@i), with _k<k> on the k axis."""
    return configuration if k is None else f"{configuration}_k{k}"


def expand(benchmark: Benchmark, profile: str | None, bench_dir: Path) -> tuple[list[Cell], list[str]]:
    """The grid's cells in order (task, k, method, configuration, seed), and the names of cells skipped as not
    applicable.

    Every cell's recipe is loaded now, so a missing recipe file or a bad override stops the
    benchmark before anything runs; so is every sweep's space (check_space). A target_only cell at
    k = 0 has no labeled target image to train on and is skipped.
    """
    missing = sorted({str(benchmark.recipe_path(t, m)) for t in benchmark.tasks for m in benchmark.methods
                      if not benchmark.recipe_path(t, m).is_file()})
    if missing:
        raise UserError(f"{benchmark.path}: recipe files not found: {', '.join(missing)} (a method's recipe is "
                        f"<recipe_dir>/<task>_<method>.yaml; recipe_dir is {benchmark.recipe_dir}; "
                        f"method_recipes maps a method onto another method's recipe)")
    cells, skipped, reads = [], [], {}
    runs = bench_dir.resolve() / "runs"

    def run_dir(task: str, configuration: str, seed: int, k: int | None) -> Path:
        return runs / task / variant_name(configuration, k) / f"seed{seed}"

    for task in benchmark.tasks:
        for k in benchmark.label_counts or [None]:
            for method in benchmark.methods:
                for configuration, hyper_parameters, swept in benchmark.variants(method):
                    for seed in benchmark.seeds:
                        overrides = [*benchmark.cell_overrides(method, profile), *swept]
                        overrides += [f"data.target_labels_per_class={k}"] if k is not None else []
                        overrides += [f"seed={seed}"]
                        path = benchmark.recipe_path(task, method)
                        name = f"{task}/{variant_name(configuration, k)}/seed{seed}"
                        read = sorted({ref for override in overrides for ref in CELL_REFERENCE.findall(override)})
                        unknown = [ref for ref in read if ref not in benchmark.methods or ref == method]
                        if unknown:
                            raise UserError(f"{benchmark.path}: cell {name}: an override names {{cell:{unknown[0]}}}, "
                                            f"which must be another of the benchmark's methods "
                                            f"({', '.join(benchmark.methods)})")
                        overrides = [CELL_REFERENCE.sub(lambda m: str(run_dir(task, m.group(1), seed, k)), override)
                                     for override in overrides]
                        try:
                            recipe = load_recipe(path, overrides)
                        except UserError as error:
                            raise UserError(f"{benchmark.path}: cell {name} ({path}): {error}") from None
                        if method in benchmark.sweeps and configuration == method and seed == benchmark.seeds[0]:
                            check_space(benchmark, method, path, overrides)
                        cell = Cell(task, method, seed, k, path, overrides, run_dir(task, configuration, seed, k),
                                    recipe, configuration=configuration, hyper_parameters=hyper_parameters)
                        if recipe.feature.adapter == "target_only" and recipe.data.target_labels_per_class == 0:
                            skipped.append(cell.name)
                            continue
                        cells.append(cell)
                        reads[cell] = read
    by_run_dir = {cell.run_dir: cell for cell in cells}
    for cell, read in reads.items():
        for name in read:
            source = by_run_dir.get(run_dir(cell.task, name, cell.seed, cell.k))
            if source is None:
                raise UserError(f"{benchmark.path}: cell {cell.name} reads the {name} cell of its task, seed and k, "
                                f"which the grid does not have (not applicable)")
            cell.inputs.append(source)
    return cells, skipped


def check_space(benchmark: Benchmark, method: str, path: Path, overrides: list[str]) -> None:
    """Every key of `method`'s sweep space against the recipe schema, with each choice and both ends of each
    range, on the recipe `path` with a cell's `overrides`: an unknown key or a value out of bounds stops the
    benchmark before anything runs, even where no sampled configuration happens to reach it."""
    sweep = benchmark.sweeps[method]
    for dimension in sweep.space:
        for value in dimension.ends():
            try:
                load_recipe(path, [*overrides, f"{dimension.key}={yaml_value(value)}"])
            except UserError as error:
                raise UserError(f"{benchmark.path}: sweeps.{method}.space.{dimension.key} "
                                f"({dimension.kind} {list(dimension.values)}, {path}): {error}") from None


CELL_REFERENCE = re.compile(r"\{cell:(\w+)\}")  # an override value naming another method's cell of the same task, seed, k


def pixel_signature(recipe: Recipe) -> str | None:
    """What the pixel stage's result depends on, as a comparable string; None without a pixel stage.

    What the pixel adapter says its translator depends on (`PixelAdapter.translator_keys`: e.g. the
    pixel section but the keys that only say how the feature stage uses the translations, so that a
    method training on translations alone shares the translator of one mixing them with raw source),
    the data as the adapter says (`translator_data`: all of it, or without the task's datasets for a
    translator that serves several tasks), the seed, the classifier (a pixel stage's auxiliary
    classifiers use it) and where and how precisely it runs (train.device and train.precision as the
    recipe says them, amp read as auto: a cell resolves them where it runs, as the other cells of its
    grid do, and the translation cache is keyed by the resolved precision).
    Not the number of labeled target images: a translator learns from the images and never reads
    target labels, so the cells of all k share one translator.
    """
    adapter = pixel_adapter(recipe)
    if adapter is None:
        return None
    resolved = recipe.to_dict()
    train = resolved["train"]
    data = {key: value for key, value in resolved["data"].items() if key != "target_labels_per_class"}
    depends = {**adapter.translator_keys(resolved["pixel"], train), "data": adapter.translator_data(data),
               "seed": recipe.seed, "classifier": resolved["classifier"], "device": train["device"],
               "precision": requested_precision(train["precision"])}
    return json.dumps(depends, sort_keys=True)


def share_translators(cells: list[Cell]) -> None:
    """Give every group of cells with the same pixel signature one owner; the others reuse its translator.

    The owner is the cell likely to finish first, so that the others can start soon: a plain
    source_only feature stage (the pixel-only method) with the fewest iterations, else the first. When
    the group spans several tasks (a translator that serves them all), each task's first cell by the
    same rule waits for the previous task's, and the task's other cells for it (`Cell.after`).
    """
    def first(group: list[Cell]) -> Cell:
        return min(group, key=lambda c: (c.recipe.feature.adapter != "source_only" or c.recipe.refine is not None,
                                         c.recipe.train.iterations))

    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        signature = pixel_signature(cell.recipe)
        if signature is not None:
            groups.setdefault(signature, []).append(cell)
    for group in groups.values():
        owner = first(group)
        tasks = list(dict.fromkeys([owner.task, *(c.task for c in group)]))  # the owner's first, then the grid's order
        leads = {task: owner if task == owner.task else first([c for c in group if c.task == task]) for task in tasks}
        previous = dict(zip(tasks[1:], tasks))
        for cell in group:
            cell.owner = None if cell is owner else owner
            lead = leads[cell.task]
            after = leads.get(previous.get(cell.task)) if cell is lead else lead
            cell.after = None if after is owner else after

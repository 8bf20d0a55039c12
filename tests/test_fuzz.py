"""Every input either runs or is refused in one line (issue 29): a fuzz generated from the schema.

The strategies walk the `Recipe` dataclass tree and the Options dataclass of every registered
adapter (a new adapter is fuzzed without a line here): for each field, values in its declared
`Range` (recipe.py), on its boundaries, outside it, of the wrong type, and groups of fields of
one section drawn together (their cross-field checks). The property, through the CLI in this
process: exit 0 with a finite metrics.json, or exit 2 with one `error:` line and no run
directory; never a traceback. The files of finished run directories are fuzzed the same way
(truncated, edited, swapped between two runs) under evaluate, show, report, translate and
run --resume, and so are the CLI's arguments.

The fast suite runs a small derandomized sample; `make fuzz` runs the long one (marked slow and
fuzz; DA_TOOLKIT_FUZZ_SCALE multiplies its example counts).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from da_toolkit.adapters import ADAPTERS
from da_toolkit.cli import main, one_line
from da_toolkit.errors import UserError
from da_toolkit.bounds import Range
from da_toolkit.recipe import Recipe, load_recipe
from tests.conftest import toy_recipe_dict

SCALE = float(os.environ.get("DA_TOOLKIT_FUZZ_SCALE", "1"))
FAST = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def long(examples: int):
    return settings(max_examples=int(examples * SCALE), derandomize=False, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------------ the schema


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One recipe key: its dotted name, type (Annotated stripped), declared ranges and whether null is allowed."""

    key: str
    kind: Any
    ranges: tuple[Range, ...]
    nullable: bool


def leaves(cls, prefix: str) -> list[Leaf]:
    """The keys of dataclass `cls` under `prefix`, nested dataclasses walked."""
    out = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "source_path" or (cls is Recipe and f.name in ("pixel", "feature", "refine")):
            continue
        hint, nullable = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            nullable = True
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        ranges = ()
        if typing.get_origin(hint) is Annotated:
            hint, *marks = typing.get_args(hint)
            ranges = tuple(m for m in marks if isinstance(m, Range))
        if dataclasses.is_dataclass(hint):
            out += leaves(hint, f"{prefix}{f.name}.")
        else:
            out.append(Leaf(f"{prefix}{f.name}", hint, ranges, nullable))
    return out


RECIPE_LEAVES = leaves(Recipe, "")
ADAPTER_LEAVES = {name: leaves(ADAPTERS.get(name).Options, f"{ADAPTERS.get(name).kind}.") for name in ADAPTERS.names()}
PIXEL = [name for name in ADAPTERS.names() if ADAPTERS.get(name).kind == "pixel"]
FEATURE = [name for name in ADAPTERS.names() if ADAPTERS.get(name).kind == "feature"]
SECTIONS = ["data", "data.source", "data.target", "classifier", "train", "train.augment", "selection", "pixel",
            "feature", "refine"]


def refine_leaves(name: str) -> list[Leaf]:
    """The keys of feature adapter `name` as a refine stage's."""
    return [dataclasses.replace(leaf, key="refine." + leaf.key.removeprefix("feature.")) for leaf in ADAPTER_LEAVES[name]]


def test_the_schema_walk_sees_every_adapter_and_its_bounds():
    keys = {leaf.key: leaf for leaf in RECIPE_LEAVES}
    assert keys["seed"].ranges[0] == Range(0, 2**32 - 1, why=keys["seed"].ranges[0].why)
    assert keys["data.source.limit"].nullable and keys["data.source.limit"].ranges[0].low == 1
    assert set(PIXEL) >= {"cyclegan"} and set(FEATURE) >= {"source_only", "dann", "adda", "mcc"}
    assert any(leaf.ranges for leaf in ADAPTER_LEAVES["dann"])


# ----------------------------------------------------------------------------------- the values

BAD_TEXT = st.sampled_from(["abc", "", "[1, 2", "{a: 1}", "null", "~", "-", "1e400", ".nan", ".inf", "-.inf", "0x10",
                            "'", "\"", "yes", "1_000", "[]", "{}", "key=value", "\t", "é", "1 2"])


def number_text(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def in_range(leaf: Leaf, small: bool = False):
    """Values `leaf` allows (`small`: a budget a 3-iteration toy run affords)."""
    kind = leaf.kind
    if typing.get_origin(kind) is Literal:
        return st.sampled_from(typing.get_args(kind))
    if kind is bool:
        return st.booleans()
    if typing.get_origin(kind) is list:
        item = Leaf(leaf.key, typing.get_args(kind)[0], (), False)
        inner = typing.get_args(kind)[0]
        if typing.get_origin(inner) is Annotated:
            inner, *marks = typing.get_args(inner)
            item = Leaf(leaf.key, inner, tuple(m for m in marks if isinstance(m, Range)), False)
        return st.lists(in_range(item, small=True), max_size=3)
    if kind in (int, float):
        low = max((r.low + (1 if kind is int and r.low_open else 0) for r in leaf.ranges if r.low is not None),
                  default=None)
        high = min((r.high - (1 if kind is int and r.high_open else 0) for r in leaf.ranges if r.high is not None),
                   default=None)
        if kind is int:
            low = -1000 if low is None else int(low)
            high = (low + (3 if small else 1000)) if high is None else int(min(high, low + 3) if small else high)
            return st.integers(low, high)
        low = -1e3 if low is None else low
        high = (low + 10) if high is None else high
        exclude = any(r.low_open for r in leaf.ranges), any(r.high_open for r in leaf.ranges)
        return st.floats(low, high, exclude_min=exclude[0], exclude_max=exclude[1], allow_nan=False)
    if kind is str:
        return st.sampled_from(STRINGS.get(leaf.key.split(".")[-1], ["x"]))
    if dataclasses.is_dataclass(kind):  # an item of a list of sections (data.extra_sources: domains)
        return st.fixed_dictionaries({"name": st.sampled_from(STRINGS["name"])})
    raise AssertionError(f"no strategy for {leaf.key}: {kind}")


STRINGS = {"name": ["toy_source", "toy_target", "imagefolder", "imagelist", "syndigits", "mnsit"],
           "backbone": ["lenet", "dtn", "lenett"], "device": ["cpu", "auto", "cuda", "cuda:7", "tpu"],
           "root": ["/nonexistent", "."], "list": ["/nonexistent.txt"], "checkpoint": ["/nonexistent.pth"],
           "pixel_from": ["/nonexistent_run"], "output_dir": ["runs"]}


def boundary(leaf: Leaf):
    """The values at and just beyond each declared bound."""
    values = []
    for r in leaf.ranges:
        for edge in (r.low, r.high):
            if edge is None:
                continue
            if leaf.kind is int:
                values += [int(edge) - 1, int(edge), int(edge) + 1]
            else:
                values += [edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)]
    return st.sampled_from(values) if values else in_range(leaf)


def allowed_boundary(leaf: Leaf):
    return boundary(leaf).filter(lambda value: all(r.admits(value) for r in leaf.ranges)) if leaf.ranges else \
        in_range(leaf, small=True)


def out_of_range(leaf: Leaf):
    if leaf.kind is int:
        return st.sampled_from([-1, -2**63, 2**63 - 1, 2**63, 2**64, 10**30, 0])
    if leaf.kind is float:
        return st.sampled_from([-1.0, -1e-300, 1e308, math.inf, -math.inf, 0.0, 1.0, 2.0])
    return in_range(leaf)


def refused_value(leaf: Leaf):
    """An out-of-range value the schema refuses: not 2**63 - 1 where a range has no upper end (a legal
    `*iterations` that long would make a runnable case run forever; `make fuzz` hung on
    pixel.label_preservation_iterations=9223372036854775807), nor 0 where 0 is allowed."""
    def refused(value) -> bool:
        beyond_64_bits = leaf.kind is int and not -2**63 <= value < 2**63
        return beyond_64_bits or not all(r.admits(value) for r in leaf.ranges)
    return out_of_range(leaf).filter(refused)


def wrong_type():
    return st.one_of(st.sampled_from([True, 2.5, "text", [1], {"a": 1}, None, -3]), st.text(max_size=5))


@functools.cache
def value_text(leaf: Leaf):
    """An override's right-hand side for `leaf`: YAML text of a value of one of the kinds, or raw junk."""
    value = st.one_of(in_range(leaf), boundary(leaf), out_of_range(leaf), wrong_type())
    return st.one_of(value.map(number_text), BAD_TEXT) if leaf.kind is not str else \
        st.one_of(value.map(number_text), BAD_TEXT, st.text(max_size=8))


@st.composite
def override_lists(draw) -> list[str]:
    """Adapters for both stages, then up to 6 keys: any key of the schema, or a section's keys together."""
    feature = draw(st.sampled_from(FEATURE))
    pixel = draw(st.sampled_from([None, *PIXEL]))
    refine = draw(st.sampled_from([None, None, None, *FEATURE]))
    overrides = [f"feature.adapter={feature}"] + ([f"pixel.adapter={pixel}"] if pixel else [])
    overrides += [f"refine.adapter={refine}"] if refine else []
    pool = RECIPE_LEAVES + ADAPTER_LEAVES[feature] + (ADAPTER_LEAVES[pixel] if pixel else [])
    pool += refine_leaves(refine) if refine else []
    section = draw(st.sampled_from(SECTIONS))
    together = [leaf for leaf in pool if leaf.key.rsplit(".", 1)[0] == section]
    chosen = draw(st.lists(st.sampled_from(pool), max_size=3))
    chosen += draw(st.lists(st.sampled_from(together), max_size=3)) if together else []
    overrides += [f"{leaf.key}={draw(value_text(leaf))}" for leaf in chosen]
    if draw(st.integers(0, 9)) == 0:  # a whole section of the wrong type, or a key nobody declared
        overrides.append(draw(st.sampled_from([f"{draw(st.sampled_from(SECTIONS))}=5", "train.iteratons=3",
                                               "data.source=[1]", "feature=abc", "=", "a..b=1", "seed"])))
    return overrides


@st.composite
def runnable_overrides(draw) -> list[str]:
    """Overrides a 3-iteration toy run affords: in range (or on a boundary) for every key drawn, all
    iteration budgets at most 3, toy domains, the CPU; one in four cases adds one out-of-range value."""
    feature = draw(st.sampled_from(FEATURE))
    pixel = draw(st.sampled_from([None, *PIXEL]))
    overrides = [f"feature.adapter={feature}"] + ([f"pixel.adapter={pixel}"] if pixel else [])
    pool = [leaf for leaf in RECIPE_LEAVES + ADAPTER_LEAVES[feature] + (ADAPTER_LEAVES[pixel] if pixel else [])
            if leaf.kind is not str and not leaf.key.startswith(("data.source_test", "data.target_test",
                                                                 "data.extra_sources"))
            and leaf.key.split(".")[-1] not in FIXED]
    for leaf in draw(st.lists(st.sampled_from(pool), max_size=5, unique_by=lambda leaf: leaf.key)):
        name = leaf.key.split(".")[-1]
        if name.endswith("iterations") or name in SMALL_KEYS:
            value = draw(st.integers(0 if name.endswith("iterations") else 1, 3))
        elif name in BOUNDED:
            value = draw(st.integers(*BOUNDED[name]))
        else:
            value = draw(st.one_of(in_range(leaf, small=True), allowed_boundary(leaf)))
        overrides.append(f"{leaf.key}={number_text(value)}")
    if draw(st.integers(0, 3)) == 0:
        leaf = draw(st.sampled_from([leaf for leaf in pool if leaf.ranges]))
        overrides.append(f"{leaf.key}={number_text(draw(refused_value(leaf)))}")
    return overrides


FIXED = {"workers", "storage", "skip_unreadable", "record_target_test"}  # file domains and benchmarks only
SMALL_KEYS = {"ngf", "ndf", "generator_blocks", "every", "log_every", "checkpoint_every"}
BOUNDED = {"image_size": (1, 32), "bottleneck_dim": (1, 64), "batch_size": (1, 1000), "eval_batch_size": (1, 1000),
           "translate_batch_size": (1, 1000), "pool_size": (0, 8), "limit": (1, 400), "samples": (10, 600),
           "target_labels_per_class": (0, 45), "target_label_folds": (0, 4), "image_grid_every": (0, 3),
           "generator_downsamplings": (0, 3), "discriminator_layers": (1, 4), "grl_warmup": (1, 5)}
TOY_TRAIN = {"iterations": 3, "batch_size": 16, "log_every": 1, "checkpoint_every": 2, "workers": 0}


# ------------------------------------------------------------------------------------ the property


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ran_or_refused(result, run_dir: Path | None = None, existed: bool = False) -> str:
    """Exit 0 (with a finite metrics.json when `run_dir` is a run's), or exit 2 with one `error:` line
    (warnings aside) and, for a run, no run directory; never a traceback. Returns "ran" or "refused"."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback
        raise AssertionError("".join(traceback.format_exception(result.exception)) + result.output)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    if result.exit_code == 0:
        if run_dir is not None:
            metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=_no_nan)
            assert 0 <= metrics["target_accuracy"] <= 1
        return "ran"
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    if run_dir is not None and not existed and run_dir.exists():  # only a run that diverged in training keeps its
        assert "diverged" in errors[0] or "became nan" in errors[0] or "became inf" in errors[0], (  # checkpoints
            f"a refused run left {sorted(p.name for p in run_dir.iterdir())}: {errors[0]}")
    if run_dir is not None and run_dir.exists():
        assert not (run_dir / "metrics.json").exists() and not (run_dir / "classifier.pt").exists(), errors[0]
    return "refused"


def _no_nan(text):
    raise AssertionError(f"metrics.json holds {text}")


def check_validation(overrides: list[str], recipe_file: Path) -> None:
    """Validation alone: a Recipe, or a UserError the CLI prints in one line."""
    try:
        load_recipe(recipe_file, overrides)
    except UserError as error:
        line = one_line(str(error))
        assert line.strip() and len(line.splitlines()) == 1, line


@pytest.fixture(scope="module")
def toy_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_recipe_dict(train=TOY_TRAIN)))
    return path


@FAST
@given(overrides=override_lists())
def test_every_override_list_validates_or_is_refused_in_one_line(overrides, toy_recipe):
    check_validation(overrides, toy_recipe)


@pytest.mark.slow
@pytest.mark.fuzz
@long(2500)
@given(overrides=override_lists())
def test_fuzz_override_lists_long(overrides, toy_recipe):
    check_validation(overrides, toy_recipe)


def toy_budget(adapter: str) -> list[str]:
    """Overrides that make any adapter's stages a few iterations of tiny networks."""
    small = {"ngf": 4, "ndf": 4, "generator_blocks": 1, "discriminator_hidden": [8], "batch_size": 4,
             "image_grid_every": 0}
    return [f"{leaf.key}={number_text(2 if leaf.key.endswith('iterations') else small[leaf.key.split('.')[-1]])}"
            for leaf in ADAPTER_LEAVES[adapter]
            if leaf.key.endswith("iterations") or leaf.key.split(".")[-1] in small]


def check_run(overrides: list[str], recipe_file: Path, tmp: Path) -> None:
    stages = [o for o in overrides if o.split("=")[0] in ("feature.adapter", "pixel.adapter")]
    budget = [o for stage in stages for o in toy_budget(stage.split("=")[1])]
    run_dir = tmp / "run"
    assert_ran_or_refused(invoke("run", recipe_file, *stages, *budget, *overrides[len(stages):], "-o", run_dir, "-q"),
                          run_dir)


@settings(FAST, max_examples=4)
@given(overrides=runnable_overrides())
@example(overrides=["feature.adapter=mcc", "train.batch_size=1000", "data.target_labels_per_class=40"])
def test_a_few_fuzzed_runs_run_or_are_refused(overrides, toy_recipe, tmp_path_factory):
    check_run(overrides, toy_recipe, tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
@pytest.mark.fuzz
@long(150)
@given(overrides=runnable_overrides())
def test_fuzz_runs_long(overrides, toy_recipe, tmp_path_factory):
    check_run(overrides, toy_recipe, tmp_path_factory.mktemp("runs"))


# ------------------------------------------------------------------------- run-directory files

COMMANDS = ("evaluate", "show", "report", "translate", "resume", "rescore")
MUTATIONS = ("truncate", "edit", "swap", "empty", "delete")


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> dict:
    """Two finished toy runs (a CycleGAN + source-only run, a DANN run), their recipes, and a folder of images."""
    from PIL import Image

    from tests.conftest import toy_digits

    home = tmp_path_factory.mktemp("finished")
    runs = {}
    for name, stages in (("pixel", ["pixel.adapter=cyclegan"]), ("dann", ["feature.adapter=dann"])):
        recipe = home / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump(toy_recipe_dict(train=TOY_TRAIN, selection={"select": "entropy",
                                                                                      "samples": 20})))
        budget = [o for stage in stages for o in toy_budget(stage.split("=")[1])]
        overrides = [*stages, *budget]
        result = invoke("run", recipe, *overrides, "-o", home / name, "-q")
        assert result.exit_code == 0, result.output
        runs[name] = (home / name, recipe, overrides)
    images = home / "images"
    images.mkdir()
    for index, image in enumerate(toy_digits("test", 0, count=3).images):
        Image.fromarray(image[0].numpy()).save(images / f"{index}.png")
    return {"runs": runs, "images": images}


def run_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and p.name != ".lock" and "tensorboard" not in p.parts and "report" not in p.parts)


@st.composite
def file_cases(draw, runs: dict, commands=COMMANDS) -> dict:
    name = draw(st.sampled_from(sorted(runs)))
    files = run_files(runs[name][0])
    return {"run": name, "file": draw(st.sampled_from(files)), "mutation": draw(st.sampled_from(MUTATIONS)),
            "at": draw(st.floats(0, 1)), "byte": draw(st.integers(0, 255)), "command": draw(st.sampled_from(commands))}


def mutate(path: Path, case: dict, other: Path) -> None:
    data = path.read_bytes()
    at = int(case["at"] * max(len(data) - 1, 0))
    if case["mutation"] == "truncate":
        path.write_bytes(data[:at])
    elif case["mutation"] == "edit":
        path.write_bytes(data[:at] + bytes([case["byte"]]) + data[at + 1:])
    elif case["mutation"] == "swap":  # the other run's file of that name, else another file of this run
        path.write_bytes(other.read_bytes() if other.is_file() else b"")
    elif case["mutation"] == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()


def check_file_case(case: dict, finished: dict, tmp: Path) -> str:
    run_dir, recipe, overrides = finished["runs"][case["run"]]
    other_dir = next(d for n, (d, *_) in finished["runs"].items() if n != case["run"])
    copy = tmp / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock", "tensorboard"))
    if case["command"] == "resume":  # as if interrupted after its last checkpoint
        for done in ("metrics.json", "classifier.pt"):
            (copy / done).unlink(missing_ok=True)
    if (copy / case["file"]).is_file():
        mutate(copy / case["file"], case, other_dir / case["file"])
    command = {
        "evaluate": ["evaluate", copy, "--dataset", "toy_target"],
        "show": ["show", copy],
        "report": ["report", copy, "--sample", "10", "-o", tmp / "report"],
        "translate": ["translate", copy, "--input", finished["images"], "--output", tmp / "translated"],
        "resume": ["run", recipe, *overrides, "-o", copy, "--resume", "-q"],
        "rescore": ["rescore", copy],
    }[case["command"]]
    result = invoke(*command)
    return assert_ran_or_refused(result, copy if case["command"] == "resume" else None, existed=True)


@settings(FAST, max_examples=8)
@given(data=st.data())
def test_edited_run_directory_files_are_read_or_refused_in_one_line(data, finished_runs, tmp_path_factory):
    """`report` (4 s a case) is left to the long fuzz."""
    case = data.draw(file_cases(finished_runs["runs"], tuple(c for c in COMMANDS if c != "report")))
    check_file_case(case, finished_runs, tmp_path_factory.mktemp("case"))


@pytest.mark.slow
@pytest.mark.fuzz
@long(600)
@given(data=st.data())
def test_fuzz_run_directory_files_long(data, finished_runs, tmp_path_factory):
    check_file_case(data.draw(file_cases(finished_runs["runs"])), finished_runs, tmp_path_factory.mktemp("case"))


# ------------------------------------------------------------------------------- CLI arguments

CLI_COMMANDS = ["run", "list", "evaluate", "translate", "report", "show", "compare", "bogus", "--version", "--help"]
CLI_TOKENS = ["{recipe}", "{run}", "{images}", "/nonexistent", "{recipe_as_dir}", "--resume", "--overwrite", "-q",
              "--nproc", "0", "-1", "1", "abc", "", "--dataset", "toy_target", "nope", "--split", "train", "val",
              "--input", "--output", "-o", "--direction", "b2a", "ab", "--batch-size", "--sample", "5", "--baseline",
              "--profile", "--only", "--seeds", "0,a", "--dry-run", "--jobs", "--tolerance", "--root", "--verify",
              "train.iterations=1",
              "seed=-1", "=", "--", "--bogus", "--executor", "slurm", "--slurm-time", "1:2:3:4", "--slurm-gpus"]


@st.composite
def argument_lists(draw) -> list[str]:
    return [draw(st.sampled_from(CLI_COMMANDS)),
            *draw(st.lists(st.one_of(st.sampled_from(CLI_TOKENS), st.text(max_size=6)), max_size=6))]


def check_arguments(arguments: list[str], finished: dict, tmp: Path) -> None:
    run_dir, recipe, _ = finished["runs"]["dann"]
    names = {"{recipe}": recipe, "{run}": run_dir, "{images}": finished["images"], "{recipe_as_dir}": recipe / "x"}
    arguments = [str(names.get(a, a)) for a in arguments]
    cwd = os.getcwd()
    os.chdir(tmp)  # a run that starts writes under runs/ here
    try:
        assert_ran_or_refused(invoke(*arguments))
    finally:
        os.chdir(cwd)


@settings(FAST, max_examples=30)
@given(arguments=argument_lists())
def test_any_command_line_runs_or_is_refused_in_one_line(arguments, finished_runs, tmp_path_factory):
    check_arguments(arguments, finished_runs, tmp_path_factory.mktemp("cli"))


@pytest.mark.slow
@pytest.mark.fuzz
@long(500)
@given(arguments=argument_lists())
def test_fuzz_command_lines_long(arguments, finished_runs, tmp_path_factory):
    check_arguments(arguments, finished_runs, tmp_path_factory.mktemp("cli"))

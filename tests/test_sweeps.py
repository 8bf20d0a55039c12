"""Sweeps in `da-toolkit compare`: sampling, grid enumeration, space errors, cells, and the recommendation
of a method and its configuration (benchmark/sweep.py, grid.py, report.py, recommend.py)."""
from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
import yaml

from da_toolkit import benchmark as bench
from da_toolkit.benchmark import recommend
from da_toolkit.benchmark.sweep import Dimension, Sweep, parse_sweeps, yaml_value
from da_toolkit.errors import UserError
from da_toolkit.recipe import load_recipe
from test_benchmark import BENCHMARKS, benchmark_file, cells_of, fake_launch, toy_recipes  # noqa: F401 (a fixture)

SPACE = {"train.lr": {"log_uniform": [0.001, 0.1]}, "train.batch_size": {"choices": [8, 16, 32]},
         "train.iterations": {"int_uniform": [20, 90]}}


def sweep(space=None, method="source_only", methods=("source_only", "cyclegan"), **sample) -> Sweep:
    rule = sample if sample.get("kind") == "grid" else {"kind": "random", "seed": 0, "count": 6, **sample}
    return parse_sweeps({method: {"sample": rule, "space": space or SPACE}}, list(methods), "")[method]


# ---------------------------------------------------------------------------------------------- sampling


def test_random_configurations_are_drawn_from_the_file_alone():
    first = sweep().configurations
    assert sweep().configurations == first and len(first) == 6 and len({json.dumps(c) for c in first}) == 6
    for configuration in first:
        assert 0.001 <= configuration["train.lr"] <= 0.1 and configuration["train.batch_size"] in (8, 16, 32)
        assert isinstance(configuration["train.iterations"], int) and 20 <= configuration["train.iterations"] <= 90
        assert configuration["train.lr"] == float(f"{configuration['train.lr']:.3g}")  # 3 significant digits
    assert sweep(seed=1).configurations != first  # the seed matters
    # each key draws from a stream of its own: the order of the keys and the other keys do not change its values
    reordered = dict(reversed(list(SPACE.items())))
    assert sweep(reordered).configurations == first
    lr_only = sweep({"train.lr": SPACE["train.lr"]}).configurations
    assert [c["train.lr"] for c in lr_only] == [c["train.lr"] for c in first]
    # a larger count keeps the configurations already drawn (their finished cells are reused)
    assert sweep(count=9).configurations[:6] == first
    # another method's sweep is a stream of its own, and does not move this one's
    both = parse_sweeps({"source_only": {"sample": {"kind": "random", "seed": 0, "count": 6}, "space": SPACE},
                         "cyclegan": {"sample": {"kind": "random", "seed": 0, "count": 6}, "space": SPACE}},
                        ["source_only", "cyclegan"], "")
    assert both["source_only"].configurations == first and both["cyclegan"].configurations != first


def test_log_uniform_draws_are_uniform_in_the_logarithm():
    draws = [c["train.lr"] for c in sweep({"train.lr": {"log_uniform": [0.0001, 1.0]}}, count=400).configurations]
    # log10 uniform on [-4, 0]: median -2 (0.01); a draw uniform in the value would have median 0.5
    assert 0.003 < statistics.median(draws) < 0.03
    assert sum(d < 0.001 for d in draws) == pytest.approx(100, abs=30)  # a quarter of the decades


def test_a_random_sweep_larger_than_a_finite_space_is_refused_and_duplicates_are_never_drawn():
    space = {"train.batch_size": {"choices": [8, 16]}, "train.iterations": {"choices": [20, 40]}}
    assert len({json.dumps(c) for c in sweep(space, count=4).configurations}) == 4
    with pytest.raises(UserError, match=r"sweeps.source_only.sample.count: .*gave 4 distinct configurations, not 5"):
        sweep(space, count=5)


def test_grid_enumerates_every_combination_in_the_files_order():
    space = {"train.lr": {"log_uniform": [0.01, 1.0]}, "train.iterations": {"int_uniform": [10, 30]},
             "train.batch_size": {"choices": [8, 16]}}
    grid = sweep(space, kind="grid", points=3)
    assert len(grid.configurations) == 3 * 3 * 2
    assert grid.configurations[:3] == ({"train.lr": 0.01, "train.iterations": 10, "train.batch_size": 8},
                                       {"train.lr": 0.01, "train.iterations": 10, "train.batch_size": 16},
                                       {"train.lr": 0.01, "train.iterations": 20, "train.batch_size": 8})
    assert sorted({c["train.lr"] for c in grid.configurations}) == [0.01, 0.1, 1.0]  # log-spaced
    assert Dimension("x", "uniform", (0.0, 1.0)).grid(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert Dimension("x", "int_uniform", (1, 3)).grid(5) == [1, 2, 3]  # rounded, each value once
    assert len({json.dumps(c) for c in grid.configurations}) == 18


def test_override_text_reads_back_as_the_value():
    for value in (0.42, 1e-05, 3, True, "true", "adam", [1024, 512], None):
        read = yaml.safe_load(yaml_value(value))
        assert read == value and type(read) is type(value)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("space, sample, message", [
    ({"train.lrr": {"uniform": [0.01, 0.1]}}, None,
     "sweeps.source_only.space.train.lrr (uniform [0.01, 0.1], "),  # + the recipe's did-you-mean, below
    ({"train.lr": {"choices": []}}, None, "sweeps.source_only.space.train.lr.choices: expected a non-empty list"),
    ({"train.lr": {"uniform": [0.1, 0.01]}}, None,
     "sweeps.source_only.space.train.lr.uniform: low 0.1 is above high 0.01"),
    ({"train.lr": {"log_uniform": [0, 0.1]}}, None, "train.lr.log_uniform: the range must be positive"),
    ({"train.lr": {"log_uniform": [-1, 0.1]}}, None, "train.lr.log_uniform: the range must be positive"),
    ({"train.lr": {"log_unifrom": [0.01, 0.1]}}, None, "unknown kind of dimension; did you mean 'log_uniform'?"),
    ({"train.iterations": {"int_uniform": [10, 20.5]}}, None, "expected [low, high], two integers"),
    ({"train.lr": {"choices": [0.1, 0.1]}}, None, "a value is listed twice"),
    ({"train.lr": {"uniform": [0.01, 0.1]}}, {"kind": "grid"}, "a grid over the range(s) train.lr needs points"),
    ({"train.lr": {"uniform": [0.01, 0.1]}}, {"kind": "random", "count": 0}, "sample.count: expected a whole number"),
    ({"train.lr": {"uniform": [0.01, 0.1]}}, {"kind": "randm", "count": 2}, "did you mean 'random'?"),
    ({"train.lr": {"uniform": [0.01, 0.1]}}, {"kind": "random", "count": 2, "seeds": 1},
     "sample.seeds: unknown key for kind random; did you mean 'seed'?"),
    # out of the schema's bounds at the low end only: refused although no sampled configuration reaches it
    ({"train.lr": {"uniform": [-0.0001, 1.0]}}, {"kind": "random", "seed": 0, "count": 2},
     "sweeps.source_only.space.train.lr (uniform [-0.0001, 1.0], "),
])
def test_bad_spaces_are_refused_before_anything_runs_naming_the_key(tmp_path, toy_recipes, space, sample, message):
    rule = sample or {"kind": "random", "seed": 0, "count": 2}
    path = benchmark_file(tmp_path, sweeps={"source_only": {"sample": rule, "space": space}})
    with pytest.raises(UserError) as error:
        bench.compare(path, output=tmp_path / "b", dry_run=True)
    assert message in str(error.value) and str(path) in str(error.value)
    if "lrr" in message:
        assert "train.lrr: unknown key; did you mean 'lr'?" in str(error.value)
    assert not (tmp_path / "b").exists()


def test_a_sweep_must_name_a_method_of_the_benchmark(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, sweeps={"source_onl": {"sample": {"kind": "grid"},
                                                           "space": {"train.lr": {"choices": [0.1]}}}})
    with pytest.raises(UserError, match=r"sweeps.source_onl: not a method of this benchmark; did you mean "
                                        r"'source_only'\?"):
        bench.load_benchmark(path)


# ---------------------------------------------------------------------------------------------- cells


def test_each_configuration_is_a_cell_with_its_overrides_after_the_profiles(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, methods=["source_only", "cyclegan"], seeds=[0, 1],
                          profiles={"cpu": {"overrides": ["train.iterations=50"]}},
                          sweeps={"cyclegan": {"sample": {"kind": "grid"},
                                               "space": {"train.iterations": {"choices": [30, 90]},
                                                         "pixel.translated_fraction": {"choices": [0.25]}}}})
    cells = cells_of(path, "cpu")
    assert [c.name for c in cells] == [
        "toy/source_only/seed0", "toy/source_only/seed1", "toy/cyclegan/seed0", "toy/cyclegan/seed1",
        "toy/cyclegan@0/seed0", "toy/cyclegan@0/seed1", "toy/cyclegan@1/seed0", "toy/cyclegan@1/seed1"]
    swept = cells[6]
    assert (swept.method, swept.configuration, swept.hyper_parameters) == (
        "cyclegan", "cyclegan@1", {"train.iterations": 90, "pixel.translated_fraction": 0.25})
    assert swept.run_dir.parts[-3:] == ("toy", "cyclegan@1", "seed0")
    # the sweep's values win over the profile's, and the seed is the cell's
    recipe = swept.recipe
    assert (recipe.train.iterations, recipe.pixel.options.translated_fraction, recipe.seed) == (90, 0.25, 0)
    assert cells[2].recipe.train.iterations == 50  # the method's own cell: the profile's value
    assert load_recipe(swept.recipe_path, swept.overrides).to_dict() == swept.expected_recipe
    # pixel once: the configurations do not change the pixel stage, so the cyclegan cells of a seed share the
    # translator of the one with the fewest iterations, configuration 0
    assert [c.owner.name if c.owner else None for c in cells[2:]] == [
        "toy/cyclegan@0/seed0", "toy/cyclegan@0/seed1", None, None, "toy/cyclegan@0/seed0", "toy/cyclegan@0/seed1"]


def test_sweep_cells_run_skip_and_are_recorded(tmp_path, toy_recipes, capsys):
    path = benchmark_file(tmp_path, seeds=[0], sweeps={"source_only": {
        "sample": {"kind": "random", "seed": 3, "count": 2}, "space": {"train.lr": {"log_uniform": [0.01, 0.1]}}}})
    bench.compare(path, output=tmp_path / "b", dry_run=True)
    listing = capsys.readouterr().out
    lr = [c["train.lr"] for c in bench.load_benchmark(path).sweeps["source_only"].configurations]
    assert f"toy/source_only@1/seed0                      new  [lr={lr[1]}]" in listing

    order = []
    bench.compare(path, output=tmp_path / "b", only="toy/source_only@*/*", launch=fake_launch(order=order))
    assert order == ["toy/source_only@0/seed0", "toy/source_only@1/seed0"]
    recorded = json.loads((tmp_path / "b" / "sweeps.json").read_text())
    assert recorded == json.loads((tmp_path / "b" / "results.json").read_text())["sweeps"]
    assert recorded["source_only"]["sample"] == {"kind": "random", "seed": 3, "count": 2}
    assert [c["name"] for c in recorded["source_only"]["configurations"]] == ["source_only@0", "source_only@1"]
    assert [c["hyper_parameters"] for c in recorded["source_only"]["configurations"]] == [{"train.lr": v} for v in lr]
    assert recorded["source_only"]["configurations"][1]["overrides"] == [f"train.lr={lr[1]}"]
    order.clear()
    bench.compare(path, output=tmp_path / "b", launch=fake_launch(order=order))  # the swept cells are skipped
    assert order == ["toy/source_only/seed0"]


# ---------------------------------------------------------------------------------------------- recommendation


def record(method: str, seed: int, score: float, accuracy: float, hyper_parameters: dict | None = None) -> dict:
    """A run as `recommend` reads it: one candidate, scored `score` by class_ami, of target accuracy `accuracy`."""
    return {"task": "toy", "method": method, "base_method": method.split("@")[0], "seed": seed, "collapsed": False,
            "hyper_parameters": hyper_parameters or {}, "target_accuracy": accuracy,
            "model_selection": {"chosen": {"index": 0}, "candidates": [{"scores": {"class_ami": score}}]}}


def synthetic_records() -> list[dict]:
    """source_only 70 %; dann (its recipe's values) 80 %; dann@0 75 %, dann@1 85 %; cdan 78 %, cdan@0 92 %
    (the best configuration, scored below dann@1: the validator misses it)."""
    runs = []
    for seed in (0, 1):
        runs += [record("source_only", seed, 0.10, 0.70), record("dann", seed, 0.30, 0.80),
                 record("dann@0", seed, 0.20, 0.75, {"feature.trade_off": 0.3}),
                 record("dann@1", seed, 0.50 + seed / 100, 0.84 + seed / 50, {"feature.trade_off": 2.0}),
                 record("cdan", seed, 0.25, 0.78), record("cdan@0", seed, 0.40, 0.92, {"feature.trade_off": 1.5})]
    return runs


def test_the_recommendation_picks_a_configuration_and_its_regret_is_against_the_best_of_any_method():
    records = synthetic_records()
    result = recommend.study(records)
    entry = result["tasks"]["toy"]["class_ami"]
    # dann@1 has the highest mean score (0.505) and beats source-only's in both seeds; cdan@0 is the best (92 %)
    assert (entry["pick"], entry["best"]) == ("dann@1", "cdan@0")
    assert entry["regret"] == pytest.approx(92 - 85)  # not 0 (against dann's best) nor vs the methods' defaults
    configurations = recommend.configuration_study(records, result)["toy"]["class_ami"]
    assert configurations == {
        "pick": "dann@1", "pick_hyper_parameters": {"feature.trade_off": 2.0}, "pick_accuracy": 85.0,
        "best": "cdan@0", "best_hyper_parameters": {"feature.trade_off": 1.5}, "best_accuracy": 92.0,
        "regret": 7.0, "unswept_pick": "dann", "unswept_pick_accuracy": 80.0, "sweep_gain": 5.0}
    assert result["defaults"] == {"toy": "class_ami"}  # no run has the agreement sample: the fallback
    text = "\n".join(recommend.configuration_markdown({"toy": {"class_ami": configurations}}, result["defaults"]))
    assert ("| toy | class_ami | dann@1 | trade_off=2.0 | 85.00 | cdan@0 | trade_off=1.5 | 92.00 | 7.00 | dann | 80.00 | +5.00 |"
            in text)
    assert "at least as accurate as the pick without the sweeps on 1 of 1 tasks (mean gain +5.00 points)" in text


def test_no_harm_holds_for_configurations():
    # dann@1 scores highest on average but below source-only in seed 1: source-only is recommended
    records = [record("source_only", 0, 0.30, 0.70), record("source_only", 1, 0.30, 0.70),
               record("dann", 0, 0.20, 0.80), record("dann", 1, 0.20, 0.80),
               record("dann@1", 0, 0.90, 0.60, {"feature.trade_off": 2.0}),
               record("dann@1", 1, 0.10, 0.60, {"feature.trade_off": 2.0})]
    entry = recommend.study(records)["tasks"]["toy"]["class_ami"]
    assert (entry["pick"], entry["best"], entry["regret"]) == ("source_only", "dann", 10.0)
    assert entry["why"] == "no harm: dann@1 scored highest but not above source-only in every seed"


def test_results_of_a_sweep_name_the_configuration_picked_and_the_hindsight_best(tmp_path, toy_recipes, capsys):
    path = benchmark_file(tmp_path, methods=["source_only", "cyclegan"], sweeps={"cyclegan": {
        "sample": {"kind": "grid"}, "space": {"train.lr": {"choices": [0.02, 0.04]}}}})
    scores = {"source_only": (0.1, 0.70), "cyclegan": (0.3, 0.80), "cyclegan@0": (0.5, 0.85), "cyclegan@1": (0.2, 0.90)}
    selection, accuracy = {}, {}
    for configuration, (score, target) in scores.items():
        for seed in (0, 1):
            name = f"toy/{configuration}/seed{seed}"
            selection[name] = {"chosen": {"index": 0},
                               "candidates": [{"scores": {"class_ami": score}, "target_test_accuracy": target}]}
            accuracy[name] = target
    bench.compare(path, output=tmp_path / "b", launch=fake_launch(accuracy, selection=selection))
    # the terminal's one-line pick names the configuration with its hyper-parameters
    assert "toy: use cyclegan@0 (lr=0.02) — class_ami 0.50 vs source-only 0.10" in capsys.readouterr().out

    results = json.loads((tmp_path / "b" / "results.json").read_text())
    entry = results["recommendation"]["tasks"]["toy"]["class_ami"]
    assert (entry["pick"], entry["best"], entry["regret"]) == ("cyclegan@0", "cyclegan@1", 5.0)
    configurations = results["recommendation"]["configurations"]["toy"]["class_ami"]
    assert (configurations["pick_hyper_parameters"], configurations["unswept_pick"], configurations["sweep_gain"]) == (
        {"train.lr": 0.02}, "cyclegan", 5.0)
    text = (tmp_path / "b" / "results.md").read_text()
    assert ("| toy | class_ami | cyclegan@0 | lr=0.02 | 85.00 | cyclegan@1 | lr=0.04 | 90.00 | 5.00 | cyclegan | 80.00 | +5.00 |"
            in text)
    assert "| toy | cyclegan@1 | lr=0.04 | 90.00 ± 0.00 | 2/2 |" in text  # the summary: a row per configuration
    assert "  * cyclegan@1: lr=0.04" in text  # the Sweeps section
    rows = list(csv.DictReader(open(tmp_path / "b" / "results.csv")))
    assert [(r["configuration"], r["hyper_parameters"], r["mean_accuracy_pct"]) for r in rows] == [
        ("source_only", "{}", "70.0"), ("cyclegan", "{}", "80.0"), ("cyclegan@0", '{"train.lr": 0.02}', "85.0"),
        ("cyclegan@1", '{"train.lr": 0.04}', "90.0")]
    assert (tmp_path / "b" / "results.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------- the shipped file


def test_the_digits_sweep_file_has_eight_configurations_of_each_swept_method_in_valid_ranges():
    benchmark = bench.load_benchmark(BENCHMARKS / "digits_sweep.yaml")
    assert set(benchmark.sweeps) == {"dann", "cdan", "mcc", "adda"} and benchmark.seeds == [0, 1]
    assert {"mnist2usps", "usps2mnist", "syndigits2mnist", "syndigits2ucidigits"} <= set(benchmark.tasks)
    assert "cpu" in benchmark.profiles and "source_only" in benchmark.methods
    for method, swept in benchmark.sweeps.items():
        assert len(swept.configurations) >= 8, method
        assert all(math.isfinite(v) for c in swept.configurations for v in c.values() if isinstance(v, float))

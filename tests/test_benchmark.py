"""`da-toolkit compare`: grid expansion, cell states, scheduling, translator sharing, results writers."""
from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import toy_recipe_dict
from da_toolkit import benchmark as bench
from da_toolkit.benchmark import recommend
from da_toolkit.benchmark.report import summarize
from da_toolkit.benchmark.spec import parse_seeds
from da_toolkit.data import build_domains
from da_toolkit.errors import UserError
from da_toolkit.recipe import load_recipe
from da_toolkit.rundir import RunDir, lock_run_dir
from da_toolkit.training.loop import Interrupted

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_PIXEL = {"adapter": "cyclegan", "iterations": 4, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
              "discriminator_layers": 2, "pool_size": 2, "image_grid_every": 0, "translate_batch_size": 256,
              "label_preservation_iterations": 0, "semantic_classifier_iterations": 10}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def toy_recipes(tmp_path):
    """recipes/toy_<method>.yaml for source_only, cyclegan, cyclegan_ft (same pixel stage, a longer
    feature stage), cyclegan_translated (same pixel stage, its translations used alone) and
    cyclegan_wide (another pixel stage)."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    write_yaml(folder / "toy_source_only.yaml", toy_recipe_dict())
    write_yaml(folder / "toy_cyclegan.yaml", toy_recipe_dict(pixel=TINY_PIXEL))
    write_yaml(folder / "toy_cyclegan_ft.yaml", toy_recipe_dict(pixel=TINY_PIXEL, train={"iterations": 90}))
    write_yaml(folder / "toy_cyclegan_translated.yaml",
               toy_recipe_dict(pixel={**TINY_PIXEL, "feature_data": "translated", "translated_fraction": 0.3}))
    write_yaml(folder / "toy_cyclegan_wide.yaml", toy_recipe_dict(pixel={**TINY_PIXEL, "ngf": 8}))
    return folder


def three_real_cells(tmp_path: Path) -> Path:
    """A benchmark of three real ucidigits cells, one seed: source_only, cyclegan and cyclegan_ft
    (cyclegan_ft reuses cyclegan's translator: same pixel stage, a longer feature stage)."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    data = {"source": {"name": "ucidigits", "limit": 120}, "target": {"name": "ucidigits", "limit": 120},
            "target_test": {"name": "ucidigits", "split": "test", "limit": 100}}
    write_yaml(folder / "uci_source_only.yaml", toy_recipe_dict(data=data, train={"iterations": 5}))
    write_yaml(folder / "uci_cyclegan.yaml", toy_recipe_dict(data=data, pixel=TINY_PIXEL, train={"iterations": 5}))
    write_yaml(folder / "uci_cyclegan_ft.yaml", toy_recipe_dict(data=data, pixel=TINY_PIXEL, train={"iterations": 8}))
    return benchmark_file(tmp_path, tasks=["uci"], methods=["source_only", "cyclegan", "cyclegan_ft"], seeds=[0])


def benchmark_file(tmp_path: Path, **keys) -> Path:
    data = {"name": "toy", "recipe_dir": "recipes", "output_dir": str(tmp_path / "out"), "tasks": ["toy"],
            "methods": ["source_only"], "seeds": [0, 1], **keys}
    return write_yaml(tmp_path / "bench.yaml", data)


def cells_of(path: Path, profile: str | None = None) -> list[bench.Cell]:
    benchmark = bench.load_benchmark(path)
    cells, _ = bench.expand(benchmark, profile, path.parent / "out" / "toy")
    bench.share_translators(cells)
    return cells


def fake_launch(accuracy: dict[str, float] | None = None, fail: str | None = None, order: list | None = None,
                collapsed: tuple[str, ...] = (), selection: dict[str, dict] | None = None,
                data: dict[str, str] | None = None):
    """A launcher that runs a tiny Python process instead of `da-toolkit run`: it records the recipe
    and writes metrics.json (target accuracy from `accuracy`, by cell name; the collapse flag for
    the cells in `collapsed`; `data`: every cell's data_fingerprints), or fails for `fail`."""
    def launch(cell, env):
        assert all(p.finished for p in cell.prerequisites), "a cell started before the translator's owner or its input"
        if order is not None:
            order.append(cell.name)
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        (cell.run_dir / "recipe.yaml").write_text(yaml.safe_dump(cell.expected_recipe))
        if cell.name == fail:
            script = "import sys; print('Traceback ...', file=sys.stderr); sys.exit('error: boom in ' + sys.argv[1])"
        else:
            metrics = {"target_accuracy": (accuracy or {}).get(cell.name, 0.5), "wall_time_s": 2.0,
                       "hardware": "CPU: toy", "selection": "final model after the last iteration",
                       "collapse": {"collapsed": cell.name in collapsed}}
            if selection and cell.name in selection:
                metrics["model_selection"] = selection[cell.name]
            if data is not None:
                metrics["data_fingerprints"] = data
            script = ("import pathlib, sys; pathlib.Path(sys.argv[1], 'metrics.json').write_text(sys.argv[2])")
            return bench.launch_cell(cell, env, [sys.executable, "-c", script, str(cell.run_dir),
                                                 json.dumps(metrics)])
        return bench.launch_cell(cell, env, [sys.executable, "-c", script, cell.name])
    return launch


# ---------------------------------------------------------------------------------------------- the grid


def test_grid_expansion_with_label_axis_profile_and_target_only_skip(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, methods=["target_only", "source_only"], target_labels_per_class=[0, 2],
                          method_recipes={"target_only": "source_only"},
                          method_overrides={"target_only": ["feature.adapter=target_only"]},
                          overrides=["train.iterations=7"],
                          profiles={"cpu": {"overrides": ["train.batch_size=8"],
                                            "method_overrides": {"source_only": ["train.lr=0.5"]}}})
    benchmark = bench.load_benchmark(path)
    cells, skipped = bench.expand(benchmark, "cpu", tmp_path / "out" / "toy")

    assert skipped == ["toy/target_only_k0/seed0", "toy/target_only_k0/seed1"]
    assert [c.name for c in cells] == ["toy/source_only_k0/seed0", "toy/source_only_k0/seed1",
                                       "toy/target_only_k2/seed0", "toy/target_only_k2/seed1",
                                       "toy/source_only_k2/seed0", "toy/source_only_k2/seed1"]
    target_only = cells[2]
    assert target_only.run_dir == (tmp_path / "out" / "toy" / "runs" / "toy" / "target_only_k2" / "seed0").resolve()
    assert target_only.recipe_path == toy_recipes / "toy_source_only.yaml"
    assert target_only.recipe.feature.adapter == "target_only"
    assert (target_only.recipe.data.target_labels_per_class, target_only.recipe.seed) == (2, 0)
    assert (target_only.recipe.train.iterations, target_only.recipe.train.batch_size) == (7, 8)
    assert target_only.recipe.train.lr != 0.5 and cells[5].recipe.train.lr == 0.5
    assert cells[5].recipe.feature.adapter == "source_only" and cells[5].recipe.seed == 1
    arguments = target_only.arguments()
    assert arguments[:2] == ["run", str(toy_recipes / "toy_source_only.yaml")]
    assert "data.target_labels_per_class=2" in arguments and "seed=0" in arguments and "--resume" not in arguments
    # the overrides a cell is run with rebuild exactly the recipe the benchmark planned
    assert load_recipe(target_only.recipe_path, target_only.overrides).to_dict() == target_only.expected_recipe


@pytest.mark.parametrize("change, message", [
    ({"metods": ["x"]}, "metods: unknown key; did you mean 'methods'?"),
    ({"seeds": "0"}, "seeds: expected a list of int"),
    ({"methods": ["source_only", "dann"]}, "recipe files not found:"),
    ({"method_overrides": {"sourceonly": ["seed=1"]}}, "method_overrides.sourceonly: not a method of this benchmark; "
                                                       "did you mean 'source_only'?"),
    ({"overrides": ["train.iterations=many"]}, "cell toy/source_only/seed0"),
    ({"profiles": {"cpu": {"override": []}}}, "profiles.cpu.override: unknown key; did you mean 'overrides'?"),
])
def test_bad_benchmark_files_name_the_key(tmp_path, toy_recipes, change, message):
    path = benchmark_file(tmp_path, **change)
    with pytest.raises(UserError) as error:
        cells_of(path)
    assert message in str(error.value)
    if "recipe files" in message:
        assert str(toy_recipes / "toy_dann.yaml") in str(error.value)


def test_unknown_profile_lists_the_allowed_ones(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, profiles={"cpu": {}, "gpu": {"overrides": []}})
    with pytest.raises(UserError, match=r"unknown profile 'cpux'.*did you mean 'cpu'\?.*allowed: cpu, gpu"):
        bench.compare(path, profile="cpux")
    assert bench.choose_profile(bench.load_benchmark(path), None) == ("gpu" if torch.cuda.is_available() else "cpu")


def test_shipped_benchmark_files_are_valid():
    digits = bench.load_benchmark(BENCHMARKS / "digits.yaml")
    assert set(digits.profiles) == {"cpu", "cpu_long", "cpu_joint_batches", "cpu_former_optimiser", "cpu32", "gpu"}
    assert digits.seeds == [0, 1]
    # the profile of the tables made before 2026-12-05 is the cpu profile with every joint-training method
    # (alone or composed) on one mixed batch, nothing else
    cpu = digits.profiles["cpu"].method_overrides
    joint_batches = digits.profiles["cpu_joint_batches"]
    assert joint_batches.overrides == digits.profiles["cpu"].overrides
    joint = ("dann", "cdan", "mcc", "dann_mcc", "bsp", "jan", "bnm", "mdd", "dan", "coral", "afn", "dann_dirt_t",
             "mcc_fixmatch", "mcc_shot", "cyclegan_dann", "stargan_dann")
    assert joint_batches.method_overrides == {**cpu, **{m: ["feature.domain_batches=joint", *cpu.get(m, [])]
                                                        for m in joint}}
    # ... and before 2026-12-04 also at the former digit optimiser, nothing else
    former = digits.profiles["cpu_former_optimiser"]
    assert former.overrides == [*digits.profiles["cpu"].overrides, "train.nesterov=false", "train.weight_decay=0.0005",
                                "train.lr_schedule=anneal"]
    assert former.method_overrides == {**joint_batches.method_overrides,
                                       "shot": ["train.nesterov=true", "train.weight_decay=0.001"]}
    # the longer budget: 4,000 iterations a stage instead of 1,000, nothing else (the pixel stages keep theirs)
    long = digits.profiles["cpu_long"]
    assert long.overrides == [o.replace("train.iterations=1000", "train.iterations=4000")
                              for o in digits.profiles["cpu"].overrides]
    assert long.method_overrides == {m: [o.replace("adapt_iterations=1000", "adapt_iterations=4000") for o in values]
                                     for m, values in cpu.items()}
    assert {"mnist2usps", "usps2mnist", "syndigits2mnist", "syndigits2ucidigits"} <= set(digits.tasks)
    cyclegan_adda = cpu["cyclegan_adda"]  # a YAML alias inside the list, flattened
    assert "feature.adapt_iterations=1000" in cyclegan_adda and set(cpu["cyclegan"]) <= set(cyclegan_adda)
    scarce = bench.load_benchmark(BENCHMARKS / "scarce_labels.yaml")
    assert scarce.label_counts == [0, 1, 5, 10, 25] and scarce.methods == ["target_only", "source_only", "cyclegan"]
    assert scarce.recipe_path("mnist2usps", "target_only").name == "mnist2usps_source_only.yaml"
    published = bench.load_published(digits.published)
    assert published.get("mnist2usps", "source_only", "cycada").accuracy == 82.2
    assert published.get("svhn2mnist", "cyclegan_adda", "cycada").match == "closest"
    assert published.get("mnist2mnistm", "dann", "dann").accuracy == 76.66


def test_scarce_label_subsets_have_exactly_k_labels_per_class(write_recipe):
    for k in (0, 1, 5):
        recipe = load_recipe(write_recipe(), [f"data.target_labels_per_class={k}"])
        target = build_domains(recipe.data, seed=3).target
        labels = target.labels[target.labels >= 0]
        assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), k))
        assert len(target) == 400  # the other images stay, unlabeled


# ---------------------------------------------------------------------------------------------- sharing


def test_cells_with_the_same_pixel_stage_share_one_translator(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, methods=["cyclegan_ft", "source_only", "cyclegan", "cyclegan_translated",
                                                   "cyclegan_wide"],
                          target_labels_per_class=[0, 3], seeds=[0])
    cells = {c.name: c for c in cells_of(path)}
    owner = cells["toy/cyclegan_k0/seed0"]  # the shortest cell trains it, though cyclegan_ft comes first
    assert owner.owner is None and cells["toy/source_only_k0/seed0"].owner is None
    for name in ("toy/cyclegan_ft_k0/seed0", "toy/cyclegan_ft_k3/seed0", "toy/cyclegan_k3/seed0",
                 "toy/cyclegan_translated_k0/seed0", "toy/cyclegan_translated_k3/seed0"):
        assert cells[name].owner is owner
        assert f"pixel_from={owner.run_dir}" in cells[name].arguments()
    assert cells["toy/cyclegan_wide_k0/seed0"].owner is None  # another pixel stage: its own translator
    assert cells["toy/cyclegan_wide_k3/seed0"].owner is cells["toy/cyclegan_wide_k0/seed0"]

    order = []
    outcomes = {}
    bench.run_cells(list(cells.values()), jobs=3, outcomes=outcomes, launch=fake_launch(order=order))
    assert all(o.status == "done" for o in outcomes.values())
    assert order.index(owner.name) < min(order.index(n) for n in cells if cells[n].owner is owner)


def test_finished_tables_the_cells_that_reused_a_translator_as_done(tmp_path, toy_recipes):
    """--finished reads the owners the whole grid ran with (each reuser's pixel_from), not none: the cells that
    reused a translator are tabled, not refused as runs of a different recipe."""
    path = benchmark_file(tmp_path, methods=["source_only", "cyclegan", "cyclegan_translated"], seeds=[0])
    bench.compare(path, jobs=2, output=tmp_path / "b", launch=fake_launch())
    rows = bench.compare(path, output=tmp_path / "b", finished_only=True, launch=fake_launch())
    assert [(r["cell"], r["status"]) for r in rows] == [("toy/source_only/seed0", "done"), ("toy/cyclegan/seed0", "done"),
                                                        ("toy/cyclegan_translated/seed0", "done")]



def test_finished_tables_a_cell_that_trained_its_own_translator_under_only_as_done(tmp_path, toy_recipes):
    """`--only` without the owner's cells: the reuser trains its own translator (pixel_from null); --finished over
    the whole grid, which gives it the owner's, tables it as done, not as a run of another recipe."""
    path = benchmark_file(tmp_path, methods=["source_only", "cyclegan", "cyclegan_translated"], seeds=[0])
    bench.compare(path, output=tmp_path / "c", only="*/cyclegan_translated/*", launch=fake_launch())
    bench.compare(path, output=tmp_path / "c", only="*/cyclegan/*", launch=fake_launch())
    assert RunDir(tmp_path / "c/runs/toy/cyclegan_translated/seed0").read_recipe()["pixel_from"] is None
    rows = bench.compare(path, output=tmp_path / "c", finished_only=True, launch=fake_launch())
    assert [(r["cell"], r["status"]) for r in rows] == [("toy/cyclegan/seed0", "done"),
                                                        ("toy/cyclegan_translated/seed0", "done")]
    # ... and as a cell with its own translator (no ↻): what its run recorded, not what the grid would plan
    assert [r["translator_from"] for r in rows] == [None, None]
    assert not any(entry["shared_translator"] for entry in summarize(rows))


def test_a_cell_that_reads_another_cells_run_starts_after_it_and_is_blocked_when_it_fails(tmp_path, toy_recipes):
    # a stand-in for a key naming a run directory (SHOT's feature.source_checkpoint={cell:source_only})
    write_yaml(toy_recipes / "toy_refined.yaml", toy_recipe_dict())
    path = benchmark_file(tmp_path, methods=["refined", "source_only"], seeds=[0, 1],
                          method_overrides={"refined": ["output_dir={cell:source_only}/elsewhere"]})
    cells = {c.name: c for c in cells_of(path)}
    refined, source = cells["toy/refined/seed1"], cells["toy/source_only/seed1"]
    assert refined.inputs == [source] and refined.prerequisites == [source]
    assert f"output_dir={source.run_dir}/elsewhere" in refined.arguments()
    assert refined.recipe.output_dir == f"{source.run_dir}/elsewhere"

    order, outcomes = [], {}
    bench.run_cells(list(cells.values()), jobs=4, outcomes=outcomes,  # a free slot for every cell: inputs first
                    launch=fake_launch(order=order, fail="toy/source_only/seed0"))
    assert order.index(source.name) < order.index(refined.name)
    assert outcomes[cells["toy/refined/seed0"]].status == "blocked"
    assert "toy/source_only/seed0, whose run it reads, did not finish" in outcomes[cells["toy/refined/seed0"]].error
    assert outcomes[refined].status == "done"

    # selected alone (--only) while its input has not run: blocked at once, not waiting forever
    lone = cells_of(path)[0]
    outcomes = {}
    bench.run_cells([lone], jobs=1, outcomes=outcomes, launch=fake_launch())
    assert outcomes[lone].status == "blocked" and outcomes[lone].error.endswith("(not selected)")


def test_a_benchmark_directory_moved_elsewhere_keeps_the_cells_that_name_other_cells_runs(tmp_path, toy_recipes):
    """Cells that read another cell's run (pixel_from, {cell:...}) record its absolute path: a grid run on another
    machine (a lent GPU: /tmp/grids/...) and copied here is still finished, not "a run of a different recipe";
    a path to another cell, or outside any runs/ folder, is still a change."""
    write_yaml(toy_recipes / "toy_refined.yaml", toy_recipe_dict())
    path = benchmark_file(tmp_path, methods=["refined", "source_only"], seeds=[0],
                          method_overrides={"refined": ["name={cell:source_only}"]})  # a key naming a run
    refined = cells_of(path)[0]
    elsewhere = tmp_path / "gpu" / "tmp" / "grids" / "toy" / "runs" / "toy"
    for recorded, changed in [(elsewhere / "source_only" / "seed0", []),  # the same cell, moved
                              (elsewhere / "refined" / "seed0", ["name"]),  # another cell
                              (tmp_path / "source_only" / "seed0", ["name"])]:  # not under a runs/ folder
        (refined.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (refined.run_dir / "checkpoints" / "feature.pt").write_bytes(b"")
        (refined.run_dir / "recipe.yaml").write_text(yaml.safe_dump({**refined.expected_recipe, "name": str(recorded)}))
        assert refined.changed_keys() == changed


@pytest.mark.parametrize("reference", ["{cell:adda}", "{cell:refined}"])
def test_a_cell_reference_must_name_another_method_of_the_grid(tmp_path, toy_recipes, reference):
    write_yaml(toy_recipes / "toy_refined.yaml", toy_recipe_dict())
    path = benchmark_file(tmp_path, methods=["refined", "source_only"],
                          method_overrides={"refined": [f"name={reference}"]})
    with pytest.raises(UserError, match=r"an override names \{cell:\w+\}, which must be another of the benchmark's "
                                        r"methods \(refined, source_only\)"):
        cells_of(path)


# ---------------------------------------------------------------------------------------------- states


def test_finished_cells_are_skipped_started_ones_resumed_changed_ones_refused(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, seeds=[0, 1, 2, 3])
    new, started, finished, changed = cells_of(path)
    for cell in (started, finished, changed):  # started: a checkpoint was written (a start that failed
        (cell.run_dir / "checkpoints").mkdir(parents=True)  # before training, recipe.yaml alone, is not one)
        (cell.run_dir / "checkpoints" / "feature.pt").write_bytes(b"")
        (cell.run_dir / "recipe.yaml").write_text(yaml.safe_dump(cell.expected_recipe))
    (finished.run_dir / "metrics.json").write_text(json.dumps({"target_accuracy": 0.9}))
    (changed.run_dir / "recipe.yaml").write_text(yaml.safe_dump({**changed.expected_recipe, "seed": 99}))

    assert "--resume" in started.arguments() and "--resume" not in new.arguments()
    order = []
    outcomes = {}
    bench.run_cells([new, started, finished, changed], jobs=2, outcomes=outcomes, launch=fake_launch(order=order))
    assert sorted(order) == sorted([new.name, started.name])
    assert [outcomes[c].status for c in (new, started, finished, changed)] == ["done", "done", "done", "failed"]
    assert "differs in: seed" in outcomes[changed].error


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path, toy_recipes, capsys):
    path = benchmark_file(tmp_path, seeds=[0, 1, 2])
    with pytest.raises(UserError, match="1 of 3 cells did not finish: toy/source_only/seed1: error: boom in"):
        bench.compare(path, jobs=2, output=tmp_path / "b", launch=fake_launch(fail="toy/source_only/seed1"))
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [c["status"] for c in results["cells"]] == ["done", "failed", "done"]
    assert results["cells"][1]["error"].startswith("error: boom in toy/source_only/seed1 (log: ")
    assert "## Not finished" in (tmp_path / "b" / "results.md").read_text()
    assert "failed: toy/source_only/seed1" in capsys.readouterr().err
    # a re-run retries only the failed cell
    order = []
    bench.compare(path, jobs=2, output=tmp_path / "b", launch=fake_launch(order=order))
    assert order == ["toy/source_only/seed1"]


def test_finished_writes_the_results_of_the_finished_cells_and_runs_nothing(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, seeds=[0, 1, 2])
    with pytest.raises(UserError, match="--finished: no cell of .* has finished"):
        bench.compare(path, output=tmp_path / "b", finished_only=True, launch=fake_launch())
    bench.compare(path, output=tmp_path / "b", only="*/seed1", launch=fake_launch({"toy/source_only/seed1": 0.75}))
    order = []
    rows = bench.compare(path, output=tmp_path / "b", finished_only=True, launch=fake_launch(order=order))
    assert order == [] and [(r["cell"], r["status"]) for r in rows] == [("toy/source_only/seed1", "done")]
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [c["target_accuracy"] for c in results["cells"]] == [0.75]
    assert "--finished" in (tmp_path / "b" / "results.md").read_text()


def test_seeds_replace_the_benchmark_files_and_are_named_in_the_command(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, seeds=[0, 1])
    order = []
    rows = bench.compare(path, output=tmp_path / "b", seeds=[3, 5, 4], launch=fake_launch(order=order))
    assert sorted(order) == ["toy/source_only/seed3", "toy/source_only/seed4", "toy/source_only/seed5"]
    assert [r["seed"] for r in rows] == [3, 5, 4]
    assert "--seeds 3,5,4" in (tmp_path / "b" / "results.md").read_text()  # the table says how to make it again
    assert parse_seeds("0,2,11") == [0, 2, 11]
    for bad in ("0,a", "1,,2", "-1", "2,2"):
        with pytest.raises(UserError, match="--seeds: expected"):
            parse_seeds(bad)


def test_finished_lists_a_stopped_cell_with_its_error_and_a_running_one_as_running(tmp_path, toy_recipes, capsys):
    # seed0 stopped (its run printed an error, e.g. the divergence guard's), seed1 finished, seed2 is
    # being written by another process (its lock is held), seed3 was never tried: left out
    path = benchmark_file(tmp_path, seeds=[0, 1, 2, 3])
    with pytest.raises(UserError, match="1 of 2 cells did not finish"):
        bench.compare(path, output=tmp_path / "b", only="*/seed[01]", jobs=2,
                      launch=fake_launch(fail="toy/source_only/seed0"))
    with lock_run_dir(tmp_path / "b" / "runs" / "toy" / "source_only" / "seed2"):
        order = []
        rows = bench.compare(path, output=tmp_path / "b", finished_only=True, launch=fake_launch(order=order))
    assert order == []
    assert [(r["cell"], r["status"]) for r in rows] == [
        ("toy/source_only/seed0", "failed"), ("toy/source_only/seed1", "done"), ("toy/source_only/seed2", "running")]
    assert rows[0]["error"].startswith("error: boom in toy/source_only/seed0 (log: ")
    text = (tmp_path / "b" / "results.md").read_text()
    assert "* toy/source_only/seed0: failed: error: boom in toy/source_only/seed0" in text
    assert "* toy/source_only/seed2: running: still running" in text
    assert "| 1/3 |" in text.replace(" ", "").replace("|1/3|", "| 1/3 |")  # n = finished / tried seeds
    assert "| toy | source_only | 50.00 | 1/3 |" in text  # n = finished / tried seeds
    assert "2 of 3 cells tried did not finish" in capsys.readouterr().err


def test_the_bar_chart_marks_a_method_no_seed_of_which_finished(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from da_toolkit.benchmark import report

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to read what was drawn
    entry = {"task": "toy", "hyper_parameters": None, "configuration": None, "k": 0, "std": None, "source": None}
    summary = [{**entry, "method": "source_only", "configuration": "source_only", "n": 2, "mean": 70.0},
               {**entry, "method": "jan", "configuration": "jan", "n": 0, "mean": None}]
    report.bar_chart(tmp_path / "results.png", summary, None)
    axes = kept[0].axes[0]
    crosses = [c for c in axes.collections if c.get_paths() and c.get_offsets().tolist() == [[2.0, 1.0]]]
    assert len(crosses) == 1  # at the foot of jan's row, the second
    legend = kept[0].legends[0]
    assert [text.get_text() for text in legend.get_texts()] == ["no seed finished (results.md: Not finished)"]
    assert [tick.get_text() for tick in axes.get_yticklabels()] == ["source_only", "jan"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_running_cells_with_sigint_and_says_how_to_continue(stop, tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, seeds=[0, 1, 2])
    cells = cells_of(path)
    script = ("import pathlib, signal, sys, time\n"
              "d = pathlib.Path(sys.argv[1])\n"
              "signal.signal(signal.SIGINT, lambda *a: (d.joinpath('got_sigint').touch(), sys.exit(130)))\n"
              "d.joinpath('ready').touch()\n"
              "time.sleep(60)\n")

    def launch(cell, env):
        return bench.launch_cell(cell, env, [sys.executable, "-c", script, str(cell.run_dir)])

    def press_ctrl_c():
        while not all((c.run_dir / "ready").exists() for c in cells[:2]):
            time.sleep(0.05)
        signal.raise_signal(stop)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    outcomes = {}
    with pytest.raises(Interrupted, match="run the same command again to continue"):
        bench.run_cells(cells, jobs=2, outcomes=outcomes, launch=launch)
    assert [(c.run_dir / "got_sigint").exists() for c in cells] == [True, True, False]
    assert [outcomes[c].status for c in cells] == ["interrupted", "interrupted", "not run"]


# ---------------------------------------------------------------------------------------------- results


def test_summary_markdown_and_csv_from_hand_made_metrics(tmp_path, toy_recipes):
    published = write_yaml(tmp_path / "published.yaml", {
        "note": "other backbones", "sources": {"paper": {"column": "Paper T1", "citation": "A. Author, 2020"}},
        "results": [{"task": "toy", "method": "source_only", "source": "paper", "accuracy": 61.5,
                     "reported_as": "Source only", "match": "approximate"}]})
    path = benchmark_file(tmp_path, methods=["source_only", "cyclegan"], seeds=[0, 1, 2], published=published.name)
    accuracy = {"toy/source_only/seed0": 0.80, "toy/source_only/seed1": 0.90, "toy/source_only/seed2": 0.70,
                "toy/cyclegan/seed0": 0.95, "toy/cyclegan/seed1": 0.85}
    with pytest.raises(UserError):  # toy/cyclegan/seed2 fails
        bench.compare(path, output=tmp_path / "b", jobs=2,
                      launch=fake_launch(accuracy, fail="toy/cyclegan/seed2", collapsed=("toy/source_only/seed2",)))

    with open(tmp_path / "b" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["n_seeds"], r["mean_accuracy_pct"], r["std_accuracy_pct"], r["published_paper"])
            for r in rows] == [("source_only", "3", "80.0", "10.0", "61.5"), ("cyclegan", "2", "90.0", "7.07", "")]
    assert [r["n_collapsed"] for r in rows] == ["1", "0"]
    assert rows[0]["mean_wall_time_s"] == "2.0"

    text = (tmp_path / "b" / "results.md").read_text()
    table = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| toy |")]
    assert [[cell.strip() for cell in row] for row in table] == [
        ["toy", "source_only", "80.00 ± 10.00 ⚠1", "3/3", "≈61.5", "2"],
        ["toy", "cyclegan", "90.00 ± 7.07", "2/3", "", "2"]]
    assert "| task | method | ours (%) | n | Paper T1 | wall time / cell (s) |" in text
    assert "| toy/source_only/seed2 | done ⚠ collapsed | 70.00 |" in text and "| toy/source_only/seed1 | done |" in text
    for expected in ("Hardware: CPU: toy", "* ⚠n: n of the finished seeds collapsed", "final model after the last iteration", "A. Author, 2020",
                     "source_only ↔ Paper T1: Source only (approximate match)", "tensorboard --logdir",
                     "da-toolkit compare", "![results.png](results.png)"):
        assert expected in text
    assert (tmp_path / "b" / "results.png").stat().st_size > 1000
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {"task", "method", "seed", "k", "target_accuracy", "wall_time_s", "hardware", "selection",
            "status"} <= set(results["cells"][0])


def test_results_recommend_a_method_per_validator_with_hindsight(tmp_path, toy_recipes, capsys):
    path = benchmark_file(tmp_path, methods=["source_only", "cyclegan"], seeds=[0, 1])

    def scored(im, accuracies):  # one run's candidates: (class_ami, target test accuracy) per checkpoint
        return {"chosen": {"index": len(accuracies) - 1}, "wall_time_s": {"validators": 1.0, "target_test_study": 0.5},
                "candidates": [{"stage": "feature", "iteration": i, "scores": {"class_ami": s},
                                "target_test_accuracy": a} for i, (s, a) in enumerate(zip(im, accuracies))]}

    selection = {"toy/source_only/seed0": scored([0.1, 0.5], [0.6, 0.7]),
                 "toy/source_only/seed1": scored([0.2, 0.4], [0.6, 0.7]),
                 "toy/cyclegan/seed0": scored([0.3, 0.9], [0.5, 0.9]),
                 "toy/cyclegan/seed1": scored([0.3, 0.8], [0.6, 0.9])}
    accuracy = {name: s["candidates"][-1]["target_test_accuracy"] for name, s in selection.items()}
    bench.compare(path, output=tmp_path / "b", launch=fake_launch(accuracy, selection=selection))
    # the terminal ends with the pick in one line per task, from the validator scores alone
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "toy: use cyclegan — class_ami 0.85 vs source-only 0.45 (mean of 2 seeds, higher in each of the 2 seeds both "
        "ran); no target label read",
        "(picked by class_ami, higher is better: " + recommend.VALIDATORS["class_ami"] + "; class_ami where some "
        "method has no seed_agreement, the default (run every method with two seeds or more, not started from one "
        "trained classifier))",
        f"(every validator's pick, with the hindsight from target test labels: {tmp_path / 'b' / 'results.md'})"]
    result = json.loads((tmp_path / "b" / "results.json").read_text())["recommendation"]
    study = result["tasks"]["toy"]["class_ami"]
    # cyclegan's mean score (0.85) beats source-only's (0.45) in both seeds: picked, and it is the best (90 vs 70 %)
    assert (study["pick"], study["best"], study["regret"]) == ("cyclegan", "cyclegan", 0.0)
    # 8 checkpoints, average ranks for ties: scores 1 6 2 5 3.5 8 3.5 7, accuracies 3 5.5 3 5.5 1 7.5 3 7.5;
    # ρ = Σ dx dy / √(Σ dx² Σ dy²) = 34 / √(41.5 · 39) = 0.8451. Every run's best score is its last checkpoint
    assert study["spearman"] == pytest.approx(34 / (41.5 * 39) ** 0.5) and study["checkpoint_change"] == 0.0
    # cost: 1 s of validators in a 2 s run without the 0.5 s of study scoring: adds 1 / (2 − 1 − 0.5) = 200 %
    assert result["cost"] == {"runs": 4, "validators_s": 1.0, "target_test_study_s": 0.5, "validators_share": 2.0,
                              "validators_share_max": 2.0}
    text = (tmp_path / "b" / "results.md").read_text()
    assert "| toy | **class_ami** (default) | cyclegan | cyclegan | 0.00 | – | 0.845 | +0.00 |" in text  # 2 methods: no ρ
    assert "![selection_toy.png](selection_toy.png)" in text
    assert (tmp_path / "b" / "selection_toy.png").stat().st_size > 1000


def test_learning_curve_for_the_label_axis(tmp_path, toy_recipes):
    path = benchmark_file(tmp_path, methods=["source_only"], target_labels_per_class=[0, 1], seeds=[0])
    bench.compare(path, output=tmp_path / "b", launch=fake_launch())
    assert (tmp_path / "b" / "learning_curve.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "b" / "results.csv")))
    assert [(r["k"], r["mean_accuracy_pct"]) for r in rows] == [("0", "50.0"), ("1", "50.0")]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow  # 35 s of subprocesses and reports; the sharing itself is also tested with fake cells above
def test_real_cells_in_two_processes_train_one_translator(tmp_path):
    """Three tiny cells through `da-toolkit run` subprocesses, two at a time; cyclegan_ft reuses the
    translator of cyclegan, so only cyclegan trains a CycleGAN. A re-run starts nothing."""
    path = three_real_cells(tmp_path)

    rows = bench.compare(path, jobs=2, output=tmp_path / "b")
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    runs = tmp_path / "b" / "runs" / "uci"
    assert (runs / "cyclegan" / "seed0" / "checkpoints" / "pixel.pt").exists()
    assert not (runs / "cyclegan_ft" / "seed0" / "checkpoints" / "pixel.pt").exists()
    shared = json.loads((runs / "cyclegan_ft" / "seed0" / "metrics.json").read_text())
    assert shared["stages"]["pixel"]["translation_cache"] == "hit"
    assert rows[2]["target_accuracy"] == shared["target_accuracy"]  # the table row is the cell's own metrics
    assert rows[2]["translator_from"] == str(runs.resolve() / "cyclegan" / "seed0")

    logs = [(runs / m / "seed0" / "cell.log").read_text() for m in ("source_only", "cyclegan", "cyclegan_ft")]
    rows = bench.compare(path, jobs=2, output=tmp_path / "b", reports=True)  # nothing re-runs; reports are written
    assert [(runs / m / "seed0" / "cell.log").read_text() for m in ("source_only", "cyclegan", "cyclegan_ft")] == logs
    baselines = [json.loads((runs / m / "seed0" / "report" / "report.json").read_text())["baseline"]
                 for m in ("source_only", "cyclegan", "cyclegan_ft")]
    source_only = str(runs.resolve() / "source_only" / "seed0")
    assert baselines == [None, source_only, source_only]  # each cell beside its task's source-only cell
    assert rows[1]["report"] == str(runs.resolve() / "cyclegan" / "seed0" / "report" / "report.html")
    assert "[report](runs/uci/cyclegan/seed0/report/report.html)" in (tmp_path / "b" / "results.md").read_text()


# ---------------------------------------------------------------------------------------------- verify


def test_verify_reruns_the_cells_of_a_results_file_and_names_every_figure_that_differs(tmp_path, toy_recipes,
                                                                                      capsys):
    path = benchmark_file(tmp_path, seeds=[0, 1, 2])
    first = {"toy/source_only/seed0": 0.80, "toy/source_only/seed1": 0.90, "toy/source_only/seed2": 0.70}
    bench.compare(path, output=tmp_path / "b", launch=fake_launch(first))
    recorded = tmp_path / "b" / "results.json"

    now = {**first, "toy/source_only/seed1": 0.8875}
    with pytest.raises(UserError) as differ:
        bench.compare(path, output=tmp_path / "v1", launch=fake_launch(now), verify=recorded)
    assert str(differ.value) == (f"--verify: 1 of 3 cells differ from {recorded} (tolerance 0 pp): "
                                 f"toy/source_only/seed1: 90.00% recorded, 88.75% now (-1.25 pp)")
    order = []
    bench.compare(path, output=tmp_path / "v2", launch=fake_launch(now, order=order), verify=recorded,
                  tolerance=1.5)
    assert order == ["toy/source_only/seed0", "toy/source_only/seed1", "toy/source_only/seed2"]
    assert "verified: the 3 cells reproduce" in capsys.readouterr().err

    order = []
    bench.compare(path, output=tmp_path / "v3", launch=fake_launch(now, order=order), verify=recorded,
                  only="*/seed[02]")
    assert order == ["toy/source_only/seed0", "toy/source_only/seed2"]
    with pytest.raises(UserError, match="--only: no cell of .* matches 'x/\\*'"):
        bench.compare(path, output=tmp_path / "v4", launch=fake_launch(now), only="x/*")
    order = []  # a table of some of the grid's cells (v3's: seeds 0 and 2) re-runs those, not the whole grid
    bench.compare(path, output=tmp_path / "v5", launch=fake_launch(now, order=order),
                  verify=tmp_path / "v3" / "results.json")
    assert order == ["toy/source_only/seed0", "toy/source_only/seed2"]
    with pytest.raises(UserError, match=r"--verify: 1 cell\(s\) of .* are not in this grid, e.g. toy/source_only/seed2: "
                                        r"pass the seeds \(--seeds\)"):  # recorded with other seeds than the file's
        bench.compare(path, output=tmp_path / "v6", launch=fake_launch(now), verify=recorded, seeds=[0, 1])


def test_verify_says_whether_a_figure_that_moved_saw_other_data(tmp_path, toy_recipes):
    """A generated domain depends on the machine (syndigits on its fonts): --verify names the domains whose
    data_fingerprints differ from the recorded run's, or says the data were the same."""
    path = benchmark_file(tmp_path, seeds=[0])
    then = {"source": "aaaa", "target": "bbbb", "target_test": "cccc"}
    bench.compare(path, output=tmp_path / "b", launch=fake_launch({"toy/source_only/seed0": 0.80}, data=then))
    recorded = tmp_path / "b" / "results.json"
    assert json.loads(recorded.read_text())["cells"][0]["data_fingerprints"] == then
    moved = {"toy/source_only/seed0": 0.70}
    with pytest.raises(UserError) as differ:
        bench.compare(path, output=tmp_path / "v1", launch=fake_launch(moved, data={**then, "source": "dddd"}),
                      verify=recorded)
    assert str(differ.value).endswith("80.00% recorded, 70.00% now (-10.00 pp; other data: source (data_fingerprints))")
    with pytest.raises(UserError) as differ:
        bench.compare(path, output=tmp_path / "v2", launch=fake_launch(moved, data=then), verify=recorded)
    assert str(differ.value).endswith("80.00% recorded, 70.00% now (-10.00 pp; same data)")

"""Model selection without target labels: candidates inside a run (selection.py), the held-out labeled
target folds, the recipe's checks, and the method recommendation (benchmark/recommend.py)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from da_toolkit.benchmark import recommend
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset, build_domains
from da_toolkit.errors import UserError
from da_toolkit.evaluate import predict
from da_toolkit.models import create_classifier
from da_toolkit.pipeline import load_run, run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.selection import Selection, hold_out_target_labels
from conftest import toy_recipe_dict


def toy_selection(tmp_path, **options):
    recipe = recipe_from_dict(toy_recipe_dict(selection={"samples": 60, **options}))
    domains = build_domains(recipe.data, 0)
    ctx = Context(tmp_path, progress=False)
    return Selection(recipe.selection, domains.source_test or domains.source, domains.target, domains.target_test,
                     None, ctx), domains


def test_scoring_a_candidate_changes_nothing_in_training(tmp_path):
    selection, _ = toy_selection(tmp_path, select="source_accuracy")
    torch.manual_seed(0)
    model = create_classifier("lenet", 1, 16, 10, 32).train()
    model.head.eval()  # a mixed-mode model, as ADDA's C ∘ M_t
    weights = copy.deepcopy(model.state_dict())
    rng, numpy_rng = torch.get_rng_state(), np.random.get_state()
    selection.observe("feature", 10, model)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global generators (class_ami's k-means
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_rng))  # has its own)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert model.encoder.training and not model.head.training  # each module's mode restored
    # the best weights are a copy, not the live tensors: training on does not change them
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert torch.equal(selection.best["weights"][next(iter(weights))], weights[next(iter(weights))])


def test_the_sample_is_fixed_by_the_seed(tmp_path):
    first, domains = toy_selection(tmp_path)
    second, _ = toy_selection(tmp_path)
    assert len(first.source) == len(first.target) == 60
    assert torch.equal(first.source.images, second.source.images) and torch.equal(first.target.images,
                                                                                  second.target.images)
    assert (first.target.labels == -1).all()  # target labels are never part of the sample
    torch.manual_seed(0)
    model = create_classifier("lenet", 1, 16, 10, 32).eval()  # observe scores in eval mode
    assert first.scores(model) == second.scores(model)


def test_every_seed_predicts_the_same_agreement_sample_with_the_model_it_returns(tmp_path, monkeypatch):
    """The validators' sample is the seed's own; the agreement sample is drawn without the run's seed, so two
    seeds' predictions of it can be compared (recommend.with_seed_agreement)."""
    from da_toolkit import selection as selection_module

    monkeypatch.setattr(selection_module, "AGREEMENT_IMAGES", 60)  # fewer than the toy target's: a draw
    recipe = recipe_from_dict(toy_recipe_dict(selection={"samples": 60}))
    domains = build_domains(recipe.data, 0)
    selections = []
    for seed in (0, 1):
        ctx = Context(tmp_path / str(seed), seed=seed, progress=False)
        selections.append(Selection(recipe.selection, domains.source, domains.target, None, None, ctx))
    first, second = selections
    assert not torch.equal(first.target.images, second.target.images)  # the validators' samples: per seed
    assert torch.equal(first.agreement_sample.images, second.agreement_sample.images)
    assert len(first.agreement_sample) == 60 and (first.agreement_sample.labels == -1).all()
    torch.manual_seed(0)
    model = create_classifier("lenet", 1, 16, 10, 32).train()
    first.observe("feature", 1, model)
    _, entry = first.choose(model)
    assert entry["agreement_sample"]["predictions"] == predict(model, first.agreement_sample).tolist()
    assert model.training  # its mode restored
    assert entry["agreement_sample"]["images"] == 60


def test_a_run_returns_the_candidate_its_validator_scored_best(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "dann", "discriminator_hidden": [16]},
                                              train={"iterations": 35},
                                              selection={"select": "dev", "every": 10, "samples": 80,
                                                         "record_target_test": True}))
    metrics = run(recipe, tmp_path / "run", progress=False)
    selection = metrics["model_selection"]
    candidates = selection["candidates"]
    assert [c["iteration"] for c in candidates] == [10, 20, 30, 35]  # every 10, and the last
    scores = [c["scores"]["dev"] for c in candidates]
    chosen = max(i for i, s in enumerate(scores) if s == max(scores))  # ties: the later one
    assert selection["chosen"]["index"] == chosen
    assert selection["chosen"]["iteration"] == candidates[chosen]["iteration"]
    assert metrics["target_accuracy"] == candidates[chosen]["target_test_accuracy"]
    assert "hindsight" in selection["note"] and "dev" in metrics["selection"]
    # the saved classifier is that candidate: scoring it again gives its scores
    _, classifier = load_run(tmp_path / "run")
    again, _ = toy_selection(tmp_path / "again", samples=80)
    assert again.scores(classifier)["dev"] == pytest.approx(scores[chosen], abs=1e-6)
    assert set(selection["wall_time_s"]) == {"validators", "target_test_study"}


def test_last_is_the_default_and_returns_the_last_iterate(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(train={"iterations": 30}, selection={"record_target_test": True}))
    assert recipe.selection.select == "last"
    metrics = run(recipe, tmp_path / "run", progress=False)
    candidates = metrics["model_selection"]["candidates"]
    assert [c["iteration"] for c in candidates] == list(range(3, 31, 3))  # 10 times by default
    assert metrics["model_selection"]["chosen"]["index"] == len(candidates) - 1
    assert metrics["target_accuracy"] == candidates[-1]["target_test_accuracy"]
    assert "target_test_accuracy" not in run(recipe_from_dict(toy_recipe_dict(train={"iterations": 30})),
                                             tmp_path / "plain", progress=False)["model_selection"]["candidates"][0]


def test_adda_scores_its_source_model_first_and_can_return_it(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(
        feature={"adapter": "adda", "pretrain_iterations": 30, "adapt_iterations": 20, "discriminator_hidden": [16],
                 "encoder_lr": 0.05},
        selection={"select": "source_accuracy", "every": 10, "samples": 80}))
    metrics = run(recipe, tmp_path / "run", progress=False)
    candidates = metrics["model_selection"]["candidates"]
    assert [(c["stage"], c["iteration"]) for c in candidates] == [("feature_adapt", i) for i in (0, 10, 20)]
    _, classifier = load_run(tmp_path / "run")
    again, _ = toy_selection(tmp_path / "again", samples=80)
    chosen = candidates[metrics["model_selection"]["chosen"]["index"]]
    assert again.scores(classifier)["source_accuracy"] == chosen["scores"]["source_accuracy"]


def test_held_out_folds_split_the_labeled_target_images():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, -1, -1])
    target = DomainDataset(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), labels, "t", 2)
    train0, held0 = hold_out_target_labels(target, 2, seed=0)
    train1, held1 = hold_out_target_labels(target, 2, seed=1)
    # each class's labeled images (indices 0,2,4,6 and 1,3,5,7) dealt in turn: fold 0 = 0,4 and 1,5
    assert held0.labels.tolist() == [0, 1, 0, 1] and torch.nonzero(train0.labels >= 0).flatten().tolist() == [2, 3, 6, 7]
    assert torch.nonzero(train1.labels >= 0).flatten().tolist() == [0, 1, 4, 5]
    assert len(train0) == len(target)  # held-out images stay in the target set, unlabeled
    assert len(held0) + len(held1) == 8


def test_a_run_validates_on_held_out_target_labels_it_never_trains_on(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(data={"target_labels_per_class": 4}, train={"iterations": 20},
                                              selection={"target_label_folds": 2, "select": "target_label_accuracy"}))
    metrics = run(recipe, tmp_path / "run", progress=False)
    assert metrics["model_selection"]["samples"]["held_out_target"] == 20  # 2 of 4 per class, 10 classes
    assert all("target_label_accuracy" in c["scores"] for c in metrics["model_selection"]["candidates"])


@pytest.mark.parametrize("selection, data, message", [
    ({"select": "target_label_accuracy"}, {}, "needs held-out labeled target images"),
    ({"target_label_folds": 3}, {"target_labels_per_class": 2}, "3 folds need at least 3"),
    ({"target_label_folds": 1}, {"target_labels_per_class": 2}, "0 .* or at least 2"),
    ({"every": 0}, {}, r"selection.every: must be 1 or more \(iterations between candidates"),
    ({"samples": 5}, {}, r"selection.samples: must be 10 or more \(images per domain"),
    ({"select": "accuracy"}, {}, "selection.select"),
])
def test_impossible_selections_are_refused(selection, data, message):
    with pytest.raises(UserError, match=message):
        recipe_from_dict(toy_recipe_dict(selection=selection, data=data))


# ------------------------------------------------------------------------------- recommendation


def record(task, method, seed, accuracy, scores, collapsed=False, candidates=None):
    candidates = candidates or [{"stage": "feature", "iteration": 1, "scores": scores}]
    return {"task": task, "method": method, "seed": seed, "target_accuracy": accuracy, "collapsed": collapsed,
            "model_selection": {"chosen": {"index": len(candidates) - 1}, "candidates": candidates}}


def test_the_pick_regret_and_harm_by_hand():
    records = [record("t", "source_only", s, 0.70, {"info_max": 1.0}) for s in (0, 1)]
    records += [record("t", "dann", 0, 0.80, {"info_max": 1.5}), record("t", "dann", 1, 0.84, {"info_max": 1.2})]
    records += [record("t", "mcc", 0, 0.60, {"info_max": 2.0}), record("t", "mcc", 1, 0.62, {"info_max": 2.2})]
    result = recommend.task_study(records, "info_max")
    # mcc has the highest mean score (2.1) and beats source-only in both seeds: picked
    assert result["pick"] == "mcc" and result["best"] == "dann"
    assert result["regret"] == pytest.approx(82.0 - 61.0)  # dann's mean 82 % − mcc's 61 %
    assert result["harmful"] is True  # 61 < 70 − 5


def test_no_harm_falls_back_to_source_only():
    records = [record("t", "source_only", 0, 0.70, {"dev": 1.0}), record("t", "source_only", 1, 0.70, {"dev": 1.0})]
    # dann's mean score is higher (1.45) but not in seed 1 (0.9 < 1.0): not recommended
    records += [record("t", "dann", 0, 0.50, {"dev": 2.0}), record("t", "dann", 1, 0.52, {"dev": 0.9})]
    method, why = recommend.pick(records, "dev")
    assert method == "source_only" and "no harm" in why


def test_a_method_with_a_collapsed_seed_is_never_recommended():
    records = [record("t", "source_only", 0, 0.70, {"entropy": -2.0}),
               record("t", "dann", 0, 0.10, {"entropy": -0.01}, collapsed=True),
               record("t", "mcc", 0, 0.80, {"entropy": -1.0})]
    assert recommend.pick(records, "entropy")[0] == "mcc"


def test_spearman_and_checkpoint_change_by_hand():
    candidates = [{"stage": "feature", "iteration": i, "scores": {"snd": s}, "target_test_accuracy": a}
                  for i, (s, a) in enumerate([(1.0, 0.5), (3.0, 0.7), (2.0, 0.9)])]
    result = recommend.task_study([record("t", "dann", 0, 0.9, {}, candidates=candidates)], "snd")
    # ranks of the scores 1, 3, 2 and of the accuracies 1, 2, 3: ρ = 1 − 6 Σd² / (n (n² − 1)) = 1 − 6·2/24 = 0.5
    assert result["spearman"] == pytest.approx(0.5)
    # snd chooses iteration 1 (score 3.0, accuracy 70 %) instead of the last (90 %): −20 points
    assert result["checkpoint_change"] == pytest.approx(-20.0)
    assert recommend.spearman([1, 2], [3, 4]) is None  # too few points


def test_show_prints_the_recommendation_of_the_runs_it_is_given(tmp_path):
    from click.testing import CliRunner

    from da_toolkit.cli import main, selection_record

    metrics = {}
    for name, feature in (("toy_plain", {"adapter": "source_only"}),
                          # one mixed batch of both domains: its 120 toy iterations collapse (one batch per domain,
                          # the default, does not), which is the case this test needs
                          ("toy_dann", {"adapter": "dann", "discriminator_hidden": [16], "domain_batches": "joint"})):
        recipe = recipe_from_dict(toy_recipe_dict(name=name, feature=feature, train={"iterations": 120}))
        metrics[name] = run(recipe, tmp_path / name, progress=False)
    result = CliRunner().invoke(main, ["show", "--verbose", str(tmp_path / "toy_plain"), str(tmp_path / "toy_dann")])
    assert result.exit_code == 0, result.output
    records = [selection_record(m) for m in metrics.values()]
    assert [r["method"] for r in records] == ["source_only", "toy_dann"]  # the plain run is the no-harm baseline
    assert [r["collapsed"] for r in records] == [False, True]  # the mixed-batch DANN collapsed
    for validator in ("source_accuracy", "info_max", "dev"):
        picked, _ = recommend.pick(records, validator)
        shown = [line for line in result.output.splitlines() if f"| {validator} " in line or f"**{validator}**" in line]
        assert picked == "source_only" and shown[0].split("|")[3].strip() == picked  # never the collapsed run


def test_one_line_picks_say_what_to_use_and_why_by_hand():
    def lines(records, names=None):
        return recommend.one_line_picks(records, recommend.study(records), names)

    base = [record("t", "source_only", 0, 0.70, {"class_ami": 1.0})]
    # no source-only run: the pick is the highest score, and the line says no-harm was not checked
    assert lines([record("t", "dann", 0, 0.8, {"class_ami": 1.5}), record("t", "mcc", 0, 0.9, {"class_ami": 1.2})]) == [
        "t: use dann — class_ami 1.50, the highest of 2 method(s); no source-only run to check that adaptation "
        "helped; no target label read"]
    # source-only scores highest; the adapted method's score is shown with the decimals that tell them apart
    assert lines(base + [record("t", "dann", 0, 0.99, {"class_ami": 0.9986})], {"dann": "r_dann (dann)"}) == [
        "t: keep source-only (no adaptation) — no adapted method scores higher on class_ami (best: r_dann (dann) "
        "0.999 vs source-only 1.000); no target label read"]
    # every adapted run collapsed: nothing to choose, and the collapsed method is named
    assert lines(base + [record("t", "dann", 0, 0.9, {"class_ami": 2.0}, collapsed=True)]) == [
        "t: keep source-only (no adaptation) — no adapted run to choose without a collapse alarm; not considered, "
        "collapse alarm: dann; no target label read"]
    # nothing scored by the default validator
    assert lines([record("t", "dann", 0, 0.9, {"class_ami": 2.0}, collapsed=True)]) == [
        "t: no recommendation — no run has this validator's score, or every method has a seed with a collapse "
        "alarm; not considered, collapse alarm: dann; no target label read"]


def write_metrics(folder, recipe, adapter, task, seed, accuracy, class_ami, collapsed=False):
    """A finished run directory with a hand-made metrics.json: one candidate, scored `class_ami`, returned."""
    folder.mkdir(parents=True)
    target = {"dataset": "usps/test", "images": 2007} if task == "mnist->usps" else {"dataset": "mnist/test",
                                                                                      "images": 10000}
    metrics = {"recipe": recipe, "task": task, "pixel_adapter": None, "feature_adapter": adapter,
               "refine_adapter": None, "seed": seed, "target_accuracy": accuracy, "source_accuracy": 0.99,
               "target": target, "wall_time_s": 10.0,
               "selection": "final model after the last iteration (no target labels used for model selection)",
               "collapse": {"collapsed": collapsed, "message": "the classifier collapsed: (hand-made)"},
               "model_selection": {"chosen": {"index": 0}, "candidates": [
                   {"stage": "feature", "iteration": 10, "scores": {"class_ami": class_ami, "dev": -class_ami}}]}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


@pytest.fixture
def two_tasks(tmp_path):
    """mnist->usps: dann scores above source-only in both seeds, though its (hindsight) accuracy is lower;
    usps->mnist: adda's mean score is higher but not in seed 1 (no harm), mcc scores highest but collapsed."""
    runs = [write_metrics(tmp_path / f"m2u_{method}{seed}", f"mnist2usps_{method}", method, "mnist->usps", seed,
                          accuracy, score)
            for method, seed, accuracy, score in (("source_only", 0, 0.70, 1.0), ("source_only", 1, 0.72, 1.1),
                                                  ("dann", 0, 0.60, 1.5), ("dann", 1, 0.62, 1.6))]
    runs += [write_metrics(tmp_path / f"u2m_{method}{seed}", f"usps2mnist_{method}", method, "usps->mnist", seed,
                           accuracy, score, collapsed=method == "mcc")
             for method, seed, accuracy, score in (("source_only", 0, 0.60, 1.0), ("source_only", 1, 0.60, 1.0),
                                                   ("adda", 0, 0.90, 1.4), ("adda", 1, 0.90, 0.9),
                                                   ("mcc", 0, 0.10, 3.0))]
    return runs


def test_show_prints_the_pick_in_one_line_per_task(two_tasks):
    from click.testing import CliRunner

    from da_toolkit.cli import main

    result = CliRunner().invoke(main, ["show", *two_tasks])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "method", "target", "acc", "source", "acc", "wall", "time"]
    assert [line.split()[1] for line in lines[1:10]] == ["source_only"] * 2 + ["dann"] * 2 + ["source_only"] * 2 + \
        ["adda"] * 2 + ["mcc"]
    assert lines[9].endswith("10s  COLLAPSED") and "COLLAPSED" not in "".join(lines[1:9])
    assert lines[10] == ("target acc: your evaluation on the labeled target test images (usps/test, 2007 images; "
                         "mnist/test, 10000 images); the recommendation below never reads it")
    assert lines[12] == f"COLLAPSED: {two_tasks[-1]}: the classifier collapsed: (hand-made)"
    # one line per task, from the validator scores alone: dann is picked though its target accuracy is lower
    assert lines[14:16] == [
        "mnist->usps: use mnist2usps_dann (dann) — class_ami 1.55 vs source-only 1.05 (mean of 2 seeds, higher "
        "in each of the 2 seeds both ran); no target label read",
        "usps->mnist: keep source-only (no adaptation) — no harm: usps2mnist_adda (adda) has the higher mean "
        "class_ami (1.15 vs source-only 1.00) but not in every seed; not considered, collapse alarm: usps2mnist_mcc "
        "(mcc); no target label read"]
    assert lines[16].startswith("(picked by class_ami, higher is better: AMI of k-means clusters")
    assert lines[16].endswith("; class_ami where some method has no seed_agreement, the default (run every method "
                              "with two seeds or more, not started from one trained classifier))")
    assert lines[17:] == ["(every validator's pick, with the hindsight from target test labels: add --verbose)"]
    assert "|" not in result.output and "hindsight" not in "".join(lines[:17])


def test_show_verbose_adds_every_validators_pick_with_the_hindsight(two_tasks):
    from click.testing import CliRunner

    from da_toolkit.cli import main

    plain = CliRunner().invoke(main, ["show", *two_tasks]).output.splitlines()
    result = CliRunner().invoke(main, ["show", "--verbose", *two_tasks])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:17] == plain[:17]  # the same runs, picks and validator line
    assert "add --verbose" not in result.output and lines[18] == "## Recommendation without target labels"
    # hindsight: source-only is the best on mnist->usps (71 %), dann's 61 % a regret of 10 points, harmful (> 5)
    assert ("| mnist->usps | **class_ami** (default) | mnist2usps_dann ⚠ harmful | source_only | 10.00 | – | – | – | "
            "highest score, above source-only's in all 2 seed(s) |") in lines
    # dev = −class_ami here: source-only scores highest on both tasks; over the methods of usps->mnist, dev ranks
    # mcc, adda, source-only (−3, −1.15, −1) and accuracy mcc, source-only, adda: ρ = 1 − 6 · 2 / 24 = 0.5
    assert "| usps->mnist | dev | source_only | usps2mnist_adda | 30.00 | 0.500 | – | – | highest score |" in lines


def members(source_accuracy, info_max, class_ami, target_knn):
    return {"source_accuracy": source_accuracy, "info_max": info_max, "class_ami": class_ami, "target_knn": target_knn}


def test_the_ensemble_picks_by_mean_rank_by_hand():
    records = [record("t", "source_only", 0, 0.70, members(0.90, 1.0, 0.5, 0.5)),
               record("t", "dann", 0, 0.80, members(0.85, 1.5, 0.7, 0.7)),
               record("t", "mcc", 0, 0.60, members(0.50, 2.5, 0.4, 0.3))]
    # ranks (1 = lowest) per member: source_accuracy 3, 2, 1; info_max 1, 2, 3; class_ami 2, 3, 1;
    # target_knn 2, 3, 1 -> mean ranks source_only 2, dann 2.5, mcc 1.5
    assert recommend.scores_of([recommend.returned_scores(r) for r in records], "ensemble") == [2.0, 2.5, 1.5]
    assert recommend.pick(records, "info_max")[0] == "mcc"  # mcc sharpens its predictions: info_max alone is fooled
    result = recommend.task_study(records, "ensemble")
    assert result["pick"] == "dann" and result["regret"] == 0.0  # and dann's rank beats source-only's in seed 0
    assert "ensemble" in recommend.validators_of(records)
    assert "ensemble" not in recommend.validators_of([record("t", "dann", 0, 0.8, {"info_max": 1.0})])


def predicted(task, method, seed, accuracy, predictions, collapsed=False, images=None):
    out = record(task, method, seed, accuracy, {"info_max": 1.0}, collapsed)
    out["model_selection"]["agreement_sample"] = {"seed": 7919, "images": images or len(predictions),
                                                  "predictions": predictions}
    return out


def test_seed_agreement_is_a_methods_score_from_its_seeds_predictions_by_hand():
    records = [predicted("t", "source_only", 0, 0.70, [0, 1, 2, 3]), predicted("t", "source_only", 1, 0.72, [0, 2, 2, 1]),
               predicted("t", "shot", 0, 0.90, [0, 1, 2, 3]), predicted("t", "shot", 1, 0.60, [3, 3, 3, 3]),
               predicted("t", "mcc", 0, 0.88, [0, 1, 2, 2]), predicted("t", "mcc", 1, 0.86, [0, 1, 2, 3]),
               predicted("t", "mcc", 2, 0.87, [0, 1, 1, 3]),
               predicted("t", "dann", 0, 0.95, [0, 1, 2, 3])]  # one seed: no agreement, but the best
    scored = recommend.with_seed_agreement(records)
    values = {(r["method"], r["seed"]): r.get("seed_agreement") for r in scored}
    assert values[("source_only", 0)] == values[("source_only", 1)] == 0.5  # 2 of 4 images alike
    assert values[("shot", 0)] == 0.25
    assert values[("mcc", 2)] == pytest.approx((3 / 4 + 2 / 4 + 3 / 4) / 3)  # pairs (0, 1), (0, 2), (1, 2)
    assert values[("dann", 0)] is None and "seed_agreement" not in records[0]  # the input is left as it was
    result = recommend.study(records)["tasks"]["t"]["seed_agreement"]
    # mcc agrees most (0.67 > 0.5 > 0.25) and more than source-only in every seed; dann's 95 % − mcc's 87 %
    assert (result["pick"], result["best"], result["regret"]) == ("mcc", "dann", pytest.approx(8.0))
    assert "seed_agreement" in recommend.validators_of(scored)
    # results.json keeps each run's agreement, not its predictions; a study of what it keeps picks the same
    stored = recommend.without_agreement_predictions(records)
    assert all("predictions" not in r["model_selection"]["agreement_sample"] for r in stored)
    assert [r.get("seed_agreement") for r in stored] == [r.get("seed_agreement") for r in scored]
    assert recommend.study(stored)["tasks"]["t"]["seed_agreement"] == result


def test_seed_agreement_leaves_out_collapsed_methods_and_other_samples():
    records = [predicted("t", "source_only", s, 0.70, [0, 1, 2, s]) for s in (0, 1)]
    records += [predicted("t", "dann", s, 0.10, [3, 3, 3, 3], collapsed=True) for s in (0, 1)]  # agree everywhere
    assert recommend.study(records)["tasks"]["t"]["seed_agreement"]["pick"] == "source_only"
    other = [predicted("t", "mcc", 0, 0.9, [0, 1, 2, 3]), predicted("t", "mcc", 1, 0.9, [0, 1, 2, 3, 4], images=5)]
    assert all(r.get("seed_agreement") is None for r in recommend.with_seed_agreement(other))


def test_seeds_started_from_one_trained_classifier_are_not_independent_pairs():
    def started(seed, predictions, start):
        out = predicted("t", "shot", seed, 0.9, predictions)
        out["model_selection"]["agreement_sample"]["starts_from"] = start
        return out

    # seeds 0 and 1 from checkpoint a agree everywhere by design; the pairs with seed 2 (from b) count: 3/4, 2/4
    records = [started(0, [0, 1, 2, 3], "a"), started(1, [0, 1, 2, 3], "a"), started(2, [0, 1, 2, 0], "b"),
               started(3, [0, 1, 0, 0], None)]
    assert recommend.agreement([r["model_selection"]["agreement_sample"]["predictions"] for r in records[:3]],
                               ["a", "a", "b"]) == pytest.approx((3 / 4 + 3 / 4) / 2)
    # with a run that names no start: pairs (0, 2) 3/4, (0, 3) 2/4, (1, 2) 3/4, (1, 3) 2/4, (2, 3) 3/4
    assert recommend.with_seed_agreement(records)[0]["seed_agreement"] == pytest.approx(13 / 20)
    assert all(r.get("seed_agreement") is None for r in recommend.with_seed_agreement(records[:2]))


def test_the_recommendation_trusts_seed_agreement_where_every_method_has_it_else_the_fallback():
    two_seeds = [predicted("t", m, s, acc, p) for m, acc, preds in
                 (("source_only", 0.70, ([0, 1, 2, 3], [0, 1, 1, 3])), ("mcc", 0.90, ([0, 1, 2, 3], [0, 1, 2, 3])))
                 for s, p in enumerate(preds)]
    for r, ami in zip(two_seeds, (0.5, 0.5, 0.4, 0.4)):  # class_ami prefers source-only, agreement mcc
        r["model_selection"]["candidates"][0]["scores"]["class_ami"] = ami
    result = recommend.study(two_seeds)
    assert result["defaults"] == {"t": "seed_agreement"} and result["tasks"]["t"]["seed_agreement"]["pick"] == "mcc"
    assert result["default"]["mean_regret"] == 0.0
    # a collapsed method without agreement does not take seed agreement away: it is not a candidate anyway
    flagged = two_seeds + [predicted("t", "dann", 0, 0.1, [3, 3, 3, 3], collapsed=True)]
    assert recommend.study(flagged)["defaults"] == {"t": "seed_agreement"}
    # a method with one seed has no agreement: the task falls back to class_ami, which picks source-only here
    one_seed = two_seeds + [predicted("t", "dann", 0, 0.8, [0, 1, 2, 2])]
    one_seed[-1]["model_selection"]["candidates"][0]["scores"]["class_ami"] = 0.3
    result = recommend.study(one_seed)
    assert result["defaults"] == {"t": "class_ami"} and result["tasks"]["t"]["class_ami"]["pick"] == "source_only"
    assert result["default"]["mean_regret"] == pytest.approx(20.0)
    lines = recommend.markdown(result)
    assert "| t | **class_ami** (default) | source_only |" in "\n".join(lines)
    assert "| **the recommendation** (class_ami) | 20.00 | 0 |" in "\n".join(lines)


def test_rescored_scores_count_for_the_returned_model_only():
    candidates = [{"stage": "feature", "iteration": i, "scores": {"info_max": 1.0 + i, "source_accuracy": 0.8},
                   "target_test_accuracy": 0.5 + i / 10} for i in range(3)]
    old = record("t", "dann", 0, 0.7, {}, candidates=candidates)
    old["rescored"] = {"scores": {"class_ami": 0.6, "target_knn": 0.6, "info_max": 99.0}}
    # the run's own score wins over a rescored one of the same name; the added ones join it
    assert recommend.returned_scores(old) == {"info_max": 3.0, "source_accuracy": 0.8, "class_ami": 0.6,
                                              "target_knn": 0.6}
    plain = record("t", "source_only", 0, 0.6, members(0.9, 1.0, 0.5, 0.5))
    unscored = record("t", "mcc", 0, 0.9, {"info_max": 5.0, "source_accuracy": 0.1})  # no class_ami: not ranked
    records = [plain, old, unscored]
    # ranks of plain, old: source_accuracy 2, 1; info_max 1, 2 (the returned candidate's 3.0); class_ami 1, 2;
    # target_knn 1, 2 -> 5/4, 7/4; mcc lacks two members: not ranked (and not picked)
    assert recommend.scores_of([recommend.returned_scores(r) for r in records], "ensemble") == [1.25, 1.75, None]
    assert recommend.pick(records, "ensemble")[0] == "dann"
    # the candidates have no class_ami: no Spearman ρ nor checkpoint change for it, nor for the ensemble
    for validator in ("class_ami", "ensemble"):
        study = recommend.task_study([old], validator)
        assert study.get("spearman") is None and "checkpoint_change" not in study


def test_rescore_adds_the_missing_validators_of_the_returned_model(tmp_path):
    import json

    from click.testing import CliRunner

    from da_toolkit.cli import main
    from da_toolkit.rundir import RunDir

    recipe = recipe_from_dict(toy_recipe_dict(selection={"select": "info_max"}))
    run(recipe, tmp_path / "run", progress=False)
    rundir = RunDir(tmp_path / "run")
    metrics = rundir.read_metrics()
    chosen = metrics["model_selection"]["chosen"]["index"]
    computed = dict(metrics["model_selection"]["candidates"][chosen]["scores"])
    for candidate in metrics["model_selection"]["candidates"]:  # an "old" run: trained before three validators
        for name in ("bnm", "class_ami", "target_knn"):
            del candidate["scores"][name]
    predicted = metrics["model_selection"].pop("agreement_sample")  # ... and before the agreement sample
    rundir.write_metrics(metrics)
    files = {path: path.stat().st_mtime_ns for path in rundir.path.rglob("*")}
    result = CliRunner().invoke(main, ["rescore", str(rundir.path)])
    assert result.exit_code == 0, result.output
    assert ("added bnm, class_ami, target_knn, the agreement sample's predictions; 5 stored scores reproduced"
            in result.output)
    rescored = rundir.read_rescored()
    # the same sample and model: exactly the values the run computed itself
    assert rescored["scores"] == {name: computed[name] for name in ("bnm", "class_ami", "target_knn")}
    assert rescored["agreement_sample"] == predicted
    assert set(rescored["checked"]) == {"source_accuracy", "entropy", "info_max", "dev", "snd"}
    assert rescored["model"]["index"] == chosen and "returned" in rescored["note"]
    # rescored.json is all it wrote: no log line, no TensorBoard event, no lock left behind
    assert {path: path.stat().st_mtime_ns for path in rundir.path.rglob("*") if path != rundir.rescored_file} == files
    # again: the same scores and sample are already there; nothing rewritten, nothing said to be added
    written = rundir.rescored_file.stat().st_mtime_ns
    result = CliRunner().invoke(main, ["rescore", str(rundir.path)])
    assert result.exit_code == 0 and "nothing new" in result.output and "added" not in result.output
    assert rundir.rescored_file.stat().st_mtime_ns == written
    rundir.clear()  # --overwrite: a new run must not inherit the old model's rescored scores
    assert not rundir.rescored_file.exists()
    run(recipe, rundir.path, progress=False)  # the same seed: the same model again
    # a run whose stored scores the model does not reproduce (another sample, another model): nothing written
    metrics["model_selection"]["candidates"][chosen]["scores"]["info_max"] += 0.01
    rundir.write_metrics(metrics)
    result = CliRunner().invoke(main, ["rescore", str(rundir.path), str(tmp_path / "unfinished")])
    assert result.exit_code == 2 and "does not reproduce" in result.output and "info_max" in result.output
    assert "unfinished: no metrics.json here" in result.output  # reported, and the next one still tried
    assert not rundir.rescored_file.exists()
    assert json.loads(rundir.metrics_file.read_text()) == metrics


def test_show_reads_the_scores_rescore_added(two_tasks):
    """`show` merges a run's rescored.json (validators added after it ran) into its returned scores."""
    from pathlib import Path

    from click.testing import CliRunner

    from da_toolkit.cli import main

    for run, bnm in zip(two_tasks, (0.1, 0.1, 0.5, 0.5, 0.3, 0.3, 0.2, 0.2, 0.9)):
        (Path(run) / "rescored.json").write_text(json.dumps({"note": "hand-made", "scores": {"bnm": bnm}}))
    result = CliRunner().invoke(main, ["show", "--verbose", *two_tasks])
    assert result.exit_code == 0, result.output
    # mnist->usps: dann's bnm 0.5 beats source-only's 0.1 in both seeds; usps->mnist: source-only's 0.3 beats adda's
    assert "| mnist->usps | bnm | mnist2usps_dann ⚠ harmful | source_only | 10.00 |" in result.output
    assert "| usps->mnist | bnm | source_only | usps2mnist_adda | 30.00 |" in result.output


def test_show_tells_the_configurations_of_one_recipe_apart(tmp_path):
    """Two runs of one recipe name and seed with other hyper-parameters (a sweep's configurations) are two
    methods for `show`, each named by the keys that differ, not two seeds of one method."""
    import yaml
    from click.testing import CliRunner

    from da_toolkit.cli import main

    runs = [write_metrics(tmp_path / "so", "mnist2usps_source_only", "source_only", "mnist->usps", 0, 0.70, 1.0)]
    for name, trade_off, score in (("a", 0.5, 1.2), ("b", 2.0, 1.4)):
        runs.append(write_metrics(tmp_path / name, "mnist2usps_dann", "dann", "mnist->usps", 0, 0.8, score))
        recipe = {"name": "mnist2usps_dann", "seed": 0, "feature": {"adapter": "dann", "trade_off": trade_off}}
        (tmp_path / name / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["show", *runs])
    assert result.exit_code == 0, result.output
    # pooled as two seeds of one method, the mean 1.30 would be shown (and seed 0's score of one run lost)
    assert ("mnist->usps: use mnist2usps_dann [feature.trade_off=2.0] (dann) — class_ami 1.40 vs source-only 1.00; "
            "no target label read") in result.output.splitlines()

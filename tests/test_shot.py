"""SHOT (Liang et al. 2020): information maximisation and the clustering pseudo-labels worked out by hand,
the frozen head and the trained encoder, no source image read, and the source checkpoint's checks."""
from __future__ import annotations

import hashlib
import math
import re

import pytest
import torch
import yaml
from click.testing import CliRunner

from da_toolkit.adapters import shot
from da_toolkit.adapters.adversarial import GuardOptions
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.benchmark import recommend
from da_toolkit.cli import main, selection_record
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.errors import UserError
from da_toolkit.models import create_classifier
from da_toolkit.recipe import load_recipe, recipe_from_dict
from da_toolkit.rundir import RunDir
from da_toolkit.training.information_maximisation import cluster_pseudo_labels, information_maximisation
from conftest import toy_recipe_dict
from test_adda import toy

LOG3 = math.log(3)


# ------------------------------------------------------------------ L_im = mean_i H(p_i) − H(mean_i p_i)


def test_information_maximisation_of_uniform_predictions_is_zero():
    """p_i = (1/3, 1/3, 1/3): H(p_i) = log 3 and H(p̄) = log 3, so L_im = 0."""
    im, individual, diversity = information_maximisation(torch.zeros(4, 3))
    assert individual.item() == pytest.approx(LOG3, abs=1e-4)
    assert diversity.item() == pytest.approx(LOG3, abs=1e-4)
    assert im.item() == pytest.approx(0.0, abs=1e-4)


def test_information_maximisation_of_one_hot_predictions():
    """Confident predictions: H(p_i) = 0. Spread over the 3 classes, p̄ is uniform: L_im = −log 3, its
    minimum; all in one class, p̄ is one-hot too: L_im = 0."""
    spread, _, _ = information_maximisation(100 * torch.eye(3))
    assert spread.item() == pytest.approx(-LOG3, abs=1e-4)
    one_class = torch.tensor([[100.0, 0.0, 0.0]] * 3)
    im, individual, diversity = information_maximisation(one_class)
    assert (im.item(), individual.item(), diversity.item()) == pytest.approx((0.0, 0.0, 0.0), abs=1e-4)


def test_information_maximisation_of_a_mixed_batch_by_hand():
    """p_1 = (½, ½), p_2 = (1, 0): mean entropy (log 2 + 0) / 2; p̄ = (¾, ¼):
    H(p̄) = −¾ log ¾ − ¼ log ¼; L_im is their difference; its gradient makes p_1 confident."""
    logits = torch.tensor([[0.0, 0.0], [100.0, 0.0]], requires_grad=True)
    im, individual, diversity = information_maximisation(logits)
    assert individual.item() == pytest.approx(math.log(2) / 2, abs=1e-4)
    assert diversity.item() == pytest.approx(-0.75 * math.log(0.75) - 0.25 * math.log(0.25), abs=1e-4)
    assert im.item() == pytest.approx(individual.item() - diversity.item(), abs=1e-6)
    im.backward()
    # descending L_im moves sample 1 towards class 1, the class the batch under-uses (diversity)
    assert logits.grad[0, 1] < 0 < logits.grad[0, 0]


# ------------------------------------------------------------------ the clustering pseudo-labels


def at(*degrees: float) -> torch.Tensor:
    """Features on a circle of radius 1000 at these angles (the appended 1 then tilts them by < 0.06°)."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return (1000 * torch.stack([radians.cos(), radians.sin()], dim=1)).float()


def test_the_refinement_round_relabels_a_point_between_two_clusters():
    """A = two points at 0° predicted (1, 0); B = two at 90° predicted (¼, ¾); x at 55° predicted (1, 0).
    Soft round: c_0 ∝ 2·(1, 0) + ½·(0, 1) + x = (2.574, 1.319), at 27.1°; c_1 at 90°; x is 27.9° from c_0
    and 35° from c_1: label 0. Hard round: c_0 = mean of A and x, at 17.6°; x is 37.4° from it and 35°
    from c_1 = B: label 1."""
    features = at(0, 0, 90, 90, 55)
    probabilities = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.25, 0.75], [0.25, 0.75], [1.0, 0.0]])
    assert cluster_pseudo_labels(features, probabilities).tolist() == [0, 0, 1, 1, 1]


def test_the_predictions_weight_the_first_centroids():
    """A at 0° predicted (1, 0); B at 90° predicted (0.4, 0.6); x at 45° confidently predicted (0, 1).
    Weighted by p: c_0 ∝ 2·(1, 0) + 0.8·(0, 1), at 21.8°; c_1 ∝ 1.2·(0, 1) + x, at 69.7°; x (45°) is
    23.2° from c_0 and 24.7° from c_1: label 0, kept by the hard round (c_0 = mean of A and x at 14.6°,
    c_1 = B at 90°). Centroids of the argmax labels instead (c_1 = mean of B and x, at 75.4°) would say 1."""
    features = at(0, 0, 90, 90, 45)
    probabilities = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.4, 0.6], [0.4, 0.6], [0.0, 1.0]])
    assert cluster_pseudo_labels(features, probabilities).tolist() == [0, 0, 1, 1, 0]


def test_a_class_no_sample_is_predicted_as_gets_no_pseudo_label():
    """A at 0° predicted (1, 0, 0); y at 90° predicted (0, 0.65, 0.35), z at 180° (0, 0.55, 0.45). Class 2 is
    nobody's argmax, so it gets no centroid, though c_2 ∝ 0.35·y + 0.45·z (at 142.1°) is nearer z than
    c_1 ∝ 0.65·y + 0.55·z (at 130.2°): z is labeled 1, not 2, and the hard round keeps y and z in class 1."""
    features = at(0, 0, 90, 180)
    probabilities = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.65, 0.35], [0.0, 0.55, 0.45]])
    assert cluster_pseudo_labels(features, probabilities).tolist() == [0, 0, 1, 1]


# ------------------------------------------------------------------ the adapter


class SealedSource(DomainDataset):
    """An in-memory source domain whose images raise on any access: reading, sampling, batching or copying them
    to a device (every path to a `DomainDataset`'s pixels goes through `images`); labels and class names stay
    readable."""

    def __init__(self, domain: DomainDataset):
        self.labels, self.name, self.class_names = domain.labels, domain.name, domain.class_names

    @property
    def images(self):
        raise AssertionError("a source image was read")


def shot_recipe(source_run, **feature):
    return recipe_from_dict(toy_recipe_dict(feature={"adapter": "shot", "source_checkpoint": str(source_run),
                                                     "pseudo_label_every": 5, **feature},
                                            train={"iterations": 20, "batch_size": 16}))


def test_shot_keeps_the_source_head_trains_the_encoder_and_never_reads_a_source_image(toy_source_run, tmp_path,
                                                                                       monkeypatch):
    recipe = shot_recipe(toy_source_run)
    source_state, _ = RunDir(toy_source_run).load_classifier()
    clusterings = []
    original = shot.cluster_pseudo_labels
    monkeypatch.setattr(shot, "cluster_pseudo_labels", lambda *a: clusterings.append(1) or original(*a))
    logged = []
    monkeypatch.setattr(Context, "log_scalars", lambda self, stage, step, values: logged.append((stage, values)))
    ctx = Context(tmp_path, progress=False, log_every=1)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    adapter = shot.SHOT(recipe.feature.options, AdapterSetup.from_recipe(recipe))
    try:
        adapted = adapter.fit(classifier, SealedSource(toy(0)), toy(60).without_labels(), ctx)
    finally:
        ctx.close()
    for name, value in adapted.head.state_dict().items():
        assert torch.equal(value, source_state[f"head.{name}"]), name
    assert not any(p.requires_grad for p in adapted.head.parameters())
    moved = [name for name, value in adapted.encoder.state_dict().items()
             if value.is_floating_point() and not torch.equal(value, source_state[f"encoder.{name}"])]
    assert moved, "the encoder was not trained"
    assert len(clusterings) == 4  # iterations 0, 5, 10, 15 (pseudo_label_every: 5)
    assert len(logged) == 20 and {stage for stage, _ in logged} == {"feature"}
    for _, values in logged:  # L = L_im + β · CE(pseudo-labels), β = 0.3
        expected = values["loss/information_maximisation"] + 0.3 * values["loss/pseudo_label_ce"]
        assert values["loss/total"] == pytest.approx(expected, abs=1e-5)
        assert values["loss/information_maximisation"] == pytest.approx(
            values["loss/entropy"] - values["loss/diversity"], abs=1e-5)


def test_shot_as_a_refine_stage_adapts_the_classifier_it_is_given_and_reads_no_checkpoint(tmp_path, monkeypatch):
    """`refine: {adapter: shot}` (e.g. recipes/_base/methods/mcc_shot.yaml): no source_checkpoint, so the
    classifier the feature stage returned is the start; its head stays, its encoder trains, no source image."""
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "mcc"},
                                              refine={"adapter": "shot", "pseudo_label_every": 5},
                                              train={"iterations": 20, "batch_size": 16}))
    assert recipe.refine.options.source_checkpoint is None
    monkeypatch.setattr(shot, "load_source_classifier", lambda *a: pytest.fail("a checkpoint was read"))
    logged = []
    monkeypatch.setattr(Context, "log_scalars", lambda self, stage, step, values: logged.append(stage))
    torch.manual_seed(3)
    classifier = create_classifier("lenet", 1, 16, 10, 32)  # stands for the feature stage's classifier
    start = {name: value.clone() for name, value in classifier.state_dict().items()}
    adapter = shot.SHOT(recipe.refine.options, AdapterSetup.from_recipe(recipe), stage="refine")
    adapter.check_inputs(10)  # nothing to check: no file named
    ctx = Context(tmp_path, progress=False, log_every=1)
    try:
        adapted = adapter.fit(classifier, SealedSource(toy(0)), toy(60).without_labels(), ctx)
    finally:
        ctx.close()
    for name, value in adapted.head.state_dict().items():
        assert torch.equal(value, start[f"head.{name}"]), name
    assert any(value.is_floating_point() and not torch.equal(value, start[f"encoder.{name}"])
               for name, value in adapted.encoder.state_dict().items()), "the encoder was not trained"
    assert set(logged) == {"refine"} and len(logged) == 20


@pytest.mark.parametrize("stage, options, message", [
    ("feature", {}, "feature.source_checkpoint: missing: SHOT adapts a trained source classifier"),
    ("refine", {"source_checkpoint": "runs/source"},
     "refine.source_checkpoint: a refine stage adapts the classifier the feature stage returned"),
])
def test_only_shot_as_the_feature_stage_names_a_source_checkpoint(stage, options, message):
    sections = {stage: {"adapter": "shot", **options}}
    if stage == "refine":
        sections["feature"] = {"adapter": "mcc"}
    with pytest.raises(UserError, match=message):
        recipe_from_dict(toy_recipe_dict(**sections))


def test_shot_im_has_no_pseudo_labels(toy_source_run, tmp_path, monkeypatch):
    recipe = shot_recipe(toy_source_run, pseudo_label_weight=0.0)
    monkeypatch.setattr(shot, "cluster_pseudo_labels", lambda *a: pytest.fail("SHOT-IM clustered"))
    ctx = Context(tmp_path, progress=False)
    try:
        shot.SHOT(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(
            create_classifier("lenet", 1, 16, 10, 32), SealedSource(toy(0)), toy(60).without_labels(), ctx)
    finally:
        ctx.close()


def test_the_diversity_guard_stops_a_collapsed_run():
    guard = shot.DiversityGuard("feature", 100, num_classes=10, batch_size=64, options=GuardOptions("stop", 0.2))
    assert guard.bar == 2.5  # min(10, 64) / 4
    healthy = {"loss/total": torch.tensor(-1.0), "predictions/effective_classes": torch.tensor(8.0)}
    collapsed = {"loss/total": torch.tensor(-0.1), "predictions/effective_classes": torch.tensor(1.2)}
    for iteration in range(1, 51):
        guard.check(iteration, healthy, None)
    with pytest.raises(UserError, match="the target predictions collapsed"):
        for iteration in range(51, 101):
            guard.check(iteration, collapsed, None)


# ------------------------------------------------------------------ the source checkpoint


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def write_shot_recipe(path, source_checkpoint) -> None:
    path.write_text(yaml.safe_dump(toy_recipe_dict(feature={"adapter": "shot", "source_checkpoint": source_checkpoint},
                                                   train={"iterations": 4, "batch_size": 16})))


def test_a_missing_source_checkpoint_is_one_line_before_anything_is_written(tmp_path):
    recipe, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
    write_shot_recipe(recipe, "no_such_run")
    line = one_line(invoke("run", recipe, "-o", run_dir, "-q"))
    assert f"feature.source_checkpoint: {tmp_path / 'no_such_run'}: no such file or directory" in line
    assert not run_dir.exists()
    (tmp_path / "unfinished").mkdir()
    line = one_line(invoke("run", recipe, "feature.source_checkpoint=" + str(tmp_path / "unfinished"), "-o", run_dir))
    assert "a run directory without classifier.pt" in line and not run_dir.exists()


@pytest.mark.parametrize("classes, bottleneck, message", [
    (5, 32, "is a classifier of 5 classes, this run's data has 10"),
    (10, 16, "size mismatch for encoder.1.0.weight"),
])
def test_a_source_checkpoint_of_another_classifier_is_one_line_naming_the_file(classes, bottleneck, message, tmp_path):
    other = RunDir(tmp_path / "other")
    other.save_classifier(create_classifier("lenet", 1, 16, classes, bottleneck).state_dict(), classes, {})
    recipe, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
    write_shot_recipe(recipe, "other/classifier.pt")
    line = one_line(invoke("run", recipe, "-o", run_dir, "-q"))
    assert f"feature.source_checkpoint: {other.classifier_file}" in line and message in line
    assert not run_dir.exists()


def test_the_source_checkpoint_is_relative_to_the_recipe_file_or_in_an_override_to_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "shot.yaml"
    write_shot_recipe(recipe, "../runs/source")
    assert load_recipe(recipe).feature.options.source_checkpoint == str(tmp_path / "runs" / "source")
    monkeypatch.chdir(tmp_path / "recipes")
    loaded = load_recipe(recipe, ["feature.source_checkpoint=elsewhere/run"])
    assert loaded.feature.options.source_checkpoint == str(tmp_path / "recipes" / "elsewhere" / "run")


# ------------------------------------------------------------------ a source-free run: data.source null


def source_free_recipe(source_run, run_name: str = "shot", **data) -> dict:
    recipe = toy_recipe_dict(name=run_name, feature={"adapter": "shot", "source_checkpoint": str(source_run),
                                                     "pseudo_label_every": 5},
                             train={"iterations": 12, "batch_size": 16})
    recipe["data"].update(source=None, **data)
    return recipe


@pytest.fixture
def sealed_source_dataset(monkeypatch):
    """The toy source dataset, registered so that building it (any split) fails the test."""
    from da_toolkit.data import DATASETS

    def sealed(*args, **kwargs):
        raise AssertionError("the source dataset was built")

    monkeypatch.setitem(DATASETS._entries, "toy_source", (sealed, DATASETS._entries["toy_source"][1]))


def test_a_source_free_run_builds_no_source_domain_and_trains_as_the_run_that_names_one(toy_source_run, tmp_path,
                                                                                          request):
    from da_toolkit.pipeline import run

    named = run(recipe_from_dict({**source_free_recipe(toy_source_run),
                                  "data": toy_recipe_dict()["data"]}), tmp_path / "named", progress=False)
    request.getfixturevalue("sealed_source_dataset")  # from here on, building the source domain fails
    free = run(recipe_from_dict(source_free_recipe(toy_source_run)), tmp_path / "free", progress=False)
    state_named, _ = RunDir(tmp_path / "named").load_classifier()
    state_free, _ = RunDir(tmp_path / "free").load_classifier()
    assert all(torch.equal(state_named[k], state_free[k]) for k in state_named)  # the same training, bit for bit
    assert free["target_accuracy"] == named["target_accuracy"] and free["task"] == named["task"] == "toy_source->toy_target"
    assert free["source_free"] and not named["source_free"]
    assert free["source_accuracy"] is None and free["source"] is None
    # the collapse alarm's bars assume balanced source classes (10: top share 55%, 5 effective classes)
    assert (free["collapse"]["threshold_top_share"], free["collapse"]["threshold_effective_classes"]) == (0.55, 5.0)
    assert set(free["model_selection"]["candidates"][0]["scores"]) == {"entropy", "info_max", "snd", "bnm", "class_ami"}
    assert free["model_selection"]["samples"]["source_validation"] == 0
    # everything else a user does with the run works without a source image
    for args in (["show", tmp_path / "free", tmp_path / "named"], ["rescore", tmp_path / "free"],
                 ["report", tmp_path / "free"], ["evaluate", tmp_path / "free", "--dataset", "toy_target"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    row = next(line for line in invoke("show", tmp_path / "free").output.splitlines() if "shot" in line)
    assert row.split()[-2:-1] == ["–"], row  # the source accuracy column
    assert "No source images: no distance between the domains" in (tmp_path / "free/report/report.html").read_text()
    assert "nothing to add" in invoke("rescore", tmp_path / "free").output
    # both started from the one source checkpoint: its fingerprint is stored with the agreement sample, and
    # two such runs are not independent seeds, so they get no seed agreement (the recommendation falls back)
    start = hashlib.sha256((toy_source_run / "classifier.pt").read_bytes()).hexdigest()[:16]
    assert [m["model_selection"]["agreement_sample"]["starts_from"] for m in (free, named)] == [start, start]
    records = [selection_record({**m, "seed": seed}) for seed, m in enumerate((free, named))]
    records = [{**r, "method": "shot"} for r in records]
    assert [r.get("seed_agreement") for r in recommend.with_seed_agreement(records)] == [None, None]
    assert recommend.study(records)["defaults"] == {"toy_source->toy_target": recommend.FALLBACK_VALIDATOR}
    # a run from before the agreement sample gets the fingerprint from `rescore`
    home = RunDir(tmp_path / "free")
    metrics = home.read_metrics()
    del metrics["model_selection"]["agreement_sample"]
    home.write_metrics(metrics)
    assert "added the agreement sample's predictions" in invoke("rescore", tmp_path / "free").output
    assert home.read_rescored()["agreement_sample"]["starts_from"] == start


def test_a_source_free_run_matches_the_target_to_the_checkpoints_class_names(toy_source_run, tmp_path):
    """The same source classifier with its outputs (head rows and class names) in another order predicts the
    same classes by name: the run's accuracy is unchanged."""
    from da_toolkit.pipeline import run
    from da_toolkit.training.checkpoint import load_checkpoint

    saved = load_checkpoint(RunDir(toy_source_run).classifier_file, "classifier")
    order = torch.tensor([3, 7, 0, 9, 1, 5, 2, 8, 6, 4])
    state = dict(saved["state_dict"], **{"head.weight": saved["state_dict"]["head.weight"][order],
                                          "head.bias": saved["state_dict"]["head.bias"][order]})
    permuted = RunDir(tmp_path / "permuted")
    permuted.save_classifier(state, 10, saved["recipe"], [saved["class_names"][i] for i in order], "toy_source")
    accuracies = []
    for name, checkpoint in (("plain", toy_source_run), ("permuted", permuted.path)):
        recipe = source_free_recipe(checkpoint)
        recipe["train"].update(iterations=1, lr=1e-9)  # the source classifier, its batch norm on the target
        recipe["feature"]["pseudo_label_weight"] = 0.0
        accuracies.append(run(recipe_from_dict(recipe), tmp_path / name, progress=False)["target_accuracy"])
    assert accuracies[0] == accuracies[1] > 0.3  # chance: 0.1; the classes read by index, not name: near chance


def test_a_checkpoint_of_other_classes_or_without_class_names_is_refused_in_a_source_free_run(toy_source_run,
                                                                                            tmp_path):
    from da_toolkit.training.checkpoint import load_checkpoint

    saved = load_checkpoint(RunDir(toy_source_run).classifier_file, "classifier")
    recipe, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
    cases = [(["a", "b", *saved["class_names"][2:]], "toy_target/train lacks 2 of the source's classes (a, b)"),
             ([], "does not record its class names")]
    for names, message in cases:
        RunDir(tmp_path / "other").save_classifier(saved["state_dict"], 10, saved["recipe"], names)
        recipe.write_text(yaml.safe_dump(source_free_recipe(tmp_path / "other")))
        line = one_line(invoke("run", recipe, "-o", run_dir, "-q"))
        assert message in line and not run_dir.exists(), line


@pytest.mark.parametrize("change, message", [
    ({"feature": {"adapter": "dann"}}, "but feature.adapter dann trains on labeled source images"),
    ({"refine": {"adapter": "fixmatch"}}, "but refine.adapter fixmatch trains on labeled source images"),
    ({"pixel": {"adapter": "cyclegan"}}, "but pixel.adapter cyclegan trains on labeled source images"),
    ({"selection": {"select": "dev"}}, "selection.select: dev reads labeled source images"),
    ({"data": {"source_test": {"name": "toy_source", "split": "test"}}}, "data.source_test: a source-free run"),
])
def test_a_source_free_recipe_that_needs_a_source_is_refused_naming_the_key(change, message, toy_source_run):
    recipe = source_free_recipe(toy_source_run)
    for section, value in change.items():
        recipe[section] = {**recipe.get(section, {}), **value} if section == "data" else value
    with pytest.raises(UserError, match=re.escape(message)):
        recipe_from_dict(recipe)


def test_data_source_null_without_a_source_classifier_is_refused():
    recipe = toy_recipe_dict(feature={"adapter": "adabn"})
    recipe["data"]["source"] = None
    with pytest.raises(UserError, match=re.escape("needs a feature stage that starts from a trained source classifier")):
        recipe_from_dict(recipe)


def test_show_names_a_source_free_run_beside_the_same_recipe_with_a_source_by_data_source():
    from da_toolkit.cli import recipe_variants

    free = {"name": "shot", "seed": 0, "data": {"source": None, "target": {"name": "usps"}}, "train": {"lr": 0.01}}
    named = {"name": "shot", "seed": 1, "data": {"source": {"name": "mnist", "split": "train"}, "target": {"name": "usps"}},
             "train": {"lr": 0.02}}
    assert recipe_variants([free, named]) == ["data.source=null, train.lr=0.01", "data.source=mnist, train.lr=0.02"]

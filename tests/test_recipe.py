"""Recipe loading: bases, dotted overrides, type checks and the one-line errors users see."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from da_toolkit.cli import main
from da_toolkit.errors import UserError
from da_toolkit.recipe import apply_override, deep_merge, load_recipe, normalised_recipe
from da_toolkit.registry import Registry

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_registry_lookup_and_did_you_mean():
    registry = Registry("widget")

    @registry.register("sprocket")
    class Sprocket:
        """Turns things.

        More text."""

    assert registry.get("sprocket") is Sprocket
    assert dict(registry.describe()) == {"sprocket": "Turns things."}
    with pytest.raises(UserError, match=r"unknown widget 'sprockt'; did you mean 'sprocket'\? \(choices: sprocket\)"):
        registry.get("sprockt")
    with pytest.raises(ValueError, match="twice"):
        registry.register("sprocket")(Sprocket)


def test_bases_merge_and_overrides_are_typed(write_recipe):
    recipe = load_recipe(write_recipe(), ["train.iterations=200", "train.lr=1e-3", "classifier.backbone=dtn"])
    assert recipe.train.iterations == 200 and isinstance(recipe.train.iterations, int)
    assert recipe.train.lr == pytest.approx(1e-3)
    assert recipe.classifier.backbone == "dtn"
    assert recipe.feature.adapter == "source_only"


def test_every_shipped_recipe_loads():
    names = sorted(p for p in RECIPES.glob("*.yaml"))
    assert names, "no recipes found"
    for path in names:  # the own-domains recipes take their folders on the command line (source-free: the target's)
        folders = ["data.source.root=a", "data.target.root=b"] if path.stem.startswith("own_domains") else []
        folders = folders[1:] if path.stem == "own_domains_shot" else folders  # source-free: data.source null
        recipe = load_recipe(path, folders)
        assert recipe.name == path.stem, path
        # one optimiser protocol for every task family, Transfer-Learning-Library's (the digits too since
        # 2026-12-04); TLlib's self_ensemble.py trains mean teacher with Adam on the photo tasks
        if recipe.train.optimizer == "sgd":
            protocol = (recipe.train.momentum, recipe.train.nesterov, recipe.train.weight_decay, recipe.train.lr_schedule)
            assert protocol == (0.9, True, 0.001, "inverse"), path


def test_every_refine_composition_takes_its_one_refine_stage_file_whole():
    """adda_fixmatch, mcc_fixmatch and mcc_shot: their feature method's stage, then recipes/_base/refine/<refine>.yaml's;
    mcc_shot with the SHOT recipe's digit β (pseudo_label_weight) of the same task, nothing else of its own."""
    for method, feature, refine_adapter in (("adda_fixmatch", "adda", "fixmatch"), ("mcc_fixmatch", "mcc", "fixmatch"),
                                            ("mcc_shot", "mcc", "shot")):
        refine = yaml.safe_load((RECIPES / "_base" / "refine" / f"{refine_adapter}.yaml").read_text())["refine"]
        for task in ("mnist2usps", "usps2mnist", "syndigits2mnist", "syndigits2ucidigits"):
            recipe = load_recipe(RECIPES / f"{task}_{method}.yaml").to_dict()
            expected = dict(refine)
            if refine_adapter == "shot":
                shot = load_recipe(RECIPES / f"{task}_shot.yaml").to_dict()["feature"]
                expected.update(pseudo_label_weight=shot["pseudo_label_weight"], source_checkpoint=None)
            assert recipe["feature"]["adapter"] == feature and recipe["refine"] == expected, (task, method)


def test_base_recipe_keys_are_overridden_by_the_recipe(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"iterations": 5, "lr": 0.5}, "seed": 3}))
    (tmp_path / "top.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "train": {"iterations": 7},
        "data": {"source": {"name": "toy_source"}, "target": {"name": "toy_target"},
                 "target_test": {"name": "toy_target", "split": "test"}}}))
    recipe = load_recipe(tmp_path / "top.yaml")
    assert (recipe.train.iterations, recipe.train.lr, recipe.seed, recipe.name) == (7, 0.5, 3, "top")


def _backbone_defaults_recipes(tmp_path, method: dict) -> Path:
    """base.yaml (lr 0.5, dtn) <- method.yaml (`method`) <- top.yaml (iterations 7, and lr 0.2 for dtn)."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.5}, "classifier": {"backbone": "dtn"}}))
    (tmp_path / "method.yaml").write_text(yaml.safe_dump(method))
    (tmp_path / "top.yaml").write_text(yaml.safe_dump({
        "base": ["base.yaml", "method.yaml"], "train": {"iterations": 7},
        "backbone_defaults": {"dtn": {"train.lr": 0.2}},
        "data": {"source": {"name": "toy_source"}, "target": {"name": "toy_target"},
                 "target_test": {"name": "toy_target", "split": "test"}}}))
    return tmp_path / "top.yaml"


def test_backbone_defaults_apply_to_their_backbone_and_lose_to_later_files_and_overrides(tmp_path):
    top = _backbone_defaults_recipes(tmp_path, {"backbone_defaults": {
        "lenet": {"train.lr": 0.1, "train.momentum": 0.5}, "resnet18": {"train.lr": 0.001}}})

    def lr_and_momentum(*overrides):
        recipe = load_recipe(top, list(overrides))
        return recipe.train.lr, recipe.train.momentum, recipe.train.iterations

    assert lr_and_momentum() == (0.2, 0.9, 7)  # dtn: the top file's own dtn default; none of method.yaml's
    # lenet, chosen by an override: method.yaml's lenet defaults beat base.yaml's lr (a file merged before it)
    assert lr_and_momentum("classifier.backbone=lenet") == (0.1, 0.5, 7)
    assert lr_and_momentum("classifier.backbone=lenet", "train.lr=0.03") == (0.03, 0.5, 7)  # the override wins
    assert lr_and_momentum("classifier.backbone=resnet18") == (0.001, 0.9, 7)
    assert "backbone_defaults" not in load_recipe(top).to_dict()


def test_a_file_below_the_one_with_backbone_defaults_wins_over_them(tmp_path):
    """A key the recipe (or a base merged after the defaults' file) sets itself is not a default to replace."""
    top = _backbone_defaults_recipes(tmp_path, {"backbone_defaults": {"lenet": {"train.iterations": 3, "seed": 4}}})
    recipe = load_recipe(top, ["classifier.backbone=lenet"])
    assert (recipe.train.iterations, recipe.seed, recipe.train.lr) == (7, 4, 0.5)


def test_the_shipped_lenet_lr0_apply_on_lenet_only_and_to_the_compositions_of_their_method():
    """README "Defaults per backbone": DANN 0.1, CDAN / BSP / MDD 0.03 on LeNet (BSP's and DANN+MCC's own beat DANN's);
    DTN tasks and the other methods keep the task base's 0.01, unless the grid's profile makes them LeNet."""
    def lr(recipe, *overrides):
        return load_recipe(RECIPES / f"{recipe}.yaml", list(overrides)).train.lr

    assert [lr(f"usps2mnist_{m}") for m in ("dann", "cdan", "bsp", "mdd", "mcc", "source_only")] == [
        0.1, 0.03, 0.03, 0.03, 0.01, 0.01]
    assert lr("mnist2usps_cyclegan_dann") == lr("mnist2usps_dann_dirt_t") == 0.1
    assert lr("mnist2usps_dann_mcc") == 0.01  # its own LeNet default beats DANN's, its base's
    assert lr("syndigits2mnist_dann") == 0.01 and lr("syndigits2mnist_dann", "classifier.backbone=lenet") == 0.1
    assert lr("mnist2usps_dann", "classifier.backbone=lenet_fc500") == 0.01  # defaults name one backbone


@pytest.mark.parametrize("section, message", [
    ([0.1], r"method\.yaml: backbone_defaults must map a backbone name to \{dotted\.key: value\}"),
    ({"lenet": 0.1}, r"method\.yaml: backbone_defaults\.lenet: backbone_defaults must map"),
    ({"lenet": {"classifier.backbone": "dtn"}}, r"backbone_defaults\.lenet: cannot set classifier\.backbone"),
    ({"lenet": {"train.lrr": 0.1}}, r"train\.lrr: unknown key; did you mean 'lr'\?"),
])
def test_bad_backbone_defaults_are_one_clear_error(tmp_path, section, message):
    top = _backbone_defaults_recipes(tmp_path, {"backbone_defaults": section})
    with pytest.raises(UserError, match=message):
        load_recipe(top, ["classifier.backbone=lenet"])


def test_a_stage_naming_another_adapter_replaces_the_base_stage():
    merged = deep_merge({"feature": {"adapter": "dann", "trade_off": 1.0}}, {"feature": {"adapter": "source_only"}})
    assert merged == {"feature": {"adapter": "source_only"}}
    raw = {"feature": {"adapter": "dann", "trade_off": 1.0}}
    apply_override(raw, "feature.adapter=source_only")
    assert raw == {"feature": {"adapter": "source_only"}}


@pytest.mark.parametrize("override, message", [
    ("train.iteratons=5", r"train\.iteratons: unknown key; did you mean 'iterations'\?"),
    ("train.iterations=many", r"train\.iterations: expected an integer, got 'many'"),
    ("train.iterations=2.5", r"train\.iterations: expected an integer, got 2\.5"),
    ("train.optimizer=sdg", r"train\.optimizer: expected one of: sgd, adam, got 'sdg'; did you mean 'sgd'\?"),
    ("data.source.name=mnsit", r"data\.source\.name: unknown dataset 'mnsit'; did you mean 'mnist'\?"),
    ("feature.adapter=source_olny", r"feature\.adapter: unknown adapter 'source_olny'; did you mean 'source_only'\?"),
    ("classifier.backbone=lenett", r"classifier\.backbone: unknown backbone 'lenett'; did you mean 'lenet'\?"),
    ("data.channels=2", r"data\.channels: expected one of: 1, 3, got 2"),
    ("train.batch_size=0", r"train\.batch_size: must be 2 or more \(batch normalisation .*\), got 0"),
    ("pixel.adapter=source_only", r"pixel\.adapter: 'source_only' is a feature-level adapter"),
    ("train.iterations", r"override 'train\.iterations' must look like key=value"),
])
def test_bad_values_are_rejected_with_the_key_and_choices(write_recipe, override, message):
    with pytest.raises(UserError, match=message):
        load_recipe(write_recipe(), [override])


def test_missing_required_key_and_missing_file(tmp_path):
    (tmp_path / "r.yaml").write_text("data:\n  source: {name: toy_source}\n")
    with pytest.raises(UserError, match=r"data\.target: missing \(required in data\)"):
        load_recipe(tmp_path / "r.yaml")
    with pytest.raises(UserError, match="recipe file not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml: line 2, column 1 is not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_cli_prints_one_line_and_exits_2(write_recipe):
    result = CliRunner().invoke(main, ["run", str(write_recipe()), "train.iteratons=5"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: train.iteratons: unknown key; did you mean 'iterations'? (allowed in train: iterations, batch_size, "
        "optimizer, lr, momentum, nesterov, weight_decay, lr_schedule, lr_gamma, lr_decay, device, precision, "
        "log_every, checkpoint_every, eval_batch_size, workers, augment)"]


@pytest.mark.parametrize("override, message", [
    ("refine.adapter=dannn", r"^refine\.adapter: unknown adapter 'dannn'; did you mean 'dann'\? \(choices for a refine "
                           r"stage: .*source_only"),
    ("refine.adapter=cyclegan", r"^refine\.adapter: 'cyclegan' is a pixel-level adapter; a refine stage takes one of: "),
    ("refine.trade_off=-1", r"^refine\.trade_off: must be zero or more, got -1\.0$"),  # an Options check
    ("refine.grl=sometimes", r"^refine\.grl: expected one of: schedule, fixed"),  # a type check
    ("refine.guard_after=2", r"^refine\.guard_after: must lie in \[0, 1\], got 2\.0$"),  # an inherited Options check
    ("refine.discriminator_hidden=[0]", r"^refine\.discriminator_hidden\[0\]: must lie in \[1, 65536\]"),  # a bound
])
def test_a_bad_refine_stage_names_the_refine_key(write_recipe, override, message):
    path = write_recipe()
    overrides = [] if override.startswith("refine.adapter") else ["refine.adapter=dann"]
    with pytest.raises(UserError, match=message):
        load_recipe(path, [*overrides, override])
    result = CliRunner().invoke(main, ["run", str(path), *overrides, override])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: refine.")


def test_the_refine_stage_is_optional_and_merges_like_a_stage(write_recipe):
    recipe = load_recipe(write_recipe(), ["refine.adapter=dann", "refine.trade_off=0.5"])
    assert (recipe.refine.adapter, recipe.refine.options.trade_off) == ("dann", 0.5)
    assert recipe.to_dict()["refine"]["adapter"] == "dann"
    assert load_recipe(write_recipe()).refine is None
    saved = load_recipe(write_recipe()).to_dict()
    del saved["refine"]  # a run directory written before the refine stage existed
    assert normalised_recipe(saved)["refine"] is None
    merged = deep_merge({"refine": {"adapter": "dann", "trade_off": 1.0}}, {"refine": {"adapter": "mcc"}})
    assert merged == {"refine": {"adapter": "mcc"}}


def test_cli_list_names_adapters_datasets_backbones():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in ("source_only", "target_only", "mnist", "syndigits", "ucidigits", "lenet", "dtn"):
        assert f"  {name} " in result.output

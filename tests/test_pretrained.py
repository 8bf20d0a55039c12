"""Pretrained backbones: the backbone's own input normalisation and size, weights from a local file,
parameter groups for fine-tuning, and training-batch augmentation (`train.augment`)."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from da_toolkit.adapters.base import make_optimizer
from da_toolkit.data.augment import Augment
from da_toolkit.data.base import BatchStream, DomainDataset
from da_toolkit.errors import UserError
from da_toolkit.models import create_classifier
from da_toolkit.models.classifier import BackboneInput
from da_toolkit.recipe import AugmentConfig, load_recipe
from test_security import write_hostile

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def test_resnet_file(tmp_path_factory) -> tuple[Path, dict]:
    """A state dict of timm's tiny `test_resnet` with a 10-class head, as a user's .pth file."""
    torch.manual_seed(0)
    state = timm.create_model("test_resnet", num_classes=10).state_dict()
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    torch.save(state, path)
    return path, state


def test_a_pretrained_backbone_sees_its_own_normalisation_and_input_size():
    """resnet18 (ImageNet mean/std, 224 px): a [-1, 1] image x at 32 px reaches the network as
    ((x + 1) / 2 − mean) / std, resized to 224 px; a backbone trained from scratch sees x itself."""
    classifier = create_classifier("resnet18", 3, 32, 10, 16, pretrained=True, fetch_weights=False)
    seen = {}
    net = classifier.backbone[1]
    net.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    unit = torch.rand(2, 3, 32, 32)
    classifier.eval()(unit * 2 - 1)
    resized = nn.functional.interpolate(unit, size=(224, 224), mode="bilinear", align_corners=False)
    expected = (resized - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert seen["x"].shape == (2, 3, 224, 224)
    assert torch.allclose(seen["x"], expected, atol=1e-5)
    assert not any("backbone" in k and ("scale" in k or "shift" in k) for k in classifier.state_dict())

    grey = create_classifier("resnet18", 1, 32, 10, 16, pretrained=True, fetch_weights=False).backbone[0]
    assert torch.allclose(grey.shift.flatten(), torch.tensor([(0.5 - 0.449) / 0.226]), atol=1e-3)
    scratch = create_classifier("resnet18", 3, 32, 10, 16)
    assert not any(isinstance(m, BackboneInput) for m in scratch.modules())


def test_weights_from_a_local_file_and_files_that_are_not_weights(test_resnet_file, tmp_path):
    path, state = test_resnet_file
    classifier = create_classifier("test_resnet", 1, 32, 2, 16, pretrained=True, checkpoint=str(path))
    loaded = classifier.backbone[1].state_dict()
    assert torch.equal(loaded["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert torch.allclose(loaded["conv1.0.weight"], state["conv1.0.weight"].sum(1, keepdim=True))  # grey input
    assert classifier.backbone[0].size == (160, 160)  # test_resnet's data config

    hostile, marker = tmp_path / "hostile.pth", tmp_path / "pwned"
    write_hostile(hostile, marker)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    for bad in (hostile, tensor):
        with pytest.raises(UserError, match=f"classifier.checkpoint: {bad} is not a state dict of 'test_resnet'"):
            create_classifier("test_resnet", 3, 32, 2, 16, pretrained=True, checkpoint=str(bad))
    assert not marker.exists()  # read weights-only: nothing in the file ran
    with pytest.raises(UserError, match="is not a state dict of 'resnet18' weights"):
        create_classifier("resnet18", 3, 32, 2, 16, pretrained=True, checkpoint=str(path))


def test_checkpoint_keys_in_a_recipe(write_recipe, test_resnet_file, tmp_path, monkeypatch):
    path, _ = test_resnet_file
    recipe = write_recipe(classifier={"backbone": "test_resnet", "pretrained": True, "checkpoint": str(path)})
    assert load_recipe(recipe).classifier.checkpoint == str(path)
    with pytest.raises(UserError, match="classifier.checkpoint: file not found: .*nope.pth"):
        load_recipe(recipe, ["classifier.checkpoint=nope.pth"])
    with pytest.raises(UserError, match="classifier.checkpoint: pretrained weights from .* need "
                                        "classifier.pretrained=true"):
        load_recipe(recipe, ["classifier.pretrained=false"])
    with pytest.raises(UserError, match="classifier.backbone_lr_multiplier: must be zero or more, got -0.1"):
        load_recipe(recipe, ["classifier.backbone_lr_multiplier=-0.1"])
    # a path typed on the command line is relative to the current directory, one in the file to the file
    monkeypatch.chdir(path.parent)
    assert load_recipe(recipe, [f"classifier.checkpoint={path.name}"]).classifier.checkpoint == str(path)
    assert load_recipe(recipe, ["data.source.root=photos"]).data.source.root == str(path.parent / "photos")


def groups_of(optimizer) -> list[tuple[float, float, int]]:
    return [(round(g["lr"], 6), g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]


def test_fine_tuning_parameter_groups():
    """A pretrained backbone learns at lr × backbone_lr_multiplier; its norm and bias parameters,
    and those of the bottleneck, head and discriminator, get no weight decay."""
    train = types.SimpleNamespace(lr=0.01, weight_decay=5e-4, optimizer="sgd", momentum=0.9, nesterov=False)
    discriminator = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    classifier = create_classifier("test_resnet", 3, 32, 10, 16, pretrained=True, fetch_weights=False,
                                   backbone_lr_multiplier=0.1)
    net = classifier.backbone[1]
    backbone_no_decay = sum(p.ndim <= 1 for p in net.parameters())
    backbone_decay = sum(p.ndim > 1 for p in net.parameters())
    optimizer = make_optimizer((classifier, discriminator), train)
    # rest: bottleneck Linear w | b, BN w b | head w | b; discriminator: Linear w | b, BN w b, Linear w | b
    assert groups_of(optimizer) == [(0.001, 0.0, backbone_no_decay), (0.001, 5e-4, backbone_decay),
                                    (0.01, 0.0, 3 + 1 + 4), (0.01, 5e-4, 1 + 1 + 2)]
    weight_decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert weight_decay_of[id(classifier.head.bias)] == 0 and weight_decay_of[id(classifier.head.weight)] == 5e-4

    scratch = create_classifier("test_resnet", 3, 32, 10, 16)
    plain = make_optimizer((scratch, discriminator), train)
    assert groups_of(plain) == [(0.01, 5e-4, len(list(scratch.parameters())) + 6)]  # as before: one group
    slower = create_classifier("test_resnet", 3, 32, 10, 16, backbone_lr_multiplier=0.5)
    assert groups_of(make_optimizer((slower,), train)) == [(0.005, 5e-4, backbone_no_decay + backbone_decay),
                                                           (0.01, 5e-4, 6)]


def test_augmentation_of_training_batches():
    """hflip alone: each image comes back as itself or its mirror, both happen; a crop keeps the
    size; with nothing switched on the stream is the plain one; the same RNG state, the same batch."""
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    dataset = DomainDataset(images, torch.arange(64) % 10, "toy")
    plain = BatchStream(dataset, 64, seed=0)
    assert Augment(AugmentConfig())(plain) is plain

    flipped = Augment(AugmentConfig(hflip=True))(BatchStream(dataset, 64, seed=0))
    reference, _ = next(BatchStream(dataset, 64, seed=0))
    batch, _ = next(flipped)
    same = [torch.allclose(a, b, atol=1e-6) for a, b in zip(batch, reference)]
    mirrored = [torch.allclose(a, b.flip(-1), atol=1e-6) for a, b in zip(batch, reference)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54

    stream = Augment(AugmentConfig(random_resized_crop=0.3, color_jitter=0.4))(BatchStream(dataset, 16, seed=0))
    torch.manual_seed(5)
    first, _ = next(stream)
    stream.load_state_dict(BatchStream(dataset, 16, seed=0).state_dict())
    torch.manual_seed(5)
    again, _ = next(stream)
    assert first.shape == (16, 3, 8, 8) and torch.equal(first, again) and first.min() >= -1 and first.max() <= 1
    assert not torch.allclose(first, next(BatchStream(dataset, 16, seed=0))[0])


@pytest.mark.parametrize("override, message", [
    ("train.augment.random_resized_crop=0", "train.augment.random_resized_crop: must lie in (0, 1] (1: no crop), "
                                            "got 0.0"),
    ("train.augment.color_jitter=2", "train.augment.color_jitter: must lie in [0, 1] (0: off), got 2.0"),
    ("train.augment.flip=true", "train.augment.flip: unknown key; did you mean 'hflip'?"),
])
def test_bad_augment_keys_name_the_key(write_recipe, override, message):
    with pytest.raises(UserError) as error:
        load_recipe(write_recipe(), [override])
    assert message in str(error.value)


def test_a_run_saved_before_these_keys_existed_resumes(write_recipe, tmp_path):
    """recipe.yaml of an older da-toolkit lacks classifier.checkpoint, backbone_lr_multiplier and
    train.augment: `--resume` and `compare` read it as their defaults, not as a changed recipe."""
    from da_toolkit.recipe import normalised_recipe
    from da_toolkit.rundir import RunDir

    now = load_recipe(write_recipe()).to_dict()
    old = {**now, "classifier": {k: v for k, v in now["classifier"].items()
                                 if k not in ("checkpoint", "backbone_lr_multiplier")},
           "train": {k: v for k, v in now["train"].items() if k != "augment"}}
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_recipe(old)
    assert run.recipe_changes(now, normalised_recipe) == []
    assert run.recipe_changes({**now, "seed": 7}, normalised_recipe) == ["seed"]
    augmented = load_recipe(write_recipe(), ["train.augment.hflip=true"]).to_dict()
    assert run.recipe_changes(augmented, normalised_recipe) == ["train"]


def test_an_augmented_run_resumes_exactly(tmp_path, monkeypatch):
    """The crops, flips and colours come from the checkpointed RNG: a DANN run interrupted inside its
    stage and resumed ends with the weights of the uninterrupted run, which differ from a plain run's."""
    from conftest import toy_recipe_dict
    from da_toolkit.pipeline import run
    from da_toolkit.recipe import recipe_from_dict
    from da_toolkit.training.checkpoint import load_checkpoint
    from da_toolkit.training.loop import Interrupted
    from test_resume import interrupt_in

    def recipe(**augment):
        return recipe_from_dict(toy_recipe_dict(
            feature={"adapter": "dann", "discriminator_hidden": [16]},
            train={"iterations": 6, "batch_size": 16, "log_every": 1, "checkpoint_every": 1000, "augment": augment}))

    def weights(run_dir):
        return load_checkpoint(run_dir / "classifier.pt")["state_dict"]

    augmented = recipe(random_resized_crop=0.6, hflip=True, color_jitter=0.3)
    run(augmented, tmp_path / "straight", progress=False)
    run(recipe(), tmp_path / "plain", progress=False)
    with monkeypatch.context() as patch:
        interrupt_in(patch, "feature", 3)
        with pytest.raises(Interrupted):
            run(augmented, tmp_path / "resumed", progress=False)
    run(augmented, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed, plain = (weights(tmp_path / name) for name in ("straight", "resumed", "plain"))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    assert not all(torch.equal(straight[key], plain[key]) for key in straight)

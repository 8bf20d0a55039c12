"""The pixel stage that keeps the labels: CyCADA's semantic loss, small-image networks, f_S's label
filter with its kept fractions and warning, and the translated/raw mix the feature stage trains on."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from da_toolkit.adapters.cyclegan import CycleGAN, CycleGANOptions
from da_toolkit.adapters.cyclegan.training import CycleGANTraining, build_generators
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator, agreement_report, mix
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import conform
from da_toolkit.errors import UserError
from da_toolkit.models import PatchDiscriminator
from da_toolkit.training.gan_losses import semantic_consistency_loss
from conftest import toy_digits



def logits(*rows) -> torch.Tensor:
    """N×K×1×1 images that nn.Flatten() turns into the logits `rows`."""
    return torch.tensor(rows, dtype=torch.float).view(len(rows), -1, 1, 1)


def test_semantic_loss_is_the_documented_formula():
    # L_sem = CE(f_S(G(a)), t_a) + CE(f_S(F(b)), argmax f_S(b)), f_S = flatten (images are logits)
    fake_b = logits([0.0, math.log(3)])  # t_a = 0: -log(1 / 4)
    fake_a = logits([math.log(2), 0.0])  # argmax f_S(b) = 0: -log(2 / 3)
    real_b = logits([1.0, 0.0])
    loss = semantic_consistency_loss(nn.Flatten(), fake_b, torch.tensor([0]), fake_a, real_b)
    assert loss.item() == pytest.approx(math.log(4) + math.log(1.5))


def toy(shift: int, count: int, size: int = 16) -> DomainDataset:
    data = toy_digits("train", shift, count)
    return DomainDataset(conform(data.images, size, 1), data.labels, data.name)


def tiny(**changes) -> CycleGANOptions:
    return CycleGANOptions(**{"iterations": 2, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
                              "pool_size": 0, "image_grid_every": 0, "label_preservation_iterations": 0,
                              **changes})


class Linear(nn.Module):
    """A fixed, frozen 'source classifier' on 16×16 grey images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
        self.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("targets", ["predicted", "labels"])
def test_semantic_term_is_optimised_through_the_generator(tmp_path, targets):
    """One step with the semantic weight moves G differently from one without it: its gradient reaches G."""
    source, target = toy(0, 16), toy(60, 16)
    weights = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        training = CycleGANTraining(tiny(semantic_weight=weight, semantic_targets=targets), source, target,
                                    Context(tmp_path / f"{weight}", progress=False), Linear())
        out = training.step(0)
        assert ("loss/semantic" in out) == (weight > 0)
        weights[weight] = torch.cat([p.detach().flatten() for p in training.g_ab.parameters()])
    assert not torch.allclose(weights[0.0], weights[1.0])


def test_agreement_report_keeps_exactly_the_agreeing_images():
    labels = torch.tensor([0, 0, 1, 1, 2])
    keep, report = agreement_report(torch.tensor([0, 1, 1, 1, 0]), labels, num_classes=4)
    assert keep.tolist() == [True, False, True, True, False]
    assert report == {"agreement": pytest.approx(0.6), "kept": 3, "total": 5,
                      "kept_per_class": {0: 0.5, 1: 1.0, 2: 0.0}}


class Always(nn.Module):
    """A classifier that reads every image as class `c`."""

    def __init__(self, c: int):
        super().__init__()
        self.c = c

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.c), 10).float()


def test_translator_filters_reports_and_warns(tmp_path):
    source = toy(0, 40)
    ctx = Context(tmp_path, progress=False)
    translator = CycleGANTranslator(nn.Identity(), ctx, tiny(feature_data="translated"), Always(3))
    kept = translator.translate(source)
    assert torch.equal(kept.labels, source.labels[source.labels == 3])
    assert torch.equal(kept.images, source.images[source.labels == 3])
    report = ctx.metrics["pixel"]
    assert report["kept"] == (source.labels == 3).sum().item()
    assert report["kept_per_class"][3] == 1.0 and report["kept_per_class"][0] == 0.0
    assert "damaging labels" in report["warning"]
    assert translator.translated is not None and len(translator.translated) == len(source)

    agreeing = CycleGANTranslator(nn.Identity(), Context(tmp_path / "off", progress=False),
                                  tiny(feature_data="translated", label_filter="off", agreement_warning=0.0), Always(3))
    assert len(agreeing.translate(source)) == len(source) and "warning" not in agreeing.report


def test_mix_has_the_requested_composition():
    source = DomainDataset(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10), "raw")
    translated = DomainDataset(torch.full((10, 1, 4, 4), 255, dtype=torch.uint8), torch.arange(10) + 100, "tr")
    mixed = mix(source, translated, "both", 0.3, seed=0)
    is_translated = mixed.images.flatten(1)[:, 0] == 255
    assert len(mixed) == 10 and is_translated.sum() == 3
    assert (mixed.labels[is_translated] >= 100).all() and (mixed.labels[~is_translated] < 100).all()
    assert len(set(mixed.labels.tolist())) == 10  # no image twice
    assert mix(source, translated, "translated", 0.3, 0) is translated
    assert mix(source, translated, "source", 0.3, 0) is source
    few = mix(source, translated.subset(torch.tensor([0, 1])), "both", 0.5, seed=0)  # the filter left 2
    # both, once each, and 8 raw images: the few kept translations do not outweigh the raw source
    assert len(few) == 10 and sorted(few.labels[few.labels >= 100].tolist()) == [100, 101]
    assert len(set(few.labels.tolist())) == 10
    assert len(mix(source, translated.subset(torch.tensor([], dtype=torch.long)), "both", 0.5, seed=0)) == 10


def norm_input_sides(module: nn.Module, x: torch.Tensor, kind=nn.InstanceNorm2d) -> list[int]:
    sides = []
    hooks = [m.register_forward_hook(lambda m, i, o: sides.append(i[0].shape[-1]))
             for m in module.modules() if isinstance(m, kind)]
    out = module(x)
    for h in hooks:
        h.remove()
    return sides, out


@pytest.mark.parametrize("size,patches", [(16, 2), (28, 5), (32, 6), (64, 14)])
def test_small_images_get_a_real_patch_map_and_no_norm_over_tiny_maps(size, patches):
    options = CycleGANOptions()  # the recipe says nothing: chosen from the image size
    assert options.layers_for(size) == 2 and options.downsamplings_for(size) == 1
    d = PatchDiscriminator(1, 4, options.layers_for(size))
    sides, out = norm_input_sides(d, torch.zeros(2, 1, size, size))
    assert out.shape[-2:] == (patches, patches) and min(sides) >= 3
    g, _ = build_generators(CycleGANOptions(ngf=4, generator_blocks=1), 1, size)
    sides, out = norm_input_sides(g, torch.zeros(1, 1, size, size))
    assert out.shape[-1] == size and min(sides) == size // 2  # one down-sampling: 14×14 at 28 px


def test_large_images_keep_the_reference_networks_and_the_recipe_wins():
    assert CycleGANOptions().layers_for(128) == 3 and CycleGANOptions().downsamplings_for(128) == 2
    options = CycleGANOptions(discriminator_layers=3, generator_downsamplings=2)
    assert options.layers_for(28) == 3 and options.downsamplings_for(28) == 2
    CycleGAN.check(CycleGANOptions(), 30, 1)  # one down-sampling: any even size
    with pytest.raises(UserError, match="multiple of 2"):
        CycleGAN.check(CycleGANOptions(), 27, 1)
    from conftest import toy_recipe_dict
    from da_toolkit.recipe import recipe_from_dict

    with pytest.raises(UserError, match=r"pixel.translated_fraction: must lie in \[0, 1\], got 1.5"):
        recipe_from_dict(toy_recipe_dict(pixel={"adapter": "cyclegan", "translated_fraction": 1.5}))


def test_diagnostics_report_the_filter_and_keep_the_unfiltered_translation(tmp_path):
    from da_toolkit.adapters.base import AdapterSetup
    from da_toolkit.recipe import recipe_from_dict
    from conftest import toy_recipe_dict
    recipe = recipe_from_dict(toy_recipe_dict(pixel={"adapter": "cyclegan", "label_preservation_iterations": 0}))
    adapter = CycleGAN(tiny(feature_data="translated"), AdapterSetup.from_recipe(recipe))
    source, ctx = toy(0, 40), Context(tmp_path, progress=False)
    adapter.translator = CycleGANTranslator(nn.Identity(), ctx, adapter.options, Always(3))
    kept = adapter.translator.translate(source)
    out = adapter.diagnostics(source, kept, ctx)
    assert out["label_filter"]["kept"] == len(kept) < len(source)
    assert len(adapter.translator.translated) == len(source)

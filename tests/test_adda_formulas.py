"""One ADDA adaptation step against its formulas (adapters/adda.py docstring), with and without
labeled target images; -log σ(x) is written as softplus(-x) and -log(1 - σ(x)) as softplus(x):

    L_advD = −E[log D(M_s(x_s))] − E[log(1 − D(M_t(x_t)))]       (discriminator step)
    L_advM = −E[log D'(M_t(x_t))]  [+ CE(C(M_t(x_l)), y_l)]       (target-encoder step, D' = D after its step)

The gradients each optimiser sees must be those of its loss (their sign included), and the frozen
source encoder and head must receive none.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters import adda
from da_toolkit.context import Context
from da_toolkit.data import build_domains
from da_toolkit.models import create_classifier
from da_toolkit.recipe import recipe_from_dict
from conftest import toy_recipe_dict


def grads(module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("k", [0, 2])
def test_one_adaptation_step_follows_the_formulas(k, tmp_path, monkeypatch):
    recipe = recipe_from_dict(toy_recipe_dict(
        feature={"adapter": "adda", "pretrain_iterations": 0, "adapt_iterations": 1, "discriminator_hidden": [8]},
        data={"target_labels_per_class": k}))
    domains = build_domains(recipe.data, seed=0)
    captured = {}
    original_loop = adda.train_loop

    class Captured(Exception):
        """Stops `fit` at the adaptation stage, before its first step."""

    def capture(ctx, stage, iterations, step, state, **selection):
        if stage == "feature_adapt":
            captured.update(step=step, state=state, **selection)
            raise Captured
        else:
            original_loop(ctx, stage, iterations, step, state, **selection)

    monkeypatch.setattr(adda, "train_loop", capture)
    torch.manual_seed(0)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    source_encoder = classifier.encoder  # M_s: fit swaps M_t into the classifier for the adaptation
    with pytest.raises(Captured):
        adda.ADDA(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(classifier, domains.source, domains.target,
                                                      Context(tmp_path, progress=False))
    state = captured["state"]
    discriminator, encoder = state["discriminator"], state["target_encoder"]
    source_images, _ = next(copy.deepcopy(state["source_stream"]))
    target_images, _ = next(copy.deepcopy(state["target_stream"]))
    d0, m0 = copy.deepcopy(discriminator), copy.deepcopy(encoder)
    seen = {}
    state["discriminator_optimizer"].register_step_pre_hook(
        lambda *args: seen.update(d_grads=grads(discriminator)))
    state["encoder_optimizer"].register_step_pre_hook(
        lambda *args: seen.update(m_grads=grads(encoder), d1=copy.deepcopy(discriminator)))
    labeled = state.get("labeled_target_stream")
    labeled_batch = next(copy.deepcopy(labeled)) if labeled is not None else None
    assert (labeled is not None) == (k > 0)

    rng = torch.get_rng_state()  # the target encoder's dropout masks: drawn again in the same order below
    scalars = captured["step"](0)
    torch.set_rng_state(rng)

    # the discriminator step: L_advD on the frozen source encoder's and the target encoder's features
    with torch.no_grad():
        source_features = source_encoder(source_images)
    target_features = m0(target_images)
    s, t = d0(source_features), d0(target_features.detach())
    l_d = F.softplus(-s).mean() + F.softplus(t).mean()
    assert scalars["loss/discriminator"].item() == pytest.approx(l_d.item(), rel=1e-5)
    expected = torch.autograd.grad(l_d, list(d0.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(seen["d_grads"], expected))

    # the target-encoder step: inverted labels against the updated discriminator [+ CE on labeled target]
    l_m = F.softplus(-seen["d1"](target_features)).mean()
    assert scalars["loss/mapping"].item() == pytest.approx(l_m.item(), rel=1e-5)
    total = l_m
    if k:
        images, labels = labeled_batch
        ce = F.cross_entropy(classifier.head(m0(images)), labels)
        assert scalars["loss/labeled_target_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
        total = total + ce
    expected = torch.autograd.grad(total, list(m0.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(seen["m_grads"], expected))
    assert all(p.grad is None for p in [*source_encoder.parameters(), *classifier.head.parameters()])  # M_s, C frozen
    # the adaptation's candidate for model selection is C ∘ M_t, scored from M_t = M_s on
    assert captured["candidate"] is classifier and classifier.encoder is encoder and captured["score_start"]

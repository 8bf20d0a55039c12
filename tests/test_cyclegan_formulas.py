"""One CycleGAN iteration worked out by hand on tiny fixed-weight networks.

G(x) = g·x, F(x) = f·x, D_A(x) = d_A·x, D_B(x) = d_B·x (one scalar weight each, the patch map is the
image itself); every source image is the constant a = 1 (uint8 255) and every target image the
constant b = 51 / 127.5 − 1 = −0.6, so each term of the module docstring of adapters/cyclegan/training.py is
a closed-form number (LSGAN, ‖·‖₁ the mean absolute difference):

    L_G = (d_B·g·a − 1)² + (d_A·f·b − 1)² + λ_A|f·g·a − a| + λ_B|g·f·b − b|
          + λ_idt·λ_B|g·b − b| + λ_idt·λ_A|f·a − a|
    L_D_A = ½((d_A·a − 1)² + (d_A·f·b)²),  L_D_B = ½((d_B·b − 1)² + (d_B·g·a)²)

λ_A ≠ λ_B and g ≠ f ≠ 1, d_A ≠ d_B, |a| ≠ |b|, so a term with the wrong weight or through the wrong
network changes the numbers.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from da_toolkit.adapters.cyclegan import CycleGANOptions, training
from da_toolkit.adapters.cyclegan.training import CycleGANTraining
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.training.image_pool import ImagePool

G, F_, D_A, D_B = 0.5, 0.25, 0.3, 0.7
LAMBDA_A, LAMBDA_B, LAMBDA_IDT = 10.0, 4.0, 0.5
A, B = 1.0, 51 / 127.5 - 1
LR = 0.01


class Scale(nn.Module):
    """x -> w·x with one learnable scalar w."""

    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(value))

    def forward(self, x):
        return self.w * x


def sign(x: float) -> float:
    return float((x > 0) - (x < 0))


def constant_domain(level: int, labels: list[int], name: str) -> DomainDataset:
    return DomainDataset(torch.full((len(labels), 1, 4, 4), level, dtype=torch.uint8), torch.tensor(labels), name, 2)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """tiny(**options) -> a CycleGANTraining on the scalar networks and constant domains above."""
    def make(semantic_classifier=None, **changes):
        discriminators = iter([D_A, D_B])  # built in this order: D_A, then D_B
        monkeypatch.setattr(training, "build_generators", lambda options, channels, size: (Scale(G), Scale(F_)))
        monkeypatch.setattr(training, "PatchDiscriminator", lambda *args, **kwargs: Scale(next(discriminators)))
        options = CycleGANOptions(**{"iterations": 4, "batch_size": 2, "lambda_a": LAMBDA_A, "lambda_b": LAMBDA_B,
                                     "lambda_identity": LAMBDA_IDT, "pool_size": 1, "lr": LR, "decay_start": 0.0,
                                     "image_grid_every": 0, **changes})
        source = constant_domain(255, [1, 1, 1, 1], "a")
        target = constant_domain(51, [-1, -1, -1, -1], "b")
        return CycleGANTraining(options, source, target, Context(tmp_path, progress=False), semantic_classifier)

    return make


def record_gradients(training: CycleGANTraining) -> dict:
    """Gradients of every scalar network as each optimiser is about to step."""
    seen = {}
    nets = {"g": training.g_ab, "f": training.g_ba, "d_a": training.d_a, "d_b": training.d_b}

    def hook(name):
        def pre_step(optimizer, args, kwargs):
            seen[name] = {k: None if m.w.grad is None else float(m.w.grad) for k, m in nets.items()}
        return pre_step

    training.optimizer_g.register_step_pre_hook(hook("G step"))
    training.optimizer_d.register_step_pre_hook(hook("D step"))
    return seen


def test_one_iteration_every_term_its_weight_and_its_network(tiny):
    training = tiny()
    gradients = record_gradients(training)
    pool_inputs = {}
    for name in ("pool_a", "pool_b"):
        pool = getattr(training, name)
        original = pool.query
        pool.query = lambda images, _name=name, _query=original: (pool_inputs.setdefault(_name, images.clone()),
                                                                   _query(images))[1]
    scalars = training.step(0)

    # the generator terms (module docstring, step 2)
    expected = {
        "loss/G_adversarial_ab": (D_B * G * A - 1) ** 2,  # GAN(D_B(G(a)), real)
        "loss/G_adversarial_ba": (D_A * F_ * B - 1) ** 2,  # GAN(D_A(F(b)), real)
        "loss/cycle_a": LAMBDA_A * abs(F_ * G * A - A),  # λ_A‖F(G(a)) − a‖₁
        "loss/cycle_b": LAMBDA_B * abs(G * F_ * B - B),  # λ_B‖G(F(b)) − b‖₁
        "loss/identity_b": LAMBDA_IDT * LAMBDA_B * abs(G * B - B),  # λ_idt·λ_B‖G(b) − b‖₁
        "loss/identity_a": LAMBDA_IDT * LAMBDA_A * abs(F_ * A - A),  # λ_idt·λ_A‖F(a) − a‖₁
    }
    for name, value in expected.items():
        assert float(scalars[name]) == pytest.approx(value, rel=1e-5), name
    assert float(scalars["loss/G"]) == pytest.approx(sum(expected.values()), rel=1e-5)
    assert "loss/semantic" not in scalars

    # the discriminator terms, each with its ½ (step 3); the pools are filling, so they return the fakes
    assert float(scalars["loss/D_a"]) == pytest.approx(0.5 * ((D_A * A - 1) ** 2 + (D_A * F_ * B) ** 2), rel=1e-5)
    assert float(scalars["loss/D_b"]) == pytest.approx(0.5 * ((D_B * B - 1) ** 2 + (D_B * G * A) ** 2), rel=1e-5)
    assert torch.allclose(pool_inputs["pool_a"], torch.full((2, 1, 4, 4), F_ * B))  # pool_A holds fakes of A: F(b)
    assert torch.allclose(pool_inputs["pool_b"], torch.full((2, 1, 4, 4), G * A))  # pool_B holds fakes of B: G(a)
    assert len(training.pool_a) == len(training.pool_b) == 1  # both pools took their fakes in
    assert float(scalars["D_output/fake_a"]) == pytest.approx(D_A * F_ * B, rel=1e-5)
    assert float(scalars["D_output/real_b"]) == pytest.approx(D_B * B, rel=1e-5)

    # gradients: the generator step sees dL_G/dg, dL_G/df and nothing reaches the frozen discriminators
    dg = (2 * (D_B * G * A - 1) * D_B * A + LAMBDA_A * sign(F_ * G * A - A) * F_ * A
          + LAMBDA_B * sign(G * F_ * B - B) * F_ * B + LAMBDA_IDT * LAMBDA_B * sign(G * B - B) * B)
    df = (2 * (D_A * F_ * B - 1) * D_A * B + LAMBDA_A * sign(F_ * G * A - A) * G * A
          + LAMBDA_B * sign(G * F_ * B - B) * G * B + LAMBDA_IDT * LAMBDA_A * sign(F_ * A - A) * A)
    at_g = gradients["G step"]
    assert at_g["g"] == pytest.approx(dg, rel=1e-5) and at_g["f"] == pytest.approx(df, rel=1e-5)
    assert at_g["d_a"] is None and at_g["d_b"] is None
    # the discriminator step sees d(L_D_A + L_D_B)/dd on the same fakes, and no generator gradient
    at_d = gradients["D step"]
    assert at_d["d_a"] == pytest.approx((D_A * A - 1) * A + D_A * (F_ * B) ** 2, rel=1e-5)
    assert at_d["d_b"] == pytest.approx((D_B * B - 1) * B + D_B * (G * A) ** 2, rel=1e-5)

    # Adam's first step moves each weight by lr against the sign of its gradient
    assert training.g_ab.w.item() == pytest.approx(G - LR * sign(dg), abs=1e-6)
    assert training.g_ba.w.item() == pytest.approx(F_ - LR * sign(df), abs=1e-6)
    assert training.d_a.w.item() == pytest.approx(D_A - LR * sign(at_d["d_a"]), abs=1e-6)
    assert training.d_b.w.item() == pytest.approx(D_B - LR * sign(at_d["d_b"]), abs=1e-6)

    assert training.optimizer_g.defaults["betas"] == training.optimizer_d.defaults["betas"] == (0.5, 0.999)
    # both schedulers stepped once: linear decay from iteration 0 over 4 iterations -> 1 − 1/4
    assert training.optimizer_g.param_groups[0]["lr"] == pytest.approx(0.75 * LR)
    assert training.optimizer_d.param_groups[0]["lr"] == pytest.approx(0.75 * LR)
    assert scalars["lr"] == pytest.approx(0.75 * LR)


def test_schedulers_follow_the_policy_through_training(tiny):
    training = tiny(iterations=10, decay_start=0.5)
    lrs = []
    for i in range(10):
        training.step(i)
        lrs.append((training.optimizer_g.param_groups[0]["lr"], training.optimizer_d.param_groups[0]["lr"]))
    # constant for 5 iterations, then linearly to 0 at 10 (the LR after step i is the factor of i + 1)
    factors = [1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.0]
    assert [g for g, _ in lrs] == pytest.approx([LR * x for x in factors])
    assert [d for _, d in lrs] == pytest.approx([LR * x for x in factors])


class MeanClassifier(nn.Module):
    """Frozen 2-class classifier on the image mean m: logits (m, −0.3). It reads b = −0.6 as class 1
    but F(b) = −0.15 as class 0, so the pseudo-label must come from the real target image."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([m, torch.full_like(m, -0.3)], 1)


def test_the_semantic_term_is_optimised_with_its_weight(tiny):
    plain = tiny()
    plain_gradients = record_gradients(plain)
    plain.step(0)
    weight = 3.0
    semantic = tiny(semantic_classifier=MeanClassifier(), semantic_weight=weight)
    gradients = record_gradients(semantic)
    scalars = semantic.step(0)

    # L_sem = CE(f_S(G(a)), argmax f_S(a)) + CE(f_S(F(b)), argmax f_S(b)) (CyCADA's targets, the default),
    # worked out with autograd on g and f
    g, f = torch.tensor(G, requires_grad=True), torch.tensor(F_, requires_grad=True)
    image_a, image_b = torch.full((2, 1, 4, 4), A), torch.full((2, 1, 4, 4), B)
    classifier = MeanClassifier()
    l_sem = (nn.functional.cross_entropy(classifier(g * image_a), classifier(image_a).argmax(1))
             + nn.functional.cross_entropy(classifier(f * image_b), torch.tensor([1, 1])))
    l_sem.backward()
    assert float(scalars["loss/semantic"]) == pytest.approx(weight * l_sem.item(), rel=1e-5)
    assert float(scalars["loss/G"]) == pytest.approx(
        sum(float(v) for k, v in scalars.items() if k.startswith("loss/") and k not in ("loss/G", "loss/D_a",
                                                                                        "loss/D_b")), rel=1e-5)
    # the generator's gradient is that of the plain run plus weight · dL_sem
    for name, leaf in (("g", g), ("f", f)):
        assert gradients["G step"][name] == pytest.approx(plain_gradients["G step"][name] + weight * float(leaf.grad),
                                                          rel=1e-5), name


def test_image_pool_returns_exactly_the_images_its_rule_says():
    """Filling: the image itself. Full: with u ~ U(0,1) from the pool's generator, u < ½ returns the stored
    image at slot randint(size) and stores the new one there; otherwise the new image comes back."""
    pool = ImagePool(2, seed=5)
    first = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    assert torch.equal(pool.query(first), first)
    batch = torch.arange(10.0, 20.0).view(10, 1, 1, 1)
    out = pool.query(batch).flatten().tolist()

    generator, stored, expected = torch.Generator().manual_seed(5), [0.0, 1.0], []
    for value in batch.flatten().tolist():
        if torch.rand((), generator=generator) < 0.5:
            slot = int(torch.randint(2, (), generator=generator))
            expected.append(stored[slot])
            stored[slot] = value
        else:
            expected.append(value)
    assert out == expected
    assert sorted(float(x) for x in pool.images) == sorted(stored)
    # this seed exercises both branches: a first-filled image comes back, and a new image passes through
    assert {0.0, 1.0} & set(out) and any(x == v for x, v in zip(out, batch.flatten().tolist()))


def test_pools_and_streams_of_the_two_domains_are_seeded_apart(tiny):
    training = tiny()
    assert not torch.equal(training.pool_a.generator.get_state(), training.pool_b.generator.get_state())
    assert not torch.equal(training.source.walk.generator.get_state(), training.target.walk.generator.get_state())


def test_defaults_are_the_reference_implementations():
    """Zhu et al. / pytorch-CycleGAN-and-pix2pix: λ_A = λ_B = 10, λ_idt = 0.5, pool of 50, Adam 2e-4 with
    β₁ = 0.5, LSGAN, instance norm, a 3-layer PatchGAN, LR constant for the first half then linear to 0."""
    o = CycleGANOptions()
    assert (o.lambda_a, o.lambda_b, o.lambda_identity, o.pool_size, o.lr, o.beta1) == (10.0, 10.0, 0.5, 50, 2e-4, 0.5)
    assert (o.gan_loss, o.norm, o.lr_policy, o.decay_start) == ("lsgan", "instance", "linear", 0.5)
    # above 64 px the reference networks: 2 down-samplings, a 3-layer PatchGAN (smaller images: see
    # tests/test_pixel_labels.py)
    assert (o.downsamplings_for(128), o.layers_for(128), o.layers_for(256)) == (2, 3, 3)
    assert (o.blocks_for(128), o.blocks_for(256), o.ngf, o.ndf) == (6, 9, 64, 64)

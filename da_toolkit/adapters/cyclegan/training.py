"""CycleGAN pixel-level adaptation (Zhu et al., 2017), optionally with CyCADA's semantic loss.

Two generators are trained without paired images, G: source (A) -> target (B) and F: B -> A,
each against a PatchGAN discriminator, with cycle consistency F(G(a)) ≈ a, G(F(b)) ≈ b. The
labeled source set is then translated by G into target style; labels travel with the images.

One training iteration is the reference implementation's `optimize_parameters`:

1. forward:  fake_b = G(a), rec_a = F(fake_b), fake_a = F(b), rec_b = G(fake_a)
2. generator step, discriminators frozen (requires_grad off):
   L_G = GAN(D_B(G(a)), real) + GAN(D_A(F(b)), real) + λ_A‖F(G(a)) − a‖₁ + λ_B‖G(F(b)) − b‖₁
         + λ_idt (λ_B‖G(b) − b‖₁ + λ_A‖F(a) − a‖₁)  [+ w_sem L_sem]
3. discriminator step on fakes drawn from the image pools:
   L_D_B = ½ (GAN(D_B(b), real) + GAN(D_B(pool_B(fake_b)), fake)), likewise L_D_A.

Adam (lr 2e-4, β = (0.5, 0.999)) for both generators together and both discriminators
together; the LR is constant for the first `decay_start` fraction of the budget and then decays
(linearly to zero by default).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.utils import make_grid

from da_toolkit.adapters.base import AdapterSetup, SupervisedTraining
from da_toolkit.adapters.cyclegan.options import CycleGANOptions
from da_toolkit.context import Context
from da_toolkit.data import BatchStream, DomainDataset
from da_toolkit.models import PatchDiscriminator, ResnetGenerator
from da_toolkit.training import distributed, schedules
from da_toolkit.training.gan_losses import GANLoss, cycle_consistency_loss, identity_loss, semantic_consistency_loss
from da_toolkit.training.image_pool import ImagePool
from da_toolkit.training.loop import train_loop


def lr_lambda(policy: str, iterations: int, decay_start: float):
    """The LambdaLR factor of CycleGAN's LR policies over `iterations`.

    linear: 1 until decay_start·T, then linearly to 0 at T (the reference's n_epochs + n_epochs_decay);
    step:   ×0.1 every decay_start·T iterations (the reference's lr_decay_iters);
    cosine: (1 + cos(π i / T)) / 2 over the whole budget (the reference's CosineAnnealingLR).
    """
    total = max(iterations, 1)
    constant = round(decay_start * total)
    if policy == "linear":
        return lambda i: schedules.linear_decay(i, constant, total - constant)
    if policy == "step":
        return lambda i: schedules.step_decay(i, constant or total)
    return lambda i: schedules.cosine(i / total)


def build_generators(options: CycleGANOptions, channels: int, image_size: int) -> tuple[nn.Module, nn.Module]:
    """(G: A -> B, F: B -> A)."""
    blocks, downsamplings = options.blocks_for(image_size), options.downsamplings_for(image_size)
    return tuple(ResnetGenerator(channels, channels, options.ngf, blocks, options.norm, downsamplings)
                 for _ in range(2))


def set_requires_grad(modules: tuple[nn.Module, ...], flag: bool) -> None:
    for module in modules:
        module.requires_grad_(flag)


class CycleGANTraining:
    """Networks, optimisers, schedules, pools and data streams of one CycleGAN training, and its step.

    `step(iteration)` is one iteration as in the module docstring; `state()` is what a checkpoint
    holds. D_A judges domain A (real a vs F(b)), D_B judges domain B (real b vs G(a)).
    """

    def __init__(self, options: CycleGANOptions, source: DomainDataset, target: DomainDataset, ctx: Context,
                 semantic_classifier: nn.Module | None = None):
        channels, size = source.image_shape[0], source.image_shape[1]
        self.options = options
        self.ctx = ctx
        self.g_ab, self.g_ba = (g.to(ctx.device) for g in build_generators(options, channels, size))
        self.d_a, self.d_b = (PatchDiscriminator(channels, options.ndf, options.layers_for(size), options.norm)
                              .to(ctx.device) for _ in range(2))
        # what each step calls to train G, F and D_A, D_B: data-parallel wrappers (the networks themselves in
        # one process); the discriminators, frozen in the generator step, are called there as they are
        self.parallel_generators = (ctx.distribute(self.g_ab), ctx.distribute(self.g_ba))
        self.parallel_discriminators = (ctx.distribute(self.d_a), ctx.distribute(self.d_b))
        self.gan_loss = GANLoss(options.gan_loss)
        betas = (options.beta1, 0.999)
        self.optimizer_g = torch.optim.Adam([*self.g_ab.parameters(), *self.g_ba.parameters()], options.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam([*self.d_a.parameters(), *self.d_b.parameters()], options.lr, betas=betas)
        factor = lr_lambda(options.lr_policy, options.iterations, options.decay_start)
        self.scheduler_g = torch.optim.lr_scheduler.LambdaLR(self.optimizer_g, factor)
        self.scheduler_d = torch.optim.lr_scheduler.LambdaLR(self.optimizer_d, factor)
        self.pool_a = ImagePool(options.pool_size, ctx.seed + 3, ctx.device)
        self.pool_b = ImagePool(options.pool_size, ctx.seed + 4, ctx.device)
        self.source = BatchStream(source, options.batch_size, ctx.seed, ctx.device)
        self.target = BatchStream(target, options.batch_size, ctx.seed + 1, ctx.device)
        self.semantic_classifier = semantic_classifier

    def state(self) -> dict:
        return {"generator_ab": self.g_ab, "generator_ba": self.g_ba, "discriminator_a": self.d_a,
                "discriminator_b": self.d_b, "optimizer_g": self.optimizer_g, "optimizer_d": self.optimizer_d,
                "scheduler_g": self.scheduler_g, "scheduler_d": self.scheduler_d, "pool_a": self.pool_a,
                "pool_b": self.pool_b, "source_stream": self.source, "target_stream": self.target}

    def step(self, iteration: int) -> dict:
        o, ctx, gan = self.options, self.ctx, self.gan_loss
        real_a, labels_a = next(self.source)
        real_b, _ = next(self.target)

        # generators, with the discriminators frozen
        g_ab, g_ba = self.parallel_generators
        set_requires_grad((self.d_a, self.d_b), False)
        with ctx.autocast():
            fake_b = g_ab(real_a)
            rec_a = g_ba(fake_b)
            fake_a = g_ba(real_b)
            rec_b = g_ab(fake_a)
            scalars = {
                "loss/G_adversarial_ab": gan(self.d_b(fake_b), True),
                "loss/G_adversarial_ba": gan(self.d_a(fake_a), True),
                "loss/cycle_a": cycle_consistency_loss(rec_a, real_a, o.lambda_a),
                "loss/cycle_b": cycle_consistency_loss(rec_b, real_b, o.lambda_b),
            }
            if o.lambda_identity > 0:
                scalars["loss/identity_b"] = identity_loss(g_ab(real_b), real_b, o.lambda_b, o.lambda_identity)
                scalars["loss/identity_a"] = identity_loss(g_ba(real_a), real_a, o.lambda_a, o.lambda_identity)
            if self.semantic_classifier is not None and o.semantic_weight > 0:
                if o.semantic_targets == "predicted":
                    with torch.no_grad():
                        labels_a = self.semantic_classifier(real_a).argmax(1)
                scalars["loss/semantic"] = o.semantic_weight * semantic_consistency_loss(
                    self.semantic_classifier, fake_b, labels_a, fake_a, real_b)
            loss_g = sum(scalars.values())
        ctx.backward_step(loss_g, self.optimizer_g)
        set_requires_grad((self.d_a, self.d_b), True)

        # discriminators, on fakes from the history pools
        d_a, d_b = self.parallel_discriminators
        with ctx.autocast():
            d_real_a, d_real_b = d_a(real_a), d_b(real_b)
            d_fake_a, d_fake_b = d_a(query_pool(self.pool_a, fake_a)), d_b(query_pool(self.pool_b, fake_b))
            loss_d_a = 0.5 * (gan(d_real_a, True) + gan(d_fake_a, False))
            loss_d_b = 0.5 * (gan(d_real_b, True) + gan(d_fake_b, False))
        ctx.backward_step(loss_d_a + loss_d_b, self.optimizer_d)
        self.scheduler_g.step()
        self.scheduler_d.step()

        if o.image_grid_every and (iteration + 1) % o.image_grid_every == 0:
            self.add_image_grid(iteration + 1, (real_a, fake_b, rec_a), (real_b, fake_a, rec_b))
        scalars = {name: value.detach() for name, value in scalars.items()}
        outputs = {"real_a": d_real_a, "fake_a": d_fake_a, "real_b": d_real_b, "fake_b": d_fake_b}
        return {**scalars, "loss/G": loss_g.detach(), "loss/D_a": loss_d_a.detach(), "loss/D_b": loss_d_b.detach(),
                **{f"D_output/{name}": out.detach().float().mean() for name, out in outputs.items()},
                "lr": self.scheduler_g.get_last_lr()[0]}

    def add_image_grid(self, step: int, a_rows: tuple, b_rows: tuple) -> None:
        """TensorBoard images 'pixel/a2b' (real A / fake B / reconstructed A rows) and 'pixel/b2a'."""
        for tag, rows in (("pixel/a2b", a_rows), ("pixel/b2a", b_rows)):
            self.ctx.writer.add_image(tag, translation_grid(rows), step)


def query_pool(pool: ImagePool, fakes: torch.Tensor) -> torch.Tensor:
    """`pool.query` of this rank's `fakes`, through the global batch when several processes train (see
    training/distributed.py): every rank's pool takes the fakes of all ranks, in rank order, and returns the
    rank's share of the answer, so the pools are alike on every rank and the one of a 1-process run, and rank
    0's checkpoint restores every rank's pool."""
    everyone = distributed.global_batch(fakes)
    answer = pool.query(everyone)
    return answer if everyone is fakes else answer[distributed.shard(len(everyone), distributed.current())]


def translation_grid(rows: tuple[torch.Tensor, ...], count: int = 8, scale: int = 4) -> torch.Tensor:
    """3×H×W float grid in [0, 1]: one row of `count` images per tensor of `rows` (images in [-1, 1],
    e.g. source / translation / reconstruction), each image upscaled `scale`× (nearest) so that
    small digits can be read."""
    images = torch.cat([r[:count].detach().float().cpu() for r in rows])
    images = nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=min(count, len(rows[0])), normalize=True, value_range=(-1, 1))


def train_classifier(setup: AdapterSetup, dataset: DomainDataset, ctx: Context, stage: str,
                     iterations: int) -> nn.Module:
    """The shared classifier architecture trained on labeled `dataset` with the run's `train`
    settings for `iterations` (one train_loop stage); returned frozen, in eval mode."""
    classifier = setup.make_classifier(dataset.num_classes).to(ctx.device)
    training = SupervisedTraining(classifier, dataset, dataset.without_labels(), setup.train, ctx,
                                  iterations=iterations)

    classifier.train()
    train_loop(ctx, stage, iterations, training.supervised_step, training.state())
    return classifier.eval().requires_grad_(False)

"""StarGAN (Choi et al., CVPR 2018): one generator G(x, c) for every domain, trained as the authors'
solver.py trains it (`--dataset RaFD`: one label per domain). The formulas are in
training/stargan_losses.py. One iteration i:

1. a batch: `batch_size` images of every domain, x with their domain labels c′; the target domains
   c are c′ shuffled within the batch (the authors' randperm);
2. discriminator step: L_D = −mean D_src(x) + mean D_src(G(x, c)) + λ_cls CE(D_cls(x), c′)
   + λ_gp (‖∇D_src(x̂)‖ − 1)² on x̂ = α x + (1 − α) G(x, c), α ~ U[0, 1] per image;
3. every n_critic-th iteration ((i + 1) % n_critic == 0), generator step:
   L_G = −mean D_src(G(x, c)) + λ_cls CE(D_cls(G(x, c)), c) + λ_rec ‖x − G(G(x, c), c′)‖₁
   [+ w_sem CE(f_S(G(x, c)), argmax f_S(x))], with a fresh G(x, c).

Adam (lr 1e-4, β = (0.5, 0.999)) for G and for D; the LR of both is constant for the first
`decay_start` of the iterations, then decays linearly to 0 (the paper; the authors' code steps it
every 1000 iterations). The random draws (c, α) come from torch's global generator, which every
checkpoint holds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from da_toolkit.adapters.stargan.networks import StarDiscriminator, StarGenerator
from da_toolkit.adapters.stargan.options import StarGANOptions
from da_toolkit.context import Context
from da_toolkit.data import BatchStream, Domain
from da_toolkit.training import schedules
from da_toolkit.training.gan_losses import cycle_consistency_loss
from da_toolkit.training.stargan_losses import (domain_classification_loss, gradient_penalty, interpolate,
                                                semantic_loss, wasserstein_critic_loss, wasserstein_generator_loss)


def build_generator(options: StarGANOptions, channels: int, image_size: int, domains: int) -> StarGenerator:
    return StarGenerator(channels, domains, options.ngf, options.generator_blocks, options.downsamplings_for(image_size))


def build_discriminator(options: StarGANOptions, channels: int, image_size: int, domains: int) -> StarDiscriminator:
    return StarDiscriminator(channels, domains, image_size, options.ndf, options.layers_for(image_size))


class StarGANTraining:
    """Networks, optimisers and data streams of one StarGAN training over `domains` (label = position),
    and its step (module docstring). `state()` is what a checkpoint holds."""

    def __init__(self, options: StarGANOptions, domains: list[Domain], ctx: Context,
                 semantic_classifier: nn.Module | None = None):
        channels, size = domains[0].image_shape[0], domains[0].image_shape[1]
        self.options, self.ctx, self.count = options, ctx, len(domains)
        self.generator = build_generator(options, channels, size, self.count).to(ctx.device)
        self.discriminator = build_discriminator(options, channels, size, self.count).to(ctx.device)
        betas = (options.beta1, options.beta2)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), options.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), options.lr, betas=betas)
        self.streams = [BatchStream(domain, options.batch_size, ctx.seed + index, ctx.device)
                        for index, domain in enumerate(domains)]
        self.semantic_classifier = semantic_classifier

    def state(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator, "optimizer_g": self.optimizer_g,
                "optimizer_d": self.optimizer_d, **{f"stream_{i}": s for i, s in enumerate(self.streams)}}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x (every domain's batch, in domain order) and their domain labels c′."""
        images = [next(stream)[0] for stream in self.streams]
        labels = torch.cat([torch.full((len(x),), d, dtype=torch.long) for d, x in enumerate(images)])
        return torch.cat(images), labels.to(self.ctx.device)

    def learning_rate(self, iteration: int) -> float:
        o = self.options
        constant = round(o.decay_start * o.iterations)
        return o.lr * schedules.linear_decay(iteration, constant, o.iterations - constant)

    def step(self, iteration: int) -> dict:
        real, domains = self.batch()
        return self.update(real, domains, iteration)

    def update(self, real: torch.Tensor, original: torch.Tensor, iteration: int) -> dict:
        """One iteration (module docstring, steps 2-3) on the batch `real` of domains `original`."""
        o, ctx, G, D = self.options, self.ctx, self.generator, self.discriminator
        lr = self.learning_rate(iteration)
        for optimizer in (self.optimizer_g, self.optimizer_d):
            for group in optimizer.param_groups:
                group["lr"] = lr
        target = original[torch.randperm(len(original)).to(original.device)]
        c_original, c_target = F.one_hot(original, self.count), F.one_hot(target, self.count)

        with ctx.autocast():
            scores_real, logits_real = D(real)
            fake = G(real, c_target)
            scores_fake, _ = D(fake.detach())
            alpha = torch.rand(len(real), 1, 1, 1).to(real.device)
            mixed = interpolate(real, fake, alpha)
            scores_mixed, _ = D(mixed)
            scalars = {"loss/D_adversarial": wasserstein_critic_loss(scores_real, scores_fake),
                       "loss/D_classification": domain_classification_loss(logits_real, original, o.lambda_cls),
                       "loss/D_gradient_penalty": gradient_penalty(scores_mixed, mixed, o.lambda_gp)}
            loss_d = sum(scalars.values())
        ctx.backward_step(loss_d, self.optimizer_d)
        scalars["loss/D"] = loss_d

        if (iteration + 1) % o.n_critic == 0:
            with ctx.autocast():
                fake = G(real, c_target)
                scores_fake, logits_fake = D(fake)
                reconstructed = G(fake, c_original)
                terms = {"loss/G_adversarial": wasserstein_generator_loss(scores_fake),
                         "loss/G_classification": domain_classification_loss(logits_fake, target, o.lambda_cls),
                         "loss/reconstruction": cycle_consistency_loss(reconstructed, real, o.lambda_rec)}
                if self.semantic_classifier is not None and o.semantic_weight > 0:
                    with torch.no_grad():
                        classes = self.semantic_classifier(real).argmax(1)
                    terms["loss/semantic"] = semantic_loss(self.semantic_classifier, fake, classes, o.semantic_weight)
                loss_g = sum(terms.values())
            ctx.backward_step(loss_g, self.optimizer_g)
            scalars.update(terms, **{"loss/G": loss_g})
            if o.image_grid_every and (iteration + 1) % o.image_grid_every == 0:
                ctx.writer.add_image("pixel/translations", self.translation_grid(real[::o.batch_size]), iteration + 1)
        return {**{name: value.detach() for name, value in scalars.items()},
                "D_output/real": scores_real.detach().float().mean(), "lr": lr}

    @torch.no_grad()
    def translation_grid(self, images: torch.Tensor, scale: int = 4) -> torch.Tensor:
        """3×H×W float grid in [0, 1]: a column per image of `images`, its rows the image and its
        translation into every domain in label order, upscaled `scale`×. G runs in eval mode, which
        leaves its instance norms' running statistics alone."""
        self.generator.eval()
        rows = [images] + [self.generator(images, F.one_hot(torch.full((len(images),), d, device=images.device),
                                                            self.count)) for d in range(self.count)]
        self.generator.train()
        grid = nn.functional.interpolate(torch.cat(rows).float().cpu(), scale_factor=scale, mode="nearest")
        return make_grid(grid, nrow=len(images), normalize=True, value_range=(-1, 1))

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

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision.utils import make_grid

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import AdapterSetup, PixelAdapter, SupervisedTraining
from da_toolkit.context import Context
from da_toolkit.data import BatchStream, DomainDataset
from da_toolkit.data.base import device_batches, to_uint8
from da_toolkit.errors import UserError
from da_toolkit.evaluate import evaluate, predict
from da_toolkit.models import PatchDiscriminator, ResnetGenerator
from da_toolkit.models.cyclegan import small_image_defaults
from da_toolkit.training import distributed, schedules
from da_toolkit.training.checkpoint import load_checkpoint, save_checkpoint
from da_toolkit.training.gan_losses import GANLoss, cycle_consistency_loss, identity_loss, semantic_consistency_loss
from da_toolkit.training.image_pool import ImagePool
from da_toolkit.training.loop import train_loop
from da_toolkit.training.precision import Precision


@dataclass
class CycleGANOptions:
    """The recipe's `pixel:` keys for `adapter: cyclegan`. Defaults suit a GPU and 28-32 px digits."""

    iterations: int = 20000  # generator/discriminator updates (one source and one target batch each)
    batch_size: int = 32  # the reference uses 1 at 256 px; small digit images train well with 16-64
    ngf: int = 64  # generator width (first conv)
    ndf: int = 64  # discriminator width (first conv)
    generator_blocks: int | None = None  # residual blocks; None: 6 for images up to 128 px, else 9 (the reference)
    generator_downsamplings: int | None = None  # None: 1 for images up to 64 px, else 2 (the reference)
    discriminator_layers: int | None = None  # PatchGAN stride-2 layers; None: 2 up to 64 px, else 3 (70×70 patches)
    norm: Literal["instance", "batch"] = "instance"
    gan_loss: Literal["lsgan", "vanilla"] = "lsgan"  # least squares, or the original log loss
    lambda_a: float = 10.0  # cycle weight A -> B -> A
    lambda_b: float = 10.0  # cycle weight B -> A -> B
    lambda_identity: float = 0.5  # identity weight, relative to lambda_a/b; 0 skips the identity passes
    semantic_weight: float = 1.0  # CyCADA semantic-consistency weight; 0: plain CycleGAN
    semantic_targets: Literal["predicted", "labels"] = "predicted"  # G(a)'s target: f_S(a)'s class (CyCADA) or y_a
    semantic_classifier_iterations: int = 2000  # training of f_S on labeled source (stage pixel_classifier)
    label_filter: Literal["drop", "off"] = "drop"  # drop translated images whose f_S class disagrees with the label
    agreement_warning: float = 0.7  # warn when f_S agrees with fewer than this fraction of translated labels
    feature_data: Literal["both", "translated", "source"] = "both"  # what the feature stage trains on
    translated_fraction: float = 0.5  # feature_data both: share of translated images in the mixed set
    pool_size: int = 50  # history of generated images per direction; 0 disables it
    lr: float = 2e-4
    beta1: float = 0.5
    lr_policy: Literal["linear", "step", "cosine"] = "linear"
    decay_start: float = 0.5  # linear: LR constant, then -> 0; step: x0.1 every decay_start·iterations; cosine: unused
    image_grid_every: int = 1000  # TensorBoard image grid of translations every N iterations; 0: never
    translate_batch_size: int = 256  # batch size when translating the source set
    label_preservation_iterations: int = 1000  # the target-label oracle of the diagnostic (stage pixel_oracle); 0: off

    def __post_init__(self):
        at_least = {"iterations": 0, "batch_size": 1, "ngf": 1, "ndf": 1,
                    "semantic_classifier_iterations": 0, "pool_size": 0, "image_grid_every": 0,
                    "translate_batch_size": 1, "label_preservation_iterations": 0, "lambda_a": 0, "lambda_b": 0,
                    "lambda_identity": 0, "semantic_weight": 0}
        for key, low in (("generator_blocks", 0), ("generator_downsamplings", 0), ("discriminator_layers", 1)):
            if getattr(self, key) is not None:
                at_least[key] = low
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise UserError(f"pixel.{key}: must be {low} or more, got {getattr(self, key)}")
        for key in ("lr", "beta1"):
            if not 0 < getattr(self, key) < 1:
                raise UserError(f"pixel.{key}: must lie strictly between 0 and 1, got {getattr(self, key)}")
        for key in ("decay_start", "agreement_warning", "translated_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"pixel.{key}: a fraction in [0, 1], got {getattr(self, key)}")

    def blocks_for(self, image_size: int) -> int:
        if self.generator_blocks is not None:
            return self.generator_blocks
        return 6 if image_size <= 128 else 9

    def downsamplings_for(self, image_size: int) -> int:
        if self.generator_downsamplings is not None:
            return self.generator_downsamplings
        return small_image_defaults(image_size)["downsamplings"]

    def layers_for(self, image_size: int) -> int:
        if self.discriminator_layers is not None:
            return self.discriminator_layers
        return small_image_defaults(image_size)["discriminator_layers"]

    @property
    def needs_source_classifier(self) -> bool:
        """f_S is trained when the semantic loss or the label filter uses it."""
        return self.semantic_weight > 0 or self.label_filter != "off"

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


def weights_hash(module: nn.Module) -> str:
    """sha1 of a module's state (names and values): equal weights give equal hashes."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def translate_images(generator: nn.Module, images, device: torch.device, batch_size: int,
                     precision: Precision | None = None) -> torch.Tensor:
    """uint8 N×C×H×W (a tensor or a domain's images) -> uint8 N×C×H×W through `generator` in eval mode,
    batch by batch, under `precision`'s autocast (None: fp32)."""
    was_training = generator.training
    generator.eval()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    out = []
    for batch in device_batches(images, device, batch_size):
        with autocast():
            out.append(to_uint8(generator(batch)).cpu())
    generator.train(was_training)
    return torch.cat(out) if out else torch.empty((0, *images.shape[1:]) if isinstance(images, torch.Tensor) else
                                                  (0, *images.image_shape), dtype=torch.uint8)


class CycleGANTranslator:
    """Translates datasets with a trained G: A -> B (cached on disk by weights and data), then makes
    what the feature stage trains on: f_S's label filter and the mix with the raw source (`prepare`)."""

    def __init__(self, generator: nn.Module, ctx: Context, options: CycleGANOptions,
                 source_classifier: nn.Module | None = None):
        self.generator = generator
        self.ctx = ctx
        self.options = options
        self.source_classifier = source_classifier
        self.translated: DomainDataset | None = None  # the last unfiltered translation, for the diagnostics
        self.report: dict = {}  # agreement and kept fractions of the last `translate`

    def translate(self, dataset: DomainDataset) -> DomainDataset:
        """The feature stage's training set from labeled `dataset`: its translation (`translate_only`),
        filtered by f_S (`filter_by_agreement`, when pixel.label_filter is drop) and combined with
        the raw images as pixel.feature_data says (`mix`). Warns when f_S's agreement is low."""
        o, ctx = self.options, self.ctx
        translated = self.translated = self.translate_only(dataset)
        kept = translated
        if self.source_classifier is not None:
            predictions = predict(self.source_classifier, translated, ctx.device, o.translate_batch_size)
            keep, self.report = agreement_report(predictions, translated.labels, translated.num_classes)
            ctx.info(f"pixel: f_S agrees with {100 * self.report['agreement']:.2f}% of the translated labels")
            if o.label_filter == "drop":
                kept = translated.subset(torch.nonzero(keep).flatten(), f"{translated.name}[agreeing]")
                per_class = " ".join(f"{c}:{100 * f:.0f}%" for c, f in self.report["kept_per_class"].items())
                ctx.info(f"pixel: label filter keeps {len(kept)}/{len(translated)} translated images; per class {per_class}")
            if self.report["agreement"] < o.agreement_warning:
                self.report["warning"] = (
                    f"f_S agrees with only {100 * self.report['agreement']:.1f}% of the translated labels (below "
                    f"pixel.agreement_warning={o.agreement_warning}): the translator is damaging labels; raise "
                    f"pixel.semantic_weight or pixel.semantic_classifier_iterations, or drop the pixel stage")
                ctx.info(f"warning: pixel: {self.report['warning']}")
            ctx.metrics.setdefault("pixel", {}).update(self.report)
        return mix(dataset, kept, o.feature_data, o.translated_fraction, ctx.seed)

    def translate_only(self, dataset: DomainDataset) -> DomainDataset:
        """`dataset` in target style, same labels, name '<name>→cyclegan', translated in the run's precision.

        Cached as ctx.cache_dir/translated_<weights hash>_<dataset fingerprint>_<precision>.pt, so a
        second run, or another run sharing this pixel stage (`pixel_from`), reuses the translation
        when it runs in the same precision (bf16 or fp16 translations differ from fp32 ones).
        """
        ctx = self.ctx
        key = f"{weights_hash(self.generator)}_{dataset.fingerprint()}_{ctx.precision.name}"
        path = ctx.cache_dir / f"translated_{key}.pt"
        images = read_translation_cache(path, dataset, ctx)
        hit = images is not None
        if hit:
            ctx.info(f"pixel: translated {dataset.name} read from the cache ({path})")
        else:
            images = translate_images(self.generator, dataset, ctx.device, self.options.translate_batch_size,
                                      ctx.precision)
            if ctx.main:
                save_checkpoint({"images": images}, path, "translation")
            ctx.info(f"pixel: translated {len(images)} images of {dataset.name}, cached in {path}")
        ctx.metrics.setdefault("pixel", {}).update(translation_cache="hit" if hit else "miss",
                                                   translation_cache_file=path.name)
        return DomainDataset(images, dataset.labels, f"{dataset.name}→cyclegan", class_names=dataset.class_names)


def agreement_report(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, dict]:
    """(keep mask, report) of the label filter: an image is kept when f_S's prediction equals its label.

    report: agreement (kept / all), kept (count), total, and kept_per_class {class: kept / images of
    that class} for the classes present. Reads only the (source) labels the translation carries.
    """
    keep = predictions == labels
    per_class = {c: keep[labels == c].float().mean().item() for c in range(num_classes) if (labels == c).any()}
    agreement = keep.float().mean().item() if len(keep) else 1.0
    return keep, {"agreement": agreement, "kept": int(keep.sum()), "total": len(keep), "kept_per_class": per_class}


def mix(source: DomainDataset, translated: DomainDataset, feature_data: str, translated_fraction: float,
        seed: int) -> DomainDataset:
    """The feature stage's labeled set: `translated`, the raw `source`, or both.

    both: len(source) images, round(translated_fraction · len(source)) of them translated and the
    rest raw source, each part drawn without repetition in a seeded random order (the translated
    part cycles through `translated` when the filter left fewer images than it needs).
    """
    if feature_data == "translated":
        return translated
    if feature_data == "source":
        return source
    generator = torch.Generator().manual_seed(seed + 5)
    n_translated = round(translated_fraction * len(source)) if len(translated) else 0
    order = torch.randperm(len(translated), generator=generator) if len(translated) else torch.zeros(0, dtype=torch.long)
    pick_translated = order.repeat(-(-n_translated // max(len(order), 1)))[:n_translated]
    pick_source = torch.randperm(len(source), generator=generator)[:len(source) - n_translated]
    images = torch.cat([translated.read(pick_translated), source.read(pick_source)])
    labels = torch.cat([translated.labels[pick_translated], source.labels[pick_source]])
    return DomainDataset(images, labels, f"{translated.name}+{source.name}", class_names=source.class_names)


def read_translation_cache(path: Path, dataset: DomainDataset, ctx: Context) -> torch.Tensor | None:
    """The cached translation of `dataset` at `path`, or None when there is none or it does not match.

    An entry is served only if it holds a uint8 tensor of exactly the dataset's shape; any other
    entry is discarded with a warning and recomputed. A file that cannot be read safely is an error.
    """
    if not path.exists():
        return None
    images = load_checkpoint(path, "translation")["images"]
    shape = (len(dataset), *dataset.image_shape)
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape == shape:
        return images
    found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
    ctx.info(f"warning: pixel: discarding the translation cache entry {path}: it holds {found}, but {dataset.name} "
             f"is uint8 {shape}; translating again")
    return None


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


@ADAPTERS.register("cyclegan")
class CycleGAN(PixelAdapter):
    """CycleGAN: unpaired source<->target translators; the labeled source set is translated to target style."""

    Options = CycleGANOptions

    @classmethod
    def check(cls, options: CycleGANOptions, image_size: int, channels: int) -> None:
        size, layers = image_size, options.layers_for(image_size)
        if PatchDiscriminator.output_size(size, layers) < 1:
            raise UserError(f"pixel.discriminator_layers: {layers} layers need images of at least "
                            f"{3 * 2 ** layers} px, but data.image_size is {size}; use fewer layers")
        factor = 2 ** options.downsamplings_for(size)
        if size % factor:
            raise UserError(f"data.image_size: CycleGAN's generator down-samples by {factor}, so the image size must "
                            f"be a multiple of {factor}, got {size}")

    def fit(self, source: DomainDataset, target: DomainDataset, ctx: Context) -> CycleGANTranslator:
        o = self.options
        semantic = None
        if o.needs_source_classifier:
            semantic = train_classifier(self.setup, source.labeled(), ctx, "pixel_classifier",
                                        o.semantic_classifier_iterations)
        training = CycleGANTraining(o, source, target, ctx, semantic)
        train_loop(ctx, "pixel", o.iterations, training.step, training.state())
        self.translator = CycleGANTranslator(training.g_ab, ctx, o, semantic)
        return self.translator

    def diagnostics(self, source: DomainDataset, translated: DomainDataset, ctx: Context) -> dict:
        """metrics.json entries about the translation: its label preservation (see `label_preservation`),
        measured on the whole unfiltered translation, and f_S's agreement / label-filter report.
        The warning about low agreement is printed again, last, so that a user sees it."""
        translator = getattr(self, "translator", None)
        if translator is not None and translator.translated is not None:
            translated = translator.translated
        preservation = label_preservation(self.setup, self.options.label_preservation_iterations, source,
                                          translated, ctx)
        out = {} if preservation is None else {"label_preservation": preservation}
        if translator is not None and translator.report:
            out["label_filter"] = translator.report
            if "warning" in translator.report:
                ctx.info(f"warning: pixel: {translator.report['warning']}")
        return out


def label_preservation(setup: AdapterSetup, iterations: int, source: DomainDataset, translated: DomainDataset,
                       ctx: Context) -> dict | None:
    """How well translation kept the digits: the accuracy, on the translated source images, of an
    oracle classifier trained for `iterations` on the real *labeled target* training split
    (benchmark setting only).

    Uses target labels, so it is a diagnostic only, never used for training or model selection.
    None when `iterations` is 0 (the option `label_preservation_iterations`) or there are no target labels.
    """
    if not iterations or setup.labeled_target is None:
        return None
    target = setup.labeled_target()
    if len(target) == 0:
        ctx.info("label preservation: the target training split has no labels; skipped")
        return None
    ctx.info("label preservation: training an oracle classifier on the LABELED target training split "
             "(benchmark setting only; a diagnostic, never used for training or selection)")
    oracle = train_classifier(setup, target, ctx, "pixel_oracle", iterations)
    batch = setup.train.eval_batch_size
    rate = evaluate(oracle, translated, ctx.device, batch)["accuracy"]
    raw = evaluate(oracle, source, ctx.device, batch)["accuracy"]
    ctx.info(f"label preservation: target-trained oracle reads {100 * rate:.2f}% of translated source images "
             f"correctly ({100 * raw:.2f}% of the raw source images)")
    return {"rate": rate, "oracle_on_raw_source": raw, "oracle_iterations": iterations,
            "note": "uses target labels; a diagnostic only, never used for training or selection"}

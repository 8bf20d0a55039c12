"""What adapters are, and the classifier-training parts every feature adapter shares.

* A **pixel adapter** (``kind = "pixel"``, adapters/pixel.py): ``fit(source, target, ctx) -> Translator``;
  the translator's ``translate(dataset)`` returns the labeled dataset in target style; the adapter
  also owns the read side of its run directory (loading its translator, its report, sharing keys).
* A **feature adapter** (``kind = "feature"``): ``fit(classifier, source, target, ctx)`` trains the
  shared classifier in place and returns it.

Each adapter class has an ``Options`` dataclass (its recipe keys, validated by the recipe
loader), a ``check(options, image_size, channels)`` class method for checks across recipe
sections (run when the recipe is validated, before anything is written), and is constructed as
``Adapter(options, setup)``: an `AdapterSetup` carries what it needs from the run (train
settings, image shape, seed, a classifier factory), never the recipe itself.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn

from da_toolkit.context import Context
from da_toolkit.data import BatchStream, Domain, DomainDataset, build_domain
from da_toolkit.data.augment import Augment
from da_toolkit.models import DomainClassifier, create_classifier
from da_toolkit.training.schedules import lr_factor


@dataclass
class NoOptions:
    """An adapter without options of its own."""


@dataclass(frozen=True)
class AdapterSetup:
    """What an adapter gets from a run besides its own options."""

    train: Any  # the recipe's `train` settings (iterations, batch size, optimiser, lr, schedule, ...)
    image_size: int
    channels: int
    seed: int
    make_classifier: Callable[[int], nn.Module]  # class count -> a fresh shared classifier, on the CPU
    # the fully labeled target training split, for benchmark diagnostics only (the label-preservation
    # oracle), never for training or model selection; None where there is no such split
    labeled_target: Callable[[], DomainDataset] | None = None
    # the dataset names of the recipe's sources (data.source, then data.extra_sources) and, last, its target
    domain_names: tuple[str, ...] = ()
    # a registered dataset's training split by name, at the run's image size (a StarGAN's other domains)
    load_domain: Callable[[str], Domain] | None = None
    # the recipe's i-th source (0: data.source, then data.extra_sources) built as the run builds it, on its own
    load_source: Callable[[int], Domain] | None = None

    @property
    def source_names(self) -> tuple[str, ...]:
        return self.domain_names[:-1]

    @property
    def target_name(self) -> str:
        return self.domain_names[-1]

    @classmethod
    def from_recipe(cls, recipe) -> "AdapterSetup":
        data, c = recipe.data, recipe.classifier

        def make_classifier(num_classes: int) -> nn.Module:
            return create_classifier(c.backbone, data.channels, data.image_size, num_classes, c.bottleneck_dim,
                                     c.pretrained, c.checkpoint, c.backbone_lr_multiplier)

        def labeled_target() -> DomainDataset:
            return build_domain(data.target, data.image_size, data.channels, recipe.seed).labeled()

        def load_domain(name: str) -> Domain:
            spec = dataclasses.replace(data.target, name=name, split="train", limit=None, root=None, list=None)
            return build_domain(spec, data.image_size, data.channels, recipe.seed)

        sources = [spec for spec in (data.source, *data.extra_sources) if spec is not None]  # none: source-free

        def load_source(index: int) -> Domain:
            return build_domain(sources[index], data.image_size, data.channels, recipe.seed)

        return cls(recipe.train, data.image_size, data.channels, recipe.seed, make_classifier, labeled_target,
                   (*(spec.name for spec in sources), data.target.name), load_domain, load_source)


class Adapter:
    """What pixel and feature adapters share: options, setup, and the cross-section check hook."""

    kind = ""
    Options = NoOptions
    needs_target_labels = False  # True: a run is refused, before anything is written, without labeled target images
    reads_source = True  # False: trains without labeled source images (a source-free run may leave data.source null)

    def __init__(self, options, setup: AdapterSetup):
        self.options = options
        self.setup = setup

    @classmethod
    def check(cls, options, image_size: int, channels: int, stage: str) -> None:
        """Raise UserError when `options` cannot work with this image size or channel count, or in the recipe
        section `stage` ("pixel", "feature" or "refine") that runs them."""


class FeatureAdapter(Adapter):
    """`stage`: the recipe section this adapter runs as ("feature", or "refine" when it goes on training
    the classifier a feature stage returned); it names the adapter's training stages (checkpoints,
    TensorBoard, metrics.json) and the keys its messages name."""

    kind = "feature"

    def __init__(self, options, setup: AdapterSetup, stage: str = "feature"):
        super().__init__(options, setup)
        self.train = setup.train
        self.stage = stage

    def source_classes(self) -> tuple[int, tuple[str, ...], str]:
        """(class count, class names, source dataset name) of the trained source classifier a source-free
        adapter starts from (a run with data.source: null takes its classes from it); UserError when unreadable."""
        raise NotImplementedError(f"{type(self).__name__} does not start from a source classifier")

    def starting_classifier(self) -> Path | None:
        """The trained classifier file this adapter starts from (SHOT's source checkpoint); None when it trains
        from the backbone's initial weights or goes on with the classifier a feature stage returned. Seeds of a
        method that start from one such file are not independent runs (recommend.with_seed_agreement)."""
        return None

    def check_inputs(self, num_classes: int) -> None:
        """Refuse (UserError), before the run directory is written, a file this adapter's options name that
        is missing or does not fit a classifier of `num_classes` classes (e.g. SHOT's source checkpoint)."""

    def fit(self, classifier: nn.Module, source: DomainDataset, target: DomainDataset, ctx: Context) -> nn.Module:
        raise NotImplementedError


def parameter_groups(modules: tuple[nn.Module, ...], weight_decay: float) -> list[dict]:
    """The trainable parameters of `modules` as optimiser groups.

    One group, unless the first module is a `DomainClassifier` with a backbone_lr_multiplier other
    than 1 (its backbone's group gets ``lr_scale``: lr = train.lr × multiplier) or a pretrained
    backbone (fine-tuning: norm and bias parameters of every module get no weight decay, as timm's
    `param_groups_weight_decay` splits them).
    """
    classifier = modules[0]
    pretrained = isinstance(classifier, DomainClassifier) and classifier.pretrained
    scale = classifier.backbone_lr_multiplier if isinstance(classifier, DomainClassifier) else 1.0
    if not pretrained and scale == 1.0:
        return [{"params": [p for m in modules for p in m.parameters() if p.requires_grad]}]
    parts = [(classifier.backbone, scale),
             (nn.ModuleList([*classifier.encoder[1:], classifier.head, *modules[1:]]), 1.0)]
    groups = []
    for module, lr_scale in parts:
        if pretrained:
            split = param_groups_weight_decay(module, weight_decay)
        else:
            split = [{"params": [p for p in module.parameters() if p.requires_grad]}]
        groups += [{**group, "lr_scale": lr_scale} for group in split if group["params"]]
    return groups


def make_optimizer(modules: tuple[nn.Module, ...], train, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (momentum, optionally Nesterov) or Adam over `parameter_groups(modules)`, with the recipe's
    lr (times a group's lr_scale) and weight decay."""
    lr = train.lr if lr is None else lr
    groups = [{**group, "lr": lr * group.pop("lr_scale", 1.0)} for group in parameter_groups(modules,
                                                                                             train.weight_decay)]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay,
                               nesterov=train.nesterov)
    return torch.optim.Adam(groups, lr=lr, weight_decay=train.weight_decay)


class SupervisedTraining:
    """The parts of classifier training every feature adapter shares.

    Batch streams of labeled source (None for a source-free method, which passes no source), of
    target (its labels are mostly -1) and of the labeled target images (the scarce-label setting;
    None when k = 0), augmented as `train.augment` says; one optimiser over the classifier and any
    extra modules (e.g. a domain discriminator) with the recipe's LR schedule over `iterations`
    (default train.iterations) from `lr` (default train.lr). `parallel_classifier` and
    `parallel_modules` are the classifier and the extra modules as the training steps call them:
    data-parallel wrappers over the processes torchrun started (training/distributed.py), the
    modules themselves in one process.
    """

    def __init__(self, classifier: nn.Module, source: DomainDataset | None, target: DomainDataset, train,
                 ctx: Context, extra_modules: tuple[nn.Module, ...] = (), iterations: int | None = None,
                 lr: float | None = None):
        self.classifier = classifier
        self.ctx = ctx
        batch = train.batch_size
        augment = Augment(train.augment)
        self.source = augment(BatchStream(source, batch, ctx.seed, ctx.device)) if source is not None else None
        self.target = augment(BatchStream(target, batch, ctx.seed + 1, ctx.device))
        labeled = target.labeled()
        self.labeled_target = augment(BatchStream(labeled, batch, ctx.seed + 2, ctx.device)) if len(labeled) else None
        self.parallel_classifier = ctx.distribute(classifier)
        self.parallel_modules = tuple(ctx.distribute(module) for module in extra_modules)
        self.optimizer = make_optimizer((classifier, *extra_modules), train, lr)
        total = train.iterations if iterations is None else iterations
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(train.lr_schedule, total, train.lr_gamma,
                                                                                    train.lr_decay))

    def labeled_target_loss(self) -> torch.Tensor | None:
        """Cross-entropy on a batch of the labeled target images, or None without any."""
        if self.labeled_target is None:
            return None
        images, labels = next(self.labeled_target)
        return F.cross_entropy(self.parallel_classifier(images), labels)

    def classification_loss(self, source_logits: torch.Tensor, source_labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """CE(source) + CE(labeled target batch, when there are labeled target images)."""
        loss = F.cross_entropy(source_logits, source_labels)
        scalars = {"loss/source_ce": loss.detach(),
                   "accuracy/source_batch": (source_logits.argmax(1) == source_labels).float().mean()}
        target_loss = self.labeled_target_loss()
        if target_loss is not None:
            scalars["loss/labeled_target_ce"] = target_loss.detach()
            loss = loss + target_loss
        return loss, scalars

    def supervised_step(self, iteration: int) -> dict:
        """One source-only update (CE on a source batch [+ a labeled target batch]): a `train_loop` step."""
        images, labels = next(self.source)
        with self.ctx.autocast():
            loss, scalars = self.classification_loss(self.parallel_classifier(images), labels)
        self.update(loss)
        return {"loss/total": loss.detach(), **scalars}

    def update(self, loss: torch.Tensor) -> None:
        self.ctx.backward_step(loss, self.optimizer)
        self.scheduler.step()

    def state(self) -> dict:
        """The objects a checkpoint of this training holds."""
        state = {"classifier": self.classifier, "optimizer": self.optimizer, "scheduler": self.scheduler,
                 "target_stream": self.target}
        if self.source is not None:
            state["source_stream"] = self.source
        if self.labeled_target is not None:
            state["labeled_target_stream"] = self.labeled_target
        return state

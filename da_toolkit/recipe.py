"""Recipes: YAML files loaded into a validated, typed `Recipe`.

A recipe may name base recipes (`base: _base/digits.yaml`, a path relative to the recipe, or a
list of them); bases are merged first, the recipe's own keys win. Dotted overrides such as
``train.iterations=200`` or ``feature.adapter=dann`` are applied last; their values are read as
YAML scalars and type-checked like the file's. Every problem is reported as a `UserError`
naming the key, the value and what is allowed.

A file may hold defaults for one backbone, ``backbone_defaults: {lenet: {train.lr: 0.1}}`` (dotted
keys): they apply when the recipe's final ``classifier.backbone`` (overrides included) is that name,
as if the file had set those keys itself, so the files that name it as a base and the overrides
still win over them. The backbone is found by a first merge without them, then the recipe is merged
again with them.

A field's bounds are declared with the field, ``Annotated[int, Range(low=1)]`` (here and in the
adapters' Options dataclasses), and checked by the one validator, `build_dataclass`; the
recipe's relations to the data it names (labeled images per class, non-empty domains, a batch
larger than a domain) are checked by `check_against_data` once the domains are built, before a
run writes anything.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml

from da_toolkit.bounds import NON_NEGATIVE, POSITIVE, SEED_RANGE, WIDTH, Range
from da_toolkit.errors import UserError
from da_toolkit.training.checkpoint import read_yaml
from da_toolkit.training.precision import AMP_DEPRECATION
from da_toolkit.registry import did_you_mean




@dataclass
class DomainSpec:
    """One dataset split: `name` from `da-toolkit list`, `split` train|test, `root` for imagefolder."""

    name: str
    split: Literal["train", "test"] = "train"
    # keep at most this many images (a seeded random subset); null: all
    limit: Annotated[int, Range(1, why="a domain of no images has no batches to draw; null: all")] | None = None
    root: str | None = None  # folder of an imagefolder domain, or the folder an imagelist's paths are relative to
    #                          (relative to the recipe file; in an override, to the current directory)
    list: str | None = None  # imagelist: the file of `relative/path.jpg label` lines (relative like root)
    skip_unreadable: bool = False  # file domains read into memory: skip unreadable images (a warning counts them)
    # file domains: read into memory, stream from the files (DataLoader workers, train.workers), or auto: memory
    # when the decoded images fit data.memory_budget_gb
    storage: Literal["auto", "memory", "stream"] = "auto"


@dataclass
class DataConfig:
    # null: a source-free run (no source image exists for it): its feature stage starts from a trained source
    # classifier (shot's feature.source_checkpoint), whose class names the target's are matched to
    source: DomainSpec | None
    target: DomainSpec
    target_test: DomainSpec
    source_test: DomainSpec | None = None
    # further labeled sources (multi-source adaptation): merged with data.source, in this order, into the one
    # labeled training set; each has data.source's class names. data.source alone names the source test split
    # (source accuracy) and the report's source sample
    extra_sources: list[DomainSpec] = field(default_factory=list)
    image_size: Annotated[int, Range(1, 1024, why="pixels per side")] = 32
    channels: Literal[1, 3] = 3
    # k labeled target images per class (scarce-label setting); at most the images of the target's smallest class
    target_labels_per_class: Annotated[int, NON_NEGATIVE] = 0
    # storage auto: a file domain whose decoded images take more is streamed
    memory_budget_gb: Annotated[float, Range(0, why="0: stream every file domain")] = 4.0


@dataclass
class ClassifierConfig:
    backbone: str = "dtn"  # a digit backbone (lenet, lenet_fc500, dtn) or any timm model name
    pretrained: bool = False  # timm pretrained weights (downloaded, or from `checkpoint`); input normalised for them
    checkpoint: str | None = None  # pretrained weights from this local state-dict file (relative to the recipe)
    # the backbone learns at train.lr times this (e.g. 0.1 when fine-tuning)
    backbone_lr_multiplier: Annotated[float, NON_NEGATIVE] = 1.0
    bottleneck_dim: Annotated[int, WIDTH] = 256

    def __post_init__(self):
        if self.checkpoint is not None and not self.pretrained:
            raise UserError(f"classifier.checkpoint: pretrained weights from {self.checkpoint} need "
                            f"classifier.pretrained=true")


@dataclass
class AugmentConfig:
    """Random changes to the batches a classifier is trained on (never to evaluation, nor to a
    pixel stage's images); all off by default. Each image of a batch draws its own."""

    # smallest share of the image area a crop keeps (resized back); 1: off
    random_resized_crop: Annotated[float, Range(0, 1, low_open=True, why="1: no crop")] = 1.0
    hflip: bool = False  # mirror half the images (off for digits, whose meaning a mirror changes)
    # brightness, contrast and saturation factors drawn from [1 - j, 1 + j]; 0: off
    color_jitter: Annotated[float, Range(0, 1, why="0: off")] = 0.0

    @property
    def active(self) -> bool:
        return self.random_resized_crop < 1 or self.hflip or self.color_jitter > 0


@dataclass
class TrainConfig:
    """How the shared classifier is trained in the feature stage, and on what device."""

    iterations: Annotated[int, NON_NEGATIVE] = 2000
    # a batch larger than a training domain holds all of it (a warning says so)
    batch_size: Annotated[int, Range(2, why="batch normalisation normalises over the images of a batch")] = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Annotated[float, POSITIVE] = 0.01
    momentum: Annotated[float, NON_NEGATIVE] = 0.9
    nesterov: bool = False  # SGD with Nesterov momentum
    weight_decay: Annotated[float, NON_NEGATIVE] = 5e-4
    lr_schedule: Literal["constant", "anneal", "cosine", "inverse"] = "anneal"  # anneal: lr0 / (1 + 10 p)^0.75
    # inverse: lr0 · (1 + lr_gamma · i)^(-lr_decay) per iteration i (Transfer-Learning-Library)
    lr_gamma: Annotated[float, NON_NEGATIVE] = 0.001
    lr_decay: Annotated[float, NON_NEGATIVE] = 0.75
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # fp32 | bf16 | fp16 (autocast, gradient scaling) | auto: bf16, else fp16 on CUDA, fp32 on the CPU;
    # amp: deprecated, means auto (training/precision.py)
    precision: Literal["auto", "fp32", "bf16", "fp16", "amp"] = "auto"
    log_every: Annotated[int, POSITIVE] = 50
    checkpoint_every: Annotated[int, POSITIVE] = 500
    eval_batch_size: Annotated[int, POSITIVE] = 500
    # DataLoader worker processes decoding streamed (file) domains; 0: in the training process
    workers: Annotated[int, Range(0, why="0: decode in the training process")] = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training-batch augmentation

    def __post_init__(self):
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UserError(f"train.nesterov: needs train.optimizer=sgd and train.momentum > 0, got "
                            f"{self.optimizer} with momentum {self.momentum}")
        if self.precision == "amp":
            warnings.warn(AMP_DEPRECATION, FutureWarning)


@dataclass
class SelectionConfig:
    """Checkpoint selection without target labels (selection.py; the validators: validators.py)."""

    # which candidate the run returns: the last iterate, or the best of one validator
    select: Literal["last", "source_accuracy", "entropy", "info_max", "dev", "snd", "bnm", "class_ami", "target_knn",
                    "target_label_accuracy"] = "last"
    # score the candidates every N iterations of the final stage; null: 10 times
    every: Annotated[int, Range(1, why="iterations between candidates; null: 10 candidates")] | None = None
    # source validation and target images in the fixed, seeded sample (each)
    samples: Annotated[int, Range(10, why="images per domain a validator scores")] = 500
    # >= 2: hold a fold of the k labeled target images out of training to validate
    target_label_folds: Annotated[int, NON_NEGATIVE] = 0
    record_target_test: bool = False  # benchmark studies only: record each candidate's target test accuracy


@dataclass
class Stage:
    """An adapter stage: the adapter's registered name and its validated options dataclass."""

    adapter: str
    options: Any


@dataclass
class Recipe:
    name: str
    data: DataConfig
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    pixel: Stage | None = None
    feature: Stage = field(default_factory=lambda: Stage("source_only", None))
    # optional refinement stage: a feature adapter that goes on training the classifier the feature stage returned
    refine: Stage | None = None
    seed: Annotated[int, SEED_RANGE] = 0
    output_dir: str = "runs"
    pixel_from: str | None = None  # reuse the finished pixel stage of this run directory instead of training one
    source_path: str | None = None  # the YAML file this came from (set by the loader)

    def to_dict(self) -> dict:
        """Plain data for YAML: the resolved recipe a run directory records."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "source_path"}
        for kind in STAGES:
            stage = getattr(self, kind)
            if stage is not None:
                out[kind] = {"adapter": stage.adapter, **_plain(stage.options)}
        return out


STAGES = ("pixel", "feature", "refine")  # the recipe sections naming an adapter, in the order they run
ADAPTER_KIND = {"pixel": "pixel", "feature": "feature", "refine": "feature"}  # the adapters each section takes


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# ----------------------------------------------------------------------------------------------
# Loading


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, merge bases, apply `key=value` overrides, validate. Raises UserError on any problem."""
    path = Path(path)
    overrides = [_path_from_here(override) for override in overrides]
    backbone = _backbone(_merged(path, overrides, backbone=None))
    return recipe_from_dict(_merged(path, overrides, backbone), source_path=path)


def _merged(path: Path, overrides: list[str], backbone: str | None) -> dict:
    """The recipe file with its bases merged, each file's `backbone_defaults` for `backbone` applied
    (none when `backbone` is None), then the overrides."""
    raw = _read_with_bases(path, seen=(), backbone=backbone)
    for override in overrides:
        apply_override(raw, override)
    return raw


def _backbone(raw: dict) -> str:
    classifier = raw.get("classifier")
    backbone = classifier.get("backbone") if isinstance(classifier, dict) else None
    return backbone if isinstance(backbone, str) else ClassifierConfig.backbone


# keys naming a file or folder: relative to the recipe file in a recipe, to the current directory in an override
PATH_KEYS = ("classifier.checkpoint", "feature.source_checkpoint",
             *(f"data.{domain}.{key}" for domain in ("source", "target", "target_test", "source_test")
               for key in ("root", "list")))


def _path_from_here(override: str) -> str:
    """`override`, with a relative path given to a PATH_KEYS key made absolute from the current directory
    (a path typed on the command line means what it means in the shell)."""
    key, _, value = override.partition("=")
    if key.strip() not in PATH_KEYS or not value.strip() or value.strip() in ("null", "~") or "\0" in value:
        return override  # (a NUL character is refused when the value is read)
    return f"{key}={Path(value.strip()).expanduser().resolve()}"


def _read_with_bases(path: Path, seen: tuple[Path, ...], backbone: str | None) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        raise UserError(f"{path}: base recipes include each other in a cycle")
    data = read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    defaults = _backbone_defaults(path, data.pop("backbone_defaults", None))
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, _read_with_bases(path.parent / base, seen + (resolved,), backbone))
    merged = deep_merge(merged, data)
    for key, value in defaults.get(backbone, {}).items():
        _set_dotted(merged, key, value)
    return merged


def _backbone_defaults(path: Path, section: Any) -> dict[str, dict[str, Any]]:
    """A file's `backbone_defaults` section checked: {backbone name: {dotted key: value}}."""
    if section is None:
        return {}
    shape = "backbone_defaults must map a backbone name to {dotted.key: value}, e.g. {lenet: {train.lr: 0.1}}"
    if not isinstance(section, dict):
        raise UserError(f"{path}: {shape}, got {_show(section)}")
    for backbone, values in section.items():
        if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
            raise UserError(f"{path}: backbone_defaults.{backbone}: {shape}")
        if any(key in ("classifier", "classifier.backbone") for key in values):
            raise UserError(f"{path}: backbone_defaults.{backbone}: cannot set classifier.backbone "
                            f"(the backbone chooses these defaults)")
    return section


def deep_merge(base: dict, top: dict) -> dict:
    """A copy of `base` updated by `top`, recursively for nested mappings.

    A stage mapping (`pixel`, `feature`, `refine`) that names a different adapter replaces the base's
    stage instead of merging with it, since the options of one adapter mean nothing to another.
    """
    out = copy.deepcopy(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and not _different_adapter(old, value):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _different_adapter(old: dict, new: dict) -> bool:
    return "adapter" in old and "adapter" in new and old["adapter"] != new["adapter"]


def apply_override(raw: dict, override: str) -> None:
    """Apply one `dotted.key=value` override to the raw recipe mapping, in place."""
    if "=" not in override:
        raise UserError(f"override '{override}' must look like key=value, e.g. train.iterations=200")
    key, _, text = override.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    _set_dotted(raw, key, value)


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set `dotted.key` to `value` in the raw recipe mapping, in place, making sections as needed."""
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"override {key}: '{'.'.join(parts[:depth + 1])}' is not a section")
        node = child
    if parts[-1] == "adapter" and node.get("adapter") not in (None, value):
        node.clear()  # another adapter: the old adapter's options do not apply
    node[parts[-1]] = value


def normalised_recipe(saved: dict) -> dict:
    """A saved recipe.yaml read through today's schema (keys added since take their defaults), or as
    saved when it is no longer a valid recipe (then the keys that differ are named)."""
    try:
        return recipe_from_dict(saved).to_dict()
    except UserError:
        return saved


def recipe_from_dict(raw: dict, source_path: Path | None = None) -> Recipe:
    # imported here: the registries import adapters and datasets, which import this module
    from da_toolkit.adapters import ADAPTERS
    from da_toolkit.data import DATASETS, FILE_DATASETS
    from da_toolkit.models import check_backbone

    raw = dict(raw)
    stages = {kind: raw.pop(kind, None) for kind in STAGES}
    if "name" not in raw and source_path is not None:
        raw["name"] = source_path.stem
    recipe = build_dataclass(Recipe, raw, "")
    for kind, stage_raw in stages.items():
        if stage_raw is None:
            continue
        setattr(recipe, kind, _build_stage(kind, stage_raw, ADAPTERS))
    if recipe.feature.options is None:
        recipe.feature = _build_stage("feature", {"adapter": recipe.feature.adapter}, ADAPTERS)
    recipe.source_path = str(source_path) if source_path else None

    specs = [(key, getattr(recipe.data, key)) for key in ("source", "target", "target_test", "source_test")]
    specs += [(f"extra_sources[{index}]", spec) for index, spec in enumerate(recipe.data.extra_sources)]
    for key, spec in specs:
        if spec is not None and spec.name not in DATASETS:
            raise UserError(DATASETS.unknown_message(spec.name, key=f"data.{key}.name"))
        for path_key in ("root", "list"):
            if spec is not None and getattr(spec, path_key) is not None and source_path is not None:
                setattr(spec, path_key, str((source_path.parent / getattr(spec, path_key)).resolve()))
        domain = getattr(recipe.data, key.replace("_test", "")) if key.endswith("_test") else spec
        if spec is not None and domain is not None and key.endswith("_test") and spec.name == domain.name:
            # a test split without a folder (or list) of its own: its domain's
            spec.root = domain.root if spec.root is None else spec.root
            spec.list = domain.list if spec.list is None and spec.root == domain.root else spec.list
        if spec is not None and spec.name == "imagefolder" and spec.root is None:
            raise UserError(f"data.{key}.root: missing: an imagefolder domain needs its folder of class "
                            f"sub-folders (data.{key}.root=PATH on the command line, or root: in the recipe)")
        if spec is not None and spec.name == "imagelist" and spec.list is None:
            raise UserError(f"data.{key}.list: missing: an imagelist domain needs its file of `relative/path.jpg "
                            f"label` lines (data.{key}.list=PATH on the command line, or list: in the recipe)")
        if spec is not None and spec.list is not None and spec.name != "imagelist":
            raise UserError(f"data.{key}.list: only an imagelist domain reads a list file; '{spec.name}' does not "
                            f"take it")
        if spec is not None and spec.skip_unreadable and spec.name not in FILE_DATASETS:
            raise UserError(f"data.{key}.skip_unreadable: only a domain of image files ({', '.join(FILE_DATASETS)}) "
                            f"reads image files; '{spec.name}' does not take it")
    if recipe.data.source is None:
        _check_source_free(recipe, ADAPTERS)
    else:
        _check_sources([recipe.data.source, *recipe.data.extra_sources])
    options = recipe.feature.options
    if getattr(options, "source_checkpoint", None) is not None and source_path is not None:
        # relative to the recipe file; whether it exists is checked when a run starts (pipeline: the adapter's
        # check_inputs), since a benchmark grid names a source run that its earlier cells have yet to train
        options.source_checkpoint = str((source_path.parent / Path(options.source_checkpoint).expanduser()).resolve())
    if recipe.classifier.checkpoint is not None and source_path is not None:  # not a run directory's recipe.yaml:
        checkpoint = (source_path.parent / recipe.classifier.checkpoint).resolve()  # its run needs no such file
        if not checkpoint.is_file():
            raise UserError(f"classifier.checkpoint: file not found: {checkpoint}")
        recipe.classifier.checkpoint = str(checkpoint)
    _check_selection(recipe.selection, recipe.data.target_labels_per_class)
    check_backbone(recipe.classifier.backbone, "classifier.backbone")
    for kind in STAGES:
        stage = getattr(recipe, kind)
        if stage is not None:
            with _in_section(kind):
                ADAPTERS.get(stage.adapter).check(stage.options, recipe.data.image_size, recipe.data.channels, kind)
    return recipe


def _check_source_free(recipe: Recipe, adapters) -> None:
    """Refuse `data.source: null` unless every stage runs without labeled source images and the feature stage
    starts from a trained source classifier (whose classes the run takes), and nothing else needs a source."""
    from da_toolkit.validators import READS_SOURCE

    free = [name for name in adapters.names() if not adapters.get(name).reads_source]
    for kind in STAGES:
        stage = getattr(recipe, kind)
        if stage is not None and adapters.get(stage.adapter).reads_source:
            raise UserError(f"data.source: null (a source-free run), but {kind}.adapter {stage.adapter} trains on "
                            f"labeled source images; name the source domain, or use a source-free method "
                            f"({', '.join(free)})")
    if getattr(recipe.feature.options, "source_checkpoint", None) is None:
        raise UserError(f"data.source: null (a source-free run) needs a feature stage that starts from a trained "
                        f"source classifier (feature.adapter: shot with feature.source_checkpoint); "
                        f"{recipe.feature.adapter} does not")
    for key, empty in (("source_test", "null"), ("extra_sources", "[]")):
        if getattr(recipe.data, key):
            raise UserError(f"data.{key}: a source-free run (data.source: null) reads no source images; remove it "
                            f"(on the command line: data.{key}={empty})")
    if recipe.selection.select in READS_SOURCE:
        raise UserError(f"selection.select: {recipe.selection.select} reads labeled source images, which a "
                        f"source-free run (data.source: null) has none of; choose one that reads target images "
                        f"only, or last")


def _check_sources(sources: list[DomainSpec]) -> None:
    """Refuse a source listed twice (the same dataset split, folder and list) in data.source and data.extra_sources."""
    seen: dict[tuple, str] = {}
    for index, spec in enumerate(sources):
        key = "data.source" if index == 0 else f"data.extra_sources[{index - 1}]"
        identity = (spec.name, spec.split, spec.root, spec.list)
        if identity in seen:
            raise UserError(f"{key}: {spec.name} ({spec.split} split) is already a source ({seen[identity]}); list "
                            f"each source once")
        seen[identity] = key


def check_against_data(recipe: Recipe, domains) -> None:
    """The recipe's relations to the data it names, checked once `domains` (data.build_domains) are
    built and before a run writes anything: every domain holds images (a training domain, and its
    labeled target images, at least 2: batch normalisation normalises over a batch's images), and
    the target holds data.target_labels_per_class images of each class it has. A batch larger than
    a training domain is legal: a warning says that each batch is then the whole domain."""
    for key in ("source", "target", "target_test", "source_test"):
        domain, least = getattr(domains, key), 2 if key in ("source", "target") else 1
        if domain is not None and len(domain) < least:
            limit = getattr(recipe.data, key).limit
            raise UserError(f"data.{key}: the domain '{domain.name}' holds {len(domain)} image(s)"
                            + (f" (limit {limit})" if limit is not None else "") + f"; it needs at least {least}"
                            + (" (batch normalisation normalises over the images of a batch)" if least == 2 else ""))
    k = recipe.data.target_labels_per_class
    if k:
        labels = domains.target.labels  # min(k, images) of each class keep their label (build_domains)
        kept = torch.bincount(labels[labels >= 0], minlength=domains.target.num_classes).tolist()
        fewest, name = min((count, name) for count, name in zip(kept, domains.target.class_names) if count)
        if k > fewest:
            raise UserError(f"data.target_labels_per_class: must lie in [0, {fewest}] (the target "
                            f"'{domains.target.name}' has {fewest} images of class '{name}', its smallest), got {k}")
        if sum(kept) < 2:
            raise UserError(f"data.target_labels_per_class: {k} per class labels {sum(kept)} image of the target "
                            f"'{domains.target.name}'; training on them needs at least 2 (batch normalisation "
                            f"normalises over the images of a batch)")
    batch = recipe.train.batch_size
    larger = [f"data.{key} ({getattr(domains, key).name}, {len(getattr(domains, key))} images)"
              for key in ("source", "target")  # no source: a source-free run
              if getattr(domains, key) is not None and batch > len(getattr(domains, key))]
    if larger:
        warnings.warn(f"train.batch_size: {batch} is more than the images of {' and '.join(larger)}: each of its "
                      f"batches is the whole domain, in a new order each iteration")


def _build_stage(kind: str, raw: Any, adapters) -> Stage:
    if not isinstance(raw, dict):
        raise UserError(f"{kind}: expected a mapping with an 'adapter' key, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("adapter", None)
    takes = ADAPTER_KIND[kind]
    allowed = [n for n in adapters.names() if adapters.get(n).kind == takes]
    if name is None:
        raise UserError(f"{kind}.adapter: missing (choices: {', '.join(allowed)})")
    if name not in adapters.names():
        raise UserError(f"{kind}.adapter: unknown adapter '{name}'{did_you_mean(str(name), allowed)} "
                        f"(choices for a {kind} stage: {', '.join(allowed)})")
    adapter = adapters.get(name)
    if adapter.kind != takes:
        raise UserError(
            f"{kind}.adapter: '{name}' is a {adapter.kind}-level adapter; a {kind} stage takes one of: "
            f"{', '.join(allowed)}"
        )
    with _in_section(kind):
        return Stage(name, build_dataclass(adapter.Options, raw, f"{kind}."))


@contextlib.contextmanager
def _in_section(kind: str):
    """Errors raised inside name the recipe section `kind`: an adapter's option checks write the
    section it is written for (`feature.trade_off`), which a refine stage running the same adapter
    rewrites to its own (`refine.trade_off`)."""
    try:
        yield
    except UserError as error:
        written = ADAPTER_KIND[kind]
        if written == kind:
            raise
        raise UserError(re.sub(rf"(?<![\w.]){written}\.(?=\w)", f"{kind}.", str(error))) from None


def _check_selection(selection: SelectionConfig, target_labels_per_class: int) -> None:
    """Refuse a selection section that cannot work with the data section."""
    folds = selection.target_label_folds
    if folds == 1:
        raise UserError(f"selection.target_label_folds: 0 (no held-out labeled target images) or at least 2, "
                        f"got {folds}")
    if folds and target_labels_per_class < folds:
        raise UserError(f"selection.target_label_folds: {folds} folds need at least {folds} labeled target images "
                        f"per class, data.target_labels_per_class is {target_labels_per_class}")
    if selection.select == "target_label_accuracy" and not folds:
        raise UserError("selection.select: target_label_accuracy needs held-out labeled target images: set "
                        "selection.target_label_folds to 2 or more (and data.target_labels_per_class at least that)")


# ----------------------------------------------------------------------------------------------
# Typed construction of dataclasses from plain mappings


def build_dataclass(cls, raw: Any, prefix: str):
    """Construct dataclass `cls` from mapping `raw`, checking keys and types.

    `prefix` is the dotted path of `raw` inside the recipe, used in error messages.
    """
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "source_path"}
    for key in raw:
        if key not in fields:
            raise UserError(
                f"{prefix}{key}: unknown key{did_you_mean(str(key), list(fields))} "
                f"(allowed in {where}: {', '.join(fields)})"
            )
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(raw[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{prefix}{name}: missing (required in {where})")
    return cls(**values)


def _convert(value: Any, hint: Any, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        value = _convert(value, args[0], key)
        for bound in args[1:]:
            if isinstance(bound, Range) and not bound.admits(value):
                raise UserError(bound.refusal(key, value))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], key)
        raise TypeError(f"unsupported type {hint} for {key}")
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        choices = ", ".join(str(a) for a in args)
        return _fail(key, value, f"one of: {choices}", did_you_mean(str(value), [str(a) for a in args]))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _fail(key, value, "a list")
        item = args[0] if args else Any
        return origin(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, f"{key}.")
    if hint is Any:
        return value
    if hint is bool:
        return value if isinstance(value, bool) else _fail(key, value, "true or false")
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return _fail(key, value, "an integer")
        # torch takes 64-bit integers: a larger count or size is a traceback deep inside it
        return value if -2**63 <= value < 2**63 else _fail(key, value, "an integer of 64 bits (below 2**63)")
    if hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        return number if number is not None and number == number else _fail(key, value, "a number")
    if hint is str:
        if not isinstance(value, str) or "\0" in value:  # no file name, dataset or device holds a NUL
            return _fail(key, value, "a string" + (" without NUL characters" if isinstance(value, str) else ""))
        return value
    raise TypeError(f"unsupported type {hint} for {key}")


def _fail(key: str, value: Any, expected: str, hint: str = ""):
    raise UserError(f"{key}: expected {expected}, got {_show(value)}{hint}")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)

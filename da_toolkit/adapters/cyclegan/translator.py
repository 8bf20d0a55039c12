"""The trained CycleGAN's translator: the source set through G, written to disk in shards keyed by
weights and data (resumable), then what the feature stage trains on (f_S's label filter, the mix
with the raw source)."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from da_toolkit.adapters.cyclegan.options import CycleGANOptions
from da_toolkit.adapters.pixel import translate_images
from da_toolkit.context import Context
from da_toolkit.data.base import Domain, DomainDataset, concatenate
from da_toolkit.data.shards import ShardSet, shard_images
from da_toolkit.evaluate import predict
from da_toolkit.training import distributed


def weights_hash(module: nn.Module) -> str:
    """sha1 of a module's state (names and values): equal weights give equal hashes."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# Options read only after translation, when the feature stage's training set is assembled.
FEATURE_USE_KEYS = ("feature_data", "translated_fraction", "agreement_warning")
# `train` keys that do not change the classifiers the pixel stage trains (f_S, the oracle)
TRAIN_KEYS_UNUSED = ("iterations", "log_every", "eval_batch_size")


def translator_dependencies(pixel: dict, train: dict, semantic_weight: float) -> dict:
    """What a translator trained by a pixel section `pixel` depends on, for `compare`'s sharing: the
    section but the keys that only say how the feature stage uses the translations (`FEATURE_USE_KEYS`:
    cyclegan and cyclegan_translated share one translator); with the semantic loss on, the train
    section's optimisation keys too (they train f_S, which shapes G)."""
    keys = {"pixel": {key: value for key, value in pixel.items() if key not in FEATURE_USE_KEYS}}
    if semantic_weight > 0:
        keys["train"] = {key: value for key, value in train.items() if key not in TRAIN_KEYS_UNUSED}
    return keys

class CycleGANTranslator:
    """Translates datasets with a trained G: A -> B (cached on disk by weights and data), then makes
    what the feature stage trains on: f_S's label filter and the mix with the raw source (`prepare`).
    `options`: a pixel adapter's options with translate_batch_size, label_filter, agreement_warning,
    feature_data and translated_fraction (the CycleGAN's, the StarGAN's)."""

    def __init__(self, generator: nn.Module, ctx: Context, options: CycleGANOptions,
                 source_classifier: nn.Module | None = None, style: str = "cyclegan"):
        self.generator = generator
        self.style = style  # the translated domain is named '<name>→<style>'
        self.ctx = ctx
        self.options = options
        self.source_classifier = source_classifier
        self.translated: Domain | None = None  # the last unfiltered translation, for the diagnostics
        self.report: dict = {}  # agreement and kept fractions of the last `translate`

    def translate(self, dataset: Domain) -> Domain:
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

    def translate_only(self, dataset: Domain) -> Domain:
        """`dataset` in target style, same labels, name '<name>→<style>', translated in the run's precision.

        Written as it is translated, shard by shard (data/shards.py), to
        ctx.cache_dir/translated_<weights hash>_<dataset fingerprint>_<precision>/, reading `dataset`
        one shard at a time, so that memory holds one shard whatever the size of the domain. A second
        run, or another run sharing this pixel stage (`pixel_from`), reuses the translation when it
        runs in the same precision (bf16 or fp16 translations differ from fp32 ones); a run killed
        mid-translation keeps the shards it finished (verified by size and hash) and translates the
        others. The translation is held like `dataset`: in memory when that is, else streamed from
        the shards. Under torchrun rank 0 translates and the other ranks read its shards.
        """
        ctx, batch = self.ctx, self.options.translate_batch_size
        key = f"{weights_hash(self.generator)}_{dataset.fingerprint()}_{ctx.precision.name}"
        folder = ctx.cache_dir / f"translated_{key}"
        per_shard = shard_images(dataset.image_shape, batch)

        def open_shards(writable: bool) -> ShardSet:
            return ShardSet(folder, len(dataset), dataset.image_shape, per_shard,
                            lambda line: ctx.info(f"warning: pixel: {line}"), writable)

        shards, missing = None, []
        if ctx.main:
            shards = open_shards(writable=True)
            missing = shards.missing()
            for number in missing:
                part = dataset.subset(torch.arange(*shards.span(number)))
                shards.write(number, translate_images(self.generator, part, ctx.device, batch, ctx.precision))
        distributed.barrier()  # under torchrun, the other ranks read the shards rank 0 wrote
        if shards is None:
            shards = open_shards(writable=False)
        if not missing:
            cache = "hit"
            ctx.info(f"pixel: translated {dataset.name} read from the cache ({folder})")
        else:
            cache = "miss" if len(missing) == shards.count else "resumed"
            kept = f" (kept {shards.count - len(missing)} finished shards)" if cache == "resumed" else ""
            ctx.info(f"pixel: translated {len(dataset)} images of {dataset.name} into {len(missing)} shards of "
                     f"{per_shard} images{kept}, cached in {folder}")
        ctx.metrics.setdefault("pixel", {}).update(translation_cache=cache, translation_cache_file=folder.name)
        translated = shards.domain(dataset.labels, f"{dataset.name}→{self.style}", dataset.class_names,
                                   getattr(dataset, "workers", 0))
        return translated.in_memory() if isinstance(dataset, DomainDataset) else translated


def agreement_report(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, dict]:
    """(keep mask, report) of the label filter: an image is kept when f_S's prediction equals its label.

    report: agreement (kept / all), kept (count), total, and kept_per_class {class: kept / images of
    that class} for the classes present. Reads only the (source) labels the translation carries.
    """
    keep = predictions == labels
    per_class = {c: keep[labels == c].float().mean().item() for c in range(num_classes) if (labels == c).any()}
    agreement = keep.float().mean().item() if len(keep) else 1.0
    return keep, {"agreement": agreement, "kept": int(keep.sum()), "total": len(keep), "kept_per_class": per_class}


def mix(source: Domain, translated: Domain, feature_data: str, translated_fraction: float, seed: int) -> Domain:
    """The feature stage's labeled set: `translated`, the raw `source`, or both.

    both: len(source) images, round(translated_fraction · len(source)) of them translated and the
    rest raw source, each part drawn without repetition in a seeded random order. When the label
    filter left fewer translations than that, every one of them is used once and raw source images
    fill the rest: repeating the few it kept would let them outweigh the raw source (a translator
    that f_S reads as one class would make that class half of the training set). In memory when
    both are, else read on demand from them (`concatenate`).
    """
    if feature_data == "translated":
        return translated
    if feature_data == "source":
        return source
    generator = torch.Generator().manual_seed(seed + 5)
    n_translated = min(round(translated_fraction * len(source)), len(translated))
    pick_translated = torch.randperm(len(translated), generator=generator)[:n_translated]
    pick_source = torch.randperm(len(source), generator=generator)[:len(source) - n_translated]
    return concatenate([translated.subset(pick_translated), source.subset(pick_source)],
                       f"{translated.name}+{source.name}", source.class_names)

"""`run(recipe)`: the data flow of DESIGN.md, one call per arrow.

recipe -> domains -> [pixel stage: fit translator, translate source] -> feature stage (trains the
shared classifier) -> [refine stage: another feature adapter goes on training it] -> evaluate on
target test -> run directory (`RunDir`: recipe.yaml, metrics.json, classifier.pt, checkpoints/,
tensorboard/, log.txt). Everything that can fail on bad input (data,
image size, adapter options, pixel_from) is checked before the run directory is written.
"""
from __future__ import annotations

import contextlib
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

import da_toolkit
from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.context import Context, resolve_device
from da_toolkit.data import DomainDataset, build_domains
from da_toolkit.errors import UserError
from da_toolkit.evaluate import collapse_check, evaluate
from da_toolkit.models import create_classifier
from da_toolkit.recipe import Recipe, check_against_data, normalised_recipe, recipe_from_dict
from da_toolkit.rundir import RunDir, RunDirLock
from da_toolkit.selection import Selection, file_fingerprint, hold_out_target_labels
from da_toolkit.training import distributed
from da_toolkit.training.checkpoint import load_state, one_line
from da_toolkit.training.loop import Interrupted
from da_toolkit.training.precision import Precision, resolve_precision



def selection_summary(selection: dict) -> str:
    """One line for tables: which model the run returned, and that no target label chose it."""
    chosen = selection["chosen"]
    if selection["select"] == "last":
        return "final model after the last iteration (no target labels used for model selection)"
    return (f"{chosen['stage']} iteration {chosen['iteration']}, the best {selection['select']} of "
            f"{len(selection['candidates'])} candidates (no target labels used for model selection)")


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / recipe.name


def check_classifier(setup: AdapterSetup, num_classes: int, backbone: str) -> None:
    """Build the run's classifier once, on the CPU and with a forked RNG (the run's random stream is
    untouched), so that an impossible image size or channel count is refused before anything is written."""
    with torch.random.fork_rng(devices=[]):
        try:
            setup.make_classifier(num_classes)
        except RuntimeError as error:
            raise UserError(f"data.image_size: {setup.image_size} px images ({setup.channels} channel(s)) are too "
                            f"small for the '{backbone}' backbone ({one_line(error)}); use a larger image size") from None


def make_context(recipe: Recipe, run_dir: Path, device: torch.device, precision: Precision, resume: bool,
                 progress: bool, main: bool = True) -> Context:
    return Context(run_dir=run_dir, device=device, seed=recipe.seed, pixel_from=recipe.pixel_from, precision=precision,
                   log_every=recipe.train.log_every, checkpoint_every=recipe.train.checkpoint_every,
                   resume=resume, progress=progress, main=main)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(recipe: Recipe, run_dir: Path | None = None, resume: bool = False, overwrite: bool = False,
        progress: bool = True) -> dict | None:
    """Train and evaluate `recipe`; returns the metrics also written to run_dir/metrics.json.

    The run holds the run directory's write lock throughout (UserError naming the holder when
    another process writes there). Started by torchrun in several processes, every process trains
    its share of each batch (training/distributed.py); rank 0 alone holds the lock, writes the run
    directory and evaluates, and the other ranks return None."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    with distributed.process_group(resolve_device(recipe.train.device)) as device:
        main = distributed.current().main
        with RunDirLock(run_dir) if main else contextlib.nullcontext():
            return _run_locked(recipe, run_dir, resume, overwrite, progress, device, main)


def _run_locked(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool, progress: bool,
                device: torch.device, main: bool) -> dict | None:
    began = time.perf_counter()
    rundir = RunDir(run_dir)
    rundir.check_start(recipe.to_dict(), resume, overwrite, normalised_recipe)
    # everything that can fail on bad input happens before the run directory is written
    rundir.pixel_home(recipe.pixel_from)
    precision = Precision(resolve_precision(recipe.train.precision, device), device)
    seed_everything(recipe.seed)
    setup = AdapterSetup.from_recipe(recipe)
    pixel = ADAPTERS.get(recipe.pixel.adapter)(recipe.pixel.options, setup) if recipe.pixel is not None else None
    feature = ADAPTERS.get(recipe.feature.adapter)(recipe.feature.options, setup)
    refine = (ADAPTERS.get(recipe.refine.adapter)(recipe.refine.options, setup, stage="refine")
              if recipe.refine is not None else None)
    # a source-free run (data.source: null; recipe.py allows it for a feature stage that starts from a source
    # classifier) takes its classes from that classifier
    source_model = feature.source_classes() if recipe.data.source is None else None
    storage_lines: list[str] = []  # how each domain is held, logged once the run's log exists
    domains = build_domains(recipe.data, recipe.seed, workers=recipe.train.workers, report=storage_lines.append,
                            source_classes=source_model[1] if source_model else None)
    check_against_data(recipe, domains)
    num_classes = domains.source.num_classes if domains.source is not None else source_model[0]
    check_classifier(setup, num_classes, recipe.classifier.backbone)
    for kind, adapter in (("feature", feature), ("refine", refine)):
        if adapter is None:
            continue
        if adapter.needs_target_labels and not recipe.data.target_labels_per_class:
            raise UserError(f"{kind}.adapter: {getattr(recipe, kind).adapter} trains on labeled target images; set "
                            f"data.target_labels_per_class to 1 or more")
        adapter.check_inputs(num_classes)

    if overwrite and main:
        rundir.clear()
    ctx = make_context(recipe, run_dir, device, precision, resume, progress, main)
    try:
        if main:
            rundir.write_recipe(recipe.to_dict())
        world = distributed.current()
        ctx.info(f"run {recipe.name}: {run_dir} on {ctx.device}, precision {precision.name}"
                 + (f" × {world.size} processes (torchrun)" if world.size > 1 else ""))
        for line in storage_lines:
            ctx.info(line)

        source = domains.source
        if pixel is not None:
            source = pixel.fit(domains.source, domains.target, ctx).translate(domains.source)
            if world.size > 1 and isinstance(source, DomainDataset):  # rank 0's translation, exactly, on every rank
                source = DomainDataset(distributed.from_rank_zero(source.images),
                                       distributed.from_rank_zero(source.labels), source.name,
                                       class_names=source.class_names)

        target, held_out = domains.target, None
        if recipe.selection.target_label_folds:
            target, held_out = hold_out_target_labels(target, recipe.selection.target_label_folds, recipe.seed)
        ctx.selection = Selection(recipe.selection, domains.source_test or domains.source, target,
                                  domains.target_test, held_out, ctx, recipe.train.eval_batch_size,
                                  starts_from=file_fingerprint(feature.starting_classifier()))
        if domains.source is None:
            ctx.info(f"source-free: no source image is read; the classes and weights are those of the source "
                     f"classifier {recipe.feature.options.source_checkpoint} (learnt from {source_model[2]})")
        classifier = setup.make_classifier(num_classes).to(ctx.device)
        classifier = feature.fit(classifier, source, target, ctx)
        if refine is not None:
            # the whole classifier trains on (a feature stage may have frozen a part, as ADDA its head)
            classifier = refine.fit(classifier.requires_grad_(True), source, target, ctx)
        selection_line, selection = ctx.selection.choose(classifier)
        ctx.info(selection_line)
        diagnostics = pixel.diagnostics(domains.source, source, ctx) if pixel is not None else {}
        if not main:
            return None
        # with metrics.json, once nothing can fail: a run directory with classifier.pt is a finished run's
        source_name = source_model[2] if source_model else "+".join(
            spec.name for spec in (recipe.data.source, *recipe.data.extra_sources))
        rundir.save_classifier(classifier.state_dict(), num_classes, recipe.to_dict(), domains.target.class_names,
                               source_name)
        metrics = _metrics(recipe, domains, classifier, ctx, time.perf_counter() - began + ctx.earlier_wall_time,
                           source_name)
        metrics.update(diagnostics, model_selection=selection, selection=selection_summary(selection))
        if world.size > 1:
            metrics["hardware"] += f" × {world.size} processes (torchrun)"
        rundir.write_metrics(metrics)
        ctx.info(f"target accuracy ({domains.target_test.name}): {100 * metrics['target_accuracy']:.2f}%")
        return metrics
    except (UserError, Interrupted) as stop:  # the run directory says why it holds no metrics.json (the CLI: stderr)
        ctx.logger.error(f"stopped: {stop}")
        raise
    finally:
        ctx.close()


def _metrics(recipe: Recipe, domains, classifier, ctx: Context, wall_time: float, source_name: str) -> dict:
    """metrics.json. A source-free run (no source domain) has no source accuracy (None) and its collapse
    alarm assumes balanced source classes."""
    batch = recipe.train.eval_batch_size
    target = evaluate(classifier, domains.target_test, ctx.device, batch)
    source_eval = domains.source_test or domains.source
    source = evaluate(classifier, source_eval, ctx.device, batch) if source_eval is not None else None
    return {
        "recipe": recipe.name,
        "task": f"{source_name}->{recipe.data.target.name}",
        "source_free": domains.source is None,
        "pixel_adapter": recipe.pixel.adapter if recipe.pixel else None,
        "feature_adapter": recipe.feature.adapter,
        "refine_adapter": recipe.refine.adapter if recipe.refine else None,
        "seed": recipe.seed,
        "target_accuracy": target["accuracy"],
        "source_accuracy": source["accuracy"] if source else None,
        "target": {"dataset": domains.target_test.name, **target},
        # what the images and labels of each domain were (a generated domain such as syndigits depends on the
        # machine's fonts): runs that differ here did not see the same data, whatever the recipe says
        "data_fingerprints": {name: domain.fingerprint() for name, domain in (
            ("source", domains.source), ("source_test", domains.source_test), ("target", domains.target),
            ("target_test", domains.target_test)) if domain is not None},
        "source": {"dataset": source_eval.name, **source} if source else None,
        "collapse": collapse_check(classifier, domains.target, domains.target_test,
                                   domains.source.labels if domains.source is not None else None,
                                   source["accuracy"] if source else None, ctx.device, batch),
        "target_labels_per_class_used_in_training": recipe.data.target_labels_per_class,
        "stages": ctx.metrics,
        "wall_time_s": round(wall_time, 2),
        "hardware": hardware(ctx.device),
        "precision": ctx.precision.name,  # as resolved on this device (train.precision: auto -> fp32/bf16/fp16)
        "versions": versions(),
    }


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} threads"


def versions() -> dict:
    import timm
    import torchvision

    return {"da_toolkit": da_toolkit.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__}


def read_metrics(run_dir: Path) -> dict:
    """The metrics.json of a finished run directory."""
    return RunDir(run_dir).read_metrics()


def load_run(run_dir: Path) -> tuple[Recipe, torch.nn.Module]:
    """The recipe and trained classifier (eval mode, CPU) of a finished run directory."""
    rundir = RunDir(run_dir)
    rundir.require("recipe.yaml", "classifier.pt")
    recipe = recipe_from_dict(rundir.read_recipe())
    state, num_classes = rundir.load_classifier()
    classifier = create_classifier(recipe.classifier.backbone, recipe.data.channels, recipe.data.image_size,
                                   num_classes, bottleneck_dim=recipe.classifier.bottleneck_dim,
                                   pretrained=recipe.classifier.pretrained, fetch_weights=False)
    load_state(classifier, state, rundir.classifier_file, "classifier weights")
    return recipe, classifier.eval()

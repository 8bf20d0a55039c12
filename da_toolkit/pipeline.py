"""`run(recipe)`: the data flow of DESIGN.md, one call per arrow.

recipe -> domains -> [pixel stage: fit translator, translate source] -> feature stage (trains the
shared classifier) -> evaluate on target test -> run directory (recipe.yaml, metrics.json,
classifier.pt, checkpoints/, tensorboard/, log.txt).
"""
from __future__ import annotations

import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import da_toolkit
from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.cyclegan import label_preservation
from da_toolkit.context import Context, resolve_amp_dtype, resolve_device
from da_toolkit.data import build_domains
from da_toolkit.errors import UserError
from da_toolkit.evaluate import collapse_check, evaluate
from da_toolkit.models import create_classifier
from da_toolkit.recipe import Recipe, recipe_from_dict
from da_toolkit.rundir import RunDirLock
from da_toolkit.training.checkpoint import load_checkpoint, save_atomic, write_json_atomic, write_text_atomic

SELECTION = "final model after the last iteration (no target labels used for model selection)"


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / recipe.name


def prepare_run_dir(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to silently overwrite a run; on resume, refuse a recipe that differs from the saved one."""
    saved = run_dir / "recipe.yaml"
    if not saved.exists():
        return
    if overwrite:
        for name in ("metrics.json", "classifier.pt"):
            (run_dir / name).unlink(missing_ok=True)
        for checkpoint in (run_dir / "checkpoints").glob("*.pt"):
            checkpoint.unlink()
        return
    finished = (run_dir / "metrics.json").exists()
    if not resume:
        state = "a finished run (metrics.json)" if finished else "an unfinished run"
        raise UserError(f"{run_dir} already holds {state}; pass --resume to continue it, --overwrite to replace "
                        f"it, or --output DIR for a new run")
    before = yaml.safe_load(saved.read_text())
    now = recipe.to_dict()
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k != "output_dir")
    if changed:
        raise UserError(f"--resume: the recipe differs from the one {run_dir} was started with in: "
                        f"{', '.join(changed)}; resume with the same recipe and overrides, or use --output DIR")


def make_context(recipe: Recipe, run_dir: Path, resume: bool, progress: bool) -> Context:
    device = resolve_device(recipe.train.device)
    pixel_from = Path(recipe.pixel_from) if recipe.pixel_from else None
    if pixel_from is not None and not (pixel_from / "checkpoints").is_dir():
        raise UserError(f"pixel_from: {pixel_from} holds no checkpoints/ of a pixel stage")
    return Context(run_dir=run_dir, device=device, seed=recipe.seed, pixel_from=pixel_from,
                   amp_dtype=resolve_amp_dtype(recipe.train.precision, device),
                   log_every=recipe.train.log_every, checkpoint_every=recipe.train.checkpoint_every,
                   resume=resume, progress=progress)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(recipe: Recipe, run_dir: Path | None = None, resume: bool = False, overwrite: bool = False,
        progress: bool = True) -> dict:
    """Train and evaluate `recipe`; returns the metrics also written to run_dir/metrics.json.

    The run holds the run directory's write lock throughout (UserError naming the holder when
    another process writes there)."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    with RunDirLock(run_dir):
        return _run_locked(recipe, run_dir, resume, overwrite, progress)


def _run_locked(recipe: Recipe, run_dir: Path | None, resume: bool, overwrite: bool, progress: bool) -> dict:
    began = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    prepare_run_dir(recipe, run_dir, resume, overwrite)
    ctx = make_context(recipe, run_dir, resume, progress)
    try:
        write_text_atomic(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        seed_everything(recipe.seed)
        ctx.info(f"run {recipe.name}: {run_dir} on {ctx.device}")
        domains = build_domains(recipe.data, recipe.seed)
        _check_classes(domains)

        source = domains.source
        if recipe.pixel is not None:
            pixel = ADAPTERS.get(recipe.pixel.adapter)(recipe.pixel.options, recipe)
            source = pixel.fit(domains.source, domains.target, ctx).translate(domains.source)

        classifier = create_classifier(recipe.classifier.backbone, recipe.data.channels, recipe.data.image_size,
                                       domains.source.num_classes, recipe.classifier.bottleneck_dim,
                                       recipe.classifier.pretrained).to(ctx.device)
        feature = ADAPTERS.get(recipe.feature.adapter)(recipe.feature.options, recipe)
        classifier = feature.fit(classifier, source, domains.target, ctx)
        save_atomic({"state_dict": classifier.state_dict(), "recipe": recipe.to_dict()}, run_dir / "classifier.pt")

        preservation = label_preservation(recipe, domains.source, source, ctx) if recipe.pixel is not None else None
        metrics = _metrics(recipe, domains, classifier, ctx, time.perf_counter() - began)
        if preservation is not None:
            metrics["label_preservation"] = preservation
        write_json_atomic(run_dir / "metrics.json", metrics)
        ctx.info(f"target accuracy ({domains.target_test.name}): {100 * metrics['target_accuracy']:.2f}%")
        return metrics
    finally:
        ctx.close()


def _check_classes(domains) -> None:
    counts = {d.name: d.num_classes for d in (domains.source, domains.target, domains.target_test)}
    if len(set(counts.values())) != 1:
        raise UserError(f"data: source and target must have the same classes, got class counts {counts}")


def _metrics(recipe: Recipe, domains, classifier, ctx: Context, wall_time: float) -> dict:
    batch = recipe.train.eval_batch_size
    target = evaluate(classifier, domains.target_test, ctx.device, batch)
    source_eval = domains.source_test or domains.source
    source = evaluate(classifier, source_eval, ctx.device, batch)
    return {
        "recipe": recipe.name,
        "task": f"{recipe.data.source.name}->{recipe.data.target.name}",
        "pixel_adapter": recipe.pixel.adapter if recipe.pixel else None,
        "feature_adapter": recipe.feature.adapter,
        "seed": recipe.seed,
        "target_accuracy": target["accuracy"],
        "source_accuracy": source["accuracy"],
        "target": {"dataset": domains.target_test.name, **target},
        "source": {"dataset": source_eval.name, **source},
        "collapse": collapse_check(classifier, domains.target, domains.target_test, domains.source.labels,
                                   source["accuracy"], ctx.device, batch),
        "selection": SELECTION,
        "target_labels_per_class_used_in_training": recipe.data.target_labels_per_class,
        "stages": ctx.metrics,
        "wall_time_s": round(wall_time, 2),
        "hardware": hardware(ctx.device),
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
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        raise UserError(f"{run_dir}: no metrics.json here; is this a finished da-toolkit run directory?")
    return json.loads(path.read_text())


def load_run(run_dir: Path) -> tuple[Recipe, torch.nn.Module]:
    """The recipe and trained classifier (eval mode, CPU) of a finished run directory."""
    run_dir = Path(run_dir)
    for name in ("recipe.yaml", "classifier.pt"):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir}: no {name} here; is this a finished da-toolkit run directory?")
    recipe = recipe_from_dict(yaml.safe_load((run_dir / "recipe.yaml").read_text()))
    classifier = create_classifier(recipe.classifier.backbone, recipe.data.channels, recipe.data.image_size,
                                   bottleneck_dim=recipe.classifier.bottleneck_dim)
    classifier.load_state_dict(load_checkpoint(run_dir / "classifier.pt")["state_dict"])
    return recipe, classifier.eval()

"""`run(recipe)`: the data flow of DESIGN.md, one call per arrow.

recipe -> domains -> [pixel stage: fit translator, translate source] -> feature stage (trains the
shared classifier) -> evaluate on target test -> run directory (recipe.yaml, metrics.json,
classifier.pt, checkpoints/, tensorboard/, log.txt).
"""
from __future__ import annotations

import json
import platform
import random
import shutil
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
from da_toolkit.evaluate import evaluate
from da_toolkit.models import create_classifier
from da_toolkit.recipe import Recipe, read_yaml, recipe_from_dict
from da_toolkit.training.checkpoint import (load_checkpoint, load_state, one_line, save_checkpoint, write_json_atomic,
                                            write_text_atomic)

SELECTION = "final model after the last iteration (no target labels used for model selection)"


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / recipe.name


RUN_OUTPUTS = ("metrics.json", "classifier.pt", "checkpoints", "cache", "tensorboard", "log.txt")


def prepare_run_dir(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to silently overwrite a run; on resume, refuse a recipe that differs from the saved one.

    A run counts as started once it has written a checkpoint: a directory holding only recipe.yaml
    (a start that failed before training, e.g. on missing data files) does not block a retry.
    Nothing is changed here; `clear_run_dir` removes an old run's outputs for --overwrite.
    """
    saved = run_dir / "recipe.yaml"
    finished = (run_dir / "metrics.json").exists()
    started = finished or any((run_dir / "checkpoints").glob("*.pt"))
    if not saved.exists() or overwrite or not started:
        return
    if not resume:
        state = "a finished run (metrics.json)" if finished else "an unfinished run"
        raise UserError(f"{run_dir} already holds {state}; pass --resume to continue it, --overwrite to replace "
                        f"it, or --output DIR for a new run")
    before = read_yaml(saved)
    now = recipe.to_dict()
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k != "output_dir")
    if changed:
        raise UserError(f"--resume: the recipe differs from the one {run_dir} was started with in: "
                        f"{', '.join(changed)}; resume with the same recipe and overrides, or use --output DIR")


def clear_run_dir(run_dir: Path) -> None:
    """--overwrite: remove every output of an earlier run in `run_dir` (not other files a user put there)."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_classifier(recipe: Recipe, num_classes: int) -> None:
    """Build the recipe's classifier once, on the CPU and with a forked RNG (the run's random stream is
    untouched), so that an impossible image size or channel count is refused before anything is written."""
    c, data = recipe.classifier, recipe.data
    with torch.random.fork_rng(devices=[]):
        try:
            create_classifier(c.backbone, data.channels, data.image_size, num_classes, c.bottleneck_dim, False)
        except RuntimeError as error:
            raise UserError(f"data.image_size: {data.image_size} px images ({data.channels} channel(s)) are too small "
                            f"for the '{c.backbone}' backbone ({one_line(error)}); use a larger image size") from None


def make_context(recipe: Recipe, run_dir: Path, device: torch.device, resume: bool, progress: bool) -> Context:
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
    """Train and evaluate `recipe`; returns the metrics also written to run_dir/metrics.json."""
    began = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    prepare_run_dir(recipe, run_dir, resume, overwrite)
    # everything that can fail on bad input happens before the run directory is written
    device = resolve_device(recipe.train.device)
    seed_everything(recipe.seed)
    domains = build_domains(recipe.data, recipe.seed)
    _check_classes(domains)
    num_classes = domains.source.num_classes
    check_classifier(recipe, num_classes)
    pixel = ADAPTERS.get(recipe.pixel.adapter)(recipe.pixel.options, recipe) if recipe.pixel is not None else None
    feature = ADAPTERS.get(recipe.feature.adapter)(recipe.feature.options, recipe)

    if overwrite:
        clear_run_dir(run_dir)
    ctx = make_context(recipe, run_dir, device, resume, progress)
    try:
        write_text_atomic(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        ctx.info(f"run {recipe.name}: {run_dir} on {ctx.device}")

        source = domains.source
        if pixel is not None:
            source = pixel.fit(domains.source, domains.target, ctx).translate(domains.source)

        classifier = create_classifier(recipe.classifier.backbone, recipe.data.channels, recipe.data.image_size,
                                       num_classes, recipe.classifier.bottleneck_dim,
                                       recipe.classifier.pretrained).to(ctx.device)
        classifier = feature.fit(classifier, source, domains.target, ctx)
        save_checkpoint({"state_dict": classifier.state_dict(), "num_classes": num_classes,
                         "recipe": recipe.to_dict()}, run_dir / "classifier.pt", "classifier")

        preservation = label_preservation(recipe, domains.source, source, ctx) if pixel is not None else None
        metrics = _metrics(recipe, domains, classifier, ctx, time.perf_counter() - began + ctx.earlier_wall_time)
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
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path}: not a readable metrics file ({one_line(error)})") from None
    if not isinstance(metrics, dict) or "target_accuracy" not in metrics:
        raise UserError(f"{path}: not a da-toolkit metrics file (no target_accuracy)")
    return metrics


def load_run(run_dir: Path) -> tuple[Recipe, torch.nn.Module]:
    """The recipe and trained classifier (eval mode, CPU) of a finished run directory."""
    run_dir = Path(run_dir)
    for name in ("recipe.yaml", "classifier.pt"):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir}: no {name} here; is this a finished da-toolkit run directory?")
    recipe = recipe_from_dict(read_yaml(run_dir / "recipe.yaml"))
    path = run_dir / "classifier.pt"
    saved = load_checkpoint(path, "classifier")
    state = saved["state_dict"]
    num_classes = saved.get("num_classes")
    if num_classes is None:  # written before the class count was stored: read it off the head
        num_classes = state["head.weight"].shape[0] if isinstance(state, dict) and "head.weight" in state else 10
    classifier = create_classifier(recipe.classifier.backbone, recipe.data.channels, recipe.data.image_size,
                                   num_classes, bottleneck_dim=recipe.classifier.bottleneck_dim)
    load_state(classifier, state, path, "classifier weights")
    return recipe, classifier.eval()

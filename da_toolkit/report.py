"""`da-toolkit report RUN_DIR [--baseline RUN_DIR]`: what adaptation did, on one page.

Writes ``report.html`` (self-contained: every picture is embedded, nothing is fetched from a
network) and ``report.json`` (every number on the page) for a finished run, optionally side by
side with a baseline run of the same task (typically its source-only run):

* **feature maps** — t-SNE of the classifier's features on a fixed, seeded sample of source and
  target test images, coloured by domain and by class ("aligned but mixed up" is visible);
* **proxy A-distance** between source and target features (`proxy_a_distance`);
* **per class** — the target confusion matrix and per-class accuracy, naming the classes that got
  worse than the baseline;
* **pixel stage** — source images next to their translations, with their label, and the pixel
  adapter's diagnostics of them (e.g. whether a label-preservation oracle still reads each, and
  that oracle's per-class rate);
* **training curves** — every scalar the run logged to TensorBoard, per stage.

Target test labels are used here for reporting only, like the run's own final evaluation.
A report only reads the run directory (safely: see `RunDir`).
"""
from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from da_toolkit.adapters.pixel import pixel_adapter  # noqa: E402
from da_toolkit.data import Domain, DomainDataset, build_domain  # noqa: E402
from da_toolkit.data.base import to_float  # noqa: E402
from da_toolkit.errors import UserError  # noqa: E402
from da_toolkit.evaluate import evaluate  # noqa: E402
from da_toolkit.pipeline import load_run  # noqa: E402
from da_toolkit.recipe import DomainSpec, Recipe  # noqa: E402
from da_toolkit.rundir import RunDir  # noqa: E402
from da_toolkit.training.checkpoint import write_json_atomic, write_text_atomic  # noqa: E402

SAMPLE = 1000  # images per domain in the feature maps and the A-distance
GRID = 12  # source images shown with their translations


# ----------------------------------------------------------------------------------------- maths


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> dict:
    """Proxy A-distance between two feature sets (Ben-David et al. 2007; Ganin et al. 2016):

        d_A = 2 (1 − 2ε)

    with ε the held-out error of a linear classifier trained to tell the domains apart: the pooled
    features are standardised and split in two stratified halves (seeded); logistic regression is
    fitted on one half and ε measured on the other. Identical distributions give ε ≈ 0.5, d_A ≈ 0;
    perfectly separable ones ε = 0, d_A = 2.
    """
    features = np.concatenate([source, target])
    domains = np.concatenate([np.ones(len(source)), np.zeros(len(target))])
    train_x, test_x, train_y, test_y = train_test_split(features, domains, test_size=0.5, stratify=domains,
                                                        random_state=seed)
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    error = float(1 - model.score(scaler.transform(test_x), test_y))
    return {"a_distance": round(2 * (1 - 2 * error), 4), "domain_error": round(error, 4),
            "train_images": len(train_y), "test_images": len(test_y)}


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE embedding (PCA initialisation, seeded): the same features give the same picture."""
    perplexity = min(30.0, max(2.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)


def seeded_sample(dataset: DomainDataset, count: int, seed: int) -> DomainDataset:
    return dataset.sample(count, torch.Generator().manual_seed(seed))


@torch.no_grad()
def features_of(classifier: torch.nn.Module, dataset: DomainDataset, batch_size: int = 500) -> np.ndarray:
    """The classifier's bottleneck features (what feature-level methods align), eval mode, CPU."""
    classifier.eval()
    chunks = [classifier.features(to_float(chunk)) for chunk in dataset.chunks(batch_size)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, classifier.feature_dim), np.float32)


# ------------------------------------------------------------------------------------- one run


@dataclass
class RunView:
    """What the report needs of one run directory."""

    name: str
    rundir: RunDir
    recipe: Recipe
    classifier: torch.nn.Module
    metrics: dict


def load_view(run_dir: Path) -> RunView:
    rundir = RunDir(run_dir)
    rundir.require("metrics.json")
    recipe, classifier = load_run(run_dir)
    method = " + ".join(s.adapter for s in (recipe.pixel, recipe.feature, recipe.refine) if s is not None)
    return RunView(f"{recipe.name} ({method})", rundir, recipe, classifier, rundir.read_metrics())


def test_domains(recipes: list[Recipe]) -> tuple[DomainDataset | None, DomainDataset, str]:
    """(source test images, target test images, a note): the source's test split, or its training split where
    the source has none, of the first recipe that names a source (a source-free run's baseline may); None
    where none does (a source-free run alone: a report of the target only)."""
    data = recipes[0].data
    named = [recipe.data for recipe in recipes if recipe.data.source is not None]
    target = build_domain(data.target_test, data.image_size, data.channels, recipes[0].seed)
    if not named:
        return None, target, "a source-free run: no source image was read, none is shown"
    note, source_data = "", named[0]
    spec = source_data.source_test or DomainSpec(source_data.source.name, "test", root=source_data.source.root,
                                                 skip_unreadable=source_data.source.skip_unreadable)
    try:
        source = build_domain(spec, data.image_size, data.channels, recipes[0].seed)
    except UserError:
        source = build_domain(source_data.source, data.image_size, data.channels, recipes[0].seed)
        note = f"{source_data.source.name} has no test split: its training images are shown"
    if source_data is not data:
        note = (note + "; " if note else "") + "the source images are the baseline run's (this run is source-free)"
    return source, target, note


# ------------------------------------------------------------------------------------- figures


def png(figure) -> str:
    """A matplotlib figure as an embeddable data URI (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def feature_map_figure(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """rows of (title, 2-D points, domain per point (1 = source), class per point)."""
    figure, axes = plt.subplots(len(rows), 2, figsize=(10, 4.6 * len(rows)), squeeze=False)
    for (title, points, domains, classes), (by_domain, by_class) in zip(rows, axes):
        for value, colour, label in ((1, "tab:blue", "source"), (0, "tab:red", "target")):
            mask = domains == value
            by_domain.scatter(points[mask, 0], points[mask, 1], s=4, c=colour, label=label, alpha=0.6)
        by_domain.legend(markerscale=3)
        by_domain.set_title("by domain", fontsize=9)
        by_domain.set_ylabel(title)
        scatter = by_class.scatter(points[:, 0], points[:, 1], s=4, c=classes, cmap="tab10", alpha=0.7)
        by_class.legend(*scatter.legend_elements(), fontsize=7, markerscale=0.8, ncols=2)
        by_class.set_title("by class (source and target)", fontsize=9)
        for axis in (by_domain, by_class):
            axis.set_xticks([])
            axis.set_yticks([])
    return png(figure)


def per_class_figure(results: list[tuple[str, dict]]) -> str:
    figure, axes = plt.subplots(1, len(results) + 1, figsize=(4.5 * (len(results) + 1), 4))
    count = len(results[0][1]["per_class_accuracy"])
    names = results[0][1].get("class_names") or list(range(count))
    small = {"rotation": 90, "fontsize": 6} if count > 12 else {}
    for axis, (title, result) in zip(axes, results):
        matrix = np.array(result["confusion_matrix"])
        axis.imshow(matrix, cmap="Blues")
        axis.set_title(f"{title}\ntarget confusion (rows: true)", fontsize=9)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_xticks(range(count), names, **small)  # every class, by name
        axis.set_yticks(range(count), names, fontsize=small.get("fontsize"))
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                axis.text(j, i, str(value), ha="center", va="center", fontsize=6)
    bars = axes[-1]
    width = 0.8 / len(results)
    for index, (title, result) in enumerate(results):
        values = [100 * (v or 0) for v in result["per_class_accuracy"]]
        bars.bar(np.arange(len(values)) + index * width, values, width, label=title)
    bars.set_title("per-class target accuracy (%)", fontsize=9)
    bars.set_xlabel("class")
    bars.set_xticks(np.arange(count) + 0.4 - width / 2, names, **small)
    bars.legend(fontsize=7)
    return png(figure)


def grid_figure(images: torch.Tensor, rows: list[torch.Tensor], labels: list[int], marks: list[bool] | None) -> str:
    """The source images over rows of their translations, nearest-neighbour upscaled, with each label
    and, under the first translation, the adapter's read-out of it (✓ / ✗)."""
    figure, axes = plt.subplots(1 + len(rows), len(images), figsize=(1.3 * len(images), 1.5 * (1 + len(rows))),
                                squeeze=False)
    for column in range(len(images)):
        for row, batch in enumerate((images, *rows)):
            picture = batch[column].permute(1, 2, 0).numpy()
            axes[row, column].imshow(picture[:, :, 0] if picture.shape[2] == 1 else picture, cmap="gray",
                                     interpolation="nearest", vmin=0, vmax=255)
            axes[row, column].axis("off")
        axes[0, column].set_title(f"label {labels[column]}", fontsize=8)
        if marks is not None:
            axes[1, column].set_title("oracle ✓" if marks[column] else "oracle ✗", fontsize=8,
                                      color="green" if marks[column] else "red")
    return png(figure)


def curves_figure(stage: str, curves: dict[str, tuple[list[int], list[float]]]) -> str:
    names = sorted(curves)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        steps, values = curves[name]
        axis.plot(steps, values, lw=1)
        axis.set_title(f"{stage}/{name}", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    figure.tight_layout()
    return png(figure)


def read_curves(rundir: RunDir) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{stage: {scalar: (steps, values)}} from the run's TensorBoard event files (empty without)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not rundir.tensorboard_dir.is_dir():
        return {}
    accumulator = EventAccumulator(str(rundir.tensorboard_dir), size_guidance={"scalars": 0, "images": 1})
    accumulator.Reload()
    stages: dict[str, dict] = {}
    for tag in accumulator.Tags().get("scalars", []):
        stage, _, name = tag.partition("/")
        events = accumulator.Scalars(tag)
        stages.setdefault(stage, {})[name or stage] = ([e.step for e in events], [e.value for e in events])
    return stages


# ------------------------------------------------------------------------------------- sections


def pixel_section(view: RunView, source: Domain, seed: int, sample: int = SAMPLE) -> tuple[str, dict] | None:
    """The translation grid and the pixel adapter's diagnostics of a seeded sample of source images."""
    recipe = view.recipe
    adapter = pixel_adapter(recipe)
    if adapter is None:
        return None
    sample = seeded_sample(source, sample, seed).in_memory()
    shown = adapter.report(view.rundir.pixel_home(recipe.pixel_from), sample)
    marks = shown.marks[:GRID] if shown.marks is not None else None
    grid = grid_figure(sample.images[:GRID], [images[:GRID] for _, images in shown.rows],
                       sample.labels[:GRID].tolist(), marks)
    rows = "; ".join(f"row {index + 2}: {caption}" for index, (caption, _) in enumerate(shown.rows))
    text = (f"<p>Top row: source test images; {html.escape(rows)}.</p><img src='{grid}'>"
            + "".join(f"<p>{html.escape(sentence)}</p>" for sentence in shown.text))
    return text, shown.numbers


def write_report(run_dir: Path, baseline: Path | None = None, output: Path | None = None, seed: int = 0,
                 sample: int = SAMPLE) -> Path:
    """Write report.html and report.json for `run_dir` (beside `baseline` if given); returns the HTML path."""
    began = time.perf_counter()
    views = [load_view(run_dir)] + ([load_view(baseline)] if baseline is not None else [])
    run = views[0]
    source, target, note = test_domains([view.recipe for view in views])
    target_sample = seeded_sample(target, sample, seed)
    source_sample = seeded_sample(source, sample, seed) if source is not None else target_sample.subset(
        torch.arange(0), "no source")  # a source-free run alone: the target only
    domains = np.concatenate([np.ones(len(source_sample)), np.zeros(len(target_sample))])
    classes = torch.cat([source_sample.labels, target_sample.labels]).numpy()

    report: dict = {"run": str(run_dir), "baseline": None if baseline is None else str(baseline),
                    "sample": {"source": None if source is None else
                               f"{source_sample.name}: {len(source_sample)} images",
                               "target": f"{target_sample.name}: {len(target_sample)} images", "seed": seed},
                    "runs": {}}
    maps, results = [], []
    for view in views:
        source_features = features_of(view.classifier, source_sample)
        target_features = features_of(view.classifier, target_sample)
        if not (np.isfinite(source_features).all() and np.isfinite(target_features).all()):
            raise UserError(f"{view.rundir}: its classifier gives non-finite features (classifier.pt damaged, or "
                            f"weights that overflow); no report of it can be drawn")
        distance = proxy_a_distance(source_features, target_features, seed) if len(source_sample) else None
        points = tsne(np.concatenate([source_features, target_features]), seed)
        maps.append((view.name, points, domains, classes))
        result = evaluate(view.classifier, target)
        results.append((view.name, result))
        report["runs"][view.name] = {"target_accuracy": result["accuracy"],
                                     "source_accuracy": view.metrics.get("source_accuracy"),
                                     "proxy_a_distance": distance, "per_class_accuracy": result["per_class_accuracy"],
                                     "confusion_matrix": result["confusion_matrix"]}

    sections = [("Summary", summary_html(report, note))]
    sections.append(("Feature maps", f"<p>t-SNE of the trained classifier's bottleneck features "
                                     f"({len(source_sample) or 'no'} source and {len(target_sample)} target test "
                                     f"images, seed {seed}); for ADDA that is the adapted target encoder, for both "
                                     f"domains.</p>"
                                     f"<img src='{feature_map_figure(maps)}'>"))
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{r['proxy_a_distance']['a_distance']:.3f}</td>"
                   f"<td>{100 * r['proxy_a_distance']['domain_error']:.1f}%</td></tr>"
                   for name, r in report["runs"].items() if r["proxy_a_distance"] is not None)
    distances = ("<p>d<sub>A</sub> = 2(1 − 2ε), ε the held-out error of a linear classifier telling source from "
                 "target features (0: indistinguishable, 2: separable).</p><table><tr><th>run</th><th>d<sub>A</sub>"
                 f"</th><th>ε</th></tr>{rows}</table>")
    no_source = "<p>No source images: no distance between the domains.</p>"
    sections.append(("Proxy A-distance", no_source if source is None else distances))
    worse = []
    if len(results) == 2:
        (_, mine), (_, base) = results
        names = mine.get("class_names") or list(range(len(mine["per_class_accuracy"])))
        worse = [name for name, a, b in zip(names, mine["per_class_accuracy"], base["per_class_accuracy"])
                 if a is not None and b is not None and a < b]
        report["classes_worse_than_baseline"] = worse
    per_class_text = (f"<p>Classes worse than the baseline: {', '.join(map(str, worse)) or 'none'}.</p>"
                      if len(results) == 2 else "")
    sections.append(("Per class", per_class_text + f"<img src='{per_class_figure(results)}'>"))
    pixel = pixel_section(run, source, seed, sample) if source is not None else None
    if pixel is not None:
        sections.append(("Pixel stage", pixel[0]))
        report["pixel"] = pixel[1]
    curves = read_curves(run.rundir)
    report["curves"] = {stage: {name: values[-1] for name, (_, values) in scalars.items() if values}
                        for stage, scalars in curves.items()}
    sections.append(("Training curves", "".join(f"<img src='{curves_figure(stage, scalars)}'>"
                                                 for stage, scalars in curves.items())
                     or "<p>No TensorBoard scalars in this run directory.</p>"))

    output = Path(output) if output is not None else run.rundir.path / "report"
    report["seconds"] = round(time.perf_counter() - began, 1)
    write_json_atomic(output / "report.json", report)
    page = output / "report.html"
    write_text_atomic(page, render(run.name, sections))
    return page


def summary_html(report: dict, note: str) -> str:
    def percent(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f}%"

    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{percent(r['target_accuracy'])}</td>"
                   f"<td>{percent(r['source_accuracy'])}</td></tr>" for name, r in report["runs"].items())
    extra = f"<p>{html.escape(note)}</p>" if note else ""
    samples = report["sample"]["source"], report["sample"]["target"]  # no source sample: a source-free run alone
    return (f"<table><tr><th>run</th><th>target accuracy</th><th>source accuracy</th></tr>{rows}</table>"
            f"<p>Samples: {'; '.join(html.escape(sample) for sample in samples if sample)}.</p>"
            + extra)


def render(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<section id='{name.lower().replace(' ', '-')}'><h2>{name}</h2>{content}</section>"
                   for name, content in sections)
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>da-toolkit report: {html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px}"
            f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")

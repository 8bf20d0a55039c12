"""Results of a benchmark: results.json/csv/md, the bar chart and the learning curve."""
from __future__ import annotations

import csv
import io
import json
import statistics
from datetime import datetime
from pathlib import Path

from da_toolkit.benchmark.grid import Cell
from da_toolkit.benchmark import recommend
from da_toolkit.benchmark.recommend import markdown_table
from da_toolkit.benchmark.published import Published, PublishedNumber, load_published, published_text
from da_toolkit.benchmark.scheduler import Outcome
from da_toolkit.benchmark.spec import Benchmark, Profile
from da_toolkit.benchmark.sweep import hyper_parameter_text
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import write_json_atomic, write_text_atomic


def cell_rows(cells: list[Cell], outcomes: dict[Cell, Outcome]) -> list[dict]:
    """One row per cell: its key, status and what its metrics.json says."""
    rows = []
    for cell in cells:
        outcome = outcomes.get(cell, Outcome("not run"))
        done = outcome.status == "done"
        metrics = RunDir(cell.run_dir).read_metrics() if done else {}
        rows.append({"cell": cell.name, "task": cell.task, "method": cell.method, "configuration": cell.configuration,
                     "hyper_parameters": cell.hyper_parameters, "seed": cell.seed, "k": cell.k,
                     "status": outcome.status, "target_accuracy": metrics.get("target_accuracy"),
                     "wall_time_s": metrics.get("wall_time_s"), "hardware": metrics.get("hardware"),
                     "data_fingerprints": metrics.get("data_fingerprints"),
                     "selection": metrics.get("selection"), "model_selection": metrics.get("model_selection"),
                     "rescored": RunDir(cell.run_dir).read_rescored() if done else None,
                     "collapsed": metrics.get("collapse", {}).get("collapsed"),
                     "error": outcome.error, "run_dir": str(cell.run_dir),
                     "report": str(cell.run_dir / "report" / "report.html")
                     if (cell.run_dir / "report" / "report.html").exists() else None,
                     "translator_from": translator_from(cell, done),
                     "command": cell.command_line()})
    return rows


def translator_from(cell: Cell, done: bool) -> str | None:
    """The run directory whose translator the cell reused: what its finished run recorded (`pixel_from`; None when
    it trained its own, e.g. under `compare --only` without the owner's cells), else the grid's plan."""
    if done:
        return RunDir(cell.run_dir).read_recipe().get("pixel_from")
    return str(cell.owner.run_dir) if cell.owner else None


def summarize(rows: list[dict]) -> list[dict]:
    """Per (task, configuration, k): target accuracy in %, mean and sample std (ddof 1) over the finished seeds,
    and how many of those seeds collapsed (metrics.json's collapse alarm). A configuration is a method (its
    recipe's values) or a configuration of its sweep (method@i)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["configuration"], row["k"]), []).append(row)
    summary = []
    for (task, configuration, k), members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        accuracies = [100 * r["target_accuracy"] for r in done]
        times = [r["wall_time_s"] for r in done]
        summary.append({
            "task": task, "method": members[0]["method"], "configuration": configuration,
            "hyper_parameters": members[0]["hyper_parameters"], "k": k, "seeds": len(members), "n": len(done),
            "mean": round(statistics.fmean(accuracies), 2) if accuracies else None,
            "std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
            "wall_time_s": round(statistics.fmean(times), 1) if times else None,
            "collapsed": sum(bool(r["collapsed"]) for r in done),
            "shared_translator": any(r["translator_from"] for r in members)})
    return summary


def _numbers(published: Published | None, entry: dict) -> list[PublishedNumber | None]:
    """The published numbers of a summary entry, one per source column (none on the k axis, none beside a
    sweep's configuration: the papers' numbers are of their own hyper-parameters)."""
    if published is None:
        return []
    return [published.get(entry["task"], entry["method"], s) if entry["k"] is None and not entry["hyper_parameters"]
            else None for s in published.columns]


def _blank(value) -> str:
    return "" if value is None else str(value)


def write_csv(path: Path, summary: list[dict], published: Published | None, swept: bool = False) -> None:
    """The summary table; published columns hold the plain numbers (results.md marks approximate matches). With
    sweeps (`swept`), a row per configuration, its name and hyper-parameters (JSON) after the method."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "method", *(["configuration", "hyper_parameters"] if swept else []), "k", "n_seeds",
                     "mean_accuracy_pct", "std_accuracy_pct", "mean_wall_time_s",
                     "n_collapsed", *(f"published_{s}" for s in (published.columns if published else []))])
    for e in summary:
        configuration = [e["configuration"], json.dumps(e["hyper_parameters"])] if swept else []
        writer.writerow([e["task"], e["method"], *configuration, _blank(e["k"]), e["n"], _blank(e["mean"]),
                         _blank(e["std"]),
                         _blank(e["wall_time_s"]), e["collapsed"],
                         *(_blank(n and n.accuracy) for n in _numbers(published, e))])
    write_text_atomic(path, buffer.getvalue())


def markdown(benchmark: Benchmark, profile: str | None, command: str, rows: list[dict], summary: list[dict],
             skipped: list[str], published: Published | None, bench_dir: Path, plots: list[str],
             recommendation: dict | None = None, selection_plots: list[str] = ()) -> str:
    with_k = benchmark.label_counts is not None
    swept = bool(benchmark.sweeps)
    done = [r for r in rows if r["status"] == "done"]
    lines = [f"# Benchmark `{benchmark.name}`" + (f", profile `{profile}`" if profile else ""), "",
             "Target-domain test accuracy in %: mean ± sample standard deviation over the finished seeds "
             "(n = finished / planned seeds); wall time: mean per cell."]
    if published:
        lines.append("Published numbers in the right-hand columns (* closest match to our method, ≈ approximate "
                     "match; see below) come from other backbones, budgets and protocols: context, not a "
                     "like-for-like comparison.")
    lines.append("")
    header = ["task", "method", *(["hyper-parameters"] if swept else []), *(["k"] if with_k else []), "ours (%)", "n",
              *(published.columns.values() if published else []), "wall time / cell (s)"]
    lines += markdown_table(header, [
        [e["task"], e["configuration"] + (" ↻" if e["shared_translator"] else ""),
         *([hyper_parameter_text(e["hyper_parameters"]) or "the recipe's"] if swept else []),
         *([str(e["k"])] if with_k else []),
         "–" if e["mean"] is None else f"{e['mean']:.2f}" + ("" if e["std"] is None else f" ± {e['std']:.2f}")
         + (f" ⚠{e['collapsed']}" if e["collapsed"] else ""),
         f"{e['n']}/{e['seeds']}", *(published_text(n) for n in _numbers(published, e)),
         "–" if e["wall_time_s"] is None else f"{e['wall_time_s']:.0f}"] for e in summary])
    lines += ["", *(f"![{name}]({name})" for name in plots), ""]
    if recommendation and recommendation["tasks"]:
        lines += [*recommend.markdown(recommendation), ""]
        if recommendation.get("configurations"):
            lines += [*recommend.configuration_markdown(recommendation["configurations"],
                                                        recommendation["defaults"]), ""]
        lines += [*(f"![{name}]({name})" for name in selection_plots), ""]
    if swept:
        lines += [*sweep_markdown(benchmark), ""]

    chosen = benchmark.profiles[profile] if profile else Profile()
    hardware = sorted({r["hardware"] for r in done if r["hardware"]})
    selection = sorted({r["selection"] for r in done if r["selection"]})
    lines += ["## Setup", "",
              f"* Date: {datetime.now().isoformat(timespec='minutes')}",
              f"* Command: `{command}` (every cell's own `da-toolkit run` command is in results.json)",
              f"* Hardware: {'; '.join(hardware) or 'unknown (no finished cell)'}",
              f"* Wall time of the finished cells, summed: {sum(r['wall_time_s'] or 0 for r in done):.0f} s",
              f"* Model selection: {'; '.join(selection) or '–'}",
              f"* Overrides of every cell: `{' '.join(benchmark.overrides + chosen.overrides) or '(none)'}`"]
    for method in benchmark.methods:
        own = benchmark.method_overrides.get(method, []) + chosen.method_overrides.get(method, [])
        if own or method in benchmark.method_recipes:
            start = f"recipe of {benchmark.method_recipes[method]}, " if method in benchmark.method_recipes else ""
            lines.append(f"  * {method}: {start}`{' '.join(own)}`")
    if any(e["collapsed"] for e in summary):
        lines.append("* ⚠n: n of the finished seeds collapsed: the classifier put most target images in one class "
                     "(the collapse alarm in the cell's metrics.json, no target label used); their accuracy is "
                     "in the mean, but they are failed runs, not the method's result")
    lines += ["* ↻: cells of this method reused the translator (pixel-stage checkpoints and translated source) of the "
              "cell of the same seed with the same pixel stage (`pixel_from`: of the same task, or of any task for a "
              "translator of every domain); their wall time excludes the translator's training.",
              f"* TensorBoard, every cell under one log root: `tensorboard --logdir {bench_dir / 'runs'}`"]
    if skipped:
        lines.append(f"* Not applicable, not run: {', '.join(skipped)} (target_only trains on the k labeled target "
                     f"images per class alone, so it needs k ≥ 1)")
    if published:
        lines += ["", "## Published numbers", "", published.note, ""]
        lines += [f"* **{heading}**: {published.citations[s]}" for s, heading in published.columns.items()]
        mapping = sorted({(m, published.columns[s], n.reported_as, n.match)
                          for (_, m, s), n in published.numbers.items() if m in benchmark.methods})
        lines += [f"* {m} ↔ {heading}: {reported} ({match} match)" for m, heading, reported, match in mapping]
    lines += ["", "## Cells", ""]
    lines += markdown_table(["cell", "status", "target acc. (%)", "wall time (s)", "hardware", "report"], [
        [r["cell"] + (" ↻" if r["translator_from"] else ""), r["status"] + (" ⚠ collapsed" if r["collapsed"] else ""),
         "–" if r["target_accuracy"] is None else f"{100 * r['target_accuracy']:.2f}",
         "–" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}", r["hardware"] or "–",
         f"[report]({_relative(r['report'], bench_dir)})" if r.get("report") else "–"] for r in rows])
    unfinished = [r for r in rows if r["status"] != "done"]
    if unfinished:
        lines += ["", "## Not finished", "", *(f"* {r['cell']}: {r['status']}: {r['error']}" for r in unfinished)]
    return "\n".join(lines) + "\n"


def _relative(path: str, folder: Path) -> str:
    """`path` relative to `folder` when it lies below it (a link that works from results.md)."""
    try:
        return str(Path(path).resolve().relative_to(Path(folder).resolve()))
    except ValueError:
        return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, summary: list[dict], published: Published | None,
              picks: dict[str, str] | None = None) -> None:
    """One panel per task, one row per method (the grid's order, the same rows in every panel, named once at the
    left): a bar of its recipe's mean with the std over seeds as an error bar and the mean written at its end; the
    first published number as a black tick; a cross at the foot of a row no seed of which finished (stopped or
    running: results.md says which); with sweeps, a dot per configuration of the method's sweep (mean over seeds)
    and a star on the configuration recommended for the task (`picks`: task -> configuration). Rows, not a colour
    per method: a grid of 26 methods in 26 hues could not be read."""
    import numpy as np

    plt = _pyplot()
    tasks = list(dict.fromkeys(e["task"] for e in summary))
    methods = list(dict.fromkeys(e["method"] for e in summary))
    by_key = {(e["task"], e["method"]): e for e in summary if not e["hyper_parameters"]}
    by_configuration = {(e["task"], e["configuration"]): e for e in summary}
    labels = {"sweep": "a configuration of the method's sweep", "pick": "recommended configuration",
              "unfinished": "no seed finished (results.md: Not finished)",
              "published": "published (first column that has it)"}
    drawn = {}  # legend entries, one per kind of marker whatever the panel that drew it

    def mark(kind, artist):
        drawn.setdefault(labels[kind], artist)

    rows = np.arange(len(methods))
    figure, panels = plt.subplots(1, len(tasks), sharey=True, squeeze=False,
                                  figsize=(1.8 + 3.0 * len(tasks), 1.5 + 0.28 * max(len(methods), 4)))
    for axes, task in zip(panels[0], tasks):
        entries = [by_key.get((task, method)) for method in methods]
        means = np.array([e["mean"] if e and e["mean"] is not None else np.nan for e in entries])
        stds = [e["std"] if e and e["std"] is not None else 0 for e in entries]
        axes.barh(rows, means, 0.7, xerr=stds, capsize=2, color="#4c78a8", error_kw={"elinewidth": 1})
        for row, (entry, mean, std) in enumerate(zip(entries, means, stds)):
            swept = [e["mean"] for e in summary if e["task"] == task and e["method"] == methods[row]
                     and e["hyper_parameters"] and e["mean"] is not None]
            if swept:
                mark("sweep", axes.scatter(swept, [row] * len(swept), s=9, color="black", zorder=3))
            if not np.isnan(mean):  # beyond the error bar and the sweep's dots
                axes.text(min(max([mean + std, *swept]), 100) + 1.5, row, f"{mean:.1f}", va="center",
                          fontsize="x-small")
            if entry and entry["n"] == 0:
                mark("unfinished", axes.scatter([2], [row], s=30, marker="x", color="black", zorder=3))
            number = next((n for n in _numbers(published, entry) if n), None) if entry else None
            if number:
                mark("published", axes.vlines(number.accuracy, row - 0.4, row + 0.4, colors="black", linewidth=2))
        picked = by_configuration.get((task, (picks or {}).get(task)))
        if picked and picked["mean"] is not None:
            mark("pick", axes.scatter([picked["mean"]], [methods.index(picked["method"])], s=110, marker="*",
                                      color="gold", edgecolors="black", zorder=4))
        axes.set_title(task, fontsize="medium")
        axes.set_xlim(0, 112)  # room for the written means
        axes.set_xlabel("target accuracy (%)")
        axes.grid(axis="x", alpha=0.3)
    panels[0][0].set_yticks(rows, methods)
    panels[0][0].set_ylim(max(len(methods), 4) - 0.5, -0.5)  # the grid's first method on top; bars as thick as 4 rows
    figure.suptitle("target accuracy, mean ± std over seeds" + ("; bars: the recipes' values"
                                                              if by_configuration.keys() - by_key.keys() else ""))
    if drawn:
        figure.legend(list(drawn.values()), list(drawn), fontsize="small", loc="lower center",
                      ncol=len(drawn), bbox_to_anchor=(0.5, 0))
    figure.tight_layout(rect=(0, 0.35 / figure.get_figheight() if drawn else 0, 1, 1))  # the legend: 0.35 inch
    figure.savefig(path, dpi=120, bbox_inches="tight")  # the whole title and legend, however few the tasks
    plt.close(figure)


def learning_curve(path: Path, summary: list[dict], methods: list[str]) -> None:
    """Target accuracy vs k labeled target images per class: one panel per task, one line per method (`methods`:
    the configurations, with sweeps)."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(e["task"] for e in summary))
    label_counts = sorted({e["k"] for e in summary})
    figure, panels = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axes, task in zip(panels[0], tasks):
        for method in methods:
            points = sorted((e["k"], e["mean"], e["std"] or 0) for e in summary
                            if e["task"] == task and e["configuration"] == method and e["mean"] is not None)
            if points:
                ks, means, stds = zip(*points)
                axes.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=method)
        axes.set_xscale("symlog", linthresh=1)
        axes.set_xticks(label_counts, [str(k) for k in label_counts])
        axes.set_xlabel("labeled target images per class (k)")
        axes.set_ylabel("target accuracy (%)")
        axes.set_title(task)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(bench_dir: Path, benchmark: Benchmark, profile: str | None, command: str, rows: list[dict],
                  skipped: list[str]) -> list[dict]:
    """results.json/csv/md and the plot (bar chart, or learning curve with a k axis); returns the summary."""
    published = load_published(benchmark.published).for_tasks(benchmark.tasks) if benchmark.published else None
    summary = summarize(rows)
    records = selection_records(rows)
    recommendation = recommend.study(records) if records else None
    if recommendation and benchmark.sweeps:
        recommendation["configurations"] = recommend.configuration_study(records, recommendation)
    plots = []
    if any(e["mean"] is not None for e in summary):
        plot = "learning_curve.png" if benchmark.label_counts is not None else "results.png"
        if benchmark.label_counts is not None:
            configurations = [c for m in benchmark.methods for c, _, _ in benchmark.variants(m)]
            learning_curve(bench_dir / plot, summary, configurations)
        else:
            defaults = recommendation["defaults"] if recommendation else {}
            picks = {task: entries[defaults[task]]["pick"] for task, entries in recommendation["tasks"].items()
                     if defaults[task] in entries} if recommendation and benchmark.sweeps else None
            bar_chart(bench_dir / plot, summary, published, picks)
        plots.append(plot)
    selection_plots = []
    for task in (recommendation or {}).get("tasks", {}):
        name = f"selection_{task.replace('/', '_')}.png"
        if recommend.plot(bench_dir / name, records, task):
            selection_plots.append(name)
    # each cell's seed agreement, computed over its configuration's seeds, in place of its 2,000 predictions
    stored = {r["cell"]: r for r in recommend.without_agreement_predictions(records)}
    cells = [{**row, **{k: stored[row["cell"]][k] for k in ("model_selection", "rescored", recommend.SEED_AGREEMENT)
                        if k in stored[row["cell"]]}} if row["cell"] in stored else row for row in rows]
    write_json_atomic(bench_dir / "results.json", {"benchmark": benchmark.name, "profile": profile,
                                                   "command": command, "cells": cells, "summary": summary,
                                                   "recommendation": recommendation, "not_applicable": skipped,
                                                   **sweep_record(benchmark)})
    write_csv(bench_dir / "results.csv", summary, published, swept=bool(benchmark.sweeps))
    write_text_atomic(bench_dir / "results.md", markdown(benchmark, profile, command, rows, summary, skipped,
                                                         published, bench_dir, plots, recommendation,
                                                         selection_plots))
    return summary


def selection_records(rows: list[dict]) -> list[dict]:
    """The finished cells that scored candidates, as `recommend` reads them (a task per task and k; a candidate
    per configuration: `method` is the configuration, e.g. dann@3, `base_method` the method)."""
    return [{**row, "task": row["task"] + (f"/k{row['k']}" if row["k"] else ""), "method": row["configuration"],
             "base_method": row["method"]} for row in rows
            if row["status"] == "done" and (row.get("model_selection") or {}).get("candidates")]


def sweep_record(benchmark: Benchmark) -> dict:
    """{"sweeps": {method: its sampling rule, space and configurations}} for results.json and sweeps.json; {}
    without sweeps."""
    return {"sweeps": {method: sweep.record() for method, sweep in benchmark.sweeps.items()}} if benchmark.sweeps \
        else {}


def sweep_markdown(benchmark: Benchmark) -> list[str]:
    """The Sweeps section of results.md: each swept method's rule and configurations."""
    lines = ["## Sweeps", "", "Each configuration is a cell variant method@i beside the method's own cell (its "
             "recipe's values); the configurations are drawn from the benchmark file alone (also in sweeps.json).", ""]
    for method, sweep in benchmark.sweeps.items():
        record = sweep.record()
        rule = ", ".join(f"{key} {value}" for key, value in record["sample"].items())
        space = "; ".join(f"`{key}` {kind} {values}" for key, dimension in record["space"].items()
                          for kind, values in dimension.items())
        lines += [f"* **{method}**: {rule}; {space}"]
        lines += [f"  * {c['name']}: {hyper_parameter_text(c['hyper_parameters'])}" for c in record["configurations"]]
    return lines

"""The `da-toolkit` command: thin wrappers that parse, call the library and print."""
from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

import click

from da_toolkit.errors import UserError


class PathArgument(click.Path):
    """click.Path, with a NUL character refused as a usage error (os.stat raises ValueError on one)."""

    def convert(self, value, param, ctx):
        if "\0" in str(value):
            self.fail(f"{value!r} holds a NUL character, which no file name can", param, ctx)
        return super().convert(value, param, ctx)


class _Group(click.Group):
    """Prints UserError and a command's usage error as one line and exits with status 2; Ctrl-C exits 130
    after saving."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:  # an option of the group itself (a subcommand's: in `invoke`)
            usage_error(error)

    def invoke(self, ctx):
        from da_toolkit.training.loop import Interrupted

        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"error: {one_line(str(error))}", err=True)
            sys.exit(2)
        except click.UsageError as error:
            usage_error(error)
        except Interrupted as stop:
            click.echo(f"\ninterrupted: {stop}", err=True)
            sys.exit(130)


def usage_error(error: click.UsageError):
    """A bad argument or option: one line too (not click's usage block), exit status 2."""
    where = f"{error.ctx.command_path}: " if error.ctx else ""
    click.echo(f"error: {one_line(where + ' '.join(error.format_message().split()))} (see --help)", err=True)
    sys.exit(2)


def one_line(message: str) -> str:
    """`message` with the control characters a user's input may bring (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


@click.group(cls=_Group)
@click.version_option(package_name="da-toolkit")
def main():
    """Domain adaptation of image classifiers: CycleGAN, DANN, ADDA on one timm classifier."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


@main.command()
@click.argument("recipe", type=PathArgument(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("-o", "--output", type=PathArgument(file_okay=False, path_type=Path),
              help="Run directory (default: <output_dir>/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a finished or unfinished run in the run directory.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(min=1),
              help="Train data-parallel in this many processes on this machine (through torchrun: one per GPU, "
                   "or gloo on CPU); train.batch_size is the global batch.")
def run(recipe, overrides, output, resume, overwrite, quiet, nproc):
    """Train and evaluate RECIPE; OVERRIDES are dotted key=value pairs, e.g. train.iterations=200."""
    from da_toolkit.pipeline import default_run_dir, run as run_recipe
    from da_toolkit.recipe import load_recipe

    signal.signal(signal.SIGINT, signal.default_int_handler)  # a run started in the background stops on SIGINT too
    loaded = load_recipe(recipe, list(overrides))
    run_dir = output or default_run_dir(loaded)
    if nproc > 1:
        from da_toolkit.training.distributed import launch

        flags = [flag for flag, on in (("--resume", resume), ("--overwrite", overwrite), ("--quiet", quiet)) if on]
        sys.exit(launch(nproc, ["run", str(recipe), *overrides, "--output", str(run_dir), *flags]))
    metrics = run_recipe(loaded, run_dir, resume=resume, overwrite=overwrite, progress=not quiet)
    if metrics is None:  # a rank other than 0 of a torchrun launch: rank 0 reports
        return
    click.echo(f"target accuracy  {100 * metrics['target_accuracy']:6.2f}%  ({metrics['target']['dataset']}, "
               f"{metrics['target']['images']} images; chance {100 / len(metrics['target']['per_class_accuracy']):.0f}%)")
    if metrics["source"] is not None:
        click.echo(f"source accuracy  {100 * metrics['source_accuracy']:6.2f}%  ({metrics['source']['dataset']})")
    else:
        click.echo("source accuracy       –   (source-free: no source image was read)")
    click.echo(f"run directory    {run_dir}  ({metrics['wall_time_s']:.0f} s)")
    if metrics["collapse"]["collapsed"]:
        click.echo(f"warning: {run_dir}: {metrics['collapse']['message']}", err=True)


@main.command(name="list")
def list_components():
    """Adapters, datasets and backbones, with one-line descriptions."""
    from da_toolkit.adapters import ADAPTERS
    from da_toolkit.data import DATASETS
    from da_toolkit.models import BACKBONES

    click.echo("adapters:")
    for name, text in ADAPTERS.describe():
        click.echo(f"  {name:<14} [{ADAPTERS.get(name).kind}] {text}")
    click.echo("datasets:")
    datasets = list(DATASETS.describe())
    width = max(len(name) for name, _ in datasets)
    for name, text in datasets:
        click.echo(f"  {name:<{width}} {text}")
    click.echo("backbones:")
    for name, text in BACKBONES.describe():
        click.echo(f"  {name:<14} {text}")
    click.echo("  (or any timm model name, e.g. resnet18, resnet10t: see timm.list_models())")


@main.command()
@click.argument("run_dir", type=PathArgument(file_okay=False, path_type=Path))
@click.option("--dataset", required=True, help="Dataset name (see `da-toolkit list`).")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--root", help="Folder of an imagefolder dataset, or of a photo benchmark (default: under the data "
                              "root, e.g. $DA_TOOLKIT_DATA/office31).")
def evaluate(run_dir, dataset, split, root):
    """Evaluate the trained classifier of RUN_DIR on a labeled dataset split."""
    from da_toolkit.data import build_domain, match_classes
    from da_toolkit.evaluate import evaluate as evaluate_model
    from da_toolkit.pipeline import load_run
    from da_toolkit.recipe import DomainSpec
    from da_toolkit.rundir import RunDir, read_classifier_classes

    recipe, classifier = load_run(run_dir)
    data = build_domain(DomainSpec(dataset, split, root=root), recipe.data.image_size, recipe.data.channels,
                        recipe.seed, workers=recipe.train.workers, memory_budget_gb=recipe.data.memory_budget_gb)
    _, class_names, _ = read_classifier_classes(RunDir(run_dir).classifier_file)
    if class_names is None:  # a classifier.pt from before class names were stored: its source domain's
        class_names = build_domain(recipe.data.source, recipe.data.image_size, recipe.data.channels, recipe.seed,
                                   memory_budget_gb=0).class_names
    data = match_classes(class_names, data, "--dataset")
    result = evaluate_model(classifier, data)
    click.echo(f"accuracy {100 * result['accuracy']:.2f}% on {data.name} ({result['images']} images)")
    for name, acc in zip(result["class_names"], result["per_class_accuracy"]):
        click.echo(f"  class {name}: {'-' if acc is None else f'{100 * acc:.1f}%'}")


@main.command()
@click.argument("run_dir", type=PathArgument(file_okay=False, path_type=Path))
@click.option("--input", "input_dir", required=True, type=PathArgument(file_okay=False, path_type=Path),
              help="Folder of images (searched recursively; sub-folder structure is kept).")
@click.option("--output", "output_dir", required=True, type=PathArgument(file_okay=False, path_type=Path),
              help="Folder for the translated PNG images.")
@click.option("--direction", default=None,
              help="One of the run's translator's directions (default: the first, source style -> target style); "
                   "a two-domain translator: a2b, source -> target style; b2a, the reverse.")
@click.option("--to", "to", default=None, metavar="DOMAIN",
              help="A multi-domain translator (stargan): the domain to translate into (its direction).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
def translate(run_dir, input_dir, output_dir, direction, to, batch_size):
    """Translate the images in a folder with the trained translator (pixel stage) of RUN_DIR."""
    from da_toolkit.translate import first_direction, translate_folder

    if direction is not None and to is not None and direction != to:
        raise UserError(f"--to {to} and --direction {direction} disagree; give one of them")
    direction = to or direction or first_direction(run_dir)
    count = translate_folder(run_dir, input_dir, output_dir, direction, batch_size)
    click.echo(f"translated {count} images ({direction}) into {output_dir}")


@main.command()
@click.argument("run_dir", type=PathArgument(file_okay=False, path_type=Path))
@click.option("--baseline", type=PathArgument(file_okay=False, path_type=Path),
              help="A run of the same task to show beside it (e.g. its source-only run).")
@click.option("-o", "--output", type=PathArgument(file_okay=False, path_type=Path),
              help="Folder for report.html and report.json (default: RUN_DIR/report).")
@click.option("--sample", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Source and target test images per domain in the feature maps and the A-distance.")
def report(run_dir, baseline, output, sample):
    """Write an HTML report of RUN_DIR: feature maps, A-distance, per-class view, translations, curves."""
    from da_toolkit.report import write_report

    page = write_report(run_dir, baseline, output, sample=sample)
    click.echo(f"report written to {page} (and report.json beside it)")


@main.command()
@click.argument("benchmark", type=PathArgument(dir_okay=False, path_type=Path))
@click.option("--profile", help="Profile of the benchmark file to apply (e.g. cpu, gpu).")
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Cells run at the same time, each in its own process (default 1); with --executor slurm, cells "
                   "in the queue at a time (default: all).")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: processes on this machine; slurm: one Slurm job per cell, through submitit (a cell that "
                   "reuses a translator is submitted once its owner finished).")
@click.option("--slurm-partition", help="With --executor slurm: the partition (default: the cluster's).")
@click.option("--slurm-time", default="1440", show_default=True,
              help="With --executor slurm: time limit of a cell's job, minutes or H:MM:SS.")
@click.option("--slurm-gpus", default=1, show_default=True, type=click.IntRange(min=0),
              help="With --executor slurm: GPUs per cell.")
@click.option("--slurm-cpus", default=8, show_default=True, type=click.IntRange(min=1),
              help="With --executor slurm: CPU cores per cell.")
@click.option("--slurm-mem-gb", type=click.IntRange(min=1), help="With --executor slurm: memory per cell in GB.")
@click.option("-o", "--output", type=PathArgument(file_okay=False, path_type=Path),
              help="Benchmark directory (default: <output_dir of the benchmark file>/<its name>).")
@click.option("--dry-run", is_flag=True, help="List the cells and their state without running them.")
@click.option("--only", help="Run only the cells whose name (task/method/seed<s>; method@i for configuration i of "
                             "the method's sweep) matches this glob, e.g. '*/adda/*' or '*/dann@*/*'.")
@click.option("--seeds",
              help="Comma-separated seeds to run instead of the benchmark file's, e.g. 0,1,2,3,4,5 (more seeds "
                   "of a task or method whose figures differ from seed to seed, with --only).")
@click.option("--finished", is_flag=True,
              help="Run nothing: write the results of the cells tried so far (of those --only selects): the "
                   "finished ones, and under 'Not finished' those running or stopped, with their error.")
@click.option("--verify", type=PathArgument(dir_okay=False, path_type=Path),
              help="A results.json to check: re-run its cells (in <name>-<profile>-verify unless -o) and report "
                   "every target accuracy that differs (exit 2).")
@click.option("--tolerance", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --verify: allowed difference in percentage points.")
@click.option("--reports", is_flag=True,
              help="Also write each finished cell's run report (beside its task's source-only cell), linked from "
                   "results.md.")
def compare(benchmark, profile, jobs, executor, slurm_partition, slurm_time, slurm_gpus, slurm_cpus, slurm_mem_gb,
            output, dry_run, only, seeds, finished, verify, tolerance, reports):
    """Run the tasks x methods x seeds grid of BENCHMARK and write results.md/csv/json and plots."""
    from da_toolkit.benchmark import compare as run_compare
    from da_toolkit.benchmark.cluster import ClusterOptions, parse_minutes
    from da_toolkit.benchmark.spec import parse_seeds

    cluster = None
    if executor == "local" and (slurm_partition or slurm_mem_gb):
        raise UserError("--slurm-partition and --slurm-mem-gb need --executor slurm")
    if executor == "slurm":
        cluster = ClusterOptions(slurm_partition, parse_minutes(slurm_time), slurm_gpus, slurm_cpus, slurm_mem_gb)
    run_compare(benchmark, profile=profile, jobs=jobs, output=output, dry_run=dry_run, only=only,
                seeds=parse_seeds(seeds) if seeds is not None else None, verify=verify, tolerance=tolerance,
                reports=reports, cluster=cluster, finished_only=finished)


def source_percent(accuracy: float | None) -> str:
    """A run's source accuracy for a table: "–" for a source-free run (no source image read)."""
    return "–" if accuracy is None else f"{100 * accuracy:.2f}%"


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=PathArgument(file_okay=False, path_type=Path))
@click.option("-v", "--verbose", is_flag=True,
              help="Also every validator's pick per task, with the hindsight from target test labels (the best "
                   "method, the regret of each pick), as compare's results.md.")
def show(run_dirs, verbose):
    """Print the target accuracy of finished RUN_DIRS side by side, mark runs whose classifier collapsed, and
    recommend a method per task in one line, without target labels (runs of one recipe with several seeds
    count together; a run without adaptation is the no-harm baseline)."""
    from da_toolkit.pipeline import read_metrics

    rows = [read_metrics(run_dir) for run_dir in run_dirs]
    width = max(len(str(run_dir)) for run_dir in run_dirs)
    click.echo(f"{'run':<{width}}  {'method':<24} {'target acc':>10} {'source acc':>10} {'wall time':>9}")
    for run_dir, metrics in zip(run_dirs, rows):
        collapsed = "  COLLAPSED" if metrics.get("collapse", {}).get("collapsed") else ""
        click.echo(f"{str(run_dir):<{width}}  {adapters_of(metrics):<24} {100 * metrics['target_accuracy']:9.2f}% "
                   f"{source_percent(metrics['source_accuracy']):>10} {metrics['wall_time_s']:8.0f}s{collapsed}")
    targets = dict.fromkeys(f"{m['target']['dataset']}, {m['target']['images']} images" for m in rows)
    click.echo(f"target acc: your evaluation on the labeled target test images ({'; '.join(targets)}); the "
               f"recommendation below never reads it")
    click.echo(f"model selection: {'; '.join(dict.fromkeys(m['selection'] for m in rows))}")
    for run_dir, metrics in zip(run_dirs, rows):
        if metrics.get("collapse", {}).get("collapsed"):
            click.echo(f"COLLAPSED: {run_dir}: {metrics['collapse']['message']}")
    scored = [(run_dir, metrics) for run_dir, metrics in zip(run_dirs, rows) if metrics.get("model_selection")]
    if not scored:
        return
    from da_toolkit.benchmark import recommend
    from da_toolkit.rundir import RunDir

    homes = [RunDir(run_dir) for run_dir, _ in scored]
    records = [selection_record(metrics, home.read_rescored()) for home, (_, metrics) in zip(homes, scored)]
    variants = recipe_variants([home.read_recipe() if home.recipe_file.exists() else {} for home in homes])
    for record, variant in zip(records, variants):
        if record["method"] != recommend.BASELINE and variant:
            record["method"] += f" [{variant}]"  # another configuration of the recipe, not another seed of it
    scored = [metrics for _, metrics in scored]
    names = {record["method"]: f"{record['method']} ({adapters_of(metrics)})"
             for record, metrics in zip(records, scored)}
    result = recommend.study(records)
    click.echo("")
    click.echo("\n".join(recommend.one_line_picks(records, result, names)))
    click.echo(f"({recommend.picked_by(result)})")
    if verbose:
        click.echo("")
        click.echo("\n".join(recommend.markdown(result)))
    else:
        click.echo("(every validator's pick, with the hindsight from target test labels: add --verbose)")


def recipe_variants(recipes: list[dict]) -> list[str]:
    """Per run, the keys (and values) in which its saved recipe differs from another run's of the same recipe
    name, the seed aside, e.g. "feature.trade_off=0.384, train.lr=0.00654" ("" when no other run of that name
    differs): runs of a sweep's configurations share a recipe name but are not seeds of one method."""
    def leaves(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(leaves(value, f"{prefix}{key}."))
            elif f"{prefix}{key}" not in ("seed", "output_dir"):
                out[f"{prefix}{key}"] = value
        return out

    def shown(run: dict, key: str) -> str:
        """A key's value in `run`: null for None; a section another run has as null (e.g. data.source of a
        source-free run): its name, or {…}."""
        if key in run:
            return "null" if run[key] is None else str(run[key])
        return str(run.get(f"{key}.name", "{…}"))

    flat = [leaves(recipe) for recipe in recipes]
    variants = []
    for mine in flat:
        others = [other for other in flat if other.get("name") == mine.get("name")]
        keys = {key for other in others for key in mine.keys() | other.keys()
                if mine.get(key, KeyError) != other.get(key, KeyError)}  # a key one has, the other not, differs
        keys = sorted(key for key in keys if not any(key.startswith(f"{section}.") for section in keys))
        variants.append(", ".join(f"{key}={shown(mine, key)}" for key in keys))
    return variants


def adapters_of(metrics: dict) -> str:
    """A run's methods, pixel + feature + refinement stage, e.g. "cyclegan + dann"."""
    return " + ".join(a for a in (metrics["pixel_adapter"], metrics["feature_adapter"],
                                  metrics.get("refine_adapter")) if a)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=PathArgument(file_okay=False, path_type=Path))
def rescore(run_dirs):
    """Score the classifier each finished RUN_DIR returned with the validators added since it ran, without
    retraining (the run's own selection sample; its stored scores must come out the same): RUN_DIR/rescored.json,
    scores of the returned model only, which `compare` reads beside metrics.json. A RUN_DIR that cannot be
    rescored (unfinished, or its scores not reproduced) is reported and skipped; the exit status is then 2."""
    from da_toolkit.rescore import rescore as rescore_run

    refused = False
    for run_dir in run_dirs:
        try:
            click.echo(rescore_run(run_dir))
        except UserError as error:
            click.echo(f"error: {one_line(str(error))}", err=True)
            refused = True
    if refused:
        sys.exit(2)


def selection_record(metrics: dict, rescored: dict | None = None) -> dict:
    """A run's metrics.json (and rescored.json, `RunDir.read_rescored`) as `recommend` reads it: the method is
    the recipe's name (source_only for a run without adaptation, the no-harm baseline)."""
    plain = (metrics["pixel_adapter"] is None and metrics["feature_adapter"] == "source_only"
             and metrics.get("refine_adapter") is None)
    return {"task": metrics["task"], "method": "source_only" if plain else metrics["recipe"], "seed": metrics["seed"],
            "collapsed": metrics.get("collapse", {}).get("collapsed"), "target_accuracy": metrics["target_accuracy"],
            "wall_time_s": metrics.get("wall_time_s"), "model_selection": metrics["model_selection"],
            "rescored": rescored}


if __name__ == "__main__":
    main()

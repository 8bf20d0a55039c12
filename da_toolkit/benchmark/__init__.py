"""`da-toolkit compare`: run a grid of tasks × methods × seeds (× k labeled target images per class)
and write an honest comparison.

A benchmark file (YAML, see benchmarks/README.md) names tasks, methods, seeds, overrides and
profiles. Each *cell* (task, method, seed[, k]) is an ordinary run directory

    <bench_dir>/runs/<task>/<method>[_k<k>]/seed<s>/

made by ``da-toolkit run recipes/<task>_<method>.yaml <overrides> seed=<s> -o <dir> -q`` in a
process of its own, ``--jobs`` at a time. A re-run skips finished cells (metrics.json), resumes
interrupted ones (recipe.yaml without metrics.json) and retries failed ones; a failing cell is
reported and the others go on.

Pixel once, features many: cells that would train the same pixel stage share one translator
(see grid.py).

Sweeps: a method's hyper-parameter configurations, sampled from a search space the file declares, are
cells of their own, <method>@<i> (see sweep.py); the recommendation picks a method and its configuration.

Results go to <bench_dir>/results.{md,csv,json}, results.png (bar chart) and, with a k axis,
learning_curve.png.

With ``--executor slurm`` each cell is a Slurm job submitted through submitit instead (cluster.py).

One module per job: spec (the benchmark file), sweep (search spaces and their configurations), grid
(cells and translator sharing), scheduler (processes), cluster (Slurm jobs), published (reference
numbers), report (tables and plots), command (compare itself);
``python -m da_toolkit.benchmark`` (__main__.py) is the entry point of a cell process.
"""
from __future__ import annotations

import importlib

# each public name and the module that defines it, imported on first use (PEP 562): a cell process
# imports `scheduler` alone to die with its launcher, without torch and the adapters behind `grid`
_HOME = {"compare": "command",
         **dict.fromkeys(["Cell", "expand", "pixel_signature", "share_translators"], "grid"),
         **dict.fromkeys(["Published", "PublishedNumber", "load_published", "published_text"], "published"),
         **dict.fromkeys(["cell_rows", "summarize", "write_results"], "report"),
         **dict.fromkeys(["Outcome", "die_with_launcher", "launch_cell", "run_cells"], "scheduler"),
         **dict.fromkeys(["Benchmark", "Profile", "choose_profile", "load_benchmark"], "spec")}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])

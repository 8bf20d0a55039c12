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

from da_toolkit.benchmark.command import compare
from da_toolkit.benchmark.grid import Cell, expand, pixel_signature, share_translators
from da_toolkit.benchmark.published import Published, PublishedNumber, load_published, published_text
from da_toolkit.benchmark.report import cell_rows, summarize, write_results
from da_toolkit.benchmark.scheduler import Outcome, die_with_launcher, launch_cell, run_cells
from da_toolkit.benchmark.spec import Benchmark, Profile, choose_profile, load_benchmark

__all__ = ["Benchmark", "Cell", "Outcome", "Profile", "Published", "PublishedNumber", "cell_rows", "choose_profile",
           "compare", "die_with_launcher", "expand", "launch_cell", "load_benchmark", "load_published",
           "pixel_signature", "published_text", "run_cells", "share_translators", "summarize", "write_results"]

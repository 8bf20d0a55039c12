"""`da-toolkit` with the test suite's toy domains registered, for tests that start the command in other
processes (e.g. under torchrun): ``python tests/toy_cli.py run RECIPE ...``.

With ``TOY_STOP_AT=<stage>:<iteration>`` in the environment, every process stops the run (as a first
Ctrl-C would: `Interrupted`, exit status 130) right after the checkpoint of that stage at that iteration.
"""
import os

import conftest  # noqa: F401 - registers the toy domains
from da_toolkit.cli import main
from da_toolkit.training import loop

if os.environ.get("TOY_STOP_AT"):
    stop_stage, stop_iteration = os.environ["TOY_STOP_AT"].split(":")
    save_stage = loop.save_stage

    def save_and_stop(ctx, stage, iteration, state, wall_time):
        save_stage(ctx, stage, iteration, state, wall_time)
        if (stage, iteration) == (stop_stage, int(stop_iteration)):
            raise loop.Interrupted(f"{stage} stopped at iteration {iteration} (TOY_STOP_AT)")

    loop.save_stage = save_and_stop

main(prog_name="da-toolkit")

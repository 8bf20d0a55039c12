"""Slow (`make test-slow`): every registered method learns the toy shift well above chance.

Parameterised over the adapter registry like the resume test, so a new method is covered without
a new test. The threshold is a range on purpose: how far above chance a method gets on the toy
shift in a short budget is not knowable in advance; chance is 0.1. (Source accuracy is not checked: target_only
never sees the source, and ADDA's classifier carries the target encoder.)
"""
from __future__ import annotations

import pytest

from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from conftest import toy_recipe_dict
from test_resume import NEEDS_LABELS, SMALL, options_for, registered

ITERATIONS = 150
# the options that set the lengths of a method's own stages (SMALL shortens them for the resume test)
STAGE_ITERATIONS = {"adda": ("pretrain_iterations", "adapt_iterations"), "dirt_t": ("vada_iterations", "dirt_iterations")}


REFINES_ONLY = {"adabn"}  # re-estimates a trained classifier's batch norm: tests/test_baselines_mcd.py runs it after source_only


def cases():
    out = [(None, name) for name in registered("feature") if name not in REFINES_ONLY]
    return out + [(pixel, "source_only") for pixel in registered("pixel")]


@pytest.mark.slow
@pytest.mark.parametrize("case", cases(), ids=lambda c: "+".join(x for x in c if x))
def test_every_method_beats_chance_on_the_toy_shift(case, toy_source_run, tmp_path):
    pixel, feature = case
    options = options_for(feature, toy_source_run)
    options.update({key: ITERATIONS for key in STAGE_ITERATIONS.get(feature, ())})
    sections = {"feature": options, "train": {"iterations": ITERATIONS},
                "data": {"target_labels_per_class": 2 if feature in NEEDS_LABELS else 0}}
    if pixel is not None:
        sections["pixel"] = {"adapter": pixel, **SMALL.get(pixel, {}), "iterations": 50, "semantic_weight": 0.0}
    metrics = run(recipe_from_dict(toy_recipe_dict(**sections)), tmp_path / "run", progress=False)
    assert metrics["target_accuracy"] > 0.2  # at least twice chance

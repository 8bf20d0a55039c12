"""benchmarks/validator_robustness.py: the cases it pools from results.json cells (a sweep's configuration is a
method, a scarce-label k a task of its own), and the mean, worst and harmful counts of its summary."""
from __future__ import annotations

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "validator_robustness.py"


def cell(task, method, seed, accuracy, info_max, configuration=None, k=None, status="done"):
    candidate = {"stage": "feature", "iteration": 10, "scores": {"info_max": info_max, "class_ami": info_max}}
    return {"task": task, "method": method, "configuration": configuration or method, "seed": seed, "k": k,
            "status": status, "target_accuracy": accuracy, "collapsed": False,
            "model_selection": {"chosen": {"index": 0}, "candidates": [candidate]}}


def test_the_cases_and_their_summary_follow_the_recommendation_rule(tmp_path):
    script = runpy.run_path(str(SCRIPT))
    grid = tmp_path / "grid"
    grid.mkdir()
    cells = [cell("a2b", "source_only", s, 0.70, 1.0) for s in (0, 1)]
    cells += [cell("a2b", "dann", s, 0.80, 1.5, configuration="dann@1") for s in (0, 1)]  # the pick
    cells += [cell("a2b", "mcc", s, 0.90, 1.2) for s in (0, 1)]  # the best: regret 10 points
    cells += [cell("a2b", "mcc", 2, 0.10, 9.0, status="failed")]  # not finished: left out
    # k labeled target images: a task of its own; the pick 15 points below source-only (harmful)
    cells += [cell("b2a", "source_only", 0, 0.60, 1.0, k=5), cell("b2a", "mcc", 0, 0.45, 2.0, k=5)]
    (grid / "results.json").write_text(json.dumps({"cells": cells}))
    records = script["grid_records"](grid / "results.json")
    assert len(records) == 8 and {r["method"] for r in records} == {"source_only", "dann@1", "mcc"}
    assert {r["task"] for r in records} == {"a2b", "b2a k=5"}
    script["cases"].__globals__["RESULTS"] = tmp_path  # cases() reads every <grid>/results.json under RESULTS
    studied = script["cases"]()
    assert studied["grid"]["a2b"]["info_max"]["pick"] == "dann@1"
    assert studied["grid"]["a2b"]["info_max"]["regret"] == 10.0
    assert studied["grid"]["b2a k=5"]["info_max"]["regret"] == 15.0 and studied["grid"]["b2a k=5"]["info_max"]["harmful"]
    # ρ over the methods of a2b: scores rank source-only, mcc, dann@1, accuracies source-only, dann@1, mcc:
    # 1 − 6 · 2 / (3 · 8) = 0.5; b2a has two methods, no ρ. No run has seed agreement: the recommendation is
    # the fallback's, class_ami (here equal to info_max)
    row = (2, 12.5, 15.0, "grid/b2a k=5", 1, 0.5)
    assert script["summary"](studied) == [("info_max", *row), ("class_ami", *row), ("the recommendation", *row)]
    # a validator that scored one case only: the like-for-like means are over that case alone
    studied["grid"]["a2b"]["bnm"] = {"pick": "mcc", "regret": 0.0}
    assert script["common_means"](studied) == (1, {"info_max": 10.0, "class_ami": 10.0, "the recommendation": 10.0,
                                                   "bnm": 0.0})

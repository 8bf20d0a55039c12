"""`da-toolkit rescore RUN_DIR...`: score the classifier a finished run returned with the validators it lacks
(those added to validators.py since it ran), without retraining.

A run's metrics.json holds the scores of every candidate it scored (selection.py); a validator added later is
missing there, so a recommendation study over old runs cannot weigh it. Rescoring rebuilds the run's
selection sample as the run drew it (its recipe's data and seed, `hold_out_target_labels`, the seeded sample
of `Selection`), loads the returned classifier (classifier.pt, weights only, as `evaluate` does) and scores
it with `Selection.scores`, the code the run itself used. Before anything is written, every validator the run
did compute must come out equal (within `TOLERANCE`) to the run's stored score of its returned model: the
proof that the sample and the model are the run's. The added scores go to rescored.json (written atomically
through `RunDir`, under the run directory's write lock), which `recommend.returned_scores` merges.

A run made before runs stored their returned model's predictions of the agreement sample (the target images
every seed of a task predicts, `Selection.agreement_sample`) gets them in rescored.json too, for the
recommendation's seed agreement. They are scores of the returned model only: a run keeps no other candidate's weights, so the other
candidates (and a study's Spearman ρ and checkpoint columns over them) have no score of the added validators.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import da_toolkit
from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.context import Context, resolve_device
from da_toolkit.data import build_domains
from da_toolkit.errors import UserError
from da_toolkit.pipeline import load_run
from da_toolkit.rundir import RunDir, lock_run_dir, read_classifier_classes
from da_toolkit.selection import Selection, file_fingerprint, hold_out_target_labels

# stored scores are rounded to 6 decimals; recomputing on another thread count or device moves the last digits
TOLERANCE = 1e-4
NOTE = ("scores of the model this run returned (its chosen candidate) only, added after the run by "
        "`da-toolkit rescore` for validators the run did not compute; the other candidates have none")


def rescore(run_dir: Path) -> str:
    """Add the missing validators' scores of `run_dir`'s returned model to its rescored.json; one line saying
    what was done. UserError when the run is not finished or a validator the run computed comes out different."""
    with lock_run_dir(run_dir):  # one writer: not while the run (or another rescore) writes there
        return _rescore(RunDir(run_dir))


def _rescore(rundir: RunDir) -> str:
    began = time.perf_counter()
    chosen, stored = returned_candidate(rundir)
    recipe, classifier = load_run(rundir.path)
    device = resolve_device("auto")
    # a source-free run (no data.source): the target is matched to the class names its classifier.pt records
    source_classes = read_classifier_classes(rundir.classifier_file)[1] if recipe.data.source is None else None
    domains = build_domains(recipe.data, recipe.seed, workers=recipe.train.workers, source_classes=source_classes)
    target, held_out = domains.target, None
    if recipe.selection.target_label_folds:
        target, held_out = hold_out_target_labels(target, recipe.selection.target_label_folds, recipe.seed)
    # main=False: this context writes nothing in the run directory (no log file, no TensorBoard)
    ctx = Context(run_dir=rundir.path, device=device, seed=recipe.seed, progress=False, main=False)
    sample = Selection(recipe.selection, domains.source_test or domains.source, target, None, held_out, ctx,
                       recipe.train.eval_batch_size, starts_from=starting_fingerprint(recipe))
    classifier = classifier.to(device).eval()
    scores = sample.scores(classifier)
    different = {name: (stored[name], scores[name]) for name in stored.keys() & scores.keys()
                 if not same_score(stored[name], scores[name])}
    if different:
        raise UserError(f"{rundir}: the rescored model does not reproduce the run's own scores ("
                        + ", ".join(f"{name}: stored {a}, now {b}" for name, (a, b) in sorted(different.items()))
                        + "): not the run's sample or model; nothing written")
    added = {name: value for name, value in scores.items() if name not in stored}
    metrics = rundir.read_metrics()
    agreement = None if metrics["model_selection"].get("agreement_sample") else sample.agreement(classifier)
    if not added and agreement is None:
        return f"{rundir}: nothing to add (the run computed every validator and its agreement sample)"
    what = sorted(added) + (["the agreement sample's predictions"] if agreement is not None else [])
    if already_rescored(rundir.read_rescored(), added, agreement):
        return f"{rundir}: nothing new (its rescored.json already holds {', '.join(what)})"
    rundir.write_rescored({
        "note": NOTE,
        "model": chosen,
        "scores": added,
        **({"agreement_sample": agreement} if agreement is not None else {}),
        "checked": {name: {"stored": stored[name], "rescored": scores[name]}
                    for name in sorted(stored.keys() & scores.keys())},
        "device": str(device), "da_toolkit": da_toolkit.__version__,
        "wall_time_s": round(time.perf_counter() - began, 2)})
    return f"{rundir}: added {', '.join(what)}; {len(stored.keys() & scores.keys())} stored scores reproduced"


def already_rescored(previous: dict | None, added: dict[str, float], agreement: dict | None) -> bool:
    """Whether an earlier rescore wrote exactly these added scores and agreement sample (then nothing is
    rewritten and nothing said to be added)."""
    try:
        held = {name: score_value(value) for name, value in previous["scores"].items()}
    except (TypeError, KeyError, AttributeError, ValueError):  # none, or not one rescore wrote: write it anew
        return False
    return (previous.get("agreement_sample") == agreement and held.keys() == added.keys()
            and all(same_score(held[name], value) for name, value in added.items()))


def starting_fingerprint(recipe) -> str | None:
    """`file_fingerprint` of the trained classifier the run started from (SHOT's source checkpoint), as the run
    itself records it with the agreement sample; None when it started from none or the file is gone since."""
    feature = ADAPTERS.get(recipe.feature.adapter)(recipe.feature.options, AdapterSetup.from_recipe(recipe))
    try:
        return file_fingerprint(feature.starting_classifier())
    except UserError:
        return None


def returned_candidate(rundir: RunDir) -> tuple[dict, dict[str, float]]:
    """(metrics.json's `model_selection.chosen`, the returned candidate's {validator: score}); a UserError when
    the run scored no candidate or the entry is not one da-toolkit wrote."""
    selection = rundir.read_metrics().get("model_selection")
    if not isinstance(selection, dict) or not selection.get("candidates"):
        raise UserError(f"{rundir}: its metrics.json holds no validator scores (a run from before model "
                        f"selection); rerun it instead")
    try:
        chosen, candidates = selection["chosen"], selection["candidates"]
        index = chosen["index"]
        if not isinstance(index, int) or not 0 <= index < len(candidates):
            raise IndexError(index)
        stored = {str(name): score_value(value) for name, value in candidates[index]["scores"].items()}
        chosen = {"stage": chosen["stage"], "iteration": chosen["iteration"], "index": index}
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise UserError(f"{rundir.metrics_file}: its model_selection entry is not one da-toolkit wrote (no chosen "
                        f"candidate with scores); rerun the run") from None
    return chosen, stored


def score_value(value) -> float:
    """A stored score as a float: null is NaN (a validator with nothing to score, written as strict JSON)."""
    return math.nan if value is None else float(value)


def same_score(stored: float, rescored: float) -> bool:
    """Equal within `TOLERANCE`; a NaN (a validator with nothing to score, e.g. fewer images than classes) only
    equals a NaN."""
    if math.isnan(stored) or math.isnan(rescored):
        return math.isnan(stored) and math.isnan(rescored)
    return math.isclose(stored, rescored, rel_tol=0, abs_tol=TOLERANCE)

"""Which method, and did adaptation help? A recommendation from the validators, without target labels.

Input: one record per finished run {task, method, seed, collapsed, target_accuracy, model_selection}
(a benchmark's cells, or the run directories given to `da-toolkit show`). For every task and
validator V (validators.py):

* each run's score is V of the model the run returned (its chosen candidate; for a validator added
  after the run, its `rescored.json`: `da-toolkit rescore`); a method's score is the mean over its seeds;
* seed agreement (`seed_agreement`) is not a score of one model either but of a method: the share of a fixed
  sample of target training images (the same images in every seed, `Selection.agreement_sample`) on which
  two seeds' returned models predict the same class, the mean over pairs of seeds (Jiang et al. 2022 found
  the disagreement of two independently trained runs to track their test error; Baek et al. 2022 that
  agreement tracks accuracy under distribution shift); each run of the method gets it as its score; a
  method with fewer than two such seeds has none, nor one whose seeds all started from one trained
  classifier (a pair of them is not independent: SHOT's seeds from one source checkpoint agree by design);
* the ensemble (validators.py `rank_ensemble`) is not a score of one model: it ranks the returned
  models of the task's runs by each of its members and scores each run by its mean rank (the runs
  lacking a member are left out); a candidate's ensemble score ranks it among the candidates compared
  (all of the task's for Spearman's ρ, those of its run for the checkpoint choice);
* methods with a seed the collapse alarm flagged (no target label read) are not recommended;
* the pick is the method with the highest score; **no harm**: an adapted method is recommended only
  when it beats source-only's score in every seed both have (paired by seed), else source-only;
* with target test accuracies at hand (a benchmark's hindsight, never an input to the pick): the
  true best method, the regret (best mean accuracy − the pick's, in points), whether the pick is
  harmful (more than 5 points below source-only), the Spearman rank correlation between V and target
  accuracy over every candidate of every run of the task (needs `selection.record_target_test`), and
  the mean change in target accuracy from choosing each run's checkpoint by V instead of the last one.

The recommendation (`default_validator`, per task): seed agreement where every method has it, else
`FALLBACK_VALIDATOR`, class_ami. class_ami was the default alone from 2026-12-04 (the lowest mean and worst
regret over every committed grid then); SHOT trains its features towards the clusters of its own predictions,
so every SHOT model scores class_ami ≈ 1 and it picked a failed SHOT seed (regret 11 points,
benchmarks/results/mcc-shot/); no method's objective is the agreement of independent runs. Seed agreement became
the default on 2026-12-05 from the 19-method grid of benchmarks/results/seed-agreement/ (mean regret 0.16, class_ami
3.63; chosen with that hindsight table in view, as its README discloses); with seven methods added after the rule
was committed, 1.27 (class_ami 3.63, bnm 0.87). Seeds that started from one trained classifier (SHOT's source
checkpoint) are not independent and get none.
"""
from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

from da_toolkit.validators import ENSEMBLE, ENSEMBLE_DESCRIPTION, ENSEMBLE_MEMBERS, VALIDATORS, rank_ensemble

BASELINE = "source_only"
HARM_POINTS = 5.0  # a pick more than this many points below source-only is harmful
SEED_AGREEMENT = "seed_agreement"
DEFAULT_VALIDATOR = SEED_AGREEMENT
FALLBACK_VALIDATOR = "class_ami"  # for a task where some method lacks seed agreement (`default_validator`)
SEED_AGREEMENT_DESCRIPTION = ("agreement of the seeds' predictions on one fixed sample of target images: a score "
                              "of the method, not of one model (Jiang et al. 2022; Baek et al. 2022)")
DESCRIPTIONS = {**VALIDATORS, SEED_AGREEMENT: SEED_AGREEMENT_DESCRIPTION,
                ENSEMBLE: ENSEMBLE_DESCRIPTION}  # what the study evaluates


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else None


def returned_scores(record: dict) -> dict[str, float]:
    """The validator scores of the model a run returned (its chosen candidate), with those `da-toolkit rescore`
    added after the run (`record["rescored"]`, the run's rescored.json: the returned model's only) for the
    validators the run did not compute."""
    selection = record.get("model_selection") or {}
    candidates = selection.get("candidates") or []
    if not candidates:
        return {}
    rescored = (record.get("rescored") or {}).get("scores", {})
    agreement = {SEED_AGREEMENT: record[SEED_AGREEMENT]} if record.get(SEED_AGREEMENT) is not None else {}
    return {**rescored, **candidates[selection["chosen"]["index"]]["scores"], **agreement}


def agreement(predictions: list[list[int]], starts: list[str | None] | None = None) -> float | None:
    """The mean over pairs of seeds of the share of images two seeds' models give the same class; a pair whose
    runs started from one trained classifier (`starts`: each seed's `starts_from`, e.g. SHOT's source checkpoint)
    is left out, as they are not independent runs; None when no pair is left."""
    starts = starts or [None] * len(predictions)
    pairs = [(x, y) for (x, a), (y, b) in itertools.combinations(zip(predictions, starts), 2) if a is None or a != b]
    if not pairs:
        return None
    return statistics.fmean(sum(a == b for a, b in zip(x, y)) / len(x) for x, y in pairs)


def with_seed_agreement(records: list[dict]) -> list[dict]:
    """`records`, each run of a (task, method) with two seeds or more that predicted the same sample of target
    images (metrics.json `model_selection.agreement_sample`, or rescored.json's for a run from before: its seed
    and size, and the target data's fingerprint where the record has one) carrying the method's `seed_agreement`
    (`agreement`: none for seeds that all started from one trained classifier)."""
    groups: dict[tuple, list[int]] = {}
    samples = {}
    for i, record in enumerate(records):
        sample = ((record.get("model_selection") or {}).get("agreement_sample")
                  or (record.get("rescored") or {}).get("agreement_sample"))  # a run from before: `rescore` added it
        if sample and "predictions" in sample:  # results.json keeps the agreement, not the predictions
            samples[i] = sample
            fingerprint = (record.get("data_fingerprints") or {}).get("target")
            groups.setdefault((record["task"], record["method"], sample["seed"], sample["images"], fingerprint),
                              []).append(i)
    out = list(records)
    for members in groups.values():
        value = agreement([samples[i]["predictions"] for i in members], [samples[i].get("starts_from") for i in members])
        if value is None:
            continue
        for i in members:
            out[i] = {**records[i], SEED_AGREEMENT: round(value, 6)}
    return out


def default_validator(records: list[dict]) -> str:
    """The validator the recommendation trusts for one task's `records` (after `with_seed_agreement`): seed
    agreement when every method without a collapse alarm has it (two seeds or more, not started from one
    trained classifier), else `FALLBACK_VALIDATOR` (e.g. a comparison with one seed of some method)."""
    flagged = {r["method"] for r in records if r.get("collapsed")}
    methods = {r["method"] for r in records} - flagged
    has = {r["method"] for r in records if r.get(SEED_AGREEMENT) is not None}
    return SEED_AGREEMENT if methods and methods <= has else FALLBACK_VALIDATOR


def scores_of(models: list[dict[str, float]], validator: str) -> list[float | None]:
    """Each model's score by `validator` (None: not scored), from each model's {validator: score}. The
    ensemble ranks the models that have every member among themselves (`rank_ensemble`); the others: None."""
    if validator != ENSEMBLE:
        return [scores.get(validator) for scores in models]
    complete = [i for i, scores in enumerate(models) if all(scores.get(m) is not None for m in ENSEMBLE_MEMBERS)]
    out: list[float | None] = [None] * len(models)
    for i, rank in zip(complete, rank_ensemble([models[i] for i in complete], ENSEMBLE_MEMBERS)):
        out[i] = rank
    return out


def best_candidate(candidates: list[dict], validator: str) -> dict | None:
    """The candidate with the highest score of `validator` (ties: the later one), as `Selection` chooses; None
    when no candidate has the score (a validator added after the run: `rescore` scores the returned model only)."""
    best, best_score = None, None
    for candidate, score in zip(candidates, scores_of([c["scores"] for c in candidates], validator)):
        if score is not None and not math.isnan(score) and (best is None or score >= best_score):
            best, best_score = candidate, score
    return best


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (scipy.stats.spearmanr, average ranks for ties); None below 3 points
    or when one side is constant."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and not math.isnan(a)]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def without_agreement_predictions(records: list[dict]) -> list[dict]:
    """`records` as results.json keeps them: each run's `seed_agreement` (from `with_seed_agreement`) in place
    of its predictions of the agreement sample (2,000 numbers a run), from which it is computed; the sample's
    seed and size stay. `with_seed_agreement` keeps a stored value."""
    out = []
    for record in with_seed_agreement(records):
        record = dict(record)
        for key in ("model_selection", "rescored"):
            part = record.get(key) or {}
            if "predictions" in (part.get("agreement_sample") or {}):
                sample = {k: v for k, v in part["agreement_sample"].items() if k != "predictions"}
                record[key] = {**part, "agreement_sample": sample}
        out.append(record)
    return out


def validators_of(records: list[dict]) -> list[str]:
    """The validators some run was scored with, and the ensemble when all its members were."""
    seen = {name for record in records for name in returned_scores(record)}
    return ([name for name in (*VALIDATORS, SEED_AGREEMENT) if name in seen]
            + ([ENSEMBLE] if set(ENSEMBLE_MEMBERS) <= seen else []))


def pick(records: list[dict], validator: str) -> tuple[str | None, str]:
    """(recommended method, why) among the runs of one task, by `validator`; reads no target label."""
    by_method: dict[str, dict[int, float]] = {}
    flagged = set()
    for record, score in zip(records, scores_of([returned_scores(r) for r in records], validator)):
        if record.get("collapsed"):
            flagged.add(record["method"])
        if score is not None and not math.isnan(score):
            by_method.setdefault(record["method"], {})[record["seed"]] = score
    eligible = {m: seeds for m, seeds in by_method.items() if m not in flagged}
    if not eligible:
        return None, "no run has this validator's score, or every method has a seed with a collapse alarm"
    best = max(eligible, key=lambda m: (_mean(list(eligible[m].values())), m == BASELINE))
    if best == BASELINE or BASELINE not in eligible:
        return best, "highest score" + ("" if BASELINE in eligible else " (no source-only run to compare with)")
    baseline = eligible[BASELINE]
    shared = [seed for seed in eligible[best] if seed in baseline]
    if shared and all(eligible[best][seed] > baseline[seed] for seed in shared):
        return best, f"highest score, above source-only's in all {len(shared)} seed(s)"
    return BASELINE, f"no harm: {best} scored highest but not above source-only in every seed"


def task_study(records: list[dict], validator: str) -> dict:
    """The recommendation of one task by `validator`, with the hindsight figures when accuracies are known."""
    method, why = pick(records, validator)
    accuracy: dict[str, float] = {}
    for name in {r["method"] for r in records}:
        value = _mean([r["target_accuracy"] for r in records if r["method"] == name])
        if value is not None:
            accuracy[name] = 100 * value
    out = {"validator": validator, "pick": method, "why": why}
    if accuracy and method in accuracy:
        best = max(accuracy, key=accuracy.get)
        out.update(best=best, best_accuracy=round(accuracy[best], 2), pick_accuracy=round(accuracy[method], 2),
                   regret=round(accuracy[best] - accuracy[method], 2))
        if BASELINE in accuracy:
            out["harmful"] = accuracy[method] < accuracy[BASELINE] - HARM_POINTS
    by_method: dict[str, list[float]] = {}
    for record, score in zip(records, scores_of([returned_scores(r) for r in records], validator)):
        if score is not None and not math.isnan(score) and record["method"] in accuracy:
            by_method.setdefault(record["method"], []).append(score)
    rho = spearman([statistics.fmean(v) for v in by_method.values()], [accuracy[m] for m in by_method])
    if rho is not None:
        out["method_spearman"] = rho
    scored = [c for r in records for c in (r.get("model_selection") or {}).get("candidates", [])
              if "target_test_accuracy" in c]
    if scored:
        out["spearman"] = spearman(scores_of([c["scores"] for c in scored], validator),
                                   [c["target_test_accuracy"] for c in scored])
        changes = []
        for r in records:
            candidates = (r.get("model_selection") or {}).get("candidates", [])
            if candidates and all("target_test_accuracy" in c for c in candidates):
                chosen = best_candidate(candidates, validator)
                if chosen is not None:
                    changes.append(100 * (chosen["target_test_accuracy"] - candidates[-1]["target_test_accuracy"]))
        if changes:
            out["checkpoint_change"] = round(statistics.fmean(changes), 2)
    return out


def study(records: list[dict]) -> dict:
    """{task: {validator: task_study}}; per task, the validator of the recommendation (`default_validator`);
    per validator, the means over tasks, and those of the recommendation (`default`: each task's default's)."""
    records = with_seed_agreement(records)
    tasks = sorted({r["task"] for r in records}, key=[r["task"] for r in records].index)
    validators = validators_of(records)
    per_task = {task: {v: task_study([r for r in records if r["task"] == task], v) for v in validators}
                for task in tasks}
    defaults = {task: default_validator([r for r in records if r["task"] == task]) for task in tasks}

    def means(entries: list[dict]) -> dict:
        return {"mean_regret": _round(_mean([e.get("regret") for e in entries])),
                "harmful_picks": sum(bool(e.get("harmful")) for e in entries),
                "mean_spearman": _round(_mean([e.get("spearman") for e in entries]), 3),
                "mean_method_spearman": _round(_mean([e.get("method_spearman") for e in entries]), 3),
                "mean_checkpoint_change": _round(_mean([e.get("checkpoint_change") for e in entries]))}

    overall = {v: means([per_task[t][v] for t in tasks]) for v in validators}
    default = means([per_task[t][defaults[t]] for t in tasks if defaults[t] in per_task[t]])
    return {"defaults": defaults, "tasks": per_task, "overall": overall, "default": default, "cost": cost(records)}


def cost(records: list[dict]) -> dict | None:
    """Seconds the validators (and the study's target test scoring) took per run, and what they add to the
    run's wall time without them (v / (wall time − v − study)): means over the runs that report both."""
    timed = [(r["model_selection"]["wall_time_s"], r["wall_time_s"]) for r in records
             if (r.get("model_selection") or {}).get("wall_time_s") and r.get("wall_time_s")]
    if not timed:
        return None
    validators = [seconds["validators"] for seconds, _ in timed]
    study_only = [seconds.get("target_test_study", 0.0) for seconds, _ in timed]
    shares = [v / (total - t - v) for v, t, (_, total) in zip(validators, study_only, timed)]
    return {"runs": len(timed), "validators_s": round(statistics.fmean(validators), 2),
            "target_test_study_s": round(statistics.fmean(study_only), 2),
            "validators_share": round(statistics.fmean(shares), 4), "validators_share_max": round(max(shares), 4)}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _number(value, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def one_line_picks(records: list[dict], result: dict, names: dict[str, str] | None = None) -> list[str]:
    """What a user acts on: one line per task of `study(records)` (`result`), the method the default validator
    picks, its mean score beside source-only's, the methods left out for a collapse alarm. It reads the pick
    and the runs' validator scores, never a target accuracy (the hindsight is `markdown`'s). `names`: how to
    print a method (e.g. `show`'s "quickstart (adda)"), else its name."""
    records = with_seed_agreement(records)

    def name(method: str) -> str:
        return names.get(method, method) if names else method

    lines = []
    for task, entries in result["tasks"].items():
        validator = result["defaults"][task]
        reads = ("only the held-out labeled target images read" if validator == "target_label_accuracy"
                 else "no target label read")
        runs = [r for r in records if r["task"] == task]
        collapsed = list(dict.fromkeys(r["method"] for r in runs if r.get("collapsed")))
        scores = {m: _mean([returned_scores(r).get(validator) for r in runs if r["method"] == m])
                  for m in dict.fromkeys(r["method"] for r in runs) if m not in collapsed}
        scores = {m: s for m, s in scores.items() if s is not None}
        entry = entries.get(validator)
        chosen = entry and entry["pick"]
        rivals = {m: s for m, s in scores.items() if m not in (chosen, BASELINE)}
        rival = max(rivals, key=rivals.get) if rivals else None
        if not chosen:
            text = f"no recommendation — {entry['why'] if entry else f'no run has a {validator} score'}"
        elif chosen != BASELINE and BASELINE not in scores:
            text = (f"use {name(chosen)} — {validator} {scores[chosen]:.2f}, the highest of {len(scores)} method(s); "
                    f"no source-only run to check that adaptation helped")
        elif chosen != BASELINE:
            ours, theirs = _distinct(scores[chosen], scores[BASELINE])
            seeds = [r["seed"] for r in runs if r["method"] == chosen]
            shared = set(seeds) & {r["seed"] for r in runs if r["method"] == BASELINE}
            text = f"use {name(chosen)} — {validator} {ours} vs source-only {theirs}" + (
                f" (over its {len(seeds)} seeds)" if validator == SEED_AGREEMENT else
                f" (mean of {len(seeds)} seeds, higher in each of the {len(shared)} seeds both ran)"
                if len(seeds) > 1 else "")
        elif rival is None:
            text = "keep source-only (no adaptation) — no adapted run to choose" + (
                " without a collapse alarm" if collapsed else "")
        else:
            theirs, ours = _distinct(rivals[rival], scores[BASELINE])
            text = "keep source-only (no adaptation) — " + (
                f"no harm: {name(rival)} has the higher mean {validator} ({theirs} vs source-only {ours}) but not "
                f"in every seed" if rivals[rival] > scores[BASELINE] else
                f"no adapted method scores higher on {validator} (best: {name(rival)} {theirs} vs source-only {ours})")
        if collapsed:
            text += f"; not considered, collapse alarm: {', '.join(name(m) for m in collapsed)}"
        lines.append(f"{task}: {text}; {reads}")
    return lines


def picked_by(result: dict) -> str:
    """The validator(s) of the one-line picks, for a line under them."""
    used = list(dict.fromkeys(result["defaults"].values()))
    text = "picked by " + "; ".join(f"{v}, higher is better: {DESCRIPTIONS.get(v, v)}" for v in used)
    if FALLBACK_VALIDATOR in used:
        text += (f"; {FALLBACK_VALIDATOR}{' on the tasks' if len(used) > 1 else ''} where some method has no "
                 f"{DEFAULT_VALIDATOR}, the default (run every method with two seeds or more, not started from one "
                 f"trained classifier)")
    return text


def _distinct(a: float, b: float) -> tuple[str, str]:
    """a and b printed with the fewest decimals (2 to 6) that tell them apart."""
    digits = next((d for d in range(2, 7) if f"{a:.{d}f}" != f"{b:.{d}f}"), 6)
    return f"{a:.{digits}f}", f"{b:.{digits}f}"


def markdown(result: dict) -> list[str]:
    """The recommendation section of results.md (and of `da-toolkit show`)."""
    defaults = result["defaults"]
    lines = ["## Recommendation without target labels", "",
             f"Per task, the method each validator picks (the mean over seeds of its score of the model each run "
             f"returned; methods with a collapse alarm excluded; no harm: an adapted method only when it beats "
             f"source-only's score in every seed). **Recommended** = the default: `{DEFAULT_VALIDATOR}` where "
             f"every method has it (two seeds or more), else `{FALLBACK_VALIDATOR}`. The columns "
             f"after the pick are **hindsight** from target test labels, the benchmark's judgement of the "
             f"validators, never an input to the pick: the true best method, the regret (points of target "
             f"accuracy lost by the pick), Spearman's ρ between the validator and target accuracy over the "
             f"methods (each method's mean over its seeds) and over every checkpoint of every run of the task, "
             f"and the mean change from choosing each run's checkpoint by the validator instead of its last "
             f"iterate.", ""]
    for task, entries in result["tasks"].items():
        if defaults[task] in entries:
            e = entries[defaults[task]]
            lines.append(f"* **{task}**: recommended **{e['pick'] or 'none'}** ({defaults[task]}: {e['why']})")
    lines.append("")
    rows = []
    for task, entries in result["tasks"].items():
        for validator, e in entries.items():
            name = f"**{validator}** (default)" if validator == defaults[task] else validator
            harmful = " ⚠ harmful" if e.get("harmful") else ""
            rows.append([task, name, f"{e['pick'] or '–'}{harmful}", e.get("best") or "–",
                         _number(e.get("regret")), _number(e.get("method_spearman"), 3), _number(e.get("spearman"), 3),
                         _number(e.get("checkpoint_change"), sign=True), e["why"]])
    lines += markdown_table(["task", "validator", "pick", "best (hindsight)", "regret (pts)", "ρ over methods",
                             "ρ over checkpoints", "checkpoint vs last (pts)", "why"], rows)
    lines += ["", "Over the tasks:", ""]

    def means(o: dict) -> list[str]:
        return [_number(o["mean_regret"]), str(o["harmful_picks"]), _number(o["mean_method_spearman"], 3),
                _number(o["mean_spearman"], 3), _number(o["mean_checkpoint_change"], sign=True)]

    lines += markdown_table(["validator", "mean regret (pts)", "harmful picks (> 5 pts below source-only)",
                             "mean ρ over methods", "mean ρ over checkpoints", "mean checkpoint vs last (pts)",
                             "what it reads"],
                            [[v, *means(o), DESCRIPTIONS[v]] for v, o in result["overall"].items()]
                            + [[f"**the recommendation** ({', '.join(dict.fromkeys(defaults.values()))})",
                                *means(result["default"]), "each task's default validator"]])
    spent = result.get("cost")
    if spent:
        study = (f"; the study's target test scoring took a further {spent['target_test_study_s']:.1f} s per run "
                 f"(benchmarks only)" if spent["target_test_study_s"] else "")
        lines += ["", f"Cost: the validators took {spent['validators_s']:.1f} s per run on average, adding "
                      f"{100 * spent['validators_share']:.1f}% to a run's wall time without them (at most "
                      f"{100 * spent['validators_share_max']:.1f}%){study}; {spent['runs']} runs."]
    return lines


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def plot(path: Path, records: list[dict], task: str) -> bool:
    """validator score (x) vs target test accuracy (y), one point per checkpoint of every run of `task`,
    coloured by method (every configuration of a swept method in the method's colour), the returned models ringed; one panel per validator. False when no candidate
    has a recorded target test accuracy."""
    runs = [r for r in records if r["task"] == task]
    validators = [v for v in validators_of(runs) if v != ENSEMBLE]  # a rank among models, not a score
    if not any("target_test_accuracy" in c for r in runs for c in (r.get("model_selection") or {}).get("candidates", [])):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = {r["method"]: r.get("base_method", r["method"]) for r in runs}
    methods = list(dict.fromkeys(family.values()))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    figure, axes = plt.subplots(1, len(validators), figsize=(3.2 * len(validators), 3.2), squeeze=False)
    for axis, validator in zip(axes[0], validators):
        for run in runs:
            selection = run.get("model_selection") or {}
            candidates = [c for c in selection.get("candidates", []) if "target_test_accuracy" in c]
            x = [c["scores"].get(validator) for c in candidates]
            y = [100 * c["target_test_accuracy"] for c in candidates]
            axis.scatter(x, y, s=8, color=colours[family[run["method"]]], alpha=0.6,
                         label=family[run["method"]] if run["seed"] == min(r["seed"] for r in runs) else None)
            chosen = selection["candidates"][selection["chosen"]["index"]]
            axis.scatter([chosen["scores"].get(validator)], [100 * run["target_accuracy"]], s=40,
                         facecolors="none", edgecolors=colours[family[run["method"]]])
        rho = task_study(runs, validator).get("spearman")
        axis.set_title(f"{validator} (ρ = {_number(rho, 2)})", fontsize=9)
        axis.set_xlabel("score (higher = predicted better)", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0][0].set_ylabel(f"{task}: target test accuracy (%)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    figure.legend(unique.values(), unique.keys(), loc="lower center", ncol=min(len(unique), 9), fontsize=7)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# ---------------------------------------------------------------------------------------------- sweeps
# A benchmark with sweeps gives records whose `method` is a configuration (dann, or dann@3 for configuration 3
# of DANN's sweep), with `base_method` and `hyper_parameters`: configurations are candidates like methods, so
# `study` picks a method and its configuration, and its regret is against the best configuration of any method.


def configuration_study(records: list[dict], result: dict) -> dict:
    """{task: {validator: ...}}: the hyper-parameters of `study`'s pick and of the hindsight best configuration,
    and what the same validator picks among the recipes' own values only (each method's unswept cell), with
    the sweep's gain over it in points (hindsight)."""
    hyper_parameters = {r["method"]: r.get("hyper_parameters") or {} for r in records}
    out = {}
    for task, entries in result["tasks"].items():
        runs = [r for r in records if r["task"] == task]
        unswept = [r for r in runs if r["method"] == r.get("base_method", r["method"])]
        out[task] = {}
        for validator, entry in entries.items():
            unswept_pick, _ = pick(unswept, validator)
            pick_accuracy, unswept_accuracy = _accuracy(runs, entry["pick"]), _accuracy(runs, unswept_pick)
            out[task][validator] = {
                "pick": entry["pick"], "pick_hyper_parameters": hyper_parameters.get(entry["pick"]),
                "pick_accuracy": _round(pick_accuracy), "best": entry.get("best"),
                "best_hyper_parameters": hyper_parameters.get(entry.get("best")),
                "best_accuracy": entry.get("best_accuracy"), "regret": entry.get("regret"),
                "unswept_pick": unswept_pick, "unswept_pick_accuracy": _round(unswept_accuracy),
                "sweep_gain": None if pick_accuracy is None or unswept_accuracy is None
                else round(pick_accuracy - unswept_accuracy, 2)}
    return out


def _accuracy(runs: list[dict], method: str | None) -> float | None:
    """The mean target accuracy (%) of `method`'s runs; None when unknown."""
    value = _mean([r["target_accuracy"] for r in runs
                   if r["method"] == method and r.get("target_accuracy") is not None])
    return None if value is None else 100 * value


def configuration_markdown(configurations: dict, defaults: dict[str, str]) -> list[str]:
    """The sweep section of results.md: per task, the configuration its default validator (`defaults`, `study`'s)
    picks and the hindsight best."""
    from da_toolkit.benchmark.sweep import hyper_parameter_text

    def text(hyper_parameters: dict | None) -> str:
        return "–" if hyper_parameters is None else hyper_parameter_text(hyper_parameters) or "the recipe's values"

    rows, gains = [], []
    for task, entries in configurations.items():
        e = entries.get(defaults[task])
        if e is None:
            continue
        gains += [e["sweep_gain"]] if e["sweep_gain"] is not None else []
        rows.append([task, defaults[task], e["pick"] or "–", text(e["pick_hyper_parameters"]), _number(e["pick_accuracy"]),
                     e["best"] or "–", text(e["best_hyper_parameters"]), _number(e["best_accuracy"]),
                     _number(e["regret"]), e["unswept_pick"] or "–", _number(e["unswept_pick_accuracy"]),
                     _number(e["sweep_gain"], sign=True)])
    lines = ["## Configurations: the pick per task", "",
             "The configuration the task's default validator picks among every configuration of every method "
             "(method@i: configuration i of the method's sweep; the method's name alone: its recipe's values), and, "
             "as hindsight from target test labels, the best configuration of any method, the regret against it, "
             "what the same validator picks among the recipes' values alone (no sweep) and the sweep's gain over "
             "that pick.", ""]
    lines += markdown_table(["task", "validator", "pick", "its hyper-parameters", "acc. (%)", "best (hindsight)",
                             "its hyper-parameters", "acc. (%)", "regret (pts)", "pick without the sweeps", "acc. (%)",
                             "sweep gain (pts)"], rows)
    if gains:
        lines += ["", f"The sweep's pick is at least as accurate as the pick without the sweeps on "
                      f"{sum(g >= 0 for g in gains)} of {len(gains)} tasks (mean gain {statistics.fmean(gains):+.2f} "
                      f"points)."]
    return lines

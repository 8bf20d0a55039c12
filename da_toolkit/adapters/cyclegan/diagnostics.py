"""CycleGAN's diagnostics: label preservation, read by an oracle trained on labeled target images
(metrics.json, and the report's read-out of a sample)."""
from __future__ import annotations

import torch

from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.cyclegan.training import train_classifier
from da_toolkit.context import Context
from da_toolkit.data import Domain, DomainDataset
from da_toolkit.evaluate import evaluate, predict
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import load_checkpoint, load_state


def label_preservation(setup: AdapterSetup, iterations: int, source: Domain, translated: Domain,
                       ctx: Context, stage: str = "pixel_oracle") -> dict | None:
    """How well translation kept the digits: the accuracy, on the translated source images, of an
    oracle classifier trained for `iterations` on the real *labeled target* training split
    (benchmark setting only), as the training stage `stage`.

    Uses target labels, so it is a diagnostic only, never used for training or model selection.
    None when `iterations` is 0 (the option `label_preservation_iterations`) or there are no target labels.
    """
    if not iterations or setup.labeled_target is None:
        return None
    target = setup.labeled_target()
    if len(target) == 0:
        ctx.info("label preservation: the target training split has no labels; skipped")
        return None
    ctx.info("label preservation: training an oracle classifier on the LABELED target training split "
             "(benchmark setting only; a diagnostic, never used for training or selection)")
    oracle = train_classifier(setup, target, ctx, stage, iterations)
    batch = setup.train.eval_batch_size
    rate = evaluate(oracle, translated, ctx.device, batch)["accuracy"]
    raw = evaluate(oracle, source, ctx.device, batch)["accuracy"]
    ctx.info(f"label preservation: target-trained oracle reads {100 * rate:.2f}% of translated source images "
             f"correctly ({100 * raw:.2f}% of the raw source images)")
    return {"rate": rate, "oracle_on_raw_source": raw, "oracle_iterations": iterations,
            "note": "uses target labels; a diagnostic only, never used for training or selection"}


def oracle_read_out(setup: AdapterSetup, home: RunDir, sample: DomainDataset, translated: torch.Tensor,
                    stage: str = "pixel_oracle") -> dict | None:
    """The report's label-preservation read-out of `sample` translated (uint8, in its order) by the
    oracle the run trained (the stage `stage`): {"reads": the oracle's accuracy, "reads_per_class",
    "marks": per image, whether it reads the label}; None when the run trained no oracle."""
    path = home.checkpoint(stage)
    if not path.exists():
        return None
    oracle = setup.make_classifier(sample.num_classes)
    load_state(oracle, load_checkpoint(path, "stage")["state"].get("classifier"), path, "oracle classifier")
    translated = DomainDataset(translated, sample.labels, "translated", class_names=sample.class_names)
    result = evaluate(oracle, translated)
    return {"reads": result["accuracy"], "reads_per_class": result["per_class_accuracy"],
            "marks": (predict(oracle, translated) == sample.labels).tolist()}


def translation_diagnostics(setup: AdapterSetup, iterations: int, source: Domain, translated: Domain, translator,
                            ctx: Context, oracle_stage: str = "pixel_oracle") -> dict:
    """A translating pixel adapter's metrics.json entries: the label preservation (`label_preservation`,
    `iterations` of its oracle, the stage `oracle_stage`) of the whole unfiltered translation when
    `translator` kept it, and the label filter's report of f_S's agreement, whose warning is printed
    again, last, so that a user sees it."""
    if translator is not None and translator.translated is not None:
        translated = translator.translated
    preservation = label_preservation(setup, iterations, source, translated, ctx, oracle_stage)
    out = {} if preservation is None else {"label_preservation": preservation}
    if translator is not None and translator.report:
        out["label_filter"] = translator.report
        if "warning" in translator.report:
            ctx.info(f"warning: pixel: {translator.report['warning']}")
    return out


def add_oracle_read_out(report, setup: AdapterSetup, home: RunDir, sample: DomainDataset, translated: torch.Tensor,
                        what: str, stage: str = "pixel_oracle"):
    """`report` (a PixelReport) with the label-preservation read-out of `translated` by the oracle of the
    stage `stage` (`what`: how the sample was translated, for the sentence), or a sentence saying the run
    trained no oracle."""
    read = oracle_read_out(setup, home, sample, translated, stage)
    if read is None:
        report.text.append("The label-preservation diagnostic did not run for this run (no oracle checkpoint).")
        return report
    report.numbers.update(oracle_reads=read["reads"], oracle_reads_per_class=read["reads_per_class"])
    report.marks = read["marks"]
    per_class = ", ".join(f"{c}: {100 * v:.0f}%" for c, v in enumerate(read["reads_per_class"]) if v is not None)
    report.text.append(f"The label-preservation oracle (trained on labeled target images: a benchmark diagnostic) "
                       f"reads {100 * read['reads']:.1f}% of {len(sample)} {what} correctly. Per class: {per_class}.")
    return report

"""benchmarks/peer_side_by_side.py: the table it writes from finished runs (ours: metrics.json; TLlib: the
.json beside its log), which runs each column needs, that finished runs are not run again, and that a failed
run is a gap in its row, not the end of the comparison."""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_side_by_side.py"


def finished(out: Path, side: str, method: str, task: str, seed: int, accuracy: float, seconds: float,
             predictions: list[int] | None = None) -> None:
    if side.startswith("peer"):
        (out / side).mkdir(parents=True, exist_ok=True)
        (out / side / f"{method}_{task}_seed{seed}.json").write_text(
            json.dumps({"accuracy": accuracy, "seconds": seconds}))
    else:
        run_dir = out / side / f"{method}_{task}_seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        sample = {"seed": 7919, "images": len(predictions), "predictions": predictions} if predictions else None
        (run_dir / "metrics.json").write_text(json.dumps({"target_accuracy": accuracy / 100, "wall_time_s": seconds,
                                                          "model_selection": {"agreement_sample": sample}}))


def fail(command, **kwargs):
    raise subprocess.CalledProcessError(2, command)


def peer_kit(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(out, a TLlib work tree, TLlib's prepared data) as the script checks for them, empty."""
    out, tllib, data = tmp_path / "out", tmp_path / "tllib", tmp_path / "data"
    (tllib / "tllib").mkdir(parents=True)
    (data / "MNIST" / "image_list").mkdir(parents=True)
    (data / "MNIST" / "image_list" / "mnist_train.txt").write_text("")
    return out, tllib, data


def run_launching(monkeypatch, out: Path, side: str, run: str, accuracy: float, arguments: list[str]) -> list:
    """Run the script with `arguments`; every run it launches is recorded and "finishes" as `side`'s `run`
    (method_task_seed) with `accuracy` (TLlib's sides: in the log it writes). Returns the launched commands."""
    launched = []

    def record(command, **kwargs):
        launched.append(command)
        method, task, seed = run.rsplit("_", 2)
        if side.startswith("peer"):  # TLlib's log, as the script reads it
            kwargs["stdout"].write(f" * Acc@1 {accuracy:.3f}\ntest_acc1 = {accuracy:.1f}\n")
        else:
            finished(out, side, method, task, int(seed.removeprefix("seed")), accuracy, 95)

    monkeypatch.setattr("subprocess.run", record)
    monkeypatch.setattr("sys.argv", ["peer_side_by_side.py", *arguments])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return launched


def test_the_table_of_finished_runs_with_the_peer_protocol_column_only_where_the_peer_lr_differs(tmp_path, monkeypatch,
                                                                                                  capsys):
    out, tllib, data = peer_kit(tmp_path)
    # TLlib's optimiser is our digit default, so the peer-optimiser column is ours (marked =, not run); TLlib's MCC lr
    # is the recipe's 0.01 on MNIST->USPS (no peer-protocol run there either) and 0.1 on USPS->MNIST (a run of its own)
    for seed, (ours, protocol, peer) in enumerate([(84.0, 92.0, 88.0), (86.0, 94.0, 90.0)]):
        for task in ("M2U", "U2M"):
            finished(out, "ours", "mcc", task, seed, ours, 100 + seed)
            finished(out, "peer", "mcc", task, seed, peer, 200 + 2 * seed)
        finished(out, "ours_peer_protocol", "mcc", "U2M", seed, protocol, 100)
    (out / "ours" / "mcc_U2M_seed1" / "metrics.json").unlink()  # a run that failed: it is run again, and fails
    monkeypatch.setattr("subprocess.run", fail)
    monkeypatch.setattr("sys.argv", ["peer_side_by_side.py", "--methods", "mcc", "--seeds", "0,1", "--out", str(out),
                                     "--tllib", str(tllib), "--peer-data", str(data), "--peer-optimiser", "mcc",
                                     "--peer-protocol", "mcc"])
    runpy.run_path(str(SCRIPT), run_name="__main__")  # every run finished: nothing is launched
    assert not (out / "ours_peer_protocol" / "mcc_M2U_seed0").exists()
    assert not (out / "ours_peer_optimiser").exists()
    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[0] == ("| task | method | ours (%) | ours, peer's optimiser (%) | ours, peer's optimiser and lr (%) | "
                       "TLlib (%) | ours − TLlib | ours (s) | TLlib (s) |")
    assert rows[1] == ("| mnist2usps | mcc | 85.00 ± 1.41 | = 85.00 ± 1.41 | = 85.00 ± 1.41 | 89.00 ± 1.41 | -4.00 | "
                       "100 | 201 |")
    assert rows[2] == ("| usps2mnist | mcc | 84.00 ± 0.00 (1 of 2 seeds) | = 84.00 ± 0.00 (1 of 2 seeds) | "
                       "93.00 ± 1.41 | 89.00 ± 1.41 | -5.00 | 100 | 201 |")
    printed = capsys.readouterr().out
    assert "ours mcc U2M seed 0: 84.00% in 100 s" in printed and "ours mcc U2M seed 1: FAILED (" in printed


def test_finished_launches_nothing_and_tables_the_runs_that_finished(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    for seed, (ours, peer) in enumerate([(80.0, 82.0), (82.0, 84.0)]):
        finished(out, "ours", "afn", "M2U", seed, ours, 90)
        finished(out, "peer", "afn", "M2U", seed, peer, 150)
    finished(out, "ours", "mcd", "M2U", 0, 83.0, 240)  # mcd: one run of ours finished, none of TLlib's
    launched = []
    monkeypatch.setattr("subprocess.run", lambda command, **kwargs: launched.append(command))
    monkeypatch.setattr("sys.argv", ["peer_side_by_side.py", "--methods", "afn,mcd", "--tasks", "M2U", "--seeds", "0,1",
                                     "--out", str(out), "--tllib", str(tmp_path / "no-tllib"), "--finished",
                                     "--peer-optimiser", "dann"])  # of no method in the table: no column
    runpy.run_path(str(SCRIPT), run_name="__main__")  # no TLlib work tree and no peer data needed either
    assert launched == []
    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[0] == "| task | method | ours (%) | TLlib (%) | ours − TLlib | ours (s) | TLlib (s) |"
    assert rows[1] == "| mnist2usps | afn | 81.00 ± 1.41 | 83.00 ± 1.41 | -2.00 | 90 | 150 |"
    assert rows[2] == "| mnist2usps | mcd | 83.00 ± 0.00 (1 of 2 seeds) | – (none finished) | – | 240 | – |"
    assert "peer mcd M2U seed 1: not finished" in capsys.readouterr().out


def test_a_complete_tllib_log_is_read_and_mcd_is_compared_by_its_first_head(tmp_path, monkeypatch):
    script = runpy.run_path(str(SCRIPT))
    mcd_log = " * Acc1 74.689 Acc2 75.037\nbest_acc1 = 75.0\n * Acc1 74.689 Acc2 75.037\ntest_acc1 = 75.0\n"
    assert script["peer_accuracy"](mcd_log) == 74.689  # the first head, as ours; not TLlib's better head
    assert script["peer_accuracy"](" * Acc@1 80.100\n * Acc@1 81.250\ntest_acc1 = 81.3\n") == 81.25
    assert script["peer_accuracy"](" * Acc@1 80.100\n") is None  # stopped before its test: failed
    out = tmp_path / "out"
    (out / "peer").mkdir(parents=True)
    (out / "peer" / "mcd_M2U_seed0.log").write_text(mcd_log)  # complete, but no .json beside it
    monkeypatch.setattr("subprocess.run", fail)  # nothing may be launched
    assert script["peer_run"]("peer", "mcd", "M2U", 0, 1000, out, tmp_path, tmp_path) == {"accuracy": 74.689,
                                                                                          "seconds": None}


def test_peer_hyper_runs_ours_with_every_peer_flag_our_keys_express(tmp_path, monkeypatch):
    out, tllib, data = peer_kit(tmp_path)
    for side in ("ours", "peer"):
        finished(out, side, "afn", "U2M", 0, 80.0, 90)
        finished(out, side, "mcd", "U2M", 0, 80.0, 90)  # a row without the column (PEER_HYPER has no mcd): "–"
    launched = run_launching(monkeypatch, out, "ours_peer_hyper", "afn_U2M_seed0", 83.0,
                             ["--methods", "afn,mcd", "--tasks", "U2M", "--seeds", "0", "--out", str(out), "--tllib",
                              str(tllib), "--peer-data", str(data), "--peer-hyper", "afn"])
    assert len(launched) == 1 and str(out / "ours_peer_hyper" / "afn_U2M_seed0") in launched[0]
    # TLlib's afn.sh for USPS->MNIST: -r 0.1 --lr 0.03 --trade-off-entropy 0.03, with its optimiser protocol
    assert {"train.nesterov=true", "train.lr_schedule=inverse", "train.weight_decay=0.001", "train.lr=0.03",
            "feature.norm_increment=0.1", "feature.target_entropy_trade_off=0.03"} <= set(launched[0])
    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| task | method | ours (%) | ours, all the peer's hyper-parameters (%) | TLlib (%) |")
    assert rows[1] == "| usps2mnist | afn | 80.00 ± 0.00 | 83.00 ± 0.00 | 80.00 ± 0.00 | +0.00 | 90 | 90 |"
    assert rows[2] == "| usps2mnist | mcd | 80.00 ± 0.00 | – | 80.00 ± 0.00 | +0.00 | 90 | 90 |"
    monkeypatch.setattr("sys.argv", ["peer_side_by_side.py", "--methods", "cdan", "--peer-hyper", "cdan"])
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    except SystemExit as stop:
        assert "--peer-hyper: no TLlib hyper-parameters mapped to our keys for ['cdan']" in str(stop.code)
    else:
        raise AssertionError("--peer-hyper cdan was accepted")


def test_peer_equal_budget_runs_tllibs_bsp_without_its_source_pre_training_and_ours_only_launches_no_tllib(tmp_path,
                                                                                                          monkeypatch):
    out, tllib, data = peer_kit(tmp_path)
    for side, accuracy in (("ours", 87.0), ("peer", 89.5)):
        finished(out, side, "bsp", "M2U", 0, accuracy, 130)
        finished(out, side, "mcc", "M2U", 0, 92.0, 100)  # a row without the column: "–"
    launched = run_launching(monkeypatch, out, "peer_equal_budget", "bsp_M2U_seed0", 86.5,
                             ["--methods", "bsp,mcc", "--tasks", "M2U", "--seeds", "0", "--out", str(out), "--tllib",
                              str(tllib), "--peer-data", str(data), "--peer-equal-budget", "bsp"])
    assert len(launched) == 1 and "bsp.py" in launched[0]
    flags = launched[0]
    assert flags[flags.index("--pretrain-epochs") + 1] == "0" and flags[flags.index("--epochs") + 1] == "1"
    assert str(out / "peer_equal_budget" / "bsp_M2U_seed0") in flags  # its log beside, not over, TLlib's own run
    text = (out / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == ("| task | method | ours (%) | TLlib (%) | TLlib, equal budget (%) | ours − TLlib | ours (s) | "
                       "TLlib (s) |")
    assert rows[1] == "| mnist2usps | bsp | 87.00 ± 0.00 | 89.50 ± 0.00 | 86.50 ± 0.00 | -2.50 | 130 | 130 |"
    assert rows[2] == "| mnist2usps | mcc | 92.00 ± 0.00 | 92.00 ± 0.00 | – | +0.00 | 100 | 100 |"
    assert "--peer-equal-budget bsp" in text and "bsp: `--pretrain-epochs 0`" in text
    (out / "peer" / "bsp_M2U_seed0.json").unlink()  # --ours-only: TLlib's run is a gap, not launched
    (out / "ours" / "bsp_M2U_seed0" / "metrics.json").unlink()  # ours is launched
    launched = run_launching(monkeypatch, out, "ours", "bsp_M2U_seed0", 88.0,
                             ["--methods", "bsp", "--tasks", "M2U", "--seeds", "0", "--out", str(out), "--tllib",
                              str(tmp_path / "no-tllib"), "--ours-only"])
    assert len(launched) == 1 and str(out / "ours" / "bsp_M2U_seed0") in launched[0]
    assert [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")][1] == (
        "| mnist2usps | bsp | 88.00 ± 0.00 | – (none finished) | – | 95 | – |")
    monkeypatch.setattr("sys.argv", ["peer_side_by_side.py", "--methods", "dann", "--peer-equal-budget", "dann"])
    with pytest.raises(SystemExit, match="TLlib trains beyond our budget only in bsp"):
        runpy.run_path(str(SCRIPT), run_name="__main__")


def test_lr_by_agreement_runs_every_lr0_and_shows_the_one_whose_seeds_agree_most_not_the_most_accurate(
        tmp_path, monkeypatch):
    out, tllib, data = peer_kit(tmp_path)
    # USPS->MNIST: lr0 0.01 is the recipe's (the ours column), 0.1 TLlib's (the peer-protocol column's runs, shared);
    # 0.03 is the one to launch. lr0 0.1 is the most accurate, but its seeds disagree on the sample.
    for seed in (0, 1):
        finished(out, "peer", "mcc", "U2M", seed, 95.0, 140)
        finished(out, "ours", "mcc", "U2M", seed, 93.0, 120, [0, 1, 2, 3] if seed else [0, 1, 2, 0])  # 3 of 4
        finished(out, "ours_peer_protocol", "mcc", "U2M", seed, 96.0, 120, [0, 1, 2, 3] if seed else [1, 1, 0, 0])
    before = out / "ours" / "mcc_U2M_seed1"  # a run from before runs stored their sample: rescore's file has it
    metrics = json.loads((before / "metrics.json").read_text())
    (before / "rescored.json").write_text(json.dumps({"agreement_sample": metrics.pop("model_selection")["agreement_sample"]}))
    (before / "metrics.json").write_text(json.dumps(metrics))
    launched = []

    def run(command, **kwargs):  # lr0 0.03: 94.00 and 95.00, its seeds agree on every image
        launched.append(command)
        seed = int(command[command.index("-o") + 1].rsplit("seed", 1)[1])
        finished(out, "ours_lr0.03", "mcc", "U2M", seed, 94.0 + seed, 110, [0, 1, 2, 3])

    monkeypatch.setattr("subprocess.run", run)
    monkeypatch.setattr("sys.argv", ["peer_side_by_side.py", "--methods", "mcc", "--tasks", "U2M", "--seeds", "0,1",
                                     "--out", str(out), "--tllib", str(tllib), "--peer-data", str(data),
                                     "--lr-by-agreement", "mcc"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert len(launched) == 2 and all("train.lr=0.03" in command for command in launched)
    text = (out / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == ("| task | method | ours (%) | ours, lr0 by seed agreement (%) | TLlib (%) | ours − TLlib | "
                       "lr0 by seed agreement − TLlib | ours (s) | TLlib (s) |")
    assert rows[1] == ("| usps2mnist | mcc | 93.00 ± 0.00 | 94.50 ± 0.71 (lr0 0.03; 1.0000) | 95.00 ± 0.00 | -2.00 | "
                       "-0.50 | 120 | 140 |")
    assert "--lr-by-agreement mcc" in text
    assert rows[-1] == ("| usps2mnist | mcc | 93.00 ± 0.00 (0.7500) | **94.50 ± 0.71 (1.0000)** | "
                        "96.00 ± 0.00 (0.2500) |")  # every lr0 with its seeds' agreement, the pick in bold
    (out / "ours_lr0.03" / "mcc_U2M_seed1" / "metrics.json").unlink()  # a candidate short of a seed: no pick
    monkeypatch.setattr("sys.argv", [*sys.argv, "--finished"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "| – (not every lr0 finished) |" in (out / "results.md").read_text()
    (out / "ours_lr0.03" / "mcc_U2M_seed1" / "log.txt").write_text("run usps2mnist_mcc: ...\n")  # still running:
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "| – (not every lr0 finished) |" in (out / "results.md").read_text()
    (out / "ours_lr0.03" / "mcc_U2M_seed1" / "log.txt").write_text(  # that seed stopped (the divergence guard):
        "run usps2mnist_mcc: ...\nstopped: feature: training diverged at iteration 859 of 1000\n")
    runpy.run_path(str(SCRIPT), run_name="__main__")  # lr0 0.03 is out of the running, the pick the next in agreement
    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| usps2mnist | mcc | 93.00 ± 0.00 | 93.00 ± 0.00 (lr0 0.01; 0.7500) |")
    assert rows[-1] == ("| usps2mnist | mcc | **93.00 ± 0.00 (0.7500)** | 94.00 ± 0.00 (1 of 2 seeds) (a seed stopped: "
                        "not a candidate) | 96.00 ± 0.00 (0.2500) |")


def script_heading(side: str) -> str:
    return runpy.run_path(str(SCRIPT))["OUR_SIDES"][side][0]


@pytest.mark.parametrize("flag, side, task, settings, row", [
    ("--peer-backbone", "ours_peer_backbone", "M2U",  # TLlib's LeNet and optimiser
     {"classifier.backbone=lenet_fc500", "train.nesterov=true", "train.lr_schedule=inverse", "train.weight_decay=0.001"},
     "| mnist2usps | dann | 84.00 ± 0.00 | 86.00 ± 0.00 | 84.00 ± 0.00 | +0.00 | 100 | 100 |"),
    ("--peer-all", "ours_peer_all", "U2M",  # also TLlib's lr for USPS->MNIST and its batch-norm discriminator
     {"train.lr=0.1", "feature.discriminator_batch_norm=true", "feature.discriminator_dropout=0",
      "classifier.backbone=lenet_fc500", "train.nesterov=true", "train.lr_schedule=inverse", "train.weight_decay=0.001"},
     "| usps2mnist | dann | 84.00 ± 0.00 | 86.00 ± 0.00 | 84.00 ± 0.00 | +0.00 | 100 | 100 |"),
])
def test_the_columns_on_tllibs_lenet_run_ours_with_its_settings(tmp_path, monkeypatch, flag, side, task, settings, row):
    out, tllib, data = peer_kit(tmp_path)
    for finished_side in ("ours", "peer"):
        finished(out, finished_side, "dann", task, 0, 84.0, 100)
    launched = run_launching(monkeypatch, out, side, f"dann_{task}_seed0", 86.0,
                             ["--methods", "dann", "--tasks", task, "--seeds", "0", "--out", str(out), "--tllib",
                              str(tllib), "--peer-data", str(data), flag, "dann"])
    assert len(launched) == 1 and str(out / side / f"dann_{task}_seed0") in launched[0]
    assert settings <= set(launched[0])
    # the budget's own classifier.backbone=lenet comes first: the column's backbone is the later override
    assert launched[0].index("classifier.backbone=lenet") < launched[0].index("classifier.backbone=lenet_fc500")
    text = (out / "results.md").read_text()
    assert f"{flag} dann" in text and f"| {script_heading(side)} (%) |" in text
    assert [line for line in text.splitlines() if line.startswith("| ")][1] == row


def test_the_peers_pillow_shim_gives_older_pillows_black_image_for_zero_bits():
    """timm's RandAugment (TLlib's FixMatch) asks posterize for 0 bits about once in 10,000 calls, which
    Pillow 10+ refuses; the peer's processes import benchmarks/peer_compat/sitecustomize.py first, which
    returns the black image older Pillow did and leaves other calls alone."""
    code = ("from PIL import Image, ImageOps; import numpy as np; "
            "im = Image.fromarray(np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)).convert('RGB'); "
            "print(np.asarray(ImageOps.posterize(im, 0)).max(), np.asarray(ImageOps.posterize(im, 1)).max())")
    compat = SCRIPT.parent / "peer_compat"
    printed = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(compat)},
                             capture_output=True, text=True, check=True).stdout.split()
    assert printed == ["0", "128"]

"""A row of curves from the JSON files of diagnose.py: python plot.py OUT.png TITLE LABEL=FILE.json ... (split at the last =)"""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANELS = [("loss/source_ce", "source CE (chance ln 10 = 2.30)"), ("loss/domain", "domain loss"),
          ("logit_scale", "discriminator mean |logit|"), ("feature_norm", "feature L2 norm")]


def smooth(values: list[float], window: int = 10) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.convolve(values, np.ones(window) / window, mode="valid")


def main(out: str, title: str, runs: list[str]) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for spec in runs:
        label, path = spec.rsplit("=", 1)
        rows = json.load(open(path))["rows"]
        for ax, (key, panel) in zip(axes, PANELS):
            if key in rows[0]:
                values = smooth([r[key] for r in rows])
                ax.plot(np.arange(len(values)) + 10, values, label=label, lw=1.2)
            ax.set_title(panel, fontsize=10)
            ax.set_xlabel("iteration (of a 1,000-iteration budget)", fontsize=8)
    axes[1].axhline(np.log(2), color="grey", ls=":", lw=0.8)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].axhline(np.log(10), color="grey", ls=":", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title} (running mean of 10 iterations)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

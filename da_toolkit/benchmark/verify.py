"""`compare --verify RESULTS_JSON`: re-run the cells of a committed results.json from the current code
and report every target accuracy that differs from the recorded one."""
from __future__ import annotations

import json
from pathlib import Path

from da_toolkit.errors import UserError


def recorded_accuracies(path: str | Path) -> dict[str, float]:
    """{cell name: target accuracy} of the finished cells of a results.json that compare wrote."""
    path = Path(path)
    try:
        cells = json.loads(path.read_text())["cells"]
        return {c["cell"]: c["target_accuracy"] for c in cells if c["status"] == "done"}
    except FileNotFoundError:
        raise UserError(f"--verify: {path} not found") from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"--verify: {path} is not a results.json written by da-toolkit compare") from None


def differences(recorded: dict[str, float], rows: list[dict], tolerance_pp: float) -> list[str]:
    """One line per re-run cell whose target accuracy differs from the recorded one by more than
    `tolerance_pp` percentage points, or that has no recorded figure or did not finish now."""
    lines = []
    for row in rows:
        before, now = recorded.get(row["cell"]), row["target_accuracy"]
        if before is None:
            lines.append(f"{row['cell']}: no recorded figure")
        elif row["status"] != "done":
            lines.append(f"{row['cell']}: {100 * before:.2f}% recorded, did not finish now ({row['status']})")
        elif abs(100 * (now - before)) > tolerance_pp + 1e-9:
            lines.append(f"{row['cell']}: {100 * before:.2f}% recorded, {100 * now:.2f}% now "
                         f"({100 * (now - before):+.2f} pp)")
    return lines

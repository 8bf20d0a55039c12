"""`compare --verify RESULTS_JSON`: re-run the cells of a committed results.json from the current code
and report every target accuracy that differs from the recorded one, and whether the data differed."""
from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from da_toolkit.errors import UserError

if TYPE_CHECKING:
    from da_toolkit.benchmark.grid import Cell


def recorded_cells(path: str | Path) -> dict[str, dict]:
    """{cell name: {target_accuracy, data_fingerprints}} of the finished cells of a results.json that compare
    wrote (data_fingerprints: None in results.json files written before runs recorded them)."""
    path = Path(path)
    try:
        cells = json.loads(path.read_text())["cells"]
        return {c["cell"]: {"target_accuracy": c["target_accuracy"], "data_fingerprints": c.get("data_fingerprints")}
                for c in cells if c["status"] == "done"}
    except FileNotFoundError:
        raise UserError(f"--verify: {path} not found") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"--verify: {path} is not a results.json written by da-toolkit compare") from None


def verified_cells(cells: list[Cell], recorded: dict[str, dict], path: str | Path, only: str | None) -> list[Cell]:
    """The cells of the grid (those --only left) that the results file recorded: a table of some of the grid's
    methods or seeds re-runs those, not the whole grid. A recorded cell the grid lacks (other seeds or methods
    than the benchmark file's) is an error naming it, not a figure silently left unchecked."""
    names = {cell.name for cell in cells}
    lacking = [name for name in recorded if name not in names and (only is None or fnmatchcase(name, only))]
    if lacking:
        raise UserError(f"--verify: {len(lacking)} cell(s) of {path} are not in this grid, e.g. {lacking[0]}: pass "
                        f"the seeds (--seeds) and profile (--profile) it was made with (its command says which)")
    return [cell for cell in cells if cell.name in recorded]


def differences(recorded: dict[str, dict], rows: list[dict], tolerance_pp: float) -> list[str]:
    """One line per re-run cell whose target accuracy differs from the recorded one by more than
    `tolerance_pp` percentage points, or that has no recorded figure or did not finish now. A line says
    which domains' data differ from the recorded run's (data_fingerprints), where both runs recorded them."""
    lines = []
    for row in rows:
        entry = recorded.get(row["cell"])
        if entry is None:
            lines.append(f"{row['cell']}: no recorded figure")
            continue
        before, now = entry["target_accuracy"], row["target_accuracy"]
        if row["status"] != "done":
            lines.append(f"{row['cell']}: {100 * before:.2f}% recorded, did not finish now ({row['status']})")
        elif abs(100 * (now - before)) > tolerance_pp + 1e-9:
            then_data, now_data = entry["data_fingerprints"] or {}, row.get("data_fingerprints") or {}
            changed = [name for name in then_data if name in now_data and then_data[name] != now_data[name]]
            data = (f"; other data: {', '.join(changed)} (data_fingerprints)" if changed else
                    "; same data" if then_data and now_data else "")
            lines.append(f"{row['cell']}: {100 * before:.2f}% recorded, {100 * now:.2f}% now "
                         f"({100 * (now - before):+.2f} pp{data})")
    return lines

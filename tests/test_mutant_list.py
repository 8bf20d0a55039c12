"""tools/mutant_list.py: every mutant still applies to today's code (a mutant whose original line was rewritten is
reported STALE by `make mutants` and checks nothing; three had gone stale unnoticed), and names are unique."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from mutant_list import MUTANTS  # noqa: E402


def test_every_mutants_original_occurs_exactly_once_in_its_file_and_names_are_unique():
    stale = [f"{m.name}: {m.file} holds {(ROOT / m.file).read_text().count(m.original)} copies of {m.original!r}"
             for m in MUTANTS if (ROOT / m.file).read_text().count(m.original) != 1]
    assert stale == []
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    assert all((ROOT / test.split("::")[0]).is_file() for m in MUTANTS for test in m.tests)

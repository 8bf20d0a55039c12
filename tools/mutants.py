"""The mutation check (`make mutants`): does the fast test suite notice the bugs a user would be hurt by?

Each mutant in tools/mutant_list.py is a one-line domain bug: (file, original text that must occur
exactly once in it, replacement, description, the test files most likely to catch it). The tool
copies the checkout (git-tracked and untracked, not ignored files) into a temporary folder per
worker — the working tree is never touched — applies one mutant at a time, runs the fast suite
(`pytest -x -q -m "not slow"`, OMP_NUM_THREADS=1): first the mutant's own test files, then, only if
those pass, the rest of the suite (together the whole fast suite), and restores the file. A
mutant is *caught* when the suite fails. A mutant whose original text is not found exactly once is
STALE: the code changed under it, and the run fails so that the list is brought up to date.

    python tools/mutants.py [--jobs 2] [--report tools/mutants-report.txt] [--only NAME,NAME] [--list]

Exit status 0 when nothing is stale and at least 90% of the mutants are caught, else 1.
"""
from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from mutant_list import HARMLESS, MUTANTS  # noqa: E402

PYTEST = ["-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
REQUIRED_SCORE = 0.9
TIMEOUT_S = 900


@dataclass
class Outcome:
    name: str
    status: str  # caught | survived | stale
    detail: str
    seconds: float


def project_files(root: Path) -> list[Path]:
    """The checkout's files: tracked and untracked ones git does not ignore (a plain walk without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                                capture_output=True).stdout.decode().split("\0")
        return [Path(p) for p in listed if p and (root / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", "build"}
        return [p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(root).parts)]


def make_copy(root: Path, destination: Path) -> Path:
    for relative in project_files(root):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    return destination


def environment(copy: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(copy),
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def pytest(copy: Path, arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *PYTEST, *arguments], cwd=copy, env=environment(copy),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    if match:
        return match.group(1)
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def stale_reason(root: Path, mutant) -> str | None:
    path = root / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    count = path.read_text().count(mutant.original)
    return None if count == 1 else f"original text found {count} times in {mutant.file}"


def run_mutant(mutant, copy: Path) -> Outcome:
    began = time.perf_counter()
    path = copy / mutant.file
    text = path.read_text()
    path.write_text(text.replace(mutant.original, mutant.replacement, 1))
    try:
        first = [f for f in mutant.tests if (copy / f).is_file()]
        stages = [first, [x for f in first for x in ("--ignore", f)] + ["tests"]] if first else [["tests"]]
        for arguments in stages:
            try:
                result = pytest(copy, arguments)
            except subprocess.TimeoutExpired:
                return Outcome(mutant.name, "caught", f"timed out after {TIMEOUT_S} s", time.perf_counter() - began)
            if result.returncode not in (0, 5):  # 5: no tests collected
                return Outcome(mutant.name, "caught", first_failure(result.stdout + result.stderr),
                               time.perf_counter() - began)
        return Outcome(mutant.name, "survived", "the fast suite passed", time.perf_counter() - began)
    finally:
        path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at the same time (own copy each)")
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    parser.add_argument("--only", help="only the mutants whose name contains one of these comma-separated strings")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run of the suite (when it is known to pass: re-checking a few mutants)")
    args = parser.parse_args()

    wanted = [w for w in (args.only or "").split(",") if w]
    mutants = [m for m in MUTANTS if not wanted or any(w in m.name for w in wanted)]
    names = [m.name for m in MUTANTS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        print(f"error: mutant names used twice: {', '.join(duplicates)}", file=sys.stderr)
        return 1
    if args.list:
        for m in mutants:
            print(f"{m.name:<40} {m.file}: {m.description}")
        return 0

    began = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    runnable = []
    for m in mutants:
        reason = stale_reason(ROOT, m)
        if reason:
            outcomes[m.name] = Outcome(m.name, "stale", reason, 0.0)
        else:
            runnable.append(m)

    with tempfile.TemporaryDirectory(prefix="da-toolkit-mutants-") as tmp:
        copies: queue.Queue = queue.Queue()
        for worker in range(max(1, args.jobs)):
            copies.put(make_copy(ROOT, Path(tmp) / f"copy{worker}"))
        baseline_copy = copies.get()
        baseline = pytest(baseline_copy, ["tests"] if not args.no_baseline else ["--co", "tests"])
        copies.put(baseline_copy)
        if baseline.returncode != 0:
            print("error: the fast suite fails without any mutant; fix it first:\n"
                  + (baseline.stdout + baseline.stderr)[-3000:], file=sys.stderr)
            return 1
        print(f"baseline: the fast suite passes on the unmutated copy ({time.perf_counter() - began:.0f} s); "
              f"{len(runnable)} mutants, {args.jobs} at a time", file=sys.stderr, flush=True)
        lock = threading.Lock()

        def work(mutant):
            copy = copies.get()
            try:
                outcome = run_mutant(mutant, copy)
            finally:
                copies.put(copy)
            with lock:
                print(f"  {outcome.status:<8} {mutant.name} ({outcome.seconds:.0f} s): {outcome.detail}",
                      file=sys.stderr, flush=True)
            return outcome

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for outcome in pool.map(work, runnable):
                outcomes[outcome.name] = outcome

    report = render(mutants, outcomes, time.perf_counter() - began)
    print(report)
    if args.report:
        args.report.write_text(report)
    caught = sum(o.status == "caught" for o in outcomes.values())
    stale = sum(o.status == "stale" for o in outcomes.values())
    return 0 if not stale and caught >= REQUIRED_SCORE * len(mutants) else 1


def render(mutants, outcomes: dict[str, Outcome], seconds: float) -> str:
    caught = [m for m in mutants if outcomes[m.name].status == "caught"]
    survived = [m for m in mutants if outcomes[m.name].status == "survived"]
    stale = [m for m in mutants if outcomes[m.name].status == "stale"]
    import torch

    lines = [
        "da-toolkit mutation check (tools/mutants.py; `make mutants`)",
        f"command: python {' '.join(sys.argv)}; fast suite = pytest -x -q -m 'not slow', OMP_NUM_THREADS=1",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
        f"torch {torch.__version__}; {seconds / 60:.1f} min",
        "",
        f"caught {len(caught)} / {len(mutants)} ({100 * len(caught) / max(len(mutants), 1):.0f}%); "
        f"survived {len(survived)}; stale {len(stale)}",
        "",
    ]
    if survived:
        lines.append("survivors:")
        for m in survived:
            lines.append(f"  {m.name}  {m.file}: {m.description}")
            lines.append(f"      harmless because: {HARMLESS.get(m.name, 'NOT EXPLAINED: add a test that catches it')}")
        lines.append("")
    if stale:
        lines.append("stale (original text not found exactly once; update tools/mutant_list.py):")
        lines += [f"  {m.name}  {m.file}: {outcomes[m.name].detail}" for m in stale]
        lines.append("")
    lines.append("every mutant:")
    for m in mutants:
        o = outcomes[m.name]
        lines.append(f"  {o.status:<8} {m.name:<36} {m.file}: {m.description}")
        if o.status == "caught":
            lines.append(f"           by {o.detail}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

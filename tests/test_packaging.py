"""The wheel holds the whole program: every folder of modules is a package setup.py declares, and
every file the code reads beside its modules is declared package data.

Fast and offline (setup.py's arguments are read, nothing is built); `make wheel-check`
(tools/check_wheel.sh) builds the wheel and runs it from a fresh environment."""
from __future__ import annotations

import ast
import runpy
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "da_toolkit"

# The modules that locate files from their own place on disk (`__file__`, importlib.resources,
# pkgutil, pkg_resources), and what they read. A file read beside the code must live under
# da_toolkit/ and be declared in setup.py's package_data; add the module here once it is.
LOCATES_FILES = {
    # data_root(): the checkout's data/ folder (datasets, never package data); an installed copy
    # falls back to ./data or $DA_TOOLKIT_DATA
    "da_toolkit/data/__init__.py",
}
RESOURCE_MODULES = ("importlib.resources", "importlib_resources", "pkgutil", "pkg_resources")


def setup_arguments(monkeypatch) -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (which is not run)."""
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return captured


def source_files() -> list[Path]:
    return [path for path in PACKAGE.rglob("*") if path.is_file() and "__pycache__" not in path.parts]


def test_every_folder_of_modules_is_a_declared_package(monkeypatch):
    declared = set(setup_arguments(monkeypatch)["packages"])
    folders = {path.parent for path in source_files() if path.suffix == ".py"}
    expected = {".".join(folder.relative_to(ROOT).parts) for folder in folders}
    missing = sorted(expected - declared)
    assert not missing, (f"setup.py leaves out {missing}: the wheel would not hold them "
                         "(a folder of modules needs an __init__.py for find_packages)")
    assert not sorted(declared - expected), "setup.py declares packages that do not exist"


def declared_data(arguments: dict) -> set[Path]:
    """The files setup.py's package_data globs name (a pattern under the key "" applies to every package)."""
    data = arguments.get("package_data") or {}
    files = set()
    for package in arguments["packages"]:
        folder = ROOT.joinpath(*package.split("."))
        for pattern in [*data.get("", []), *data.get(package, [])]:
            files.update(path for path in folder.glob(pattern) if path.is_file())
    return files


def test_every_file_beside_the_modules_is_package_data(monkeypatch):
    arguments = setup_arguments(monkeypatch)
    data = [path for path in source_files() if path.suffix not in (".py", ".pyc")]
    undeclared = sorted(str(path.relative_to(ROOT)) for path in set(data) - declared_data(arguments))
    assert not undeclared, f"not in setup.py's package_data, so not in the wheel: {undeclared}"


def locates_files(path: Path) -> bool:
    """Whether a module finds files from its own location: `__file__` or a resource-loading import."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name) and node.id == "__file__":
            return True
        if isinstance(node, ast.Import) and any(alias.name.startswith(RESOURCE_MODULES) for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(RESOURCE_MODULES):
            return True
    return False


def test_modules_that_read_files_beside_the_code_are_known():
    found = {str(path.relative_to(ROOT)) for path in source_files() if path.suffix == ".py" and locates_files(path)}
    assert found == LOCATES_FILES, (
        "a module reads files from its own location: declare what it reads in setup.py's package_data "
        f"and list it in LOCATES_FILES (new: {sorted(found - LOCATES_FILES)}, gone: {sorted(LOCATES_FILES - found)})")


@pytest.mark.parametrize("source, expected", [
    ("from pathlib import Path\nTEMPLATE = Path(__file__).with_name('page.html')\n", True),
    ("from importlib.resources import files\n", True),
    ("import importlib.resources\n", True),
    ("import pkgutil\n", True),
    ("from pathlib import Path\nROOT = Path.cwd() / 'data'\n", False),
])
def test_locates_files_recognises_reads_beside_the_code(tmp_path, source, expected):
    module = tmp_path / "module.py"
    module.write_text(source)
    assert locates_files(module) is expected

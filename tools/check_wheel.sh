#!/usr/bin/env bash
# Build the wheel from a clean copy of the checkout, install it alone into a fresh virtual
# environment in a temporary folder and run it from there: every file of da_toolkit/ is installed,
# `da-toolkit list` works and a short quickstart trains and evaluates.
#
#   tools/check_wheel.sh [DEPS_PYTHON]     (`make wheel-check`; DEPS_PYTHON defaults to .venv/bin/python)
#
# The dependencies (torch, timm, ...) are not installed again: a .pth file puts DEPS_PYTHON's
# site-packages on the fresh environment's path. A .pth line adds a folder but does not run the
# .pth files inside it, so that environment's editable da_toolkit stays invisible; the script
# checks that da_toolkit is imported from the wheel. Nothing is downloaded (the build uses DEPS_PYTHON's setuptools).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
deps_python=$(realpath -s "${1:-$repo/.venv/bin/python}")  # absolute: the script works in a temporary folder
work=$(mktemp -d "${TMPDIR:-/tmp}/da-toolkit-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH
cd "$work"  # never the checkout, so nothing is imported from it

# a clean copy (tracked and new files, not ignored ones): no stale build/ or egg-info in the wheel
mkdir source
git -C "$repo" ls-files -z --cached --others --exclude-standard |
    (cd "$repo" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
    tar -C "$repo" --null -T - -cf - | tar -C source -xf -
"$deps_python" -m pip wheel ./source --no-deps --no-build-isolation --quiet -w wheels  # its setuptools: offline
wheel=$(ls wheels/*.whl)
echo "built $(basename "$wheel") ($("$deps_python" -m zipfile -l "$wheel" | tail -n +2 | wc -l) files)"

# install with no .pth yet, so pip sees an empty environment and touches nothing outside it
"$deps_python" -m venv --without-pip venv
"$deps_python" -m pip --python venv/bin/python install --no-deps --no-index --quiet "$wheel"
site=$(venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$deps_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/dependencies.pth"

# every file of the checkout's package is installed, and `import da_toolkit` finds the installed copy
venv/bin/python - "$work/source" "$site" <<'EOF'
import importlib.util, sys
from pathlib import Path
source, site = Path(sys.argv[1]), Path(sys.argv[2])
files = [path.relative_to(source) for path in (source / "da_toolkit").rglob("*")
         if path.is_file() and "__pycache__" not in path.parts]
missing = [str(path) for path in files if not (site / path).is_file()]
assert not missing, f"not in the wheel: {missing}"
origin = Path(importlib.util.find_spec("da_toolkit").origin)
assert origin == site / "da_toolkit" / "__init__.py", f"da_toolkit is imported from {origin}, not the wheel"
print(f"all {len(files)} files of da_toolkit/ installed in {site}")
EOF

mkdir run
cd run
"$work/venv/bin/da-toolkit" list > list.txt
head -n 5 list.txt
# the recipe's bases are found beside it, the data (syndigits' rendering cache) in the checkout's data/
export DA_TOOLKIT_DATA=${DA_TOOLKIT_DATA:-$repo/data}
"$work/venv/bin/da-toolkit" run "$repo/recipes/quickstart_source_only.yaml" train.iterations=150 -o source_only -q
"$work/venv/bin/da-toolkit" run "$repo/recipes/quickstart.yaml" train.iterations=150 \
    feature.source_checkpoint=source_only -o quickstart -q  # SHOT adapts the source run (a path from here)
test -f quickstart/metrics.json
echo "wheel check passed"

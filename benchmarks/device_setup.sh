# Sourced by the device.sh scripts of benchmarks/results/*-h200/: the set-up of a lent GPU machine (no
# ../shared/data, no network) for the digit grids, from the repository root there. It unpacks the development
# machine's data carried in .carry/ (mnist/*.gz, usps*.bz2; .carry/ is git-ignored) into /tmp/data, prints the
# versions and the syndigits images' sha1 (syndigits renders the fonts Pillow and matplotlib ship, so it is the
# development machine's where their versions agree; syndigits version 1, which rendered the machine's fonts, needed
# them carried: .carry/fonts.tgz, in the scripts of that time), and defines
# `pack DIR`: every cell's small files under DIR (metrics, recipes, logs, tables, plots; not checkpoints) into
# $OUT/<DIR's name>.tgz. `da-toolkit` runs this checkout (python3 -m da_toolkit).
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD DA_TOOLKIT_DATA=/tmp/data OMP_NUM_THREADS=1
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/data/MNIST/raw /tmp/bin
printf '#!/bin/sh\nexec python3 -m da_toolkit "$@"\n' >/tmp/bin/da-toolkit && chmod +x /tmp/bin/da-toolkit
export PATH=/tmp/bin:$PATH   # the scripts' `da-toolkit` without installing the package
for f in .carry/mnist/*.gz; do gunzip -c "$f" >"/tmp/data/MNIST/raw/$(basename "$f" .gz)"; done
cp .carry/usps*.bz2 /tmp/data/
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 - <<'PY'
import hashlib, platform, matplotlib, PIL, sklearn, timm, torch, torchvision
from pathlib import Path
from da_toolkit.data.synthetic import _syndigits, glyph_masks
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "timm", timm.__version__, "pillow", PIL.__version__, "matplotlib", matplotlib.__version__,
      "sklearn", sklearn.__version__,
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("syndigits fonts key", glyph_masks()[1])
for split in ("train", "test"):  # renders once and caches in /tmp/data/cache for every cell
    images = _syndigits(split, Path("/tmp/data")).images
    print("syndigits", split, len(images), "sha1", hashlib.sha1(images.numpy().tobytes()).hexdigest()[:12])
PY

pack() {
  (cd "$1" && find . -name metrics.json -o -name recipe.yaml -o -name cell.log -o -name log.txt -o -name 'results*' \
     -o -name 'sweeps.json' -o -name '*.png' -o -name rescored.json | tar -czf "$out/$(basename "$1").tgz" -T -)
}

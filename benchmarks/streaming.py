"""Streamed photo-sized domains: peak memory, decode rate and training step rate at several sizes.

For each size N (images per domain) it generates — once, cached under --workdir — a source and a target
JPEG folder (ImageFolder layout, 10 classes, 256×256 smooth images of a few KB), then measures:

* decode rate: images/s delivered to the training process by `workers` DataLoader workers, in a
  shuffled order, 224×224, as float in [-1, 1] — da-toolkit's FileDomain (`decoded_batches`, the
  loader a streamed BatchStream uses, then `to_float`) side by side with torchvision's `ImageFolder`
  (`Resize((224, 224))` bilinear, `ToTensor`, `Normalize(0.5, 0.5)`: the same images) and `DataLoader`
  (persistent workers, prefetch 4, like ours); the best of `--rounds` rounds, after a warm-up batch;
  and, at the smallest size, the cost of each step of reading one image in one process;
* a DANN run (`da-toolkit run recipes/own_domains_dann.yaml`, timm resnet10t, random init,
  `--iterations` iterations of batch `--batch-size`) on the pair with storage auto (in memory
  while a training domain's decoded images fit the 4 GB budget: 2.4 GB at 20k) and, up to
  `--memory-up-to` images, also streamed: the
  peak of the process tree's memory (run + DataLoader workers, polled from /proc: the sum of PSS,
  which counts a page shared by processes once, and the sum of RSS, which counts it in each), the
  training step rate and the line the run prints about each domain's storage. The run is stopped
  once its training stage ends: the evaluation after it reads the whole target training split
  (collapse alarm) and would take hours on a CPU at 160k images; it is not timed here.

    OMP_NUM_THREADS=1 python benchmarks/streaming.py --workdir /work/bench_data/streaming \\
        --sizes 20000 60000 200000 [--workers 1] [--iterations 10] [--generate-only | --render]

Generation runs in one thread, skips files that exist, writes each file under a temporary name and
renames it (several generators may share a workdir; an interrupted one resumes), and shares the
images of the sizes: a size-N folder holds hard links to the first N/10 images of each class.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10
GENERATED_SIZE = 256
IMAGE_SIZE = 224
DOMAINS = ("source", "target")
# one colour per class (RGB); the target domain inverts and reverses the channels of the source's style
PALETTE = np.array([[200, 60, 60], [60, 180, 70], [60, 90, 200], [210, 190, 60], [170, 70, 190],
                    [60, 190, 190], [230, 130, 40], [120, 120, 120], [150, 100, 60], [240, 150, 190]], float)


# ------------------------------------------------------------------------------------------ generation

def render(domain: str, label: int, index: int) -> Image.Image:
    """A smooth 256×256 image of class `label`: a 6×6 grid of colours around the class colour, plus a
    gradient whose direction is the class's, upsampled bicubically (few KB as a JPEG); deterministic."""
    rng = np.random.default_rng([DOMAINS.index(domain), label, index])
    ramp = np.linspace(-1, 1, 6)
    angle = 2 * np.pi * label / CLASSES
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    grid = PALETTE[label] + 50 * gradient[..., None] + rng.normal(0, 35, (6, 6, 3))
    if domain == "target":
        grid = 255 - grid[..., ::-1]
    small = Image.fromarray(grid.clip(0, 255).astype(np.uint8))
    return small.resize((GENERATED_SIZE, GENERATED_SIZE), Image.Resampling.BICUBIC)


def _atomically(path: Path, write) -> None:
    """`write(temporary path)`, then rename it to `path` (another process may do the same: equal contents)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


def generate(workdir: Path, size: int) -> Path:
    """The folder of the size-`size` pair (workdir/n<size>/{source,target}/class<k>/<i>.jpg), made if needed."""
    if size % CLASSES:
        raise SystemExit(f"--sizes: {size} is not a multiple of {CLASSES} (images per class)")
    folder = workdir / f"n{size}"
    done = folder / ".complete"
    if done.exists():
        return folder
    began, made = time.perf_counter(), 0
    for domain in DOMAINS:
        for label in range(CLASSES):
            pool = workdir / "pool" / domain / f"class{label}"
            linked = folder / domain / f"class{label}"
            pool.mkdir(parents=True, exist_ok=True)
            linked.mkdir(parents=True, exist_ok=True)
            for index in range(size // CLASSES):
                name = f"{index:06d}.jpg"
                if not (pool / name).exists():
                    _atomically(pool / name, lambda path: render(domain, label, index).save(path, "JPEG", quality=90))
                    made += 1
                if not (linked / name).exists():
                    _atomically(linked / name, lambda path: os.link(pool / name, path))
        print(f"  n{size}/{domain}: {size} images ({made} generated so far, {time.perf_counter() - began:.0f} s)",
              flush=True)
    done.write_text(f"{made} images generated in {time.perf_counter() - began:.0f} s\n")
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.rglob("*.jpg"))


# --------------------------------------------------------------------------------------- decode rate

def _shuffled_batches(count: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[start:start + batch_size] for start in range(0, len(order) - batch_size + 1, batch_size)]


def _timed(batches, images: int) -> float:
    """Images/s of an iterator of float batches, from after its first batch (worker start-up) on."""
    iterator = iter(batches)
    next(iterator)
    began, seen = time.perf_counter(), 0
    for batch in iterator:
        seen += len(batch)
        if seen >= images:
            break
    return seen / (time.perf_counter() - began)


def toolkit_rate(folder: Path, workers: int, batch_size: int, images: int) -> float:
    """FileDomain streamed by `decoded_batches` (what a streamed BatchStream runs), converted by `to_float`."""
    from da_toolkit.data.base import decoded_batches, to_float
    from da_toolkit.data.files import image_folder

    domain = image_folder(folder, IMAGE_SIZE, "train").configured(IMAGE_SIZE, 3, workers)
    batches = _shuffled_batches(len(domain), batch_size)
    return _timed((to_float(images) for images, _ in decoded_batches(domain, batches, torch.device("cpu"))), images)


def torchvision_transform():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE), transforms.InterpolationMode.BILINEAR),
                               transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])


def torchvision_rate(folder: Path, workers: int, batch_size: int, images: int) -> float:
    """torchvision ImageFolder + DataLoader (shuffled, persistent workers, prefetch 4), same images as ours."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(folder), transform=torchvision_transform())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                        generator=torch.Generator().manual_seed(0))
    return _timed((images for images, _ in loader), images)


def same_images(folder: Path, count: int = 8) -> float:
    """The largest difference between our float images and torchvision's for the same files (both [-1, 1])."""
    from torchvision.datasets import ImageFolder
    from da_toolkit.data.base import to_float
    from da_toolkit.data.files import image_folder

    ours = image_folder(folder, IMAGE_SIZE, "train")
    theirs = ImageFolder(str(folder), transform=torchvision_transform())
    picks = torch.linspace(0, len(ours) - 1, count).long().tolist()
    assert [ours.paths[i] for i in picks] == [theirs.samples[i][0] for i in picks]
    return max(float((to_float(ours.read([i]))[0] - theirs[i][0]).abs().max()) for i in picks)


def profile_read(folder: Path, workdir: Path, count: int = 200, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per image (the best of `rounds`) of each step of reading one file in this process: ours
    (`read_image`), torchvision's (PIL loader + transform) and the steps they share; and, for a phone-photo-
    sized JPEG (2016×1512), decoding + resizing with and without Pillow's JPEG draft mode (DCT scaling)."""
    from torchvision.datasets.folder import pil_loader
    from da_toolkit.data.base import to_float
    from da_toolkit.data.files import read_image

    paths = sorted(folder.rglob("*.jpg"))
    paths = paths[:: max(1, len(paths) // count)][:count]
    photo = workdir / "photo_2016x1512.jpg"
    if not photo.exists():
        _atomically(photo, lambda path: render("source", 0, 0).resize((2016, 1512), Image.Resampling.BICUBIC)
                    .save(path, "JPEG", quality=90))
    transform = torchvision_transform()

    def per_image(step, files=paths) -> float:
        best = float("inf")
        for _ in range(rounds):
            began = time.perf_counter()
            for path in files:
                step(path)
            best = min(best, 1000 * (time.perf_counter() - began) / len(files))
        return best

    def decode(path):
        with Image.open(path) as image:
            image.load()

    def decode_resize(path, draft=False):
        with Image.open(path) as image:
            if draft:  # decodes at 1/2, 1/4 or 1/8 scale when that still covers 224 px
                image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
            return image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)

    per_image(decode)  # warm the page cache
    return {"256 px: open + decode": per_image(decode),
            "256 px: + convert RGB + resize 224 (bilinear)": per_image(decode_resize),
            "256 px, ours: read_image (uint8 CHW)": per_image(lambda path: read_image(path, IMAGE_SIZE, 3)),
            "256 px, ours: read_image + to_float": per_image(lambda path: to_float(read_image(path, IMAGE_SIZE, 3))),
            "256 px, torchvision: pil_loader + transform": per_image(lambda path: transform(pil_loader(path))),
            "2016×1512 px: open + decode + resize 224": per_image(decode_resize, [photo] * 10),
            "2016×1512 px: the same with draft (decoded at 1/4 scale)":
                per_image(lambda path: decode_resize(path, draft=True), [photo] * 10)}


# ----------------------------------------------------------------------------------- the training run

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    tree, found, stack = _children(), [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += tree.get(pid, [])
    return found


def _kilobytes(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Polls the memory of a process and its descendants: peaks of the sum of PSS and of RSS (bytes), of the
    root's own RSS, and the most processes seen at once."""

    def __init__(self, root: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.every, self.stop = root, every, threading.Event()
        self.pss = self.rss = self.root_rss = self.processes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pids = _tree(self.root)
            pss = sum(_kilobytes(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids) * 1024
            rss = sum(_kilobytes(f"/proc/{pid}/status", "VmRSS:") for pid in pids) * 1024
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            self.root_rss = max(self.root_rss, _kilobytes(f"/proc/{self.root}/status", "VmRSS:") * 1024)
            self.processes = max(self.processes, len(pids))
            self.stop.wait(self.every)


def training_run(folder: Path, storage: str, workers: int, iterations: int, batch_size: int, run_dir: Path) -> dict:
    """A DANN run of resnet10t (random init) on the pair, stopped after its training stage; its memory and rates."""
    overrides = [f"data.source.root={folder / 'source'}", f"data.target.root={folder / 'target'}",
                 f"data.source.storage={storage}", f"data.target.storage={storage}",
                 "data.source_test.limit=200", "data.target_test.limit=200",  # evaluation is not measured
                 "classifier.backbone=resnet10t", "classifier.pretrained=false", "classifier.backbone_lr_multiplier=1",
                 f"train.iterations={iterations}", f"train.batch_size={batch_size}", f"train.workers={workers}",
                 "train.device=cpu", f"train.log_every={iterations}", f"train.checkpoint_every={iterations}",
                 f"selection.every={iterations}", "selection.samples=10"]
    command = [sys.executable, "-m", "da_toolkit.cli", "run", str(REPO / "recipes/own_domains_dann.yaml"), *overrides,
               "-o", str(run_dir), "--overwrite", "--quiet"]
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                   "PYTHONPATH": str(REPO)}
    shutil.rmtree(run_dir, ignore_errors=True)  # its old log.txt would be read as this run's
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(run_dir.parent / f"{run_dir.name}.stderr", "w") as stderr:
        process = subprocess.Popen(command, stderr=stderr, stdout=subprocess.DEVNULL, env=environment,
                                   start_new_session=True)
    memory = TreeMemory(process.pid)
    memory.start()
    log, stage_line = run_dir / "log.txt", None
    while stage_line is None and process.poll() is None:  # the run logs to its log.txt (stderr: warnings)
        time.sleep(0.5)
        lines = log.read_text().splitlines() if log.exists() else []
        stage_line = next((line for line in lines if re.search(r" feature: \d+ iterations in ", line)), None)
    trained = time.time() - started
    memory.stop.set()
    memory.join()
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the run's own process group: the run and its workers
    process.wait()
    if stage_line is None:
        raise SystemExit(f"the run failed ({' '.join(command)}):\n"
                         f"{(run_dir.parent / f'{run_dir.name}.stderr').read_text()[-3000:]}")
    lines = log.read_text().splitlines()
    stamp = lines[0][:23]  # "2026-12-03 10:43:46,276": logged once the domains are built
    built = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - started
    seconds = float(re.search(r"in ([\d.]+) s", stage_line).group(1))
    return {"storage": storage, "peak_pss": memory.pss, "peak_rss": memory.rss, "peak_main_rss": memory.root_rss,
            "processes": memory.processes, "stage_s": seconds, "it_per_s": iterations / seconds,
            "images_per_s": iterations * 2 * batch_size / seconds, "until_built_s": built,
            "until_trained_s": trained,
            "storage_lines": [line[24:] for line in lines if re.match(r"data\.\w+: ", line[24:])]}


# ------------------------------------------------------------------------------------------- report

def machine() -> str:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = _kilobytes("/proc/meminfo", "MemTotal:") / 1024 ** 2
    return f"{os.cpu_count()} cores of an {cpu}, {memory:.0f} GB, no GPU"


def gigabytes(count: float) -> str:
    return f"{count / 1e9:.2f} GB"


def storage_label(run: dict) -> str:
    """The run's storage setting and, for auto, what it chose for the training domains (source, target)."""
    chosen = {"memory" if "read into memory" in line else "stream" for line in run["storage_lines"]
              if line.startswith(("data.source:", "data.target:"))}
    return run["storage"] if run["storage"] != "auto" else f"auto: {'/'.join(sorted(chosen))}"


def render_markdown(results: dict) -> str:
    sizes = sorted(results["sizes"].values(), key=lambda entry: entry["size"])
    workers = results["workers"]
    lines = [
        "# Streamed photo-sized domains: memory, decode rate, step rate (CPU)", "",
        f"Measured {results['date']} on {results['machine']}, torch {results['torch']}, torchvision "
        f"{results['torchvision']}, Pillow {results['pillow']}, `OMP_NUM_THREADS=1`, **{workers} DataLoader "
        f"worker(s)** for every loader; other sessions shared the 2 cores (load average at the start of each "
        f"size is in its row).", "",
        "```", *sorted({entry["command"] for entry in sizes}), "```", "",
        f"Each size N is a pair of generated JPEG folders (source and target, N images each, 10 classes, "
        f"{GENERATED_SIZE}×{GENERATED_SIZE} smooth images of a few KB, read at {IMAGE_SIZE}×{IMAGE_SIZE}; "
        f"`recipes/own_domains_dann.yaml` splits each into 80% train / 20% test). The files were in the page "
        f"cache (generated just before): cold-disk reads are not measured.", "",
        "## Decode rate", "",
        f"Images/s delivered to the training process by {workers} worker(s) in a shuffled order, as float "
        f"[-1, 1] batches of {results['batch_size']} at {IMAGE_SIZE}×{IMAGE_SIZE} (the best of "
        f"{results['rounds']} alternating rounds of {results['decode_images']} images after a warm-up batch). "
        "*ours*: `FileDomain` through `decoded_batches` (the loader of a streamed `BatchStream`) + `to_float`; "
        "*torchvision*: `ImageFolder` with `Resize((224, 224))` (bilinear), `ToTensor`, `Normalize(0.5, 0.5)` "
        "and a `DataLoader` with the same workers, persistent, prefetch 4. Both give the same images (largest "
        "difference in the row). *scan*: building the domain object from the folder.", "",
        "| N per domain | JPEG on disk (pair) | scan ours / torchvision | ours img/s (per worker) | "
        "torchvision img/s (per worker) | ours / torchvision | largest difference | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in sizes:
        decode = entry["decode"]
        lines.append(
            f"| {entry['size']:,} | {gigabytes(entry['disk_bytes'])} | {decode['scan_ours_s']:.1f} s / "
            f"{decode['scan_torchvision_s']:.1f} s | {decode['ours']:.0f} ({decode['ours'] / max(workers, 1):.0f}) | "
            f"{decode['torchvision']:.0f} ({decode['torchvision'] / max(workers, 1):.0f}) | "
            f"{decode['ours'] / decode['torchvision']:.2f} | {decode['difference']:.1e} | {entry['load']:.2f} |")
    profile = next((entry["profile"] for entry in sizes if entry.get("profile")), None)
    if profile:
        lines += ["", f"One image read in one process (ms per image, JPEG to {IMAGE_SIZE} px, "
                  "the best of 3 rounds over 200 files):", "", "| step | ms |", "|---|---:|"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in profile.items()]
    lines += [
        "", "## DANN run", "",
        f"`da-toolkit run recipes/own_domains_dann.yaml` with timm `resnet10t` (random init), "
        f"{results['iterations']} iterations of batch {results['batch_size']} (source) + {results['batch_size']} "
        f"(target) at {IMAGE_SIZE} px, fp32 on the CPU, `train.workers={workers}` (per streamed domain: the source "
        "and the target stream each have their own workers), `data.<domain>.storage` as in the row, test "
        "splits limited to 200 images. Memory is polled every 0.2 s over the run's process tree "
        "(the run and its DataLoader workers): *PSS* sums each process's proportional set size (a page shared "
        "by k processes counts 1/k in each: the tree's real footprint), *RSS* sums resident sizes (shared "
        "library pages counted once per process: an upper bound). The run is stopped when its training stage "
        "ends (domains built, model built, the iterations, one selection scoring): the evaluation after it "
        "reads the whole target training split for the collapse alarm (at 14 images/s forward on this CPU, "
        "hours at 160k images) and is not measured. *domains built*: from the start of the command to the run's "
        "first log line, written once its domains are built (the in-memory path decodes them there); *it/s*: the "
        "iterations over the training stage's own time (worker start-up included); *run until trained*: from "
        "the start of the command to the end of the training stage.",
        "", "| N per domain | storage | peak PSS (tree) | peak RSS (sum) | peak RSS (run process) | processes | "
        "domains built | it/s | images/s trained | run until trained |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in sizes:
        for run in entry["runs"]:
            lines.append(
                f"| {entry['size']:,} | {storage_label(run)} | {gigabytes(run['peak_pss'])} | "
                f"{gigabytes(run['peak_rss'])} | {gigabytes(run['peak_main_rss'])} | {run['processes']} | "
                f"{run['until_built_s']:.0f} s | {run['it_per_s']:.3f} | "
                f"{run['images_per_s']:.1f} | {run['until_trained_s']:.0f} s |")
    lines += ["", "What each run printed about its domains' storage:", "", "```"]
    for entry in sizes:
        for run in entry["runs"]:
            lines += [f"# N={entry['size']:,}, {storage_label(run)}", *run["storage_lines"]]
    lines += ["```", ""]
    return "\n".join(lines)


NOTES = "\n## What the figures say\n"  # a hand-written section: kept when the tables are written again


def write_markdown(results: dict, path: Path) -> None:
    """The tables of `results` to `path`, followed by its notes section if it has one."""
    old = path.read_text() if path.exists() else ""
    path.write_text(render_markdown(results) + (old[old.index(NOTES):] if NOTES in old else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the generated folders are cached (not in the repository)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000, 200000], help="images per domain")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode-images", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--memory-up-to", type=int, default=20000,
                        help="also run the in-memory path (storage auto: read into memory) up to this size")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--skip-runs", action="store_true", help="decode rates only")
    parser.add_argument("--render", action="store_true", help="only write the markdown table of --results again")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/streaming.json",
                        help="results of earlier sizes are kept; the markdown tables go beside it (.md), above the "
                        "hand-written section that starts at '## What the figures say', which is kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.render:
        write_markdown(json.loads(args.results.read_text()), args.results.with_suffix(".md"))
        return
    if args.workdir is None:
        parser.error("--workdir is required (except with --render)")
    folders = {}
    for size in args.sizes:
        print(f"generating n{size} (once) ...", flush=True)
        folders[size] = generate(args.workdir, size)
    if args.generate_only:
        return
    import torchvision
    import PIL

    results = json.loads(args.results.read_text()) if args.results.exists() else {"sizes": {}}
    keep = {key: value for key, value in results["sizes"].items()
            if results.get("workers") == args.workers and results.get("iterations") == args.iterations}
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": machine(),
               "torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__,
               "workers": args.workers, "iterations": args.iterations, "batch_size": args.batch_size,
               "decode_images": args.decode_images, "rounds": args.rounds,
               "sizes": keep}
    script = str(Path(sys.argv[0]).resolve().relative_to(REPO))
    command = "OMP_NUM_THREADS=1 python " + " ".join([script] + sys.argv[1:])
    for size in args.sizes:
        folder = folders[size]
        source = folder / "source"
        entry = {"size": size, "command": command, "load": os.getloadavg()[0], "disk_bytes": folder_bytes(folder)}
        from torchvision.datasets import ImageFolder
        from da_toolkit.data.files import image_folder

        began = time.perf_counter()
        image_folder(source, IMAGE_SIZE, "train")
        scan_ours = time.perf_counter() - began
        began = time.perf_counter()
        ImageFolder(str(source))
        scan_torchvision = time.perf_counter() - began
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(toolkit_rate(source, args.workers, args.batch_size, args.decode_images))
            theirs.append(torchvision_rate(source, args.workers, args.batch_size, args.decode_images))
            print(f"n{size} decode, {args.workers} worker(s): ours {ours[-1]:.0f} img/s, torchvision "
                  f"{theirs[-1]:.0f} img/s", flush=True)
        entry["decode"] = {"ours": max(ours), "torchvision": max(theirs), "rounds_ours": ours,
                           "rounds_torchvision": theirs, "scan_ours_s": scan_ours,
                           "scan_torchvision_s": scan_torchvision, "difference": same_images(source)}
        if size == min(args.sizes):
            entry["profile"] = profile_read(source, args.workdir)
            print(json.dumps(entry["profile"], indent=1), flush=True)
        entry["runs"] = []
        if not args.skip_runs:
            for storage in ["stream", "auto"] if size <= args.memory_up_to else ["auto"]:
                run = training_run(folder, storage, args.workers, args.iterations, args.batch_size,
                                   args.workdir / "runs" / f"n{size}-{storage}")
                print(f"n{size} run, {storage_label(run)}: peak PSS {gigabytes(run['peak_pss'])}, peak RSS "
                      f"{gigabytes(run['peak_rss'])}, {run['it_per_s']:.3f} it/s\n  "
                      + "\n  ".join(run["storage_lines"]),
                      flush=True)
                entry["runs"].append(run)
        results["sizes"][str(size)] = entry
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(results, args.results.with_suffix(".md"))


if __name__ == "__main__":
    main()

"""Offline domains: generated, or shipped with a dependency. They need no download and no files.

    syndigits     printed digits rendered with fonts in random colours, SVHN-like, 32×32 colour
    ucidigits     scikit-learn's real handwritten digits (UCI, 1,797 images), 8×8 grey
    usps-m, ucidigits-m, mnist-blend
                  a grey domain blended over patches of colour photographs as MNIST-M was made

Every domain is generated with a fixed seed per split, independent of the recipe seed, so runs
with different seeds train and evaluate on exactly the same images. `syndigits` is the only one
that takes noticeable time to make; it is stored in <data root>/cache/ and read from there later
(skipped when the data root is not writable). All are cached in-process; the returned tensors
are shared and must be treated as read-only.
"""
from __future__ import annotations

import functools
import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from sklearn.datasets import load_digits, load_sample_images
from sklearn.model_selection import train_test_split

from da_toolkit.data import DATASETS
from da_toolkit.data.base import DomainDataset, conform
from da_toolkit.training.checkpoint import UnreadableFile, WriteFailed, load_checkpoint, save_checkpoint

# ------------------------------------------------------------------------------------ syndigits

SYNDIGITS_SIZES = {"train": 20000, "test": 4000}
SYNDIGITS_SEEDS = {"train": 20_000, "test": 20_001}  # fixed: the same images for every recipe seed
SYNDIGITS_VERSION = 2  # part of the cache file name: bump it whenever the rendering changes (2: bundled fonts only)
# matplotlib's fonts that draw something else at the digits' code points: TeX's extension and symbol fonts
# (brackets, arrows, ∞ ⊂ ∀ ...), ten distinct glyphs that are not digits; and placeholder boxes
NOT_DIGIT_FONTS = {"cmex10.ttf", "cmsy10.ttf", "LastResortHE-Regular.ttf"}
GLYPH_CANVAS = 96  # pre-rendered glyphs: a digit 48 px tall (half the canvas) centred on 96×96
COMPOSE_SIZE = 64  # images are composed at 64×64 and averaged down to 32×32 (antialiasing)
IMAGE_SIZE = 32
RENDER_CHUNK = 1000  # images composed at once (bounds memory; part of the random stream's order)


@DATASETS.register("syndigits", "printed digits in random fonts and colours with distractors, SVHN-like, 32×32 "
                                "colour, generated offline")
def syndigits(split: str, root: Path, seed: int = 0, image_size: int = 32, folder: str | None = None) -> DomainDataset:
    """Font-rendered colour digits that imitate SVHN crops: a labeled, offline source domain.

    SYNDIGITS_SIZES[split] images from `render_syndigits` with the split's fixed seed, stored at
    <root>/cache/syndigits_<split>_v<version>_n<count>_fonts<key>.pt (the key names the font set: the
    fonts that Pillow and matplotlib ship, never the machine's, so every machine renders the same images).
    """
    return _syndigits(split, Path(root))


@functools.lru_cache(maxsize=2)
def _syndigits(split: str, root: Path) -> DomainDataset:
    count = SYNDIGITS_SIZES[split]
    path = root / "cache" / f"syndigits_{split}_v{SYNDIGITS_VERSION}_n{count}_fonts{glyph_masks()[1]}.pt"
    stored = None
    if path.is_file():
        try:
            stored = load_checkpoint(path, "dataset")
        except UnreadableFile as error:
            warnings.warn(f"{error}; rendering syndigits/{split} again")
    if stored is not None and _valid_syndigits(stored, count):
        images, labels = stored["images"], stored["labels"]
    else:
        images, labels = render_syndigits(count, SYNDIGITS_SEEDS[split])
        try:
            save_checkpoint({"images": images, "labels": labels}, path, "dataset")
        except WriteFailed:  # a read-only data root: generate again next time
            pass
    return DomainDataset(images, labels, f"syndigits/{split}")


def _valid_syndigits(stored: dict, count: int) -> bool:
    """Whether a cache file holds `count` uint8 images with int64 labels in 0..9 (else it is rendered again)."""
    images, labels = stored["images"], stored["labels"]
    return (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dtype == torch.uint8
            and images.dim() == 4 and len(images) == count and labels.shape == (count,)
            and labels.dtype == torch.int64 and bool(((labels >= 0) & (labels <= 9)).all()))


def fonts() -> list[ImageFont.FreeTypeFont]:
    """Pillow's bundled font plus the TrueType fonts matplotlib ships (DejaVu, STIX, Computer Modern), at a
    size that makes the digits 48 px tall (half of GLYPH_CANVAS). Never the machine's fonts: with them
    (syndigits version 1) each machine rendered other images, and a figure made on one could not be
    reproduced on another."""
    import matplotlib  # a dependency (plots); imported here, where its fonts are needed

    paths = [path for path in sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))
             if path.name not in NOT_DIGIT_FONTS]
    found = [ImageFont.load_default(size=GLYPH_CANVAS // 2)]
    for path in paths:
        try:
            found.append(ImageFont.truetype(str(path), GLYPH_CANVAS // 2))
        except OSError:  # unreadable or not a font after all
            continue
    scaled = []
    for font in found:
        left, top, right, bottom = font.getbbox("0123456789")
        if bottom > top:
            scaled.append(font.font_variant(size=round(font.size * (GLYPH_CANVAS / 2) / (bottom - top))))
    return scaled


def render_digits(font: ImageFont.FreeTypeFont) -> torch.Tensor:
    """The digits 0-9 of `font` as uint8 masks 10×96×96, each centred on its bounding box."""
    masks = []
    for digit in "0123456789":
        canvas = Image.new("L", (GLYPH_CANVAS, GLYPH_CANVAS), 0)
        left, top, right, bottom = font.getbbox(digit)
        position = (GLYPH_CANVAS / 2 - (left + right) / 2, GLYPH_CANVAS / 2 - (top + bottom) / 2)
        ImageDraw.Draw(canvas).text(position, digit, fill=255, font=font)
        masks.append(torch.from_numpy(np.array(canvas)))
    return torch.stack(masks)


@functools.lru_cache(maxsize=1)
def glyph_masks() -> tuple[torch.Tensor, str]:
    """The digits 0-9 of every font as masks in [0, 1], shape (fonts·10)×1×96×96 (digit d of font f
    at index 10·f + d), and a short key naming the font set. Fonts without ten distinct digit
    glyphs (symbol fonts that draw placeholder boxes) are left out."""
    masks, names = [], []
    for font in fonts():
        digits = render_digits(font)
        if len({bytes(mask.numpy()) for mask in digits}) == 10:
            masks.append(digits)
            names.append(" ".join(font.getname()))
    key = hashlib.sha1("\n".join(names).encode()).hexdigest()[:8]
    return torch.cat(masks).unsqueeze(1).float().div_(255), key


def render_syndigits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` SVHN-like 32×32 colour digits (uint8 count×3×32×32) and their labels, deterministic given `seed`.

    Each image draws, independently:
      * the digit and a font (Pillow's and matplotlib's; the neighbours use the same font),
      * height 55-90 % of the image, width ×0.8-1.2, rotation ±15°, shear ±0.2, centre jitter ±6 %,
      * neighbouring digits cut off at the left/right edge (probability 0.6 each), as in SVHN crops,
      * background and digit colours with luminance contrast ≥ 0.3, and a linear lighting ramp,
    then the 64×64 composition is averaged down to 32×32, blurred (Gaussian, σ 0-1 px) and noised
    (Gaussian, σ 0-5 % of the range).
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.rand(count, *shape, generator=generator) * (high - low) + low

    glyphs, _ = glyph_masks()
    labels = torch.randint(10, (count,), generator=generator)
    font = torch.randint(len(glyphs) // 10, (count,), generator=generator)
    neighbours = torch.randint(10, (count, 2), generator=generator)
    has_neighbour = torch.rand(count, 2, generator=generator) < 0.6
    scale = 2 * uniform(0.55, 0.9)  # glyph units (digit height 1) -> image units (height 2)
    stretch = uniform(0.8, 1.2)
    angle = uniform(-math.pi / 12, math.pi / 12)
    shear = uniform(-0.2, 0.2)
    centre = uniform(-0.12, 0.12, 2)
    advance = scale * stretch * uniform(0.7, 0.95)  # centre-to-centre distance of neighbours
    background = torch.rand(count, 3, generator=generator)
    foreground = contrasting_colours(background, 0.3, generator)
    ramp_angle = uniform(0, 2 * math.pi)
    ramp_strength = uniform(0, 0.2)
    blur = uniform(0, 1.0)
    noise = uniform(0, 0.05)

    # glyph -> image map p = centre + R(angle) · Shear · diag(scale · stretch, scale) · q
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shape = torch.zeros(count, 2, 2)
    shape[:, 0, 0], shape[:, 0, 1], shape[:, 1, 1] = scale * stretch, shear * scale, scale
    forward = rotation @ shape
    inverse = torch.linalg.inv(forward)
    baseline = rotation[:, :, 0]  # the rotated x axis, along which the neighbours sit

    def affine(offset: torch.Tensor) -> torch.Tensor:
        """grid_sample's image -> glyph map for a glyph centred at centre + offset · baseline."""
        shift = centre + offset.unsqueeze(1) * baseline
        return torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2)

    placements = [
        (labels, torch.ones(count, dtype=torch.bool), affine(torch.zeros(count))),
        (neighbours[:, 0], has_neighbour[:, 0], affine(-advance)),
        (neighbours[:, 1], has_neighbour[:, 1], affine(advance)),
    ]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, IMAGE_SIZE), torch.linspace(-1, 1, IMAGE_SIZE), indexing="ij")
    images = torch.empty(count, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for start in range(0, count, RENDER_CHUNK):
        part = slice(start, min(start + RENDER_CHUNK, count))
        n = part.stop - part.start
        mask = torch.zeros(n, 1, COMPOSE_SIZE, COMPOSE_SIZE)
        for digits, present, theta in placements:
            grid = F.affine_grid(theta[part], [n, 1, COMPOSE_SIZE, COMPOSE_SIZE], align_corners=False)
            drawn = F.grid_sample(glyphs[10 * font[part] + digits[part]], grid, align_corners=False)
            mask = torch.maximum(mask, drawn * present[part].view(n, 1, 1, 1))
        mask = F.avg_pool2d(mask, COMPOSE_SIZE // IMAGE_SIZE)
        image = background[part, :, None, None] * (1 - mask) + foreground[part, :, None, None] * mask
        ramp = ramp_angle[part].cos().view(n, 1, 1) * xs + ramp_angle[part].sin().view(n, 1, 1) * ys
        image = image + (ramp_strength[part].view(n, 1, 1) * ramp).unsqueeze(1)
        image = gaussian_blur(image, blur[part])
        image = image + noise[part].view(n, 1, 1, 1) * torch.randn(image.shape, generator=generator)
        images[part] = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels


def contrasting_colours(background: torch.Tensor, contrast: float, generator: torch.Generator) -> torch.Tensor:
    """Random RGB colours in [0, 1] whose luminance differs from each background's by ≥ `contrast`
    (rejection sampling)."""
    def luminance(colours: torch.Tensor) -> torch.Tensor:
        return colours @ torch.tensor([0.299, 0.587, 0.114])

    colours = torch.rand(background.shape, generator=generator)
    while (low := torch.nonzero((luminance(colours) - luminance(background)).abs() < contrast).flatten()).numel():
        colours[low] = torch.rand(len(low), 3, generator=generator)
    return colours


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Blur each image (N×C×H×W float) with its own Gaussian σ (N, in pixels; ~0 leaves it unchanged),
    separably, as one grouped convolution with replicated borders."""
    n, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets**2 / (2 * sigma.clamp_min(1e-3).view(n, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n·c)×(2r+1)
    flat = F.pad(images.reshape(1, n * c, h, w), [radius] * 4, mode="replicate")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


# ------------------------------------------------------------------------------------ ucidigits


@DATASETS.register("ucidigits", "scikit-learn's real handwritten digits (UCI), 8×8 grey, 1,257 train / 540 test")
def ucidigits(split: str, root: Path, seed: int = 0, image_size: int = 8, folder: str | None = None) -> DomainDataset:
    """The UCI optical-recognition digits shipped with scikit-learn (`load_digits`): 1,797 images of
    8×8 counts 0..16, scaled to 0..255 (white digit on black, like MNIST), split 70/30 stratified
    with a fixed random state."""
    return _ucidigits(split)


@functools.lru_cache(maxsize=2)
def _ucidigits(split: str) -> DomainDataset:
    digits = load_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, test = train_test_split(np.arange(len(labels)), test_size=0.3, random_state=0, stratify=digits.target)
    chosen = torch.from_numpy(np.sort(train if split == "train" else test))
    return DomainDataset(images[chosen], labels[chosen], f"ucidigits/{split}")


# ------------------------------------------------------------------- MNIST-M-style photo blends

BLEND_SIZE = 28  # MNIST-M's resolution: grey digits are resized to it before blending
BLEND_SEEDS = {"train": 30_000, "test": 30_001}
BLENDED_DOMAINS = {  # name -> the grey domain it blends
    "usps-m": "usps",
    "ucidigits-m": "ucidigits",
    "mnist-blend": "mnist",  # made from the local MNIST files; the published MNIST-M is `mnistm`
}


def register_blend(name: str, grey: str) -> None:
    @DATASETS.register(name, f"{grey} digits blended over colour photo patches as MNIST-M was made, 28×28 colour")
    def load(split: str, root: Path, seed: int = 0, image_size: int = BLEND_SIZE,
             folder: str | None = None) -> DomainDataset:
        return _blend(grey, split, Path(root), name)

    load.__doc__ = (f"`{grey}` resized to {BLEND_SIZE}×{BLEND_SIZE} and blended over photograph patches by "
                    f"`blend_over_photos`; needs the files of `{grey}` (see its loader).")


@functools.lru_cache(maxsize=4)
def _blend(grey: str, split: str, root: Path, name: str) -> DomainDataset:
    digits = DATASETS.get(grey)(split=split, root=root, seed=0, image_size=BLEND_SIZE)
    images = blend_over_photos(conform(digits.images, BLEND_SIZE, 1), BLEND_SEEDS[split])
    return DomainDataset(images, digits.labels, f"{name}/{split}")


for _name, _grey in BLENDED_DOMAINS.items():
    register_blend(_name, _grey)


@functools.lru_cache(maxsize=1)
def photographs() -> torch.Tensor:
    """scikit-learn's sample photographs (china.jpg, flower.jpg) as uint8 2×3×427×640."""
    return torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2).contiguous()


def blend_over_photos(digits: torch.Tensor, seed: int) -> torch.Tensor:
    """MNIST-M blending (Ganin et al., 2016): output = |patch − digit| per channel, for uint8 grey
    digits N×1×H×W and a random H×W patch of a random photograph per digit (deterministic given
    `seed`). Returns uint8 N×3×H×W."""
    photos = photographs()
    n, _, h, w = digits.shape
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(len(photos), (n,), generator=generator)
    top = torch.randint(photos.shape[2] - h + 1, (n,), generator=generator)
    left = torch.randint(photos.shape[3] - w + 1, (n,), generator=generator)
    windows = photos.unfold(2, h, 1).unfold(3, w, 1)  # a view: photo × 3 × top × left × h × w
    blended = torch.empty(n, 3, h, w, dtype=torch.uint8)
    for part in torch.arange(n).split(8192):
        patches = windows[which[part], :, top[part], left[part]].short()
        blended[part] = (patches - digits[part].short()).abs().to(torch.uint8)
    return blended

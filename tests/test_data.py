"""Dataset loaders: offline domains, real loaders on tiny files in the published formats, the
missing-file errors, the real MNIST/USPS copies (when present), and conforming via build_domain."""
from __future__ import annotations

import bz2
import weakref
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from PIL import Image

from conftest import SHARED_DATA, needs_shared_data
from da_toolkit.data import DATASETS, FileDomain, build_domain, real, synthetic
from da_toolkit.data.files import image_folder, read_rgb
from da_toolkit.errors import UserError
from da_toolkit.recipe import DomainSpec
from da_toolkit.training import checkpoint


def load(name: str, split: str, root: Path, **kwargs):
    return DATASETS.get(name)(split=split, root=root, seed=0, image_size=32, **kwargs)


@pytest.fixture
def offline(monkeypatch):
    """No download succeeds: every downloader the loaders use fails as it does without a network."""
    def fail(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(real, "download_url", fail)
    monkeypatch.setattr(real, "download_and_extract_archive", fail)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail)


def test_every_domain_is_registered_with_a_description():
    described = dict(DATASETS.describe())
    for name in ["mnist", "usps", "svhn", "mnistm", "imagefolder", "syndigits", "ucidigits", "usps-m",
                 "ucidigits-m", "mnist-blend"]:
        assert described[name]


# ------------------------------------------------------------------------------------ syndigits


@pytest.fixture
def small_syndigits(monkeypatch):
    monkeypatch.setattr(synthetic, "SYNDIGITS_SIZES", {"train": 200, "test": 60})


def test_syndigits_are_coloured_contrasting_digits_of_every_class(small_syndigits, tmp_path):
    data = load("syndigits", "train", tmp_path)
    assert data.images.dtype == torch.uint8 and data.images.shape == (200, 3, 32, 32)
    assert sorted(data.labels.unique().tolist()) == list(range(10))
    grey = data.images.float().mean(1)
    spread = grey.flatten(1).max(1).values - grey.flatten(1).min(1).values
    assert (spread > 40).float().mean() > 0.95  # the digit stands out from its background
    channel_means = data.images.float().mean((2, 3))
    assert (channel_means.std(1) > 5).float().mean() > 0.5  # colourful, not grey
    assert load("syndigits", "test", tmp_path).images.shape == (60, 3, 32, 32)


def test_syndigits_render_the_fonts_pillow_and_matplotlib_ship_and_only_digit_fonts():
    """Not the machine's fonts (with them each machine rendered other images), and none of matplotlib's fonts
    that draw brackets or symbols at the digits' code points (TeX's cmex10 and cmsy10 pass the ten-distinct-glyphs
    check: their 'digits' were labeled as digits)."""
    from da_toolkit.data.synthetic import fonts, glyph_masks

    names = [" ".join(font.getname()) for font in fonts()]
    assert {"Aileron Regular", "DejaVu Sans Book", "DejaVu Serif Bold", "STIXGeneral Italic", "cmr10 Regular",
            "cmtt10 Regular"} <= set(names)
    assert not [name for name in names if name.startswith(("cmex10", "cmsy10", "Last Resort"))]
    assert all("Liberation" not in name and "Noto" not in name for name in names)  # no system font
    assert len(glyph_masks()[0]) == 10 * len(names)  # each one's ten digits are distinct glyphs


def test_syndigits_are_deterministic_and_depend_on_the_seed():
    first, labels = synthetic.render_syndigits(50, seed=3)
    again, labels_again = synthetic.render_syndigits(50, seed=3)
    other, _ = synthetic.render_syndigits(50, seed=4)
    assert torch.equal(first, again) and torch.equal(labels, labels_again)
    assert not torch.equal(first, other)


def test_syndigits_are_cached_on_disk_and_read_back(small_syndigits, tmp_path, monkeypatch):
    made = load("syndigits", "test", tmp_path)
    cached = list((tmp_path / "cache").glob("syndigits_test_v*_n60_fonts*.pt"))
    assert len(cached) == 1
    synthetic._syndigits.cache_clear()

    def must_not_render(*args):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(synthetic, "render_syndigits", must_not_render)
    assert load("syndigits", "test", tmp_path).fingerprint() == made.fingerprint()


def test_syndigits_skip_the_cache_when_the_root_is_not_writable(small_syndigits, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    assert len(load("syndigits", "test", tmp_path)) == 60
    assert not list(tmp_path.glob("cache/*"))  # nothing written, not even a temporary file


def test_gaussian_blur_keeps_constants_and_sharp_images_at_sigma_zero():
    images = torch.rand(2, 3, 8, 8)
    images[1] = 0.25
    blurred = synthetic.gaussian_blur(images, torch.tensor([0.0, 2.0]))
    assert torch.allclose(blurred[0], images[0], atol=1e-4)
    assert torch.allclose(blurred[1], torch.full((3, 8, 8), 0.25))


# -------------------------------------------------------------------------- ucidigits and blends


def test_ucidigits_is_a_fixed_stratified_split_of_the_1797_digits(tmp_path):
    train, test = load("ucidigits", "train", tmp_path), load("ucidigits", "test", tmp_path)
    assert train.images.shape == (1257, 1, 8, 8) and test.images.shape == (540, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.images.max() == 255 and train.images.min() == 0
    assert train.images[:, :, :, 0].float().mean() < 30  # white digits on a black background
    test_share = test.labels.bincount() / (train.labels.bincount() + test.labels.bincount())
    assert torch.allclose(test_share, torch.full((10,), 0.3), atol=0.02)
    synthetic._ucidigits.cache_clear()
    assert load("ucidigits", "test", tmp_path).fingerprint() == test.fingerprint()  # the same split every time


def test_blend_is_the_absolute_difference_of_photo_patch_and_digit():
    black = torch.zeros(20, 1, 28, 28, dtype=torch.uint8)
    white = torch.full((20, 1, 28, 28), 255, dtype=torch.uint8)
    patches = synthetic.blend_over_photos(black, seed=7)  # |patch - 0| = patch
    assert torch.equal(synthetic.blend_over_photos(white, seed=7), 255 - patches)  # |patch - 255|
    assert not torch.equal(synthetic.blend_over_photos(black, seed=8), patches)
    photos = synthetic.photographs()  # the patch is a crop of one of the photographs:
    corners = (photos[:, :, :-27, :-27] == patches[0][:, :1, :1]).all(1).nonzero().tolist()
    assert any(torch.equal(photos[k, :, y:y + 28, x:x + 28], patches[0]) for k, y, x in corners)


def test_ucidigits_m_blends_the_grey_digits_in_colour(tmp_path):
    grey = load("ucidigits", "test", tmp_path)
    blended = load("ucidigits-m", "test", tmp_path)
    assert blended.images.shape == (540, 3, 28, 28) and torch.equal(blended.labels, grey.labels)
    assert (blended.images[:, 0] != blended.images[:, 1]).any()
    assert torch.equal(load("ucidigits-m", "test", tmp_path).images, blended.images)


# --------------------------------------------------------------------- real loaders on tiny files


def write_libsvm(path: Path, rows: list[tuple[int, dict[int, float]]]) -> None:
    lines = [" ".join([str(label)] + [f"{i}:{v:.6f}" for i, v in sorted(values.items())]) for label, values in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with bz2.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def test_usps_parses_libsvm_lines(tmp_path):
    dense = {i: -1.0 for i in range(1, 257)} | {1: 1.0, 17: 0.5}
    write_libsvm(tmp_path / "USPS" / "usps.t.bz2", [(10, dense), (3, {2: 1.0})])  # the second line is sparse
    data = load("usps", "test", tmp_path)
    assert data.images.shape == (2, 1, 16, 16) and data.labels.tolist() == [9, 2]
    assert data.images[0, 0, 0, 0] == 255 and data.images[0, 0, 1, 0] == 191 and data.images[0, 0, 0, 1] == 0
    assert data.images[1, 0, 0, 1] == 255 and data.images[1, 0, 0, 0] == 128  # omitted value 0 -> mid grey


def test_build_domain_conforms_usps_to_the_recipe_size_and_channels(tmp_path):
    top_half_white = {i: 1.0 if i <= 128 else -1.0 for i in range(1, 257)}
    write_libsvm(tmp_path / "usps.bz2", [(label, top_half_white) for label in range(1, 11)])
    domain = build_domain(DomainSpec("usps", "train"), image_size=32, channels=3, seed=0, root=tmp_path)
    image, label = domain[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 0
    assert image.min() == -1 and image.max() == 1 and image[0, 0].eq(1).all() and image[0, -1].eq(-1).all()
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


@pytest.mark.parametrize("subfolder", ["SVHN", "."])
def test_svhn_reads_the_published_mat_layout(tmp_path, subfolder):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    (tmp_path / subfolder).mkdir(exist_ok=True)
    scipy.io.savemat(tmp_path / subfolder / "test_32x32.mat", {"X": images, "y": np.array([[10], [1], [2], [9], [10]])})
    data = load("svhn", "test", tmp_path)
    assert data.images.shape == (5, 3, 32, 32) and data.labels.tolist() == [0, 1, 2, 9, 0]
    assert torch.equal(data.images[3], torch.from_numpy(images[:, :, :, 3]).permute(2, 0, 1))


def write_mnistm(root: Path, split: str, count: int) -> list[torch.Tensor]:
    folder = root / "mnist_m" / f"mnist_m_{split}"
    folder.mkdir(parents=True)
    images = [torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8) for _ in range(count)]
    lines = []
    for index, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:08d}.png")
        lines.append(f"{index:08d}.png {(index * 3) % 10}")
    (root / "mnist_m" / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    return images


def test_mnistm_reads_the_published_pngs_and_labels_file(tmp_path):
    images = write_mnistm(tmp_path, "train", 4)
    data = load("mnistm", "train", tmp_path)
    assert data.images.shape == (4, 3, 28, 28) and data.labels.tolist() == [0, 3, 6, 9]
    assert torch.equal(data.images, torch.stack(images))


def test_mnistm_names_a_listed_image_that_is_missing(tmp_path):
    write_mnistm(tmp_path, "test", 2)
    (tmp_path / "mnist_m" / "mnist_m_test" / "00000001.png").unlink()
    with pytest.raises(UserError, match="00000001.png"):
        load("mnistm", "test", tmp_path)


def write_image(path: Path, colour, size=(20, 14), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_imagefolder_finds_sorted_classes_resizes_and_keeps_colour(tmp_path):
    write_image(tmp_path / "zebra" / "a.png", (255, 0, 0))
    write_image(tmp_path / "ant" / "b.jpg", (0, 0, 255), size=(50, 40))
    write_image(tmp_path / "ant" / "c.png", (0, 255, 0), size=(8, 8))
    with pytest.warns(UserWarning, match="split deterministically"):
        data = load("imagefolder", "train", tmp_path, folder=str(tmp_path))
    images = data.in_memory().images
    assert images.shape == (3, 3, 32, 32) and data.labels.tolist() == [0, 0, 1] and data.num_classes == 2
    assert data.class_names == ["ant", "zebra"]
    assert images[2, 0].float().mean() > 250 and images[2, 1:].float().mean() < 5  # zebra is red


def test_imagefolder_uses_split_subfolders_and_reads_grey_images_at_the_recipes_channels(tmp_path):
    write_image(tmp_path / "train" / "one" / "a.png", 40, mode="L")
    write_image(tmp_path / "train" / "two" / "b.png", (90, 90, 90))
    write_image(tmp_path / "test" / "one" / "c.png", 200, mode="L")
    train = load("imagefolder", "train", tmp_path, folder=str(tmp_path)).configured(32, 1, 0).in_memory()
    test = load("imagefolder", "test", tmp_path, folder=str(tmp_path)).configured(32, 3, 0).in_memory()
    assert train.images.shape == (2, 1, 32, 32) and train.images[:, 0, 0, 0].tolist() == [40, 90]
    assert test.images.shape == (1, 3, 32, 32) and test.images[0, :, 0, 0].tolist() == [200, 200, 200]


def test_imagefolder_without_split_folders_keeps_every_fifth_image_for_test(tmp_path):
    for index in range(12):
        write_image(tmp_path / "digit" / f"{index:02d}.png", index * 20, mode="L")
    with pytest.warns(UserWarning, match="every fifth image"):
        train = load("imagefolder", "train", tmp_path, folder=str(tmp_path))
        test = load("imagefolder", "test", tmp_path, folder=str(tmp_path))
    assert test.in_memory().images[:, 0, 0, 0].tolist() == [80, 180]  # files 04 and 09, the 5th and 10th
    assert train.in_memory().images[:, 0, 0, 0].tolist() == [i * 20 for i in range(12) if i not in (4, 9)]


def test_a_file_domain_is_read_into_memory_without_holding_its_chunks(tmp_path, monkeypatch):
    """in_memory fills one tensor as the decoded chunks arrive: a chunk is gone before the next but one
    comes (a list of every chunk, concatenated at the end, held the domain twice while reading)."""
    for index in range(10):
        write_image(tmp_path / "grey" / f"{index:02d}.png", index * 20, mode="L")
    domain = image_folder(tmp_path, 8, "train").configured(8, 1, 0)
    decoded = FileDomain.chunks
    seen = []

    def tracked_chunks(self, batch_size):
        for chunk in decoded(self, 3):
            assert all(earlier() is None for earlier in seen[:-1]), "in_memory kept an earlier chunk"
            seen.append(weakref.ref(chunk))
            yield chunk

    monkeypatch.setattr(FileDomain, "chunks", tracked_chunks)
    images = domain.in_memory().images
    assert len(seen) == 4 and images.shape == (10, 1, 8, 8)
    assert images[:, 0, 0, 0].tolist() == [index * 20 for index in range(10)]


def test_a_jpeg_twice_the_image_size_is_decoded_at_reduced_scale_other_files_whole(tmp_path):
    """read_rgb lets libjpeg decode a JPEG at least twice the requested size at 1/2, 1/4 or 1/8 scale
    (Pillow's draft mode) before the bilinear resize; a smaller JPEG and a PNG are decoded whole."""
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "large.jpg", quality=90)
    Image.fromarray(noise).save(tmp_path / "large.png")
    Image.fromarray(noise[:150, :150]).save(tmp_path / "small.jpg", quality=90)

    def resized(path, draft):
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (100, 100))
            image = image.convert("RGB").resize((100, 100), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.array(image)).permute(2, 0, 1)

    with Image.open(tmp_path / "large.jpg") as image:
        image.draft("RGB", (100, 100))
        assert image.size == (160, 120)  # 1/4 scale: the smallest that covers 100 × 100
    large = tmp_path / "large.jpg"
    assert torch.equal(read_rgb(large, 100), resized(large, draft=True))
    assert not torch.equal(read_rgb(large, 100), resized(large, draft=False))
    assert torch.equal(read_rgb(tmp_path / "small.jpg", 100), resized(tmp_path / "small.jpg", draft=False))
    assert torch.equal(read_rgb(tmp_path / "large.png", 100), resized(tmp_path / "large.png", draft=False))


def test_imagefolder_lists_the_images_of_a_class_in_path_order_component_by_component(tmp_path):
    """Paths sort as `Path`s do (by component): `cat/a/z.png` before `cat/a-b.png`, though '-' sorts
    before '/' in a plain string; upper-case suffixes count, other files do not."""
    for relative in ["cat/a-b.png", "cat/a/z.png", "cat/b.JPG", "cat/notes.txt", "cat/a/y.png"]:
        path = tmp_path / relative
        if path.suffix == ".txt":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not an image")
        else:
            write_image(path, (10, 20, 30))
    domain = image_folder(tmp_path, 8, "train")
    expected = [tmp_path / relative for relative in ["cat/a/y.png", "cat/a/z.png", "cat/a-b.png", "cat/b.JPG"]]
    assert domain.paths == [str(path) for path in sorted(expected)] == [str(path) for path in expected]


def test_imagefolder_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="root"):
        load("imagefolder", "train", tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load("imagefolder", "train", tmp_path, folder=str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "class").mkdir(parents=True)
    with pytest.raises(UserError, match=str(tmp_path / "empty")):
        load("imagefolder", "train", tmp_path, folder=str(tmp_path / "empty"))


# ---------------------------------------------------------------------------- missing real files


@pytest.mark.parametrize("name, split, expected, folder", [
    ("mnist", "train", "train-images-idx3-ubyte", "MNIST/raw"),
    ("mnist", "test", "t10k-labels-idx1-ubyte", "MNIST/raw"),
    ("usps", "test", "usps.t.bz2", "."),
    ("svhn", "train", "train_32x32.mat", "SVHN"),
    ("mnistm", "test", "mnist_m_test_labels.txt", "mnist_m"),
    ("mnist-blend", "train", "train-images-idx3-ubyte", "MNIST/raw"),
])
def test_missing_files_give_one_clear_error(offline, tmp_path, name, split, expected, folder):
    with pytest.raises(UserError) as error:
        load(name, split, tmp_path)
    message = str(error.value)
    assert expected in message and str(tmp_path / folder) in message
    assert "download failed" in message and "DA_TOOLKIT_DATA" in message


# ----------------------------------------------------------------------- the real MNIST and USPS


@needs_shared_data
def test_real_mnist_sizes_and_class_counts():
    train, test = load("mnist", "train", SHARED_DATA), load("mnist", "test", SHARED_DATA)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert load("mnist", "test", SHARED_DATA) is test  # cached in-process


@needs_shared_data
def test_real_usps_sizes_and_class_counts():
    train, test = load("usps", "train", SHARED_DATA), load("usps", "test", SHARED_DATA)
    assert train.images.shape == (7291, 1, 16, 16) and test.images.shape == (2007, 1, 16, 16)
    assert train.labels.bincount().tolist() == [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
    assert test.labels.bincount().tolist() == [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]


@needs_shared_data
def test_real_usps_matches_torchvision_up_to_rounding():
    test = load("usps", "test", SHARED_DATA)
    reference = torchvision.datasets.USPS(str(SHARED_DATA), train=False)  # truncates where we round
    difference = torch.from_numpy(reference.data).int() - test.images[:, 0].int()
    assert difference.abs().max() <= 1 and torch.equal(torch.tensor(reference.targets), test.labels)

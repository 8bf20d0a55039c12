"""The file-backed datasets of the registry: any image folder (`imagefolder`) and any list file
(`imagelist`), streamable (data/files.py). The photo benchmarks' lists are registered in photo.py."""
from __future__ import annotations

import warnings
from pathlib import Path

from da_toolkit.data import DATASETS
from da_toolkit.data.files import FileDomain, image_folder, image_list
from da_toolkit.errors import UserError


@DATASETS.register("imagefolder", "any <root>/<class>/*.png|jpg tree (recipe key `root`), streamable")
def imagefolder(split: str, root: Path, seed: int = 0, image_size: int = 32, folder: str | None = None,
                list_file: str | None = None) -> FileDomain:
    """Images in class sub-folders (sorted class names give labels 0, 1, ...; the names match the classes of
    source and target), as torchvision's ImageFolder finds them. `folder` is the recipe's `root` key; when
    it holds `train/` and `test/` sub-folders the one matching `split` is read. Without them the folder is
    split deterministically, per class and by sorted file order: every fifth image (the 5th, 10th, ...) is
    the test split, the others the training split, and a warning says so — so a target domain's training
    images never double as its test set. An unreadable image (corrupt, not an image, a decompression bomb,
    a symlink loop) is an error naming the file, or, with the domain's `skip_unreadable: true` (in
    memory), skipped with a warning that counts them."""
    if folder is None:
        raise UserError("imagefolder: the domain needs `root: <folder of class sub-folders>` in the recipe")
    base = Path(folder).expanduser().resolve()
    if not base.is_dir():
        raise UserError(f"imagefolder: folder {base} does not exist")
    if (base / "train").is_dir() and (base / "test").is_dir():
        return image_folder(base / split, image_size, split)
    dataset = image_folder(base, image_size, split, split_by_order=split)
    warnings.warn(f"imagefolder: {base} has no train/ and test/ sub-folders, so it is split deterministically: every "
                  f"fifth image of each class is the test split; add train/ and test/ sub-folders to choose the split")
    return dataset


@DATASETS.register("imagelist", "a list file of `relative/path.jpg label` lines (recipe keys `list`, `root`), "
                                "streamable")
def imagelist(split: str, root: Path, seed: int = 0, image_size: int = 32, folder: str | None = None,
              list_file: str | None = None) -> FileDomain:
    """The images of the recipe's `list` file, one `relative/path.jpg label` a line, as the photo benchmarks
    are distributed; paths are relative to the recipe's `root` (default: the list file's folder). The list
    is the split: name the test split's own list on `target_test` (or the same list, as the Office
    benchmarks are evaluated)."""
    if list_file is None:
        raise UserError("imagelist: the domain needs `list: <file of relative/path.jpg label lines>` in the recipe")
    path = Path(list_file).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"imagelist: list file {path} does not exist")
    image_root = Path(folder).expanduser().resolve() if folder is not None else path.parent
    return image_list(path, image_root, image_size, f"imagelist:{path.stem}/{split}")

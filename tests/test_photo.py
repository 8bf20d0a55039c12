"""The photo benchmarks (data/photo.py, recipes/<benchmark>_*.yaml, benchmarks/office31.yaml) offline: a tiny
Office-31 tree in TLlib's layout built in tmp_path stands in for the real files, timm's tiny `test_resnet`
from a local weights file for the pretrained resnet50."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image

from da_toolkit import benchmark as bench
from da_toolkit.cli import main
from da_toolkit.data import DATASETS, FILE_DATASETS, FileDomain, build_domain, build_domains, match_classes, photo
from da_toolkit.errors import UserError
from da_toolkit.recipe import DomainSpec, load_recipe

REPO = Path(__file__).resolve().parents[1]
OFFICE31 = photo.OFFICE31.classes
PRESENT = {"back_pack": (200, 40, 40), "bike": (40, 200, 40), "calculator": (40, 40, 200)}  # labels 0, 1, 5
PHOTO_NAMES = [f"office31-{d}" for d in ("amazon", "dslr", "webcam")] + [
    f"officehome-{d}" for d in ("art", "clipart", "product", "real_world")] + [
    "visda2017-synthetic", "visda2017-real"] + [
    f"domainnet-{d}" for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")]


def write_office31_domain(base: Path, domain: str, labels: dict[str, int], per_class: int = 4) -> None:
    """base/<domain>/images/<class>/frame_000i.jpg (a colour per class) and base/image_list/<domain>.txt in
    TLlib's format: `<domain>/images/<class>/frame_000i.jpg <label>`."""
    lines = []
    for name, colour in PRESENT.items():
        folder = base / domain / "images" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.tensor(colour).view(1, 1, 3).expand(20, 20, 3) + 5 * i
            Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy()).save(folder / f"frame_{i:04d}.jpg")
            lines.append(f"{domain}/images/{name}/frame_{i:04d}.jpg {labels[name]}")
    (base / "image_list").mkdir(exist_ok=True)
    (base / "image_list" / f"{domain}.txt").write_text("\n".join(lines) + "\n")


TLLIB_ORDER = {name: OFFICE31.index(name) for name in PRESENT}


@pytest.fixture
def office31(tmp_path) -> Path:
    """A data root holding office31/ with amazon and webcam (3 of the 31 classes, 4 JPEGs each) in TLlib's
    label order."""
    for domain in ("amazon", "webcam"):
        write_office31_domain(tmp_path / "office31", domain, TLLIB_ORDER)
    return tmp_path


@pytest.fixture
def no_downloads(monkeypatch):
    monkeypatch.setenv("DA_TOOLKIT_DOWNLOAD", "0")


def load(name: str, split: str, root: Path, **kwargs):
    return DATASETS.get(name)(split=split, root=root, seed=0, image_size=16, **kwargs)


def test_every_photo_domain_is_registered_streamable_and_described():
    assert list(photo.PHOTO_DATASETS) == PHOTO_NAMES
    described = dict(DATASETS.describe())
    for name in PHOTO_NAMES:
        assert name in FILE_DATASETS and "streamable" in described[name]
    assert [len(b.classes) for b in (photo.OFFICE31, photo.OFFICEHOME, photo.VISDA2017, photo.DOMAINNET)] == [
        31, 65, 12, 345]
    for benchmark in (photo.OFFICE31, photo.OFFICEHOME, photo.VISDA2017, photo.DOMAINNET):
        assert len(set(benchmark.classes)) == len(benchmark.classes)
    lists = {d.name: (d.list_file("train"), d.list_file("test")) for d in photo.DOMAINS}
    assert lists["office31-amazon"] == ("image_list/amazon.txt",) * 2  # no test split: the whole domain
    assert lists["officehome-real_world"] == ("image_list/Real_World.txt",) * 2
    assert lists["visda2017-real"] == ("image_list/validation.txt",) * 2
    assert lists["domainnet-quickdraw"] == ("image_list/quickdraw_train.txt", "image_list/quickdraw_test.txt")


def test_office31_loads_through_its_name_with_the_published_classes(office31, no_downloads):
    amazon = load("office31-amazon", "train", office31)
    assert isinstance(amazon, FileDomain) and amazon.name == "office31-amazon/train"
    assert amazon.class_names == list(OFFICE31) and amazon.num_classes == 31
    assert amazon.labels.tolist() == [0] * 4 + [1] * 4 + [5] * 4
    assert Path(amazon.paths[8]) == office31 / "office31" / "amazon" / "images" / "calculator" / "frame_0000.jpg"
    blue = amazon.read([8])[0].float().mean((1, 2))
    assert blue[2] > 150 and blue[0] < 90  # the calculator image, decoded at the asked size
    assert amazon.read([8]).shape == (1, 3, 16, 16)
    test = load("office31-amazon", "test", office31)
    assert test.paths == amazon.paths and torch.equal(test.labels, amazon.labels)  # the same list
    elsewhere = load("office31-amazon", "train", office31 / "nowhere", folder=str(office31 / "office31"))
    assert elsewhere.paths == amazon.paths  # the recipe's `root` names the benchmark folder itself


def test_office31_streams_and_reads_the_same_images_in_memory(office31, no_downloads):
    streamed = build_domain(DomainSpec("office31-webcam", storage="stream"), 16, 3, seed=0, root=office31)
    in_memory = build_domain(DomainSpec("office31-webcam", storage="memory"), 16, 3, seed=0, root=office31)
    assert isinstance(streamed, FileDomain) and not isinstance(in_memory, FileDomain)
    assert torch.equal(torch.cat(list(streamed.chunks(5))), in_memory.images)
    assert torch.equal(streamed.labels, in_memory.labels) and streamed.class_names == in_memory.class_names


def test_classes_match_by_name_across_domains_whatever_the_label_order(office31, no_downloads):
    """A copy of the webcam list numbering its classes 0, 1, 2 (not TLlib's 0, 1, 5) still names them by
    their folders, and the target is relabeled into the source's order."""
    other = office31 / "other"
    write_office31_domain(other, "webcam", {"back_pack": 0, "bike": 1, "calculator": 2})
    amazon = load("office31-amazon", "train", office31)
    webcam = load("office31-webcam", "train", office31, folder=str(other))
    assert webcam.class_names[:3] == ["back_pack", "bike", "calculator"] and len(webcam.class_names) == 31
    assert sorted(webcam.class_names) == sorted(OFFICE31)
    assert webcam.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    matched = match_classes(amazon.class_names, webcam, "target")
    assert matched.class_names == list(OFFICE31)
    assert matched.labels.tolist() == [0] * 4 + [1] * 4 + [5] * 4
    webcam_test = load("office31-webcam", "test", office31)
    assert match_classes(amazon.class_names, webcam_test, "target_test").labels.tolist() == amazon.labels.tolist()


def test_a_recipes_domains_build_from_the_registered_names(office31, no_downloads):
    recipe = load_recipe(REPO / "recipes" / "office31_a2w_dann.yaml",
                         ["data.image_size=16", "data.source.storage=stream", "data.target_labels_per_class=1"])
    lines = []
    domains = build_domains(recipe.data, seed=0, root=office31, report=lines.append)
    assert isinstance(domains.source, FileDomain) and not isinstance(domains.target, FileDomain)
    assert domains.source_test is None  # Office-31: source accuracy is read on the source itself
    assert (domains.target.labels >= 0).sum() == 3  # one labeled image per present class, the rest hidden
    assert domains.target_test.labels.tolist() == [0] * 4 + [1] * 4 + [5] * 4
    assert any("office31-amazon/train, 12 images" in line and "streamed" in line for line in lines)


def test_missing_files_are_one_line_naming_the_list_the_folder_and_the_archives(tmp_path, no_downloads):
    with pytest.raises(UserError) as error:
        load("officehome-art", "train", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"officehome-art: missing image_list/Art.txt, Art/ in {tmp_path / 'officehome'} "
                              f"(downloads are off: DA_TOOLKIT_DOWNLOAD=0).")
    assert photo.OFFICEHOME.lists_url in message and "Art.tgz (https://cloud.tsinghua.edu.cn/f/" in message
    with pytest.raises(UserError, match=r"missing image_list/clipart_test.txt, clipart/ in .*domainnet"):
        load("domainnet-clipart", "test", tmp_path)


def test_a_failed_download_says_why(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(photo, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match=r"visda2017-real: missing image_list/validation.txt, validation/ in .* "
                                        r"\(download failed: <urlopen error .*Name or service not known>\)"):
        load("visda2017-real", "test", tmp_path)


def test_missing_archives_are_downloaded_and_extracted_into_the_benchmark_folder(tmp_path, monkeypatch):
    """Only what is missing is fetched: the list archive, then the domain's images (TLlib's mirror)."""
    made = tmp_path / "made"
    write_office31_domain(made, "dslr", TLLIB_ORDER)
    fetched = []

    def extract(url, download_root, filename, remove_finished):
        fetched.append((url, filename))
        source = made / ("image_list" if filename == "image_list.zip" else "dslr")
        (Path(download_root) / source.name).symlink_to(source, target_is_directory=True)

    monkeypatch.setattr(photo, "download_and_extract_archive", extract)
    (tmp_path / "office31").mkdir()
    dslr = load("office31-dslr", "train", tmp_path)
    dslr_domain = next(d for d in photo.DOMAINS if d.name == "office31-dslr")
    assert fetched == [(photo.OFFICE31.lists_url, "image_list.zip"), (dslr_domain.archive_url, "dslr.tgz")]
    assert len(dslr) == 12 and dslr.class_names == list(OFFICE31)
    load("office31-dslr", "test", tmp_path)
    assert len(fetched) == 2  # present now: nothing fetched again
    (tmp_path / "office31" / "image_list").unlink()
    load("office31-dslr", "train", tmp_path)
    assert fetched[2:] == [(photo.OFFICE31.lists_url, "image_list.zip")]  # the lists only: the images are there


def test_the_cli_stops_with_exit_status_2_before_writing_the_run(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(REPO / "recipes" / "office31_a2w_dann.yaml"), "-o", str(run)],
                                env={"DA_TOOLKIT_DATA": str(tmp_path / "data"), "DA_TOOLKIT_DOWNLOAD": "0"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: office31-amazon: missing image_list/amazon.txt, amazon/ in {tmp_path / 'data' / 'office31'}")
    assert not (run / "recipe.yaml").exists() and not (run / "metrics.json").exists()


@pytest.mark.parametrize("task, backbone", [("office31_a2w", "resnet50.tv_in1k"), ("office31_d2a", "resnet50.tv_in1k"),
                                            ("officehome_ar2cl", "resnet50.tv_in1k"),
                                            ("visda2017_syn2real", "resnet101.tv_in1k"),
                                            ("domainnet_c2p", "resnet101.tv_in1k")])
def test_photo_recipes_follow_tllibs_protocol(task, backbone):
    recipes = sorted((REPO / "recipes").glob(f"{task}_*.yaml"))
    assert {p.stem.removeprefix(f"{task}_") for p in recipes} >= {"source_only", "dann", "mcc"}
    for path in recipes:
        recipe = load_recipe(path)
        assert (recipe.classifier.backbone, recipe.classifier.pretrained) == (backbone, True)
        assert recipe.data.image_size == 224
        assert recipe.classifier.backbone_lr_multiplier == 0.1
        if recipe.feature.adapter == "mean_teacher":  # TLlib's self_ensemble.py trains with Adam at 1e-4
            assert (recipe.train.optimizer, recipe.train.lr) == ("adam", 0.0001)
        else:
            assert recipe.train.nesterov
            assert (recipe.train.optimizer, recipe.train.momentum, recipe.train.weight_decay) == ("sgd", 0.9, 0.001)
        assert recipe.train.lr_schedule == "inverse" and recipe.train.augment.hflip
        assert recipe.data.source.name in photo.PHOTO_DATASETS and recipe.data.target_test.split == "test"
    dann = load_recipe(REPO / "recipes" / f"{task}_dann.yaml")
    assert (dann.train.lr, dann.train.batch_size) == (0.01, 32)


def test_a_tiny_office31_run_from_the_recipe_then_evaluate(office31, tmp_path):
    """recipes/office31_a2w_dann.yaml on the fake tree (through $DA_TOOLKIT_DATA), streamed source, tiny."""
    torch.manual_seed(0)
    weights = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), weights)
    run = tmp_path / "run"
    env = {"DA_TOOLKIT_DATA": str(office31), "DA_TOOLKIT_DOWNLOAD": "0"}
    result = CliRunner().invoke(main, [
        "run", str(REPO / "recipes" / "office31_a2w_dann.yaml"), "classifier.backbone=test_resnet",
        f"classifier.checkpoint={weights}", "classifier.bottleneck_dim=16", "data.image_size=32",
        "data.source.storage=stream", "train.workers=0", "train.iterations=3", "train.batch_size=4",
        "train.eval_batch_size=8", "train.device=cpu", "feature.discriminator_hidden=[16]", "feature.guard=ignore",
        "-o", str(run), "-q"], env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"]["images"] == 12 and metrics["target"]["dataset"] == "office31-webcam/test"
    assert len(metrics["target"]["per_class_accuracy"]) == 31
    result = CliRunner().invoke(main, ["evaluate", str(run), "--dataset", "office31-webcam"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"accuracy {100 * metrics['target_accuracy']:.2f}% on office31-webcam/test "
                                    f"(12 images)")
    assert "class calculator:" in result.output


def test_office31_benchmark_has_a_gpu_profile_and_every_cell_has_its_recipe():
    office31 = bench.load_benchmark(REPO / "benchmarks" / "office31.yaml")
    assert set(office31.profiles) == {"gpu", "smoke"} and office31.profiles["gpu"].overrides == []
    assert office31.methods == ["source_only", "dann", "cdan", "mcc"] and len(office31.seeds) == 3
    for task in office31.tasks:
        for method in office31.methods:
            load_recipe(office31.recipe_path(task, method), office31.cell_overrides(method, "smoke"))


def test_published_photo_numbers_and_the_columns_a_benchmark_shows():
    published = bench.load_published(REPO / "benchmarks" / "published.yaml")
    assert published.get("office31_a2w", "dann", "tllib").accuracy == 91.4
    assert published.get("office31_d2a", "mcc", "tllib").accuracy == 75.5
    assert published.get("officehome_ar2cl", "cdan", "tllib").accuracy == 55.2
    assert published.get("officehome_avg", "source_only", "tllib").accuracy == 58.4
    assert published.get("visda2017_syn2real", "mcc", "tllib").accuracy == 80.4  # overall; mean class 83.6
    assert "mean class accuracy 83.6" in published.get("visda2017_syn2real", "mcc", "tllib").reported_as
    assert published.get("domainnet_c2p", "dann", "tllib").accuracy == 37.9
    for task in ("office31_a2w", "office31_d2w", "office31_w2d", "office31_a2d", "office31_d2a", "office31_w2a"):
        assert all(published.get(task, m, "tllib") for m in ("source_only", "dann", "cdan", "mcc"))
    office31 = published.for_tasks(["office31_a2w", "office31_d2a"])
    assert set(office31.columns) == {"tllib"} and set(office31.citations) == {"tllib"}
    assert {task for task, _, _ in office31.numbers} == {"office31_a2w", "office31_d2a"}
    assert set(published.for_tasks(["mnist2usps"]).columns) == {"cycada", "adda"}
    assert published.for_tasks(["toy"]) is None


def test_the_office31_results_table_shows_the_tllib_column_only(tmp_path):
    office31 = bench.load_benchmark(REPO / "benchmarks" / "office31.yaml")
    bench.write_results(tmp_path, office31, "gpu", "da-toolkit compare benchmarks/office31.yaml", [], [])
    text = (tmp_path / "results.md").read_text()
    assert "| task | method | ours (%) | n | TLlib | wall time / cell (s) |" in text
    assert "Transfer-Learning-Library" in text and "CyCADA T1" not in text and "dann ↔ TLlib: DANN" in text

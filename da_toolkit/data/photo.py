"""The photo benchmarks as list-file domains (streamable), in Transfer-Learning-Library's layout and lists.

Each benchmark lives in a folder of the data root (or the folder a domain's recipe key `root` names),
holding TLlib's `image_list/` (lines `relative/path.jpg label`, paths relative to that folder) and one
folder of images per domain:

    office31-{amazon,dslr,webcam}         office31/image_list/<domain>.txt       office31/<domain>/images/<class>/*.jpg
    officehome-{art,clipart,product,real_world}
                                          officehome/image_list/<Domain>.txt     officehome/<Domain>/<class>/*.jpg
    visda2017-synthetic, visda2017-real   visda2017/image_list/{train,validation}.txt
                                                                                 visda2017/{train,validation}/<class>/*
    domainnet-{clipart,infograph,painting,quickdraw,real,sketch}
                                          domainnet/image_list/<domain>_{train,test}.txt
                                                                                 domainnet/<domain>/<class>/*.jpg

Splits: DomainNet has a train and a test list per domain. Office-31, Office-Home and VisDA-2017 have one
list per domain, and the standard protocol trains on the whole unlabeled target domain and reports the
accuracy on the same images (VisDA-2017: the synthetic training set to the real validation set), so
`split: train` and `split: test` read the same list.

Class names are the benchmark's published class names (TLlib's class lists, in its label order): class
i of a list is named after the folder its images lie in when that is a published name, so classes match
by name across domains (data/__init__.py `match_classes`) whatever label order a copy of the lists uses,
and every domain of a benchmark has all its classes, even one that a list lacks.

Missing files are downloaded once from TLlib's mirror (the list archive and the domain's image archive,
extracted into the benchmark folder); without a network, or with DA_TOOLKIT_DOWNLOAD=0, one UserError
names the missing files, the folder and the archives to extract there.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from da_toolkit.data import DATASETS
from da_toolkit.data.files import FileDomain, image_list
from da_toolkit.data.real import require_files
from da_toolkit.errors import UserError


@dataclass(frozen=True)
class PhotoBenchmark:
    """A benchmark: its folder, its published class list and the archive of its list files."""

    folder: str  # its folder under the data root
    title: str
    classes: tuple[str, ...]  # class i of the published lists
    lists_url: str  # image_list.zip: the list files of every domain
    lists_per_split: bool  # <domain>_train.txt and <domain>_test.txt (DomainNet); else one list per domain


@dataclass(frozen=True)
class PhotoDomain:
    """One domain of a benchmark, as registered: where its list files and images lie, and its archive."""

    name: str  # the registered name
    benchmark: PhotoBenchmark
    images: str  # the folder of its images in the benchmark folder; also names its list files and archive
    archive_url: str  # <images>.tgz, which extracts to <images>/
    description: str

    def list_file(self, split: str) -> str:
        """image_list/<images>.txt, or image_list/<images>_<split>.txt for a benchmark with a list per split."""
        stem = f"{self.images}_{split}" if self.benchmark.lists_per_split else self.images
        return f"image_list/{stem}.txt"


OFFICE31 = PhotoBenchmark("office31", "Office-31", (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
    "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray", "mobile_phone",
    "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can"),
    "https://cloud.tsinghua.edu.cn/f/2c1dd9fbcaa9455aa4ad/?dl=1", lists_per_split=False)

OFFICEHOME = PhotoBenchmark("officehome", "Office-Home", (
    "Drill", "Exit_Sign", "Bottle", "Glasses", "Computer", "File_Cabinet", "Shelf", "Toys", "Sink", "Laptop", "Kettle",
    "Folder", "Keyboard", "Flipflops", "Pencil", "Bed", "Hammer", "ToothBrush", "Couch", "Bike", "Postit_Notes", "Mug",
    "Webcam", "Desk_Lamp", "Telephone", "Helmet", "Mouse", "Pen", "Monitor", "Mop", "Sneakers", "Notebook",
    "Backpack", "Alarm_Clock", "Push_Pin", "Paper_Clip", "Batteries", "Radio", "Fan", "Ruler", "Pan", "Screwdriver",
    "Trash_Can", "Printer", "Speaker", "Eraser", "Bucket", "Chair", "Calendar", "Calculator", "Flowers",
    "Lamp_Shade", "Spoon", "Candles", "Clipboards", "Scissors", "TV", "Curtains", "Fork", "Soda", "Table", "Knives",
    "Oven", "Refrigerator", "Marker"),
    "https://cloud.tsinghua.edu.cn/f/1b0171a188944313b1f5/?dl=1", lists_per_split=False)

VISDA2017 = PhotoBenchmark("visda2017", "VisDA-2017", (
    "aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant", "skateboard", "train",
    "truck"),
    "https://cloud.tsinghua.edu.cn/f/c107de37b8094c5398dc/?dl=1", lists_per_split=False)

DOMAINNET = PhotoBenchmark("domainnet", "DomainNet", (
    "aircraft_carrier", "airplane", "alarm_clock", "ambulance", "angel", "animal_migration", "ant", "anvil", "apple",
    "arm", "asparagus", "axe", "backpack", "banana", "bandage", "barn", "baseball", "baseball_bat", "basket",
    "basketball", "bat", "bathtub", "beach", "bear", "beard", "bed", "bee", "belt", "bench", "bicycle", "binoculars",
    "bird", "birthday_cake", "blackberry", "blueberry", "book", "boomerang", "bottlecap", "bowtie", "bracelet",
    "brain", "bread", "bridge", "broccoli", "broom", "bucket", "bulldozer", "bus", "bush", "butterfly", "cactus",
    "cake", "calculator", "calendar", "camel", "camera", "camouflage", "campfire", "candle", "cannon", "canoe", "car",
    "carrot", "castle", "cat", "ceiling_fan", "cello", "cell_phone", "chair", "chandelier", "church", "circle",
    "clarinet", "clock", "cloud", "coffee_cup", "compass", "computer", "cookie", "cooler", "couch", "cow", "crab",
    "crayon", "crocodile", "crown", "cruise_ship", "cup", "diamond", "dishwasher", "diving_board", "dog", "dolphin",
    "donut", "door", "dragon", "dresser", "drill", "drums", "duck", "dumbbell", "ear", "elbow", "elephant",
    "envelope", "eraser", "eye", "eyeglasses", "face", "fan", "feather", "fence", "finger", "fire_hydrant",
    "fireplace", "firetruck", "fish", "flamingo", "flashlight", "flip_flops", "floor_lamp", "flower",
    "flying_saucer", "foot", "fork", "frog", "frying_pan", "garden", "garden_hose", "giraffe", "goatee", "golf_club",
    "grapes", "grass", "guitar", "hamburger", "hammer", "hand", "harp", "hat", "headphones", "hedgehog",
    "helicopter", "helmet", "hexagon", "hockey_puck", "hockey_stick", "horse", "hospital", "hot_air_balloon",
    "hot_dog", "hot_tub", "hourglass", "house", "house_plant", "hurricane", "ice_cream", "jacket", "jail",
    "kangaroo", "key", "keyboard", "knee", "knife", "ladder", "lantern", "laptop", "leaf", "leg", "light_bulb",
    "lighter", "lighthouse", "lightning", "line", "lion", "lipstick", "lobster", "lollipop", "mailbox", "map",
    "marker", "matches", "megaphone", "mermaid", "microphone", "microwave", "monkey", "moon", "mosquito",
    "motorbike", "mountain", "mouse", "moustache", "mouth", "mug", "mushroom", "nail", "necklace", "nose", "ocean",
    "octagon", "octopus", "onion", "oven", "owl", "paintbrush", "paint_can", "palm_tree", "panda", "pants",
    "paper_clip", "parachute", "parrot", "passport", "peanut", "pear", "peas", "pencil", "penguin", "piano",
    "pickup_truck", "picture_frame", "pig", "pillow", "pineapple", "pizza", "pliers", "police_car", "pond", "pool",
    "popsicle", "postcard", "potato", "power_outlet", "purse", "rabbit", "raccoon", "radio", "rain", "rainbow",
    "rake", "remote_control", "rhinoceros", "rifle", "river", "roller_coaster", "rollerskates", "sailboat",
    "sandwich", "saw", "saxophone", "school_bus", "scissors", "scorpion", "screwdriver", "sea_turtle", "see_saw",
    "shark", "sheep", "shoe", "shorts", "shovel", "sink", "skateboard", "skull", "skyscraper", "sleeping_bag",
    "smiley_face", "snail", "snake", "snorkel", "snowflake", "snowman", "soccer_ball", "sock", "speedboat", "spider",
    "spoon", "spreadsheet", "square", "squiggle", "squirrel", "stairs", "star", "steak", "stereo", "stethoscope",
    "stitches", "stop_sign", "stove", "strawberry", "streetlight", "string_bean", "submarine", "suitcase", "sun",
    "swan", "sweater", "swing_set", "sword", "syringe", "table", "teapot", "teddy-bear", "telephone", "television",
    "tennis_racquet", "tent", "The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa", "tiger", "toaster",
    "toe", "toilet", "tooth", "toothbrush", "toothpaste", "tornado", "tractor", "traffic_light", "train", "tree",
    "triangle", "trombone", "truck", "trumpet", "t-shirt", "umbrella", "underwear", "van", "vase", "violin",
    "washing_machine", "watermelon", "waterslide", "whale", "wheel", "windmill", "wine_bottle", "wine_glass",
    "wristwatch", "yoga", "zebra", "zigzag"),
    "https://cloud.tsinghua.edu.cn/f/bf0fe327e4b046eb89ba/?dl=1", lists_per_split=True)

_TSINGHUA = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"

DOMAINS = (
    PhotoDomain("office31-amazon", OFFICE31, "amazon", _TSINGHUA.format("ec12dfcddade43ab8101"),
                "Office-31 amazon: 2,817 product photos from amazon.com, 31 classes"),
    PhotoDomain("office31-dslr", OFFICE31, "dslr", _TSINGHUA.format("a41d818ae2f34da7bb32"),
                "Office-31 dslr: 498 DSLR photos, 31 classes"),
    PhotoDomain("office31-webcam", OFFICE31, "webcam", _TSINGHUA.format("8a41009a166e4131adcd"),
                "Office-31 webcam: 795 webcam photos, 31 classes"),
    PhotoDomain("officehome-art", OFFICEHOME, "Art", _TSINGHUA.format("6a006656b9a14567ade2"),
                "Office-Home Art: 2,427 paintings, sketches and artistic images, 65 classes"),
    PhotoDomain("officehome-clipart", OFFICEHOME, "Clipart", _TSINGHUA.format("ae88aa31d2d7411dad79"),
                "Office-Home Clipart: 4,365 clipart images, 65 classes"),
    PhotoDomain("officehome-product", OFFICEHOME, "Product", _TSINGHUA.format("f219b0ff35e142b3ab48"),
                "Office-Home Product: 4,439 product images without background, 65 classes"),
    PhotoDomain("officehome-real_world", OFFICEHOME, "Real_World", _TSINGHUA.format("6c19f3f15bb24ed3951a"),
                "Office-Home Real_World: 4,357 camera photos, 65 classes"),
    PhotoDomain("visda2017-synthetic", VISDA2017, "train", _TSINGHUA.format("c5f3ce59139144ec8221"),
                "VisDA-2017 synthetic: 152,397 renders of 3D models (its training set), 12 classes"),
    PhotoDomain("visda2017-real", VISDA2017, "validation", _TSINGHUA.format("da70e4b1cf514ecea562"),
                "VisDA-2017 real: 55,388 COCO photo crops (its validation set), 12 classes"),
    *(PhotoDomain(f"domainnet-{domain}", DOMAINNET, domain, _TSINGHUA.format(key),
                  f"DomainNet {domain} (cleaned): train and test lists, 345 classes")
      for domain, key in (("clipart", "f0515164a4864220b98b"), ("infograph", "98b19d5fc9884109a9cb"),
                          ("painting", "11285ce9fbd34bb7b28c"), ("quickdraw", "6faa9efb498b494abf66"),
                          ("real", "17a101842c564959b525"), ("sketch", "b305add26e9d47349495"))),
)

PHOTO_DATASETS: tuple[str, ...] = tuple(domain.name for domain in DOMAINS)  # the names registered here


def load_photo(domain: PhotoDomain, split: str, root: Path, seed: int = 0, image_size: int = 224,
               folder: str | None = None) -> FileDomain:
    """The list of `domain`'s `split` under <root>/<benchmark folder>, or under `folder` (the recipe's
    `root`), its classes named by the benchmark's published class list; missing files are downloaded."""
    base = Path(folder).expanduser().resolve() if folder is not None else Path(root) / domain.benchmark.folder
    list_file = domain.list_file(split)
    fetch(domain, base, list_file)
    listed = image_list(base / list_file, base, image_size, f"{domain.name}/{split}")
    return listed.with_labels(listed.labels, published_names(listed.class_names, domain.benchmark, base / list_file))


def fetch(domain: PhotoDomain, base: Path, list_file: str) -> None:
    """Make sure `base` holds `list_file` and the domain's image folder, else download and extract TLlib's
    archives of what is missing (as TLlib does); one UserError when that fails or downloads are off."""
    lists_url, archive = domain.benchmark.lists_url, f"{domain.images}.tgz"

    def download() -> None:
        if not (base / list_file).is_file():
            download_and_extract_archive(lists_url, str(base), filename="image_list.zip", remove_finished=True)
        if not (base / domain.images).is_dir():
            download_and_extract_archive(domain.archive_url, str(base), filename=archive, remove_finished=True)

    require_files(domain.name, base, [list_file, f"{domain.images}/"], download, how_to_place=(
        f"Extract TLlib's {domain.benchmark.title} archives image_list.zip ({lists_url}) and {archive} "
        f"({domain.archive_url}) into that folder, or point the domain's `root:` at a folder that holds "
        f"{list_file} and {domain.images}/."))


def published_names(listed: list[str], benchmark: PhotoBenchmark, list_file: Path) -> list[str]:
    """The benchmark's class names in the label order of a list whose class i lies in folder `listed[i]`:
    class i takes that folder's name when it is a published class name; the other classes (none of the
    list's images lies in a folder of a published name) take the unused published names in their order,
    which is the published list's own i-th name for a list in TLlib's label order. UserError when the
    list has more classes than the benchmark."""
    published = benchmark.classes
    if len(listed) > len(published):
        raise UserError(f"{list_file}: labels go up to {len(listed) - 1}, but {benchmark.title} has "
                        f"{len(published)} classes (labels 0 to {len(published) - 1})")
    names = [name if name in published else None for name in listed] + [None] * (len(published) - len(listed))
    unused = iter([name for name in published if name not in names])
    return [name if name is not None else next(unused) for name in names]


for _domain in DOMAINS:
    DATASETS.register(_domain.name, f"{_domain.description} (list file; streamable)")(
        functools.partial(load_photo, _domain))

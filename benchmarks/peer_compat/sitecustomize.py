"""Imported by Python at start-up in the peer's processes (peer_side_by_side.py puts this folder first on
their PYTHONPATH): one compatibility shim for running Transfer-Learning-Library's unmodified examples
with today's Pillow, in the spirit of ../shared/peers/tllib/launch.py.

Pillow 10 made ``ImageOps.posterize`` refuse ``bits=0``, which timm's RandAugment asks for when its
magnitude noise (``rand-m10-n2-mstd2``, TLlib's FixMatch) draws a level below 2.5: about one call in
10,000, so most 1,000-iteration runs crashed. Older Pillow returned a black image for it (the mask
``~(2**8 - 1)`` clears every bit); the shim returns that, and leaves every other call to Pillow.
"""
from PIL import Image, ImageOps

_posterize = ImageOps.posterize


def posterize(image: Image.Image, bits: int) -> Image.Image:
    if bits == 0:
        return image.point([0] * 256 * len(image.getbands()))
    return _posterize(image, bits)


ImageOps.posterize = posterize

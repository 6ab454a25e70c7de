"""Blurhash: the 4x4 placeholder clients paint while the image or poster loads."""

from __future__ import annotations

import warnings

import blurhash
from PIL import Image

BLURHASH_COMPONENTS = (4, 4)
BLURHASH_SOURCE_EDGE = 64  # blurhash only needs a few pixels; encoding a big image is slow


def blurhash_of(image: Image.Image) -> str:
    small = image.copy()
    small.thumbnail((BLURHASH_SOURCE_EDGE, BLURHASH_SOURCE_EDGE), Image.Resampling.BILINEAR)
    if small.mode == "RGBA":  # transparent areas blur to white, as most chat backgrounds are light
        background = Image.new("RGB", small.size, (255, 255, 255))
        background.paste(small, mask=small.getchannel("A"))
        small = background
    with warnings.catch_warnings():
        # blurhash-python 1.2.2 reads pixels with Image.getdata, deprecated since Pillow 12 and
        # due to go in Pillow 14: pinned versions keep working; check again before upgrading Pillow.
        warnings.simplefilter("ignore", DeprecationWarning)
        return blurhash.encode(small.convert("RGB"), *BLURHASH_COMPONENTS)  # encode() closes its argument

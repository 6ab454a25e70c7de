"""HEIC/HEIF photos, what iPhones save by default, read through pillow-heif's Pillow plugin.

`register()` teaches Pillow the format when a media job opens an image. Importing this module
(with the job modules, before a worker forks) loads libheif but registers nothing, so nothing
else opens HEIF. Only the opener is registered: we never write HEIC. A file is HEIC by its
content, the `ftyp` box's brands, never by its name or declared type.

Several images in one file (a burst, a depth map, thumbnails): the primary image, what the
file shows, is the only one opened and decoded; depth maps, auxiliary images and embedded
thumbnails are not even listed. libheif applies the file's own rotation and mirroring (the
`irot`, `imir` boxes an iPhone writes along with EXIF orientation) while decoding, and
pillow-heif then sets the EXIF orientation to 1, so a photo is turned once.

Which package and what its wheel bundles (libheif, libde265, x265): docs/security-audit.md.
"""

from __future__ import annotations

import functools
from typing import IO, Any

import pillow_heif
from PIL import Image

from supworker.handlers import PermanentError

FORMAT = "HEIF"  # Pillow's name for it, as pillow-heif registers it
# ftyp brands of HEIF files whose images are HEVC-coded: still images, collections, sequences.
HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# Generic HEIF brands, which AVIF files use too: such a file is HEIC when a compatible brand says so.
GENERIC_BRANDS = frozenset({b"mif1", b"msf1"})
MAX_FTYP_BYTES = 1024  # a real ftyp box lists a handful of brands


def accept(prefix: bytes) -> bool:
    """Pillow's first look (16 bytes): an ftyp box whose major brand is a HEIF one."""
    return prefix[4:8] == b"ftyp" and prefix[8:12] in HEVC_BRANDS | GENERIC_BRANDS


def brands(fp: IO[bytes]) -> set[bytes]:
    """The major and compatible brands of the ftyp box the file starts with."""
    head = fp.read(8)
    size = int.from_bytes(head[:4], "big")
    if head[4:8] != b"ftyp" or not 16 <= size <= MAX_FTYP_BYTES:
        return set()
    body = fp.read(size - 8)  # major brand, minor version, compatible brands
    return {body[:4]} | {body[at : at + 4] for at in range(8, len(body) - 3, 4)}


def _corrupt(exc: Exception) -> PermanentError:
    return PermanentError(f"the HEIC image is corrupt or truncated: {str(exc).strip()}")


class HeifImageFile(pillow_heif.HeifImageFile):
    """pillow-heif's plugin, with libheif's reason kept when a HEIC file cannot be read.

    Pillow takes a SyntaxError from an opener as "not this format" and tries the next one, so a
    truncated HEIC would end as "not an image"; every libheif failure on a file whose brands say
    HEIC is a permanent error naming what libheif found (it also raises RuntimeError, for a
    security limit, which would otherwise look like a transient failure and be retried).
    """

    def _open(self) -> None:
        if self.fp is None or not brands(self.fp) & HEVC_BRANDS:
            raise SyntaxError("not a HEIF file of HEVC images")  # e.g. an AVIF its own plugin refused
        try:
            super()._open()
        except SyntaxError as exc:
            raise _corrupt(exc) from None

    def load(self) -> Any:
        try:
            return super().load()
        except (ValueError, EOFError, RuntimeError) as exc:
            raise _corrupt(exc) from None


@functools.cache
def register() -> None:
    """Let Pillow open HEIF in this process; only the primary image and its own metadata are read."""
    pillow_heif.options.THUMBNAILS = False
    pillow_heif.options.DEPTH_IMAGES = False
    pillow_heif.options.AUX_IMAGES = False
    Image.register_open(FORMAT, HeifImageFile, accept)

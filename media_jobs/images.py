"""Images: checked from the header, decoded once, re-encoded without metadata.

Order matters for safety and speed:
1. `Image.open` reads only the header, restricted to the formats we accept; the pixel count
   is checked there, before any decoding (Synapse, Mastodon do the same), and Pillow's own
   decompression-bomb guard stays on for anything larger still.
2. JPEGs are decoded with `draft`, which lets libjpeg scale by 1/2, 1/4 or 1/8 while
   decoding when the source is much larger than the output: less memory, much faster. A photo
   (a JPEG coded in YCbCr) larger than its output is resized in YCbCr, its luma and its chroma
   apart and on two cores (_fit_jpeg): what a 12 MP photo spends most of its time on.
3. One decoded image feeds every output: the optimised image, the thumbnail (made from the
   optimised one) and the blurhash (from the thumbnail).
Metadata: EXIF orientation is applied to the pixels, then every metadata block (EXIF and its
GPS position, XMP, comments, PNG text) is dropped; only the ICC colour profile is kept.
Animated GIFs become a short H.264 MP4 (see gif_to_mp4). HEIC photos take the same path as the
others once heif.py has taught Pillow to read them.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard, cast

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from media_jobs import heif, video
from media_jobs.config import MediaConfig
from media_jobs.limits import ANIMATION_CONTAINERS, MAX_ANIMATION_PIXELS, Deadline
from media_jobs.outputs import Output, Processed
from media_jobs.placeholders import blurhash_of
from supworker.handlers import PermanentError

# AVIF comes free with Pillow's wheels (libavif); HEIC with pillow-heif (heif.py). AVIF is tried
# before HEIF: both use the generic "mif1" brand.
ACCEPTED = ("JPEG", "PNG", "WEBP", "GIF", "AVIF", heif.FORMAT)
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "AVIF": "image/avif"}
EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
JPEG_QUALITY = 82
WORKERS = max(1, min(4, os.cpu_count() or 1))
PARALLEL_RESIZE_PIXELS = 2_000_000  # below this, threads cost more than they save
WEBP_QUALITY = 82
Box = tuple[float, float, float, float]
# EXIF orientation → the transposition that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = (
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
)
# Where a transposition takes a point (x, y) of an image of width w and height h.
_TRANSPOSED_POINT: dict[Image.Transpose, Callable[[float, float, int, int], tuple[float, float]]] = {
    Image.Transpose.FLIP_LEFT_RIGHT: lambda x, y, w, h: (w - x, y),
    Image.Transpose.FLIP_TOP_BOTTOM: lambda x, y, w, h: (x, h - y),
    Image.Transpose.ROTATE_180: lambda x, y, w, h: (w - x, h - y),
    Image.Transpose.TRANSPOSE: lambda x, y, w, h: (y, x),
    Image.Transpose.ROTATE_90: lambda x, y, w, h: (y, w - x),
    Image.Transpose.ROTATE_270: lambda x, y, w, h: (h - y, x),
    Image.Transpose.TRANSVERSE: lambda x, y, w, h: (h - y, w - x),
}


def process(source: Path, workdir: Path, limits: MediaConfig, deadline: Deadline) -> Processed:
    heif.register()
    try:
        image = Image.open(source, formats=ACCEPTED)
    except UnidentifiedImageError:
        raise PermanentError(
            "the file is not an image in an accepted format (JPEG, PNG, WebP, GIF, AVIF, HEIC)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"the image is a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"the image header is corrupt: {exc}") from None
    with image:
        width, height = image.size
        source_format = image.format
        if width < 1 or height < 1:
            raise PermanentError(f"the image has no pixels ({width}x{height})")
        if width * height > limits.image_max_pixels:
            raise PermanentError(
                f"the image is {width}x{height} = {width * height:,} pixels,"
                f" more than the {limits.image_max_pixels:,}-pixel limit"
            )
        if source_format is None:
            raise PermanentError("the image's format is not recognised")
        original = {"width": width, "height": height, "format": source_format.lower()}
        if _orientation(image) in (5, 6, 7, 8):  # shown turned by a quarter
            original |= {"width": height, "height": width}
        if source_format == "GIF" and getattr(image, "is_animated", False):
            _check_animation(image)
            return gif_to_mp4(image, source, workdir, limits, deadline)
        if _in_ycbcr(image) and _chroma_scale(image, limits.image_max_edge) >= 2:
            optimised, icc = _fit_jpeg(image, source, limits.image_max_edge)
        else:
            decoded, icc = _decode(image, limits.image_max_edge)
            optimised = _fit(decoded, limits.image_max_edge)

    has_alpha = optimised.mode == "RGBA"
    out_format = ("WEBP" if source_format == "WEBP" else "PNG") if has_alpha else "JPEG"
    ext = EXTENSION[out_format]
    media_path, thumb_path = workdir / f"image.{ext}", workdir / f"thumb.{ext}"
    thumbnail, placeholder = _write(optimised, media_path, thumb_path, out_format, icc, limits.thumbnail_max_edge)
    metadata = {
        "kind": "image",
        "width": optimised.width,
        "height": optimised.height,
        "format": out_format.lower(),
        "mime_type": MIME[out_format],
        "bytes": media_path.stat().st_size,
        "has_alpha": has_alpha,
        "animated": False,
        "blurhash": placeholder,
        "original": original,
        "thumbnail": _describe(thumbnail, thumb_path, MIME[out_format]),
    }
    return Processed(
        outputs=[
            Output("media", media_path, f"image.{ext}", MIME[out_format]),
            Output("thumbnail", thumb_path, f"thumb.{ext}", MIME[out_format]),
        ],
        metadata=metadata,
    )


def _write(
    optimised: Image.Image, media_path: Path, thumb_path: Path, out_format: str, icc: bytes | None, thumb_edge: int
) -> tuple[Image.Image, str]:
    """Write the image and its thumbnail; returns the thumbnail and its blurhash.

    The big encode runs in another thread while this one makes the thumbnail and blurhash. Never
    two saves of one Image at once: Pillow keeps a save's options on the image itself while it
    writes (`encoderinfo`, `encoderconfig`) and puts the previous ones back afterwards, so the
    other save could encode with none: no colour profile, default quality. An image already no
    larger than a thumbnail is its own thumbnail: encoded once, and the file copied.
    """
    if _fit_size(optimised.size, thumb_edge) == optimised.size:
        _save(optimised, media_path, out_format, icc)
        shutil.copyfile(media_path, thumb_path)
        return optimised, blurhash_of(optimised)
    encoding = _pool().submit(_save, optimised, media_path, out_format, icc)
    # A new Image, never `optimised` itself; in this thread alone: the other core is encoding.
    thumbnail = optimised.resize(_fit_size(optimised.size, thumb_edge), Image.Resampling.LANCZOS)
    _save(thumbnail, thumb_path, out_format, icc)
    placeholder = blurhash_of(thumbnail)
    encoding.result()
    return thumbnail, placeholder


def _check_animation(image: Image.Image) -> None:
    """Refuse an animation bomb from the frame count (read without decoding) before ffmpeg starts."""
    try:
        frames = getattr(image, "n_frames", 1)  # GIF and other multi-frame formats have it
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PermanentError(f"the GIF is corrupt or truncated: {exc}") from None
    pixels = frames * image.width * image.height
    if pixels > MAX_ANIMATION_PIXELS:
        raise PermanentError(
            f"the animation is {frames:,} frames of {image.width}x{image.height} = {pixels:,} pixels,"
            f" more than the {MAX_ANIMATION_PIXELS:,}-pixel limit for animations"
        )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: treat as upright, as _decode does
        return 1


def _decode(image: Image.Image, max_edge: int) -> tuple[Image.Image, bytes | None]:
    """Decode once, upright, in RGB, RGBA or L; returns the image and the ICC profile to keep."""
    if image.format == "JPEG":
        # Ask libjpeg for the smallest 1/n scale still at least as large as the output.
        image.draft(image.mode if image.mode == "CMYK" else "RGB", _fit_size(image.size, max_edge))
    _load(image)
    icc = image.info.get("icc_profile") or None
    upright = image
    # A malformed EXIF block must not fail the image: it is then kept as stored.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(upright, in_place=True)  # in place: no copy of a 12 MP image
    if upright.mode == "CMYK":
        upright, icc = _cmyk_to_srgb(upright, icc), None
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        upright = upright.convert("RGBA")
        extrema = cast(tuple[tuple[int, int], ...], upright.getextrema())  # one (min, max) per band
        if extrema[3][0] == 255:  # an alpha channel that hides nothing
            upright = upright.convert("RGB")
    elif upright.mode not in ("RGB", "L"):
        upright = upright.convert("RGB")
    upright.info = {}  # nothing of the source's metadata travels further
    return upright, icc


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"the image is a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PermanentError(f"the image is corrupt or truncated: {exc}") from None


def _in_ycbcr(image: Image.Image) -> TypeGuard[JpegImageFile]:
    """A JPEG that libjpeg reads as YCbCr in every case: three components with JFIF's ids 1, 2, 3
    (what cameras and phones write) and no Adobe marker saying RGB (transform 0). Others (an RGB
    JPEG, ids 'R', 'G', 'B') take _decode's way."""
    if not isinstance(image, JpegImageFile) or image.format != "JPEG" or image.mode != "RGB":
        return False
    ids = tuple(component[0] for component in image.layer)
    return ids == (1, 2, 3) and image.info.get("adobe_transform", 1) == 1


def _chroma_scale(image: JpegImageFile, max_edge: int) -> int:
    """The 1/n scale at which _fit_jpeg decodes a YCbCr JPEG's chroma: the smallest that still
    gives half the output (what the encoder keeps of it), and never below the stored chroma or
    the scale _decode would take, so no sample is lost that decoding to RGB would have kept. For
    a photo's 4:2:0 (chroma stored at half size) the stored chroma itself; 1 when nothing is
    gained (no resize, or chroma stored at full size and no scaled decode)."""
    size = _fit_size(image.size, max_edge)
    if size == image.size:
        return 1
    sampling = [(horizontal, vertical) for _id, horizontal, vertical, _table in image.layer]
    if len(sampling) != 3 or min(min(pair) for pair in sampling) < 1:
        return 1  # a corrupt header: _decode's way, whose libjpeg says what is wrong
    most = (max(h for h, _ in sampling), max(v for _, v in sampling))
    stored = max(1, min(min(most[0] // h, most[1] // v) for h, v in sampling[1:]))
    return _draft_scale(image.size, _half(size), max(stored, _draft_scale(image.size, size)))


def _draft_scale(source: tuple[int, int], size: tuple[int, int], limit: int = 8) -> int:
    """The 1/n scale (1, 2, 4 or 8, at most `limit`) a JPEG's draft takes for `size`: the
    smallest still at least as large."""
    most = min(limit, source[0] // size[0], source[1] // size[1])
    return next(n for n in (8, 4, 2, 1) if n <= max(1, most))


def _half(size: tuple[int, int]) -> tuple[int, int]:
    return (-(-size[0] // 2), -(-size[1] // 2))


def _fit_jpeg(image: JpegImageFile, source: Path, max_edge: int) -> tuple[Image.Image, bytes | None]:
    """A YCbCr JPEG fitted to `max_edge` in YCbCr, upright; returns it and the ICC profile to keep.

    The output is a YCbCr JPEG whose chroma the encoder keeps at half size (4:2:0, the mean of
    each 2x2). So the luma is decoded alone (libjpeg skips the chroma) and resized with Lanczos,
    while another thread decodes the file again at _chroma_scale (for a photo, the stored chroma
    samples, neither upsampled nor converted to RGB) and resizes Cb and Cr with Lanczos straight
    to half the output; each sample is then repeated 2x2, which the encoder's 2x2 mean gives back
    exactly. The same filter on the same stored samples as resizing in RGB, without turning 12
    megapixels into RGB and back, nor resizing full-size chroma planes that the encoder then
    halves; and the two decodes run side by side.
    """
    size = _fit_size(image.size, max_edge)
    method = _TRANSPOSE.get(_orientation(image))
    upright = (size[1], size[0]) if method in _QUARTER_TURNS else size
    icc = image.info.get("icc_profile") or None
    chroma = _pool().submit(_half_chroma, source, upright, _chroma_scale(image, max_edge), method)
    try:
        decoded, box = _decoded(image, "L", size)
        luma = _resized(decoded, size, box)
    finally:
        wait([chroma])  # never leave it reading the file after a failure here
    if method is not None:
        luma = luma.transpose(method)
    return Image.merge("YCbCr", (luma, *chroma.result())), icc


def _half_chroma(
    source: Path, upright: tuple[int, int], scale: int, method: Image.Transpose | None
) -> list[Image.Image]:
    """Cb and Cr of the JPEG at `source` decoded at 1/`scale`, turned upright by `method`,
    resized to half an output of `upright` (rounded up), on the grid of the encoder's 2x2 means,
    and each sample repeated 2x2 to the output's size."""
    with Image.open(source, formats=("JPEG",)) as image:
        ycbcr, box = _decoded(image, "YCbCr", (image.width // scale, image.height // scale))
        _luma, cb, cr = ycbcr.split()
    if method is not None:  # upright before resizing: the encoder's 2x2 grid starts at the top left
        box = _transposed_box(box, cb.size, method)
        cb, cr = cb.transpose(method), cr.transpose(method)
    # Where the output is odd, its last chroma sample covers its last pixel and the one the
    # encoder adds by repeating it: the box maps the picture onto twice the half size, so past its
    # edge, which is repeated likewise.
    half = _half(upright)
    left, upper, right, lower = box
    right = left + (right - left) * 2 * half[0] / upright[0]
    lower = upper + (lower - upper) * 2 * half[1] / upright[1]
    halves = [
        _repeat_edges(plane, math.ceil(right), math.ceil(lower)).resize(
            half, Image.Resampling.LANCZOS, box=(left, upper, right, lower)
        )
        for plane in (cb, cr)
    ]
    spread = (0, 0, upright[0] / 2, upright[1] / 2)
    return [plane.resize(upright, Image.Resampling.NEAREST, box=spread) for plane in halves]


def _transposed_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """Where `box` of an image of `size` is once the image is transposed by `method`."""
    width, height = size
    (x0, y0), (x1, y1) = (_TRANSPOSED_POINT[method](x, y, width, height) for x, y in (box[:2], box[2:]))
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _decoded(image: Image.Image, mode: str, size: tuple[int, int]) -> tuple[Image.Image, Box]:
    """A JPEG decoded to `mode` at the smallest 1/n scale still at least `size`, and the box the
    picture fills in it (a scaled decode rounds its size up)."""
    drafted = image.draft(mode, size)
    _load(image)
    box = drafted[1] if drafted else (0, 0, *image.size)
    return (image if image.mode == mode else image.convert(mode)), box


def _repeat_edges(plane: Image.Image, width: int, height: int) -> Image.Image:
    """`plane` widened to `width` and heightened to `height` (if larger) by repeating its last
    column and row."""
    width, height = max(width, plane.width), max(height, plane.height)
    if (width, height) == plane.size:
        return plane
    out = plane.crop((0, 0, width, height))
    if width > plane.width:
        column = plane.crop((plane.width - 1, 0, plane.width, plane.height))
        out.paste(column.resize((width - plane.width, plane.height)), (plane.width, 0))
    if height > plane.height:
        row = out.crop((0, plane.height - 1, width, plane.height))
        out.paste(row.resize((width, height - plane.height)), (0, plane.height))
    return out


def _cmyk_to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Print-ready CMYK JPEGs: convert through their own profile when they carry one."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:  # None only when converting in place, which this does not ask for
                return converted
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to Pillow's plain conversion
    return image.convert("RGB")


def _fit_size(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_edge / max(width, height))  # never upscale
    return max(1, round(width * scale)), max(1, round(height * scale))


def _fit(image: Image.Image, max_edge: int) -> Image.Image:
    return _resized(image, _fit_size(image.size, max_edge))


def _resized(image: Image.Image, size: tuple[int, int], box: Box | None = None) -> Image.Image:
    """Lanczos to `size` from `box` (the whole image by default)."""
    if size == image.size and box in (None, (0, 0, *image.size)):
        return image
    if image.width * image.height < PARALLEL_RESIZE_PIXELS or WORKERS == 1:
        return image.resize(size, Image.Resampling.LANCZOS, box=box)
    return resize_in_bands(image, size, box)


def resize_in_bands(image: Image.Image, size: tuple[int, int], box: Box | None = None) -> Image.Image:
    """Lanczos resize on every core: each thread makes a horizontal band of the output.

    `resize(box=…)` reads filter support from outside its box, so each band is what a single
    resize makes of those rows, up to one level of rounding in a few pixels (a test checks
    it); Pillow releases the GIL while resampling. Resizing is the costliest step for a photo.
    """
    left, upper, right, lower = box or (0, 0, image.width, image.height)
    width, height = size
    scale = (lower - upper) / height
    edges = [height * i // WORKERS for i in range(WORKERS + 1)]

    def band(top: int, bottom: int) -> Image.Image:
        return image.resize(
            (width, bottom - top),
            Image.Resampling.LANCZOS,
            box=(left, upper + top * scale, right, upper + bottom * scale),
        )

    others = _pool().map(band, edges[1:-1], edges[2:])
    bands = [band(edges[0], edges[1]), *others]  # the first in this thread, which would wait anyway
    out = Image.new(bands[0].mode, size)
    for top, part in zip(edges[:-1], bands, strict=True):
        out.paste(part, (0, top))
    return out


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="media-resize")


def _save(image: Image.Image, path: Path, out_format: str, icc: bytes | None) -> None:
    options: dict[str, Any] = {"icc_profile": icc} if icc and image.mode != "L" else {}
    if out_format == "JPEG":
        # Progressive JPEG makes libjpeg compute optimal Huffman tables anyway.
        options |= {"quality": JPEG_QUALITY, "progressive": True, "optimize": False}
    elif out_format == "WEBP":
        options |= {"quality": WEBP_QUALITY, "method": 4}
    image.save(path, out_format, **options)


def _describe(image: Image.Image, path: Path, mime: str) -> dict[str, Any]:
    return {"width": image.width, "height": image.height, "mime_type": mime, "bytes": path.stat().st_size}


def gif_to_mp4(image: Image.Image, source: Path, workdir: Path, limits: MediaConfig, deadline: Deadline) -> Processed:
    """Animated GIF → silent, looping-friendly H.264 MP4 (a "GIFV", as Mastodon and Telegram do).

    Often ten times smaller than the GIF, decoded in hardware by every phone, and played by
    the same client code as video. The thumbnail is the first frame as a still image.
    """
    try:
        image.seek(0)
        first, icc = _decode(image, limits.image_max_edge)
    except EOFError as exc:
        raise PermanentError(f"the GIF is corrupt or truncated: {exc}") from None
    thumbnail = _fit(first, limits.thumbnail_max_edge)
    thumb_format = "PNG" if thumbnail.mode == "RGBA" else "JPEG"
    thumb_path = workdir / f"thumb.{EXTENSION[thumb_format]}"
    _save(thumbnail, thumb_path, thumb_format, icc)

    media_path = workdir / "animation.mp4"
    video.encode_h264(
        source,
        media_path,
        ANIMATION_CONTAINERS,
        limits.image_max_edge,
        deadline,
        audio=False,
        max_pixels=limits.image_max_pixels,
    )
    info = video.describe_output(media_path, fps=0)  # frame rate: not reported for animations
    metadata = {
        "kind": "image",
        "width": info["width"],
        "height": info["height"],
        "format": "mp4",
        "mime_type": "video/mp4",
        "bytes": media_path.stat().st_size,
        "has_alpha": False,
        "animated": True,
        "duration_ms": info["duration_ms"],
        "blurhash": blurhash_of(thumbnail),
        "original": {"width": first.width, "height": first.height, "format": "gif"},
        "thumbnail": _describe(thumbnail, thumb_path, MIME[thumb_format]),
    }
    return Processed(
        outputs=[
            Output("media", media_path, "animation.mp4", "video/mp4"),
            Output("thumbnail", thumb_path, thumb_path.name, MIME[thumb_format]),
        ],
        metadata=metadata,
    )

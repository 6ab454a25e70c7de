"""Images: checked from the header, decoded once, re-encoded without metadata.

Order matters for safety and speed:
1. `Image.open` reads only the header, restricted to the formats we accept; the pixel count
   is checked there, before any decoding (Synapse, Mastodon do the same), and Pillow's own
   decompression-bomb guard stays on for anything larger still.
2. JPEGs are decoded with `draft`, which lets libjpeg scale by 1/2, 1/4 or 1/8 while
   decoding when the source is much larger than the output: less memory, much faster.
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
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

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
        decoded, icc = _decode(image, limits.image_max_edge)

    has_alpha = decoded.mode == "RGBA"
    out_format = ("WEBP" if source_format == "WEBP" else "PNG") if has_alpha else "JPEG"
    optimised = _fit(decoded, limits.image_max_edge)
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
    thumbnail = _fit(optimised, thumb_edge)  # a new Image, never `optimised` itself
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
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"the image is a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PermanentError(f"the image is corrupt or truncated: {exc}") from None
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
    size = _fit_size(image.size, max_edge)
    if size == image.size:
        return image
    if image.width * image.height < PARALLEL_RESIZE_PIXELS or WORKERS == 1:
        return image.resize(size, Image.Resampling.LANCZOS)
    return resize_in_bands(image, size)


def resize_in_bands(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Lanczos resize on every core: each thread makes a horizontal band of the output.

    `resize(box=…)` reads filter support from outside its box, so each band is what a single
    resize makes of those rows, up to one level of rounding in a few pixels (a test checks
    it); Pillow releases the GIL while resampling. Resizing is the costliest step for a photo.
    """
    width, height = size
    scale = image.height / height
    edges = [height * i // WORKERS for i in range(WORKERS + 1)]

    def band(top: int, bottom: int) -> Image.Image:
        return image.resize(
            (width, bottom - top), Image.Resampling.LANCZOS, box=(0, top * scale, image.width, bottom * scale)
        )

    bands = list(_pool().map(band, edges[:-1], edges[1:]))
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

"""Image jobs: real files made by Pillow, real storage, PostgreSQL rows and RabbitMQ events."""

from __future__ import annotations

import io
import math
import random

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFile, ImageOps, ImageStat

from media_jobs import images
from media_jobs.limits import Deadline
from supworker.handlers import PermanentError
from supworker.models.messenger import Message
from tests.media_files import photo, probe, set_limits, srgb_icc, stored_path

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.media_fixtures"]


def ready(media, fixture: str) -> tuple[Message, dict]:
    message = media.message()
    result = media.run("image", media.upload(fixture), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready" and message.media_error == ""
    assert result["mediaUrl"] == message.media_url
    return message, message.media_metadata


def test_exif_orientation_is_applied_and_gps_never_leaves(media):
    message, meta = ready(media, "rotated_gps.jpg")
    assert message.media_url == f"media/{message.id}/processed/image.jpg"
    assert message.thumbnail_url == f"media/{message.id}/processed/thumb.jpg"
    raw = stored_path(message.media_url).read_bytes()
    with Image.open(media.files("rotated_gps.jpg")) as source:
        source_icc = source.info["icc_profile"]
    with Image.open(stored_path(message.media_url)) as out:
        assert out.size == (200, 400), "stored landscape, orientation 6: shown portrait"
        assert out.format == "JPEG" and out.info.get("progressive") == 1
        assert len(out.getexif()) == 0, "no EXIF at all: orientation applied, GPS and camera gone"
        assert out.info.get("icc_profile") == source_icc, "the colour profile is kept"
        red_top, blue_bottom = out.convert("RGB").getpixel((100, 50)), out.convert("RGB").getpixel((100, 350))
    assert red_top[0] > 180 and red_top[2] < 80, "the stored left (red) half is now on top"
    assert blue_bottom[2] > 180 and blue_bottom[0] < 80
    assert b"GPS" not in raw and b"PhoneMaker" not in raw and b"shot at home" not in raw
    assert meta["width"] == 200 and meta["height"] == 400
    assert meta["format"] == "jpeg" and meta["mime_type"] == "image/jpeg" and meta["has_alpha"] is False
    assert meta["bytes"] == len(raw)
    assert meta["original"] == {"width": 200, "height": 400, "format": "jpeg"}
    with Image.open(stored_path(message.thumbnail_url)) as thumb:
        assert thumb.size == (160, 320) and len(thumb.getexif()) == 0


def test_a_4x4_blurhash_is_in_the_metadata_and_the_event(media):
    message, meta = ready(media, "rotated_gps.jpg")
    # 1 size char (U = 4x4 components) + 1 max-AC + 4 DC + 2 per AC component (15).
    assert meta["blurhash"].startswith("U") and len(meta["blurhash"]) == 36
    ((key, event),) = media.events()
    assert key == "media.processed"
    assert event["messageId"] == str(message.id) and event["mediaType"] == "image"
    assert event["mediaUrl"] == message.media_url and event["thumbnailUrl"] == message.thumbnail_url
    assert event["metadata"]["blurhash"] == meta["blurhash"] and event["status"] == "ready"


def test_png_with_transparency_stays_png_with_alpha(media):
    message, meta = ready(media, "alpha.png")
    assert message.media_url.endswith("/image.png") and message.thumbnail_url.endswith("/thumb.png")
    assert meta["has_alpha"] is True and meta["mime_type"] == "image/png"
    with Image.open(stored_path(message.media_url)) as out:
        assert out.mode == "RGBA" and out.size == (300, 200), "never upscaled"
        assert out.getpixel((0, 0))[3] == 0 and out.getpixel((150, 100))[3] == 255


def test_an_alpha_channel_that_hides_nothing_becomes_a_jpeg(media):
    _message, meta = ready(media, "opaque_rgba.png")
    assert meta["format"] == "jpeg" and meta["has_alpha"] is False
    assert meta["original"]["format"] == "png"


def test_a_mislabelled_image_is_read_by_its_content_not_its_name(media):
    message = media.message()
    media.run("image", media.upload("alpha.png", key="uploads/really-a-png.jpg"), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready" and message.media_metadata["original"]["format"] == "png"


def test_webp_with_transparency_stays_webp_and_avif_becomes_jpeg(media):
    message, meta = ready(media, "alpha.webp")
    assert message.media_url.endswith("/image.webp") and meta["has_alpha"] is True
    with Image.open(stored_path(message.media_url)) as out:
        assert out.format == "WEBP" and out.mode == "RGBA"
    _message, meta = ready(media, "photo.avif")
    assert meta["format"] == "jpeg" and meta["original"]["format"] == "avif"


def test_cmyk_jpeg_becomes_rgb_with_its_colours(media):
    message, _meta = ready(media, "cmyk.jpg")
    with Image.open(stored_path(message.media_url)) as out:
        assert out.mode == "RGB"
        red, green, blue = out.getpixel((60, 40))
    assert red > 200 and green < 70 and blue < 70


def test_large_photo_is_fitted_to_2048_and_its_thumbnail_to_320(media):
    message, meta = ready(media, "large.jpg")
    assert (meta["width"], meta["height"]) == (2048, 1365)
    assert (meta["thumbnail"]["width"], meta["thumbnail"]["height"]) == (320, 213)
    assert meta["original"] == {"width": 3000, "height": 2000, "format": "jpeg"}
    with Image.open(stored_path(message.thumbnail_url)) as thumb:
        assert thumb.size == (320, 213)


@pytest.mark.parametrize(
    ("size", "orientation", "options"),
    [
        ((2600, 1950), 1, {}),  # a photo, its chroma stored at half size (4:2:0)
        ((2601, 1733), 6, {"progressive": True}),  # turned a quarter; an odd output (1365x2048)
        ((4097, 3001), 7, {}),  # decoded at 1/2 by libjpeg, which rounds up; transposed, flipped
        ((2400, 1600), 1, {"subsampling": 0}),  # chroma stored at full size: decoded to RGB
        ((2400, 1600), 8, {"keep_rgb": True}),  # an RGB JPEG (Adobe transform 0): decoded to RGB
    ],
)
def test_a_photo_is_fitted_as_faithfully_as_resizing_it_in_rgb(tmp_path, settings, size, orientation, options):
    """A photo larger than its output is resized in YCbCr, its luma and chroma apart. Against
    the picture decoded whole, upright and resized with Lanczos in RGB, never encoded, the output
    is at least as close as resizing in RGB what libjpeg decodes for it (at 1/2 for the large
    one), encoded at our quality."""
    source = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    _colourful(photo(*size)).save(source, "JPEG", quality=90, exif=exif, icc_profile=srgb_icc(), **options)
    out = tmp_path / "out"
    out.mkdir()
    meta = images.process(source, out, settings.CONFIG.media, Deadline(60)).metadata
    with Image.open(out / "image.jpg") as result:
        result.load()
    fitted = images._fit_size(size, 2048)
    with Image.open(source) as original:
        icc = original.info["icc_profile"]
        truth = ImageOps.exif_transpose(original.convert("RGB")).resize(result.size, Image.Resampling.LANCZOS)
    with Image.open(source) as original:
        _mode, box = original.draft("RGB", fitted) or (None, None)
        in_rgb = ImageOps.exif_transpose(original.resize(fitted, Image.Resampling.LANCZOS, box=box))
    encoded = io.BytesIO()
    in_rgb.save(encoded, "JPEG", quality=images.JPEG_QUALITY, progressive=True)
    assert result.size == (meta["width"], meta["height"]) == in_rgb.size
    assert result.info.get("icc_profile") == icc and result.info.get("progressive") == 1
    ours, rgb_way = _psnr(truth, result), _psnr(truth, Image.open(encoded))
    assert all(a >= b - 0.1 for a, b in zip(ours, rgb_way, strict=True)), f"Y, Cb, Cr: {ours} against {rgb_way} dB"
    with Image.open(out / "thumb.jpg") as thumb:
        thumb.load()
    encoded = io.BytesIO()
    in_rgb.resize(thumb.size, Image.Resampling.LANCZOS).save(encoded, "JPEG", quality=images.JPEG_QUALITY)
    truth = truth.resize(thumb.size, Image.Resampling.LANCZOS)
    ours, rgb_way = _psnr(truth, thumb), _psnr(truth, Image.open(encoded))
    assert thumb.size == images._fit_size(result.size, 320)
    assert all(a >= b - 0.1 for a, b in zip(ours, rgb_way, strict=True)), f"thumbnail: {ours} against {rgb_way} dB"


def _colourful(image: Image.Image) -> Image.Image:
    """Thin lines of every colour over the photo: chroma detail near what 4:2:0 keeps of it."""
    rng = random.Random(3)
    draw = ImageDraw.Draw(image)
    for _ in range(400):
        x, y = rng.randrange(image.width), rng.randrange(image.height)
        end = (x + rng.randrange(-400, 400), y + rng.randrange(-400, 400))
        draw.line((x, y, *end), fill=tuple(rng.randrange(256) for _ in range(3)), width=rng.randrange(2, 7))
    return image


def _psnr(a: Image.Image, b: Image.Image) -> list[float]:
    """Peak signal-to-noise ratio of b against a, in dB, of Y, Cb and Cr (a chroma sample out of
    place shows in Cb and Cr)."""
    difference = ImageChops.difference(a.convert("YCbCr"), b.convert("YCbCr"))
    return [10 * math.log10(255 * 255 / rms**2) if rms else math.inf for rms in ImageStat.Stat(difference).rms]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_chroma_is_one_sample_per_2x2_of_the_output_as_the_encoder_keeps_it(tmp_path, orientation):
    """The encoder keeps one chroma sample per 2x2 pixels, counted from the top left of the
    upright output: _fit_jpeg's chroma must be constant over each of those (then the encoder's
    mean is that sample), however the photo is turned and whether its sides are odd."""
    source = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    _colourful(photo(603, 403)).save(source, "JPEG", quality=90, exif=exif)
    with Image.open(source) as image:
        fitted, _icc = images._fit_jpeg(image, source, 301)
    assert fitted.mode == "YCbCr" and fitted.size == ((301, 201) if orientation < 5 else (201, 301))
    for plane in fitted.split()[1:]:
        means = plane.reduce(2)  # the encoder's 2x2 means (an odd edge's from what is there)
        spread = means.resize(plane.size, Image.Resampling.NEAREST, box=(0, 0, plane.width / 2, plane.height / 2))
        assert ImageChops.difference(plane, spread).getbbox() is None


def test_a_truncated_large_photo_fails_at_once(tmp_path, settings):
    """Luma and chroma are decoded in two threads: a bad file fails as one decode would."""
    whole = io.BytesIO()
    photo(2600, 1950).save(whole, "JPEG", quality=90)
    source = tmp_path / "cut.jpg"
    source.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(PermanentError, match="the image is corrupt or truncated"):
        images.process(source, tmp_path, settings.CONFIG.media, Deadline(60))


def test_animated_gif_becomes_a_short_h264_mp4(media):
    message, meta = ready(media, "animated.gif")
    assert message.media_url.endswith("/animation.mp4")
    assert meta["animated"] is True and meta["mime_type"] == "video/mp4" and meta["duration_ms"] == 800
    (stream,) = probe(stored_path(message.media_url))["streams"]
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert (stream["width"], stream["height"]) == (96, 64)
    with Image.open(stored_path(message.thumbnail_url)) as thumb:
        assert thumb.format == "JPEG" and thumb.convert("RGB").getpixel((10, 10))[0] > 200, "the first (red) frame"


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("truncated.jpg", "the image is corrupt or truncated"),
        ("text.jpg", "the file is not an image in an accepted format (JPEG, PNG, WebP, GIF, AVIF, HEIC)"),
        ("empty.jpg", "the image file is empty"),
        ("bomb.png", "decompression bomb"),
        ("huge.png", "the image is 8000x5000 = 40,000,000 pixels, more than the 33,177,600-pixel limit"),
    ],
)
def test_bad_images_fail_at_once_with_the_reason_on_the_message_and_in_an_event(media, fixture, reason):
    message = media.message()
    with pytest.raises(PermanentError) as excinfo:
        media.run("image", media.upload(fixture), message.id)
    assert reason in str(excinfo.value)
    message.refresh_from_db()
    assert message.media_status == "failed" and reason in message.media_error
    assert message.media_url is None
    ((key, event),) = media.events()
    assert key == "media.failed" and reason in event["error"] and event["messageId"] == str(message.id)


def test_pixel_limits_are_checked_from_the_header_before_any_decoding(media, monkeypatch):
    decoded = []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or original_load(self))
    message = media.message()
    with pytest.raises(PermanentError, match="40,000,000 pixels"):
        media.run("image", media.upload("huge.png"), message.id)
    assert decoded == [], "refused from the header: not one pixel decoded"


def test_limits_come_from_settings(media, settings):
    set_limits(settings, image_max_pixels=1000, image_max_edge=100, thumbnail_max_edge=50)
    message = media.message()
    with pytest.raises(PermanentError, match="more than the 1,000-pixel limit"):
        media.run("image", media.upload("large.jpg"), message.id)
    set_limits(settings, image_max_bytes=2048)
    with pytest.raises(PermanentError, match="bytes, more than the 2,048-byte limit"):
        media.run("image", media.upload("large.jpg"), message.id)
    set_limits(settings, image_max_bytes=16 << 20, image_max_pixels=33_177_600, image_max_edge=100)
    _message, meta = ready(media, "large.jpg")
    assert (meta["width"], meta["height"], meta["thumbnail"]["width"]) == (100, 67, 50)


def test_a_message_that_does_not_exist_is_a_permanent_failure(media):
    key = media.upload("alpha.png")
    missing = "5a0c8a8e-1a2b-4c3d-8e9f-0123456789ab"
    with pytest.raises(PermanentError, match=f"message {missing} does not exist"):
        media.run("image", key, missing)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_the_banded_parallel_resize_matches_a_single_resize(media, mode):
    """Same filter, same source rows: at most 1 level of rounding apart, in very few pixels."""
    with Image.open(media.files("large.jpg")) as source:
        image = source.convert(mode)
    for size in [(2048, 1365), (997, 665), (320, 213)]:
        whole = image.resize(size, Image.Resampling.LANCZOS)
        banded = images.resize_in_bands(image, size)
        assert banded.size == whole.size and banded.mode == whole.mode
        difference = ImageChops.difference(banded, whole)
        extrema = difference.getextrema()
        assert max(high for _low, high in (extrema if mode != "L" else [extrema])) <= 1, size
        differing = sum(1 for value in difference.tobytes() if value)
        assert differing <= 0.001 * len(difference.tobytes()), size

"""HEIC photos (iPhones' default) through the media job: files written by pillow-heif's encoder,
real storage, PostgreSQL rows and RabbitMQ events, as tests/test_media_images.py does for the
other formats."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading

import pillow_heif
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageChops, ImageStat

from media_jobs import heif
from supworker.handlers import PermanentError
from supworker.models import DeadLetter, JobRun
from supworker.models.messenger import Message
from tests.media_files import GPS_LATITUDE, heic_claiming, photo, set_limits, stored_path
from tests.test_fuzz_media import Case, run_as_worker
from tests.testenv import ROOT

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.media_fixtures"]


def ready(media, key: str) -> tuple[Message, dict]:
    message = media.message()
    result = media.run("image", key, message.id)
    message.refresh_from_db()
    assert message.media_status == "ready" and message.media_error == ""
    assert result["mediaUrl"] == message.media_url
    return message, message.media_metadata


def as_written(media, fixture: str) -> pillow_heif.HeifFile:
    """The fixture as pillow-heif reads it on its own, without the Pillow plugin's orientation reset."""
    return pillow_heif.open_heif(media.files(fixture))


def exif_of(container: pillow_heif.HeifFile) -> Image.Exif:
    exif = Image.Exif()
    exif.load(container.info["exif"])
    return exif


def failure(media, key: str) -> tuple[str, Message]:
    message = media.message()
    with pytest.raises(PermanentError) as excinfo:
        media.run("image", key, message.id)
    message.refresh_from_db()
    return str(excinfo.value), message


def test_a_heic_photo_becomes_a_jpeg_with_thumbnail_blurhash_and_event(media):
    message, meta = ready(media, media.upload("photo.heic"))
    assert message.media_url == f"media/{message.id}/processed/image.jpg"
    assert message.thumbnail_url == f"media/{message.id}/processed/thumb.jpg"
    with Image.open(stored_path(message.media_url)) as out:
        assert out.format == "JPEG" and out.size == (640, 480) and out.mode == "RGB"
        # Compared at 80x60, which averages away the codecs' loss in the photo's noise; another
        # photo of the same kind differs by about 65.
        seen, shot = (image.resize((80, 60), Image.Resampling.BOX) for image in (out, photo(640, 480)))
    difference = ImageStat.Stat(ImageChops.difference(seen, shot)).mean
    assert max(difference) < 6, f"the pixels are the photo's: {difference}"
    assert meta["original"] == {"width": 640, "height": 480, "format": "heif"}
    assert meta["format"] == "jpeg" and meta["has_alpha"] is False and meta["animated"] is False
    assert meta["bytes"] == stored_path(message.media_url).stat().st_size
    assert (meta["thumbnail"]["width"], meta["thumbnail"]["height"]) == (320, 240)
    assert meta["blurhash"].startswith("U") and len(meta["blurhash"]) == 36
    ((key, event),) = media.events()
    assert key == "media.processed" and event["mediaUrl"] == message.media_url
    assert event["metadata"]["original"]["format"] == "heif"


def test_the_orientation_of_a_rotated_heic_is_applied_once(media):
    written = media.files("rotated.heic").read_bytes()
    at = written.index(b"ispe") + 8
    assert struct.unpack(">II", written[at : at + 8]) == (400, 200), "stored landscape, as the sensor saw it"
    assert exif_of(as_written(media, "rotated.heic"))[0x0112] == 6, "EXIF orientation 6, as an iPhone writes"

    message, meta = ready(media, media.upload("rotated.heic"))
    with Image.open(stored_path(message.media_url)) as out:
        assert out.size == (200, 400), "shown portrait"
        assert len(out.getexif()) == 0
        red_top, blue_bottom = out.convert("RGB").getpixel((100, 50)), out.convert("RGB").getpixel((100, 350))
    assert red_top[0] > 180 and red_top[2] < 80, "the stored left (red) half is now on top"
    assert blue_bottom[2] > 180 and blue_bottom[0] < 80
    assert (meta["width"], meta["height"]) == (200, 400)
    assert meta["original"] == {"width": 200, "height": 400, "format": "heif"}
    with Image.open(stored_path(message.thumbnail_url)) as thumb:
        assert thumb.size == (160, 320)


def test_gps_camera_and_xmp_of_a_heic_never_leave_and_its_colour_profile_stays(media):
    written = as_written(media, "gps.heic")
    assert exif_of(written).get_ifd(0x8825)[2] == GPS_LATITUDE and b"shot at home" in written.info["xmp"]
    source_icc = written.info["icc_profile"]

    message, _meta = ready(media, media.upload("gps.heic"))
    for key in (message.media_url, message.thumbnail_url):
        raw = stored_path(key).read_bytes()
        with Image.open(stored_path(key)) as out:
            assert len(out.getexif()) == 0 and "xmp" not in out.info and "XML:com.adobe.xmp" not in out.info
            kept = out.info.get("icc_profile")
            assert kept == source_icc, f"the colour profile is kept, as for a JPEG ({key}: {sorted(out.info)}, {_meta})"
        assert b"PhoneMaker" not in raw and b"shot at home" not in raw and b"Exif" not in raw


def test_a_heic_no_larger_than_a_thumbnail_is_never_saved_by_two_threads_at_once(media, monkeypatch):
    """gps.heic (320x240) is already thumbnail-sized. Pillow keeps a save's options on the image
    while it writes, so two threads saving that one image could write a JPEG without them (no
    colour profile, baseline, default quality), now and then. Which thread runs each save is
    recorded through Pillow's own JPEG writer, so the rule is checked every time, not by luck."""
    Image.preinit()
    jpeg_save, saves = Image.SAVE["JPEG"], []

    def recording(image, fp, filename):
        saves.append((image, threading.current_thread()))
        jpeg_save(image, fp, filename)

    monkeypatch.setitem(Image.SAVE, "JPEG", recording)
    message, _meta = ready(media, media.upload("gps.heic"))
    assert saves, "the outputs were written by Pillow's JPEG writer"
    for image, thread in saves:
        others = [other for saved, other in saves if saved is image and other is not thread]
        assert not others, f"one image saved by {thread.name} and {others[0].name}"
    for key in (message.media_url, message.thumbnail_url):
        with Image.open(stored_path(key)) as out:
            assert out.info.get("icc_profile") and out.info.get("progressive"), (key, sorted(out.info))


def test_a_heic_holding_several_images_yields_its_primary_one(media):
    written = as_written(media, "burst.heic")
    assert len(written) == 2 and written.primary_index == 1 and written[0].size == (320, 240)

    message, meta = ready(media, media.upload("burst.heic"))
    assert meta["original"] == {"width": 160, "height": 120, "format": "heif"}
    with Image.open(stored_path(message.media_url)) as out:
        assert out.size == (160, 120)
        red, _green, blue = out.convert("RGB").getpixel((80, 60))
    assert blue > 180 and red < 80, "the primary (blue) image, not the first (red) one"


def test_a_heic_with_transparency_becomes_a_png_with_alpha(media):
    message, meta = ready(media, media.upload("alpha.heic"))
    assert message.media_url.endswith("/image.png") and meta["has_alpha"] is True
    with Image.open(stored_path(message.media_url)) as out:
        assert out.mode == "RGBA" and out.size == (300, 200)
        assert out.getpixel((0, 0))[3] == 0 and out.getpixel((150, 100))[3] == 255


def test_a_heic_is_read_by_its_content_whatever_its_name(media):
    _message, meta = ready(media, media.upload("photo.heic", key="uploads/IMG_0001.png"))
    assert meta["original"]["format"] == "heif"
    _message, meta = ready(media, media.upload("rotated_gps.jpg", key="uploads/IMG_0002.HEIC"))
    assert meta["original"]["format"] == "jpeg"


def test_a_truncated_heic_fails_at_once_naming_the_problem(media):
    reason, message = failure(media, media.upload("truncated.heic"))
    assert reason.startswith("the HEIC image is corrupt or truncated: ") and "end of file" in reason, reason
    assert message.media_status == "failed" and message.media_error == reason and message.media_url is None
    ((key, event),) = media.events()
    assert key == "media.failed" and event["error"] == reason


@pytest.mark.django_db(transaction=True)
def test_a_truncated_heic_is_dead_lettered_without_retry_and_the_worker_goes_on(media, redis_conn):
    cases = [
        Case("truncated", "image", media.files("truncated.heic").read_bytes(), "heic"),
        Case("whole", "image", media.files("photo.heic").read_bytes(), "heic"),
    ]
    jobs = run_as_worker(media, redis_conn, cases)  # an RQ worker, in this process
    outcome = {case.name: (job_id, message) for job_id, (case, message) in jobs.items()}

    job_id, message = outcome["truncated"]
    run, letter = JobRun.objects.get(job_id=job_id), DeadLetter.objects.get(job_id=job_id)
    message.refresh_from_db()
    assert run.status == "failed" and run.attempts == 1, "a file at fault is never retried"
    assert "the HEIC image is corrupt or truncated" in letter.error and message.media_status == "failed"
    job_id, message = outcome["whole"]
    message.refresh_from_db()
    assert JobRun.objects.get(job_id=job_id).status == "succeeded" and message.media_status == "ready"


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (8000, 5000, "the image is 8000x5000 = 40,000,000 pixels, more than the 33,177,600-pixel limit"),
        (65535, 65535, "the image is a decompression bomb"),
    ],
)
def test_a_heic_declaring_too_many_pixels_is_refused_before_decoding(media, monkeypatch, width, height, reason):
    """Its 256x128 of real pixels would fail decoding with libheif's own "size signaled" error:
    the limit's reason shows the header alone was read, as does the decoder never being called."""
    decoded = []
    original_load = heif.HeifImageFile.load
    monkeypatch.setattr(heif.HeifImageFile, "load", lambda self: decoded.append(self) or original_load(self))
    claimed = heic_claiming(media.files("huge.heic").read_bytes(), width, height)
    key = default_storage.save("uploads/bomb.heic", ContentFile(claimed))
    message_text, message = failure(media, key)
    assert reason in message_text and message.media_status == "failed"
    assert decoded == [], "refused from the header: not one pixel decoded"


def test_heic_obeys_the_byte_and_pixel_limits_of_the_settings(media, settings):
    set_limits(settings, image_max_pixels=1000)
    assert "more than the 1,000-pixel limit" in failure(media, media.upload("photo.heic"))[0]
    set_limits(settings, image_max_pixels=33_177_600, image_max_bytes=2048)
    assert "bytes, more than the 2,048-byte limit" in failure(media, media.upload("photo.heic"))[0]


def test_only_media_processing_registers_the_heif_opener():
    """Settings, apps and every job module load without teaching Pillow HEIF; the first image does."""
    probe = """
import django
django.setup()
from PIL import Image
from supworker.handlers import load_handlers
load_handlers()
before = "HEIF" in Image.OPEN
from media_jobs import heif
heif.register()
print(before, "HEIF" in Image.OPEN)
"""
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "supworker.settings", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True"]


def test_an_avif_under_the_generic_heif_brand_is_still_read_as_avif(media):
    """AVIF and HEIC share the "mif1" brand: AVIF's own reader goes first, and HEIC's wants an HEVC brand."""
    data = media.files("photo.avif").read_bytes()
    assert data[4:12] == b"ftypavif"
    key = default_storage.save("uploads/generic.avif", ContentFile(data[:8] + b"mif1" + data[12:]))
    _message, meta = ready(media, key)
    assert meta["original"]["format"] == "avif"

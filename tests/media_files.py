"""Media files made by the tests themselves (Pillow and ffmpeg), and helpers to run media jobs.

Nothing here is committed as a binary: each maker writes its file on demand. The pytest
fixtures that use these live in tests/media_fixtures.py.
"""

from __future__ import annotations

import io
import math
import random
import socket
import struct
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pillow_heif
from PIL import Image, ImageCms, ImageDraw

GPS_LATITUDE = (48.0, 51.0, 29.52)  # a real-looking position that must never leave


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    """Something photographic to a codec: gradients, shapes and noise, not a flat colour."""
    rng = random.Random(seed)
    gradient = Image.linear_gradient("L").resize((width, height))
    red = gradient
    green = gradient.rotate(90).resize((width, height))
    blue = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(width, height) // 40, max(width, height) // 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = Image.effect_noise((width, height), 40).convert("RGB")
    return Image.blend(image, noise, 0.25)


def jpeg_rotated_with_gps(path: Path) -> None:
    """Stored landscape 400x200 (left red, right blue), EXIF orientation 6: shown portrait 200x400."""
    image = Image.new("RGB", (400, 200), (220, 20, 20))
    image.paste((20, 20, 220), (200, 0, 400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: GPS_LATITUDE, 3: "E", 4: (2.0, 17.0, 40.0)})
    image.save(path, "JPEG", exif=exif, icc_profile=srgb_icc(), comment=b"shot at home", quality=90)


def png_with_alpha(path: Path) -> None:
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((50, 25, 250, 175), fill=(30, 160, 60, 255))
    image.save(path, "PNG")


def webp_with_alpha(path: Path) -> None:
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((50, 50, 250, 150), fill=(200, 40, 40, 255))
    image.save(path, "WEBP", lossless=True)


def avif_photo(path: Path) -> None:
    photo(320, 240).save(path, "AVIF", quality=70)


def heic(path: Path | io.BytesIO, *images: Image.Image, primary: int = 0, exif: Image.Exif | None = None,
         xmp: bytes | None = None) -> None:  # fmt: skip
    """A HEIC written by pillow-heif's own encoder (x265), as a phone would: the `exif` and `xmp`
    blocks belong to the primary image, and an EXIF orientation becomes HEIF's `irot`/`imir` boxes
    too, the pixels staying as the sensor saw them. Pillow's registry is left alone: the tests use
    the opener the pipeline registers (media_jobs/heif.py)."""
    container = pillow_heif.from_pillow(images[0])
    for image in images[1:]:
        container.add_from_pillow(image)
    metadata = {"exif": exif.tobytes()} if exif is not None else {}
    container.save(path, quality=80, primary_index=primary, xmp=xmp, **metadata)


def heic_photo(path: Path) -> None:
    heic(path, photo(640, 480))


def heic_rotated(path: Path) -> None:
    """Stored landscape 400x200 (left red, right blue), EXIF orientation 6: shown portrait 200x400."""
    image = Image.new("RGB", (400, 200), (220, 20, 20))
    image.paste((20, 20, 220), (200, 0, 400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    heic(path, image, exif=exif)


def heic_with_gps(path: Path) -> None:
    """A photo carrying what an iPhone's does: GPS position, camera, XMP, and a colour profile."""
    image = photo(320, 240)
    image.info["icc_profile"] = srgb_icc()
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(0x8825).update({1: "N", 2: GPS_LATITUDE, 3: "E", 4: (2.0, 17.0, 40.0)})
    heic(path, image, exif=exif, xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">shot at home</x:xmpmeta>')


def heic_burst(path: Path) -> None:
    """Two images, the second (blue, 160x120) primary: a burst whose chosen shot is not the first."""
    heic(path, Image.new("RGB", (320, 240), (220, 20, 20)), Image.new("RGB", (160, 120), (20, 20, 220)), primary=1)


def heic_with_alpha(path: Path) -> None:
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((50, 25, 250, 175), fill=(30, 160, 60, 255))
    heic(path, image)


def truncated_heic(path: Path) -> None:
    buffer = io.BytesIO()
    heic(buffer, photo(640, 480))
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def heic_claiming(data: bytes, width: int, height: int) -> bytes:
    """The HEIC with the size its `ispe` box declares replaced: what libheif reports before decoding."""
    at = data.index(b"ispe") + 8  # box type, version and flags, then width and height
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


def huge_heic(path: Path) -> None:
    """Says 8000x5000 = 40 megapixels (above the default 33-megapixel limit) around 256x128 of pixels."""
    buffer = io.BytesIO()
    heic(buffer, Image.new("RGB", (256, 128), (20, 120, 20)))
    path.write_bytes(heic_claiming(buffer.getvalue(), 8000, 5000))


def png_opaque_rgba(path: Path) -> None:
    photo(320, 240).convert("RGBA").save(path, "PNG")


def cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (120, 80), (0, 255, 255, 0)).save(path, "JPEG")  # pure red in print terms


def large_photo_jpeg(path: Path, width: int = 3000, height: int = 2000, quality: int = 90) -> None:
    photo(width, height).save(path, "JPEG", quality=quality)


def animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (96, 64), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    photo(640, 480).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def decompression_bomb(path: Path) -> None:
    """A 20000x20000 PNG of one colour: 400 megapixels in a few tens of kilobytes."""
    Image.new("1", (20000, 20000)).save(path, "PNG", optimize=True)


def text_named_jpg(path: Path) -> None:
    path.write_text("This is not a picture, whatever its name says.\n" * 20)


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


def portrait_video(path: Path) -> None:
    """A 1440x1080 H.264 MP4 with a GPS location, whose display matrix turns it to portrait as
    phones record: shown 1080x1440, so it is transcoded to 960x1280."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=1440x1080:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-metadata", "location=+48.8577+002.2950/", "-shortest", str(path),
    )  # fmt: skip
    _set_rotation_90(path)


def _set_rotation_90(path: Path) -> None:
    """ffmpeg 5.1 cannot write a display matrix; patch the video track's tkhd matrix instead."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    matrix = at + 4 + (4 + 20 + 8 + 8 if version == 0 else 4 + 32 + 8 + 8)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(data)


def vp9_webm(path: Path) -> None:
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=330",
        "-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k",
        "-c:a", "libopus", "-shortest", str(path),
    )  # fmt: skip


def video_without_audio(path: Path) -> None:
    """H.264 in Matroska with odd dimensions: must be transcoded (and made even), no audio."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=321x241:rate=25", "-t", "1", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv444p", str(path))  # fmt: skip


def compliant_mp4(path: Path, seconds: float = 1, size: str = "640x360") -> None:
    """What the pipeline itself would produce: it must be passed through, not re-encoded. Like a
    phone's video it carries a GPS location, which the passthrough must not keep."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-metadata", "location=+48.8577+002.2950/",
        "-movflags", "+faststart", "-shortest", str(path),
    )  # fmt: skip


def large_video(path: Path, seconds: float = 10, size: str = "1920x1080") -> None:
    """Full-HD, lots of detail: a real transcode's worth of work."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip


def voice_note_opus(path: Path, seconds: float = 3) -> None:
    """Speech-like: a tone whose loudness swells and falls, then silence at the end."""
    expression = f"sin(2*PI*220*t)*0.8*abs(sin(PI*t))*lt(t,{seconds - 0.6})"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc='{expression}':s=48000:d={seconds}", "-ac", "1",
           "-c:a", "libopus", "-b:a", "24k", str(path))  # fmt: skip


def wav_file(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:duration=2:sample_rate=44100", "-ac", "2",
           "-c:a", "pcm_s16le", str(path))  # fmt: skip


def hls_playlist_disguised_as_mp4(path: Path, secret: Path) -> None:
    """The classic attack: an HLS playlist uploaded as a video, naming a local file to read."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1", "-c:v", "libx264", str(secret))
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{secret}\n#EXT-X-ENDLIST\n")


def concat_playlist_disguised_as_mp4(path: Path, secret: Path) -> None:
    path.write_text(f"ffconcat version 1.0\nfile '{secret}'\n")


def video_above_4k(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=5120x256:rate=1", "-frames:v", "1",
           "-c:v", "libx264", "-preset", "ultrafast", str(path))  # fmt: skip


def video_above_120_fps(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=240", "-t", "0.2", "-c:v", "libx264",
           "-preset", "ultrafast", str(path))  # fmt: skip


def flv_video(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1", "-c:v", "flv1", str(path))


def click_wav(path: Path) -> None:
    """Two seconds of silence with one 5 ms click at 1.0 s: a waveform must not lose it."""
    ffmpeg("-f", "lavfi", "-i", "aevalsrc='0.9*sin(2*PI*3000*t)*between(t,1,1.005)':s=44100:d=2",
           "-c:a", "pcm_s16le", str(path))  # fmt: skip


def huge_png(path: Path) -> None:
    """8000x5000 = 40 megapixels: above the default 33-megapixel limit, below Pillow's bomb guard."""
    Image.new("1", (8000, 5000)).save(path, "PNG", optimize=True)


def audio_only_m4a(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))


MAKERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "rotated_gps.jpg": ("image/jpeg", jpeg_rotated_with_gps),
    "alpha.png": ("image/png", png_with_alpha),
    "opaque_rgba.png": ("image/png", png_opaque_rgba),
    "alpha.webp": ("image/webp", webp_with_alpha),
    "photo.avif": ("image/avif", avif_photo),
    "photo.heic": ("image/heic", heic_photo),
    "rotated.heic": ("image/heic", heic_rotated),
    "gps.heic": ("image/heic", heic_with_gps),
    "burst.heic": ("image/heic", heic_burst),
    "alpha.heic": ("image/heic", heic_with_alpha),
    "truncated.heic": ("image/heic", truncated_heic),
    "huge.heic": ("image/heic", huge_heic),
    "cmyk.jpg": ("image/jpeg", cmyk_jpeg),
    "large.jpg": ("image/jpeg", large_photo_jpeg),
    "animated.gif": ("image/gif", animated_gif),
    "truncated.jpg": ("image/jpeg", truncated_jpeg),
    "bomb.png": ("image/png", decompression_bomb),
    "huge.png": ("image/png", huge_png),
    "click.wav": ("audio/wav", click_wav),
    "text.jpg": ("image/jpeg", text_named_jpg),
    "empty.jpg": ("image/jpeg", empty_file),
    "portrait.mp4": ("video/mp4", portrait_video),
    "vp9.webm": ("video/webm", vp9_webm),
    "silent.mkv": ("video/x-matroska", video_without_audio),
    "compliant.mp4": ("video/mp4", compliant_mp4),
    "above4k.mp4": ("video/mp4", video_above_4k),
    "fast.mp4": ("video/mp4", video_above_120_fps),
    "old.flv": ("video/x-flv", flv_video),
    "audio_only.m4a": ("audio/mp4", audio_only_m4a),
    "voice.ogg": ("audio/ogg", voice_note_opus),
    "tone.wav": ("audio/wav", wav_file),
}


class MediaFiles:
    """Lazily made fixture files, one directory per test session."""

    def __init__(self, directory: Path):
        self.directory = directory

    def __call__(self, name: str) -> Path:
        path = self.directory / name
        if not path.exists():
            MAKERS[name][1](path)
        return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sine_peaks_expected(seconds: float, buckets: int = 100) -> list[float]:
    """Relative loudness of voice_note_opus per bucket, for a shape check."""
    end = seconds - 0.6
    return [abs(math.sin(math.pi * ((i + 0.5) * seconds / buckets))) if (i + 0.5) * seconds / buckets < end else 0.0
            for i in range(buckets)]  # fmt: skip


# --- running media jobs against real storage, PostgreSQL and RabbitMQ ---------------------------
class MediaHarness:
    """Uploads, messages, jobs and the events they publish, for one test."""

    def __init__(self, files: MediaFiles, channel, queue: str):
        self.files = files
        self.channel = channel
        self.queue = queue

    def upload(self, fixture: str, key: str | None = None) -> str:
        from django.core.files import File
        from django.core.files.storage import default_storage

        key = key or f"uploads/{uuid.uuid4()}/{fixture}"
        with open(self.files(fixture), "rb") as handle:
            stored = default_storage.save(key, File(handle, name=fixture))
        assert stored == key
        return key

    @staticmethod
    def message():
        from supworker.models.messenger import Message

        return Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4(), media_status="queued")

    @staticmethod
    def envelope(kind: str, key: str, message_id, job_id: str | None = None, attempt: int = 0):
        from supworker.envelope import Envelope

        payload = {"type": kind, "s3Key": key, "userId": str(uuid.uuid4()), "messageId": str(message_id)}
        return Envelope(
            job_id=job_id or f"media-{uuid.uuid4().hex}", job_type=f"media.{kind}", payload=payload, attempt=attempt
        )

    def run(self, kind: str, key: str, message_id, **envelope_fields):
        """Call the registered handler as the runner does; returns its result or raises."""
        from media_jobs import jobs

        handler = {"image": jobs.process_image, "video": jobs.process_video, "audio": jobs.process_audio}[kind]
        return handler(self.envelope(kind, key, message_id, **envelope_fields))

    def events(self, expected: int = 1, timeout: float = 5) -> list[tuple[str, dict]]:
        """Events published on the test's exchange so far (waits for at least `expected`)."""
        import json
        import time

        found: list[tuple[str, dict]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                if len(found) >= expected:
                    break
                time.sleep(0.05)
                continue
            found.append((method.routing_key, json.loads(body)))
        return found


def set_limits(settings, **limits: int) -> None:
    """Change MEDIA_* limits for one test (settings.CONFIG is restored by pytest-django)."""
    settings.CONFIG = settings.CONFIG.with_section("media", **limits)


def stored_path(key: str) -> Path:
    from django.core.files.storage import default_storage

    return Path(default_storage.path(key))


def probe(path: Path) -> dict:
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return json.loads(out)

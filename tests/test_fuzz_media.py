"""Mutated media files through the real pipeline: the RQ job a media worker runs (runner,
handler, Pillow, sandboxed ffmpeg), against PostgreSQL, Redis, RabbitMQ and the media store.

The files are the media tests' own fixtures, cut short, with bytes flipped in the header and
the body, spliced with other formats, sent as another kind of media, with sizes or durations
their headers lie about, and as decompression bombs. Each job either ends ready with outputs
that decode completely, or failed at once (no retry) with a reason that says what is wrong,
recorded on the message, in the job record, in a dead letter and in a media.failed event.
No temporary directory and no ffmpeg process outlives the jobs.
"""

from __future__ import annotations

import io
import random
import re
import struct
import subprocess
import uuid
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from PIL import Image
from rq import Queue, SimpleWorker

from supworker import jobtypes
from supworker.enqueue import Submission, enqueue
from supworker.models import DeadLetter, JobRun
from supworker.models.messenger import Message
from tests.media_files import MediaFiles, MediaHarness, ffmpeg, heic_claiming, probe, stored_path

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Truncated File Read"),  # Pillow, on a cut EXIF block: expected here
]
pytest_plugins = ["tests.media_fixtures"]

FIXTURES = {
    "image": ["rotated_gps.jpg", "alpha.png", "alpha.webp", "photo.avif", "animated.gif", "photo.heic"],
    "video": ["compliant.mp4", "vp9.webm", "silent.mkv"],
    "audio": ["voice.ogg", "tone.wav", "audio_only.m4a"],
}


@dataclass
class Case:
    name: str
    kind: str  # the job type's media kind, which need not be what the bytes are
    data: bytes
    extension: str
    expect: str = ""  # a pattern the failure reason must match; "" when either outcome is fine
    succeeds: bool | None = None  # None: either outcome is fine


# --- mutations ------------------------------------------------------------------------------
def generic(kind: str, name: str, data: bytes, rng: random.Random) -> list[Case]:
    """Truncations and byte flips of one fixture, as a flaky upload or a fuzzer makes them."""
    extension = name.rsplit(".", 1)[1]
    header = bytearray(data)
    for at in rng.sample(range(min(64, len(data))), 6):
        header[at] ^= 0xFF
    body = bytearray(data)
    for at in rng.sample(range(min(64, len(data) // 2), len(data)), max(1, len(data) // 300)):
        body[at] = rng.randrange(256)
    mutations = {
        "cut to 10%": data[: len(data) // 10],
        "cut to 60%": data[: len(data) * 6 // 10],
        "header bytes flipped": bytes(header),
        "body bytes flipped": bytes(body),
        "junk before it": b"\x00" * 16 + data,
    }
    return [Case(f"{name}: {label}", kind, mutated, extension) for label, mutated in mutations.items()]


def png_claiming(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR size replaced, and the chunk's CRC fixed so only the size lies."""
    ihdr = bytearray(data[12:29])  # type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    at = re.search(rb"\xff[\xc0\xc2]", data).start()  # SOF0 or SOF2: length, precision, height, width
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def gif_screen(data: bytes, width: int, height: int) -> bytes:
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def gif_animation_bomb(width: int, height: int, frames: int) -> bytes:
    """One still frame, then thousands of 1x1 changes: a few hundred kB for billions of pixels."""
    still = io.BytesIO()
    Image.new("P", (width, height), 0).save(still, "GIF")
    patch = (
        b"\x21\xf9\x04\x04\x02\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    )
    return still.getvalue()[:-1] + patch * frames + b";"


def wav_claiming_rate(data: bytes, rate: int) -> bytes:
    """A WAV whose header says its samples are played `rate` per second: the duration lies."""
    channels, bits = struct.unpack("<H", data[22:24])[0], struct.unpack("<H", data[34:36])[0]
    return data[:24] + struct.pack("<II", rate, rate * channels * bits // 8) + data[32:]


def resolution_switch(directory: Path) -> bytes:
    """MPEG-TS whose H.264 starts with ten 320x240 pictures (what ffprobe reports) and goes on
    with three of 4800x2400, beyond 4K."""
    small, large, joined = directory / "small.h264", directory / "large.h264", directory / "switch.ts"
    for path, size, frames in ((small, "320x240", "10"), (large, "4800x2400", "3")):
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-frames:v", frames, "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "h264", str(path))  # fmt: skip
    (directory / "both.h264").write_bytes(small.read_bytes() + large.read_bytes())
    ffmpeg("-f", "h264", "-i", str(directory / "both.h264"), "-c", "copy", str(joined))
    return joined.read_bytes()


def crafted(files: MediaFiles) -> list[Case]:
    jpeg, png, gif = (files(n).read_bytes() for n in ("rotated_gps.jpg", "alpha.png", "animated.gif"))
    heic = files("photo.heic").read_bytes()
    mp4, wav, ogg = (files(n).read_bytes() for n in ("compliant.mp4", "tone.wav", "voice.ogg"))
    too_many = r"decompression bomb|pixel limit"
    bomb = "10,001 frames of 2000x2000 .* limit for animations"
    # fmt: off
    return [
        Case("empty file", "image", b"", "jpg", "the image file is empty", False),
        Case("PNG claiming 65535x65535", "image", png_claiming(png, 65535, 65535), "png", too_many, False),
        Case("PNG claiming 40000x1000", "image", png_claiming(png, 40000, 1000), "png", too_many, False),
        Case("PNG claiming 5000x5000, 300x200 in data", "image", png_claiming(png, 5000, 5000), "png", "truncated",
             False),
        Case("JPEG claiming 65000x65000", "image", jpeg_claiming(jpeg, 65000, 65000), "jpg", too_many, False),
        Case("GIF screen of 65535x65535", "image", gif_screen(gif, 65535, 65535), "gif", too_many, False),
        Case("HEIC claiming 65535x65535", "image", heic_claiming(heic, 65535, 65535), "heic", too_many, False),
        Case("HEIC claiming 1280x960, 640x480 in data", "image", heic_claiming(heic, 1280, 960), "heic",
             "the HEIC image is corrupt", False),
        Case("HEIC cut inside its meta box", "image", heic[:300], "heic", "the HEIC image is corrupt", False),
        Case("GIF animation bomb", "image", gif_animation_bomb(2000, 2000, 10_000), "gif", bomb, False),
        Case("PNG signature on a JPEG", "image", png[:8] + jpeg[8:], "png", "", False),
        Case("JPEG with a ZIP appended (a polyglot)", "image", jpeg + b"PK\x03\x04" + bytes(100), "jpg", "", True),
        Case("MP4 named .jpg", "image", mp4, "jpg", "not an image in an accepted format", False),
        Case("JPEG sent as a video", "video", jpeg, "mp4", "recognised as (image2|jpeg_pipe)", False),
        Case("WAV sent as a video", "video", wav, "mp4", "recognised as wav", False),
        Case("MP4 head on a WAV", "video", mp4[:32] + wav, "mp4", "", False),
        Case("WAV claiming 1 sample a second", "audio", wav_claiming_rate(wav, 1), "wav",
             r"the audio lasts [\d,]+ s, longer than the 900 s limit", False),
        Case("Ogg head on a WAV", "audio", ogg[:64] + wav, "ogg", "", None),
        Case("an MP4 video sent as audio", "audio", mp4, "m4a", "", True),  # its sound track is audio
        Case("empty audio", "audio", b"", "ogg", "the audio file is empty", False),
    ]
    # fmt: on


# --- running them as a media worker does ----------------------------------------------------
def run_as_worker(media: MediaHarness, redis_conn, cases: list[Case]) -> dict[str, tuple[Case, Message]]:
    """Store each file, enqueue its job as the consumer does, run the queues with an RQ worker."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    jobs: dict[str, tuple[Case, Message]] = {}
    submissions, queue_of = [], {}
    for number, case in enumerate(cases):
        key = default_storage.save(f"uploads/fuzz/{number}.{case.extension}", ContentFile(case.data))
        message = media.message()
        envelope = media.envelope(case.kind, key, message.id, job_id=f"fuzz-{number}-{uuid.uuid4().hex[:6]}")
        jobs[envelope.job_id] = (case, message)
        submissions.append(Submission(envelope, f"id:{envelope.job_id}", 3600))
        queue_of[envelope.job_id] = jobtypes.job_type(envelope.job_type).queue_for(None)
    enqueue(redis_conn, submissions, queue_of)
    queues = [Queue(name, connection=redis_conn) for name in ("media_high", "media")]
    assert SimpleWorker(queues, connection=redis_conn).work(burst=True)
    return jobs


def check_outputs(message: Message) -> None:
    """Every output of a job that succeeded decodes and matches its metadata.

    What we encoded must decode without a single error. A passthrough is the upload's own
    stream copied (video.py: a copy decodes nothing), so damage in it is only required not to
    stop a decoder; its container and streams must still be what the metadata says.
    """
    meta = message.media_metadata
    media_file, thumbnail = stored_path(message.media_url), message.thumbnail_url
    assert media_file.stat().st_size == meta["bytes"]
    if meta["mime_type"].startswith("image/"):
        with Image.open(media_file) as image:
            image.load()
            assert image.size == (meta["width"], meta["height"])
    else:
        strict = [] if meta.get("passthrough") else ["-xerror"]
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", *strict, "-i", str(media_file), "-f", "null", "-"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert decoded.returncode == 0 and (meta.get("passthrough") or not decoded.stderr), decoded.stderr
        assert meta["duration_ms"] > 0
        if meta["kind"] == "video":
            video = next(s for s in probe(media_file)["streams"] if s["codec_type"] == "video")
            assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
            # The metadata gives the size as shown (the MP4 track header, whole pixels): with
            # non-square pixels, as an odd-sized source gets, it differs from the stored size.
            sar = Fraction(video.get("sample_aspect_ratio", "1:1").replace(":", "/")) or 1
            assert abs(video["width"] * sar - meta["width"]) < 1 and video["height"] == meta["height"], (video, meta)
    if thumbnail:
        with Image.open(stored_path(thumbnail)) as image:
            image.load()


def check_reason(reason: str, case: Case, hidden: list[str]) -> None:
    """A reason a user and an operator can act on."""
    assert reason.strip() and len(reason) <= 2000
    assert "Traceback" not in reason and not re.search(r" @ 0x[0-9a-f]+", reason), reason
    for path in hidden:  # the server's own paths stay on the server
        assert path not in reason, reason
    if case.expect:
        assert re.search(case.expect, reason), f"{case.name}: {reason!r}"


def cases_for(kind: str, media: MediaHarness) -> list[Case]:
    rng = random.Random(f"supworker-{kind}")  # the same mutations on every run
    cases = [c for name in FIXTURES[kind] for c in generic(kind, name, media.files(name).read_bytes(), rng)]
    return cases + [c for c in crafted(media.files) if c.kind == kind]


@pytest.mark.parametrize("kind", ["image", "video", "audio"])
def test_mutated_media_end_ready_with_valid_outputs_or_failed_at_once_with_a_clear_reason(
    kind: str, media: MediaHarness, media_temp_dir: Path, redis_conn, tmp_path: Path
) -> None:
    cases = cases_for(kind, media)
    jobs = run_as_worker(media, redis_conn, cases)

    hidden = [str(Path(settings.MEDIA_ROOT).resolve()), str(media_temp_dir), str(tmp_path)]
    outcomes = {}
    for job_id, (case, message) in jobs.items():
        message.refresh_from_db()
        run = JobRun.objects.get(job_id=job_id)
        assert run.attempts == 1, f"{case.name}: a file at fault is never retried"
        if run.status == "succeeded":
            assert message.media_status == "ready", case.name
            check_outputs(message)
        else:
            assert run.status == "failed", f"{case.name}: {run.status} {run.error}"
            assert message.media_status == "failed" and message.media_error, case.name
            check_reason(message.media_error, case, hidden)
            assert (
                run.error.endswith(message.media_error)
                and message.media_error in DeadLetter.objects.get(job_id=job_id).error
            ), case.name
        if case.succeeds is not None:
            assert (run.status == "succeeded") is case.succeeds, f"{case.name}: {run.status} {run.error}"
        outcomes[case.name] = run.status

    events = media.events(expected=len(jobs))
    assert sorted(event["jobId"] for _, event in events) == sorted(jobs)
    assert {key for key, _ in events} <= {"media.processed", "media.failed"}
    assert "failed" in outcomes.values(), "the mutations do break files"
    assert not list(media_temp_dir.glob("*")), "a job left its temporary directory"
    leftovers = [p.name() for p in psutil.Process().children(recursive=True)]
    assert not {"ffmpeg", "ffprobe", "setpriv"} & set(leftovers), "ffmpeg outlived its job"


def test_a_picture_larger_than_4k_appearing_mid_stream_is_not_decoded(media: MediaHarness, tmp_path: Path) -> None:
    """ffprobe reports a stream's first size; the decoder refuses the 11.5-megapixel pictures after it."""
    upload = tmp_path / "switch.ts"
    upload.write_bytes(resolution_switch(tmp_path))
    assert probe(upload)["streams"][0]["width"] == 320
    message = media.message()
    media.run("video", _store(upload), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready"
    (stream,) = probe(stored_path(message.media_url))["streams"]
    assert int(stream["nb_frames"]) == 10, "only the ten 320x240 pictures were decoded"


def _store(path: Path) -> str:
    from django.core.files import File
    from django.core.files.storage import default_storage

    with open(path, "rb") as handle:
        return default_storage.save(f"uploads/{uuid.uuid4()}/{path.name}", File(handle))

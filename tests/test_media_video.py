"""Video jobs: real ffmpeg on files ffmpeg made, passthrough and transcode, refusals, timeouts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import psutil
import pytest

from media_jobs import video
from media_jobs.limits import Deadline
from supworker import jobtypes
from supworker.handlers import PermanentError
from tests.helpers import wait_for
from tests.media_files import large_video, probe, set_limits, stored_path
from tests.testenv import ROOT

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.media_fixtures"]


def processed(media, fixture: str):
    message = media.message()
    media.run("video", media.upload(fixture), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready", message.media_error
    info = probe(stored_path(message.media_url))
    streams = {s["codec_type"]: s for s in info["streams"]}
    return message, message.media_metadata, info, streams


def faststart(path) -> bool:
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.mark.slow
def test_portrait_phone_video_is_turned_upright_scaled_and_stripped_of_its_location(media):
    message, meta, info, streams = processed(media, "portrait.mp4")
    assert message.media_url == f"media/{message.id}/processed/video.mp4"
    assert message.thumbnail_url == f"media/{message.id}/processed/poster.jpg"
    assert meta["passthrough"] is False
    assert meta["original"]["rotation"] in (90, 270)
    assert (meta["original"]["width"], meta["original"]["height"]) == (1080, 1440), "size as displayed"
    picture = streams["video"]
    assert (picture["width"], picture["height"]) == (960, 1280), "rotated into the pixels, long edge 1280"
    assert not picture.get("side_data_list"), "no display matrix left to apply"
    assert picture["codec_name"] == "h264" and picture["pix_fmt"] == "yuv420p"
    assert streams["audio"]["codec_name"] == "aac"
    assert "location" not in info["format"].get("tags", {}), "container metadata (GPS) is stripped"
    assert faststart(stored_path(message.media_url))
    assert (meta["width"], meta["height"]) == (960, 1280)
    assert (
        meta["thumbnail"]["mime_type"] == "image/jpeg"
        and max(meta["thumbnail"]["width"], meta["thumbnail"]["height"]) == 320
    )
    assert abs(meta["duration_ms"] - 1000) <= 50 and meta["fps"] == 25 and meta["blurhash"].startswith("U")


def test_vp9_webm_is_transcoded_to_h264_aac_mp4(media):
    message, meta, info, streams = processed(media, "vp9.webm")
    assert meta["passthrough"] is False and meta["original"]["video_codec"] == "vp9"
    assert meta["original"]["audio_codec"] == "opus"
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["bit_rate"]) <= 140_000
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360), "never upscaled"
    assert "mp4" in info["format"]["format_name"] and faststart(stored_path(message.media_url))


def test_video_without_audio_gets_no_audio_track_and_even_dimensions(media):
    _message, meta, _info, streams = processed(media, "silent.mkv")
    assert "audio" not in streams and meta["has_audio"] is False and meta["audio_codec"] is None
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240), "321x241 rounded down to even"
    assert streams["video"]["pix_fmt"] == "yuv420p", "yuv444p source made playable everywhere"


def test_an_already_compliant_h264_mp4_is_passed_through_not_reencoded(media):
    source = probe(media.files("compliant.mp4"))
    message, meta, info, streams = processed(media, "compliant.mp4")
    assert meta["passthrough"] is True
    original = {s["codec_type"]: s for s in source["streams"]}
    # Stream copy: the very same encoded video (same bitrate and frame count), now faststart.
    assert streams["video"]["bit_rate"] == original["video"]["bit_rate"]
    assert streams["video"]["nb_frames"] == original["video"]["nb_frames"]
    assert "location" in source["format"]["tags"], "the fixture carries a location"
    assert "location" not in info["format"].get("tags", {}), "passthrough strips container metadata (GPS)"
    assert faststart(stored_path(message.media_url))
    assert message.thumbnail_url.endswith("/poster.jpg") and stored_path(message.thumbnail_url).stat().st_size > 0


def test_passthrough_is_refused_above_the_bitrate_setting(media, settings):
    set_limits(settings, video_passthrough_max_bitrate=0)
    _message, meta, _info, _streams = processed(media, "compliant.mp4")
    assert meta["passthrough"] is False


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("above4k.mp4", "the video is 5120x256, larger than 4K (4096x2160)"),
        ("fast.mp4", "the video runs at 240 fps, more than 120"),
        ("old.flv", "recognised as flv (by content or name), which is not accepted for video (accepted: mov, matroska"),
        ("audio_only.m4a", "the file has no video stream"),
        ("text.jpg", "which is not accepted for video"),
        ("empty.jpg", "the video file is empty"),
    ],
)
def test_videos_we_will_not_play_are_refused_at_once_with_the_reason(media, fixture, reason):
    message = media.message()
    with pytest.raises(PermanentError) as excinfo:
        media.run("video", media.upload(fixture), message.id)
    assert reason in str(excinfo.value)
    assert str(media.files(fixture).parent) not in str(excinfo.value), "no server paths in reasons"
    message.refresh_from_db()
    assert message.media_status == "failed" and reason in message.media_error
    ((key, event),) = media.events()
    assert key == "media.failed" and reason in event["error"]


def test_a_video_longer_than_the_setting_is_refused(media, settings):
    set_limits(settings, video_max_seconds=0)
    message = media.message()
    with pytest.raises(PermanentError, match="the video lasts 1 s, longer than the 0 s limit"):
        media.run("video", media.upload("compliant.mp4"), message.id)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    large_video(path, seconds=20)
    return path


@pytest.mark.slow
def test_ffmpeg_is_killed_when_the_job_runs_out_of_time(tmp_path, long_video, settings):
    with pytest.raises(PermanentError, match="took longer than the 1 s this job may take; ffmpeg was stopped"):
        video.process(long_video, tmp_path, settings.CONFIG.media, Deadline(1))
    leftovers = [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]
    assert leftovers == []


@pytest.mark.slow
def test_a_timed_out_job_fails_its_message_and_leaves_no_temporary_files(media, monkeypatch, long_video):
    video_type = jobtypes.job_type("media.video")
    monkeypatch.setitem(jobtypes._JOB_TYPES, "media.video", dataclasses.replace(video_type, timeout=6))
    message = media.message()
    key = "uploads/long.mp4"
    from django.core.files import File
    from django.core.files.storage import default_storage

    with open(long_video, "rb") as handle:
        default_storage.save(key, File(handle))
    with pytest.raises(PermanentError, match="took longer than the 1 s"):
        media.run("video", key, message.id)
    message.refresh_from_db()
    assert message.media_status == "failed" and "took longer" in message.media_error
    from django.conf import settings

    assert list(settings.CONFIG.temp_dir.iterdir()) == [], "the job's temporary directory is gone"


@pytest.mark.slow
def test_ffmpeg_dies_with_a_work_horse_killed_by_sigkill(tmp_path, long_video):
    """RQ may SIGKILL a work horse that overruns; its ffmpeg must not live on as an orphan."""
    script = (
        "import sys; from pathlib import Path;"
        "from media_jobs import ffmpeg; from media_jobs.limits import Deadline;"
        f"ffmpeg.run(['ffmpeg', '-nostdin', '-y', '-i', sys.argv[1], '-c:v', 'libx264', '{tmp_path}/o.mp4'],"
        " Deadline(120), 'test')"
    )
    horse = subprocess.Popen([sys.executable, "-c", script, str(long_video)], cwd=ROOT)
    try:
        children = wait_for(lambda: psutil.Process(horse.pid).children(), 10, "ffmpeg to start")
        (child,) = children
        assert "ffmpeg" in child.name()
        horse.kill()
        horse.wait()
        wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 5, "ffmpeg to die")
    finally:
        if horse.poll() is None:
            horse.kill()

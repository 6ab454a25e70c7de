"""Untrusted files and keys: ffmpeg follows no reference inside a file, keys stay in the store."""

from __future__ import annotations

import os
import subprocess

import pytest

from supworker import storage
from supworker.handlers import PermanentError
from tests.media_files import concat_playlist_disguised_as_mp4, hls_playlist_disguised_as_mp4

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.media_fixtures"]


def upload_file(path, key):
    from django.core.files import File
    from django.core.files.storage import default_storage

    with open(path, "rb") as handle:
        assert default_storage.save(key, File(handle)) == key
    return key


def test_an_hls_playlist_uploaded_as_a_video_is_refused_without_reading_what_it_names(media, tmp_path):
    secret = tmp_path / "outside-the-store.ts"
    evil = tmp_path / "holiday.mp4"
    hls_playlist_disguised_as_mp4(evil, secret)
    # Plain ffprobe follows the playlist and reads the local file it names: the attack is real.
    plain = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration", "-of", "csv=p=0", str(evil)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.stdout.startswith("hls,"), plain.stdout + plain.stderr
    before = os.stat(secret).st_atime_ns

    message = media.message()
    with pytest.raises(PermanentError) as excinfo:
        media.run("video", upload_file(evil, "uploads/holiday.mp4"), message.id)
    assert "recognised as hls" in str(excinfo.value) and "not accepted for video" in str(excinfo.value)
    assert os.stat(secret).st_atime_ns == before, "the named file was never opened"
    message.refresh_from_db()
    assert message.media_status == "failed"


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_a_concat_playlist_uploaded_as_media_is_refused(media, tmp_path, kind):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(media.files("tone.wav").read_bytes())
    evil = tmp_path / "clip.mp4"
    concat_playlist_disguised_as_mp4(evil, secret)
    message = media.message()
    with pytest.raises(PermanentError, match=f"recognised as concat .* not accepted for {kind}"):
        media.run(kind, upload_file(evil, f"uploads/{kind}/clip.mp4"), message.id)


def test_a_key_that_looks_like_a_url_is_read_as_a_plain_file(media):
    """ffmpeg would take "http:…" as a protocol; inputs are always given as file: URLs."""
    message = media.message()
    media.run("video", media.upload("compliant.mp4", key="http:clip.mp4"), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready"


def test_a_symlink_inside_the_store_cannot_lead_out_of_it(media, local_storage, tmp_path):
    outside = tmp_path / "private.png"
    outside.write_bytes(media.files("alpha.png").read_bytes())
    (local_storage / "uploads").mkdir()
    (local_storage / "uploads" / "link.png").symlink_to(outside)
    message = media.message()
    with pytest.raises(PermanentError, match="points outside the media store"):
        media.run("image", "uploads/link.png", message.id)


@pytest.mark.parametrize(
    ("key", "reason"),
    [("../etc/passwd", "'.' or '..' path segments"), ("/etc/passwd", "relative key"), ("a\x00b", "control")],
)
def test_keys_are_checked_again_before_any_storage_access(media, key, reason, tmp_path):
    """The consumer validates keys at the door; the job and the storage layer check again."""
    message = media.message()
    with pytest.raises(PermanentError, match=reason):
        media.run("image", key, message.id)
    message.refresh_from_db()
    assert message.media_status == "failed" and "s3Key" in message.media_error
    for access in (storage.size, lambda k: storage.fetch(k, tmp_path)):
        with pytest.raises(PermanentError, match=reason):
            access(key)

"""Voice messages and audio: MP3, duration in ms, and a waveform that keeps its peaks."""

from __future__ import annotations

import subprocess
from array import array

import numpy as np
import pytest

from media_jobs import audio
from media_jobs.limits import Deadline
from supworker.handlers import PermanentError
from tests.media_files import probe, set_limits, stored_path

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.media_fixtures"]


def processed(media, fixture: str):
    message = media.message()
    media.run("audio", media.upload(fixture), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready", message.media_error
    return message, message.media_metadata, probe(stored_path(message.media_url))


def test_an_opus_voice_note_becomes_a_mono_mp3_with_duration_and_waveform(media):
    message, meta, info = processed(media, "voice.ogg")
    assert message.media_url == f"media/{message.id}/processed/audio.mp3" and message.thumbnail_url is None
    (stream,) = info["streams"]
    assert stream["codec_name"] == "mp3" and stream["channels"] == 1
    assert meta["mime_type"] == "audio/mpeg" and meta["channels"] == 1
    assert abs(meta["duration_ms"] - 3000) <= 30
    waveform = meta["waveform"]
    assert len(waveform) == 100 and all(isinstance(v, int) and 0 <= v <= 255 for v in waveform)
    assert max(waveform) == 255, "scaled to the loudest stretch"
    # The fixture swells as |sin(pi t)|: loud at 0.5 s and 1.5 s, near silent at 1.0 s, silent after 2.4 s.
    assert waveform[16] > 200 and waveform[50] > 200
    assert waveform[33] < 60
    assert all(v <= 10 for v in waveform[81:]) and waveform[-10:] == [0] * 10, "the silent end stays (near) zero"
    assert meta["original"]["codec"] == "opus"


def test_a_wav_file_keeps_its_stereo(media):
    _message, meta, info = processed(media, "tone.wav")
    (stream,) = info["streams"]
    assert stream["channels"] == 2 and meta["channels"] == 2
    assert meta["duration_ms"] == 2000
    assert min(meta["waveform"]) > 240, "a steady tone is loud everywhere"


def test_a_5_ms_click_is_not_filtered_away(media, tmp_path):
    waveform = audio.waveform(media.files("click.wav"), tmp_path, Deadline(30))
    assert waveform[50] == 255 and all(v <= 10 for i, v in enumerate(waveform) if i not in (49, 50, 51))
    # What the waveform must not do: resample to its own rate. The click is filtered away.
    low = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(media.files("click.wav")), "-ac", "1", "-ar", "100", "-f", "s16le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert max(abs(v) for v in array("h", low)) < 0.1 * 0.9 * 32768


def test_the_peaks_are_those_of_the_samples():
    samples = np.zeros(1000, dtype=np.int16)
    samples[5] = -32768
    samples[505] = 16384
    peaks = audio.peaks(samples, buckets=10)
    assert peaks == [255, 0, 0, 0, 0, 128, 0, 0, 0, 0]
    assert audio.peaks(np.zeros(0, dtype=np.int16), buckets=3) == [0, 0, 0]


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("text.jpg", "not accepted for audio"),
        ("empty.jpg", "the audio file is empty"),
        ("silent.mkv", "the file has no audio stream"),
    ],
)
def test_bad_audio_fails_at_once_with_the_reason(media, fixture, reason):
    message = media.message()
    with pytest.raises(PermanentError) as excinfo:
        media.run("audio", media.upload(fixture), message.id)
    assert reason in str(excinfo.value)
    message.refresh_from_db()
    assert message.media_status == "failed" and reason in message.media_error


def test_audio_longer_than_the_setting_is_refused(media, settings):
    set_limits(settings, audio_max_seconds=1)
    message = media.message()
    with pytest.raises(PermanentError, match="the audio lasts 3 s, longer than the 1 s limit"):
        media.run("audio", media.upload("voice.ogg"), message.id)

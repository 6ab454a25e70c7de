"""Voice messages and audio: MP3 for every client, the duration in ms, and a waveform.

Waveform format (for client developers): `metadata.waveform` is a list of exactly
WAVEFORM_BUCKETS (100) integers from 0 to 255. The recording is cut into 100 equal stretches
of time; each value is the peak absolute amplitude in its stretch, scaled so that the loudest
stretch is 255 (a silent recording is all zeros). Draw bar i at height value/255. Peaks,
not averages, because a voice note's bars should show where words are.

It is computed from a mono decode at WAVEFORM_RATE (8 kHz), made by the same ffmpeg run as
the MP3, so the file is decoded once. 8 kHz keeps the speech band, where a voice's peaks
are; the peaks are then taken from every sample. Resampling straight to a rate of 100
samples per recording would low-pass the signal to almost nothing and flatten the peaks.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_lib
import numpy as np

from media_jobs import ffmpeg
from media_jobs.config import MediaConfig
from media_jobs.limits import AUDIO_CONTAINERS, Deadline
from media_jobs.outputs import Output, Processed
from media_jobs.probe import probe_media
from supworker.handlers import PermanentError

WAVEFORM_BUCKETS = 100
WAVEFORM_RATE = 8000
MP3_BITRATE = {1: "64k", 2: "128k"}  # voice is mono; music keeps its stereo


def process(source: Path, workdir: Path, limits: MediaConfig, deadline: Deadline) -> Processed:
    info = probe_media(source, AUDIO_CONTAINERS, deadline, "audio")
    if not info.container_is(*AUDIO_CONTAINERS):
        raise PermanentError(f"the container {info.container!r} is not an accepted audio format")
    if info.audio is None:
        raise PermanentError("the file has no audio stream")
    if info.duration is not None and info.duration > limits.audio_max_seconds:
        raise PermanentError(
            f"the audio lasts {info.duration:.0f} s, longer than the {limits.audio_max_seconds} s limit"
        )
    channels = 1 if info.audio.channels <= 1 else 2
    mp3_path, pcm_path = workdir / "audio.mp3", workdir / "waveform.pcm"

    src = ffmpeg_lib.input(ffmpeg.input_url(source), **ffmpeg.input_options(AUDIO_CONTAINERS))
    mp3 = ffmpeg_lib.output(
        src.audio,
        ffmpeg.input_url(mp3_path),
        **{"c:a": "libmp3lame", "b:a": MP3_BITRATE[channels], "ac": channels, "map_metadata": -1, "vn": None},
    )
    pcm = waveform_output(src, pcm_path)
    args = ffmpeg.base_args() + ffmpeg_lib.compile(ffmpeg_lib.merge_outputs(mp3, pcm), cmd=[])
    ffmpeg.run(args, deadline, "converting the audio")

    samples = read_pcm(pcm_path)
    if not len(samples):
        raise PermanentError("the audio stream holds no decodable sound")
    decoded_seconds = len(samples) / WAVEFORM_RATE
    duration = info.duration if info.duration else decoded_seconds  # WebM from browsers often has none
    if duration > limits.audio_max_seconds:
        raise PermanentError(f"the audio lasts {duration:.0f} s, longer than the {limits.audio_max_seconds} s limit")
    metadata = {
        "kind": "audio",
        "duration_ms": round(duration * 1000),
        "format": "mp3",
        "mime_type": "audio/mpeg",
        "bytes": mp3_path.stat().st_size,
        "channels": channels,
        "waveform": peaks(samples),
        "original": {
            "container": info.container,
            "codec": info.audio.codec,
            "channels": info.audio.channels,
            "sample_rate": info.audio.sample_rate,
        },
    }
    return Processed(outputs=[Output("media", mp3_path, "audio.mp3", "audio/mpeg")], metadata=metadata)


def waveform_output(src: Any, pcm_path: Path) -> Any:
    """Signed 16-bit little-endian mono PCM at WAVEFORM_RATE, to a file (no pipe to drain).

    A short resampling filter (8 taps instead of 32) costs almost nothing next to decoding;
    what little it lets alias through can only raise a peak, never hide one.
    """
    return ffmpeg_lib.output(
        src.audio,
        ffmpeg.input_url(pcm_path),
        af=f"aresample={WAVEFORM_RATE}:filter_size=8",
        f="s16le",
        acodec="pcm_s16le",
        ac=1,
        ar=WAVEFORM_RATE,
    )


def waveform(source: Path, workdir: Path, deadline: Deadline) -> list[int]:
    """The waveform alone (used by the benchmark and for files already converted)."""
    pcm_path = workdir / "waveform.pcm"
    src = ffmpeg_lib.input(ffmpeg.input_url(source), **ffmpeg.input_options(AUDIO_CONTAINERS))
    args = ffmpeg.base_args() + ffmpeg_lib.compile(waveform_output(src, pcm_path), cmd=[])
    ffmpeg.run(args, deadline, "decoding the audio")
    return peaks(read_pcm(pcm_path))


def read_pcm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")


def peaks(samples: np.ndarray, buckets: int = WAVEFORM_BUCKETS) -> list[int]:
    """Peak |amplitude| of each of `buckets` equal stretches, scaled so the loudest is 255."""
    count = len(samples)
    if count == 0:
        return [0] * buckets
    magnitude = np.abs(samples.astype(np.int32))  # int32: |-32768| does not fit in int16
    edges = (np.arange(buckets + 1) * count) // buckets
    raw = np.array([magnitude[a:b].max() if b > a else 0 for a, b in itertools.pairwise(edges)])
    loudest = int(raw.max())
    if loudest == 0:
        return [0] * buckets
    return [int(v) for v in np.minimum(255, np.rint(raw * 255 / loudest))]

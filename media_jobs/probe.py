"""What ffprobe says about a file, reduced to the facts the pipelines decide on."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from media_jobs import ffmpeg
from media_jobs.limits import Deadline


@dataclass(frozen=True)
class VideoStream:
    codec: str
    profile: str
    pix_fmt: str
    width: int  # as displayed: rotation applied
    height: int
    rotation: int  # degrees clockwise the player turns the stored frames
    fps: float
    bitrate: int | None


@dataclass(frozen=True)
class AudioStream:
    codec: str
    channels: int
    sample_rate: int
    bitrate: int | None


@dataclass(frozen=True)
class MediaInfo:
    container: str  # ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float | None  # seconds
    bitrate: int | None  # bits per second, whole file
    video: VideoStream | None
    audio: AudioStream | None

    def container_is(self, *names: str) -> bool:
        return any(name in self.container.split(",") for name in names)


def probe_media(path: Path, demuxers: tuple[str, ...], deadline: Deadline, kind: str = "media") -> MediaInfo:
    data = ffmpeg.probe(path, demuxers, deadline, kind)
    fmt = data.get("format", {})
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return MediaInfo(
        container=fmt.get("format_name", ""),
        duration=_float(fmt.get("duration")) or (_float(video.get("duration")) if video else None),
        bitrate=_int(fmt.get("bit_rate")),
        video=_video(video) if video else None,
        audio=_audio(audio) if audio else None,
    )


def _is_cover_art(stream: dict[str, Any]) -> bool:
    # An MP3's or M4A's embedded picture is a "video" stream of one frame; it is not a video.
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _video(stream: dict[str, Any]) -> VideoStream:
    rotation = _rotation(stream)
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if rotation in (90, 270):
        width, height = height, width
    return VideoStream(
        codec=stream.get("codec_name", ""),
        profile=stream.get("profile", ""),
        pix_fmt=stream.get("pix_fmt", ""),
        width=width,
        height=height,
        rotation=rotation,
        fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
        bitrate=_int(stream.get("bit_rate")),
    )


def _audio(stream: dict[str, Any]) -> AudioStream:
    return AudioStream(
        codec=stream.get("codec_name", ""),
        channels=int(stream.get("channels") or 0),
        sample_rate=int(stream.get("sample_rate") or 0),
        bitrate=_int(stream.get("bit_rate")),
    )


def _rotation(stream: dict[str, Any]) -> int:
    """Rotation from the display matrix (ffmpeg ≥ 5) or the legacy `rotate` tag, as 0/90/180/270."""
    degrees: float = 0
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            degrees = float(side["rotation"])
            break
    else:
        degrees = float(stream.get("tags", {}).get("rotate", 0) or 0)
    return round(degrees / 90) * 90 % 360


def _rate(value: str | None) -> float:
    try:
        rate = Fraction(value or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate) if rate > 0 else 0.0


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "N/A") else None
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number else None


@dataclass(frozen=True)
class Mp4Facts:
    width: int
    height: int
    duration: float  # seconds


def mp4_facts(path: Path) -> Mp4Facts:
    """Picture size and duration of an MP4 we wrote, read from its `moov` box in a few
    microseconds: a second ffprobe run would cost a process start (~0.1 s) per job."""
    with open(path, "rb") as handle:
        moov = _find_box(handle, b"moov", os.fstat(handle.fileno()).st_size)
        if moov is None:
            raise ValueError(f"{path.name} has no moov box")
        children = dict(_boxes(moov))
        mvhd = children[b"mvhd"]
        if mvhd[0] == 1:
            timescale, duration = struct.unpack(">IQ", mvhd[20:32])
        else:
            timescale, duration = struct.unpack(">II", mvhd[12:20])
        width = height = 0
        for kind, trak in _boxes(moov):
            if kind != b"trak":
                continue
            tkhd = dict(_boxes(trak))[b"tkhd"]
            w, h = (value >> 16 for value in struct.unpack(">II", tkhd[-8:]))  # 16.16 fixed point
            if w and h:
                width, height = w, h
                break
    return Mp4Facts(width=width, height=height, duration=duration / timescale if timescale else 0.0)


def _find_box(handle: BinaryIO, wanted: bytes, end: int) -> bytes | None:
    """The payload of the top-level box `wanted`, skipping (not reading) the others, e.g. mdat."""
    position = 0
    while position + 8 <= end:
        handle.seek(position)
        size, kind = struct.unpack(">I4s", handle.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", handle.read(8))[0], 16
        elif size == 0:
            size = end - position
        if size < header:
            return None
        if kind == wanted:
            return handle.read(size - header)
        position += size
    return None


def _boxes(payload: bytes) -> Iterator[tuple[bytes, bytes]]:
    position = 0
    while position + 8 <= len(payload):
        size, kind = struct.unpack(">I4s", payload[position : position + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", payload[position + 8 : position + 16])[0], 16
        elif size == 0:
            size = len(payload) - position
        if size < header:
            return
        yield kind, payload[position + header : position + size]
        position += size

"""Video: probe, refuse what we will not play, then pass through or transcode to H.264 MP4.

Passthrough (stream copy + faststart, seconds instead of minutes): the source is already an
MP4/MOV with H.264 video in yuv420p (8-bit, a profile every phone decodes), AAC audio or none,
at most MEDIA_VIDEO_MAX_EDGE on its long edge, even dimensions, at most 60 fps and at most
MEDIA_VIDEO_PASSTHROUGH_MAX_BITRATE bits per second. Anything else is transcoded:
libx264 veryfast CRF 23, yuv420p, even dimensions, long edge at most MEDIA_VIDEO_MAX_EDGE
(never upscaled), AAC 128 kb/s, +faststart. Either way every container-level metadata
(location, device, dates, chapters) is dropped. The poster (the thumbnail) is the first
frame, made in the same ffmpeg run as the transcode, so the video is decoded only once.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_lib
from PIL import Image

from media_jobs import ffmpeg
from media_jobs.config import MediaConfig
from media_jobs.limits import (
    MAX_VIDEO_FPS,
    MAX_VIDEO_LONG_EDGE,
    MAX_VIDEO_SHORT_EDGE,
    VIDEO_CONTAINERS,
    Deadline,
)
from media_jobs.outputs import Output, Processed
from media_jobs.placeholders import blurhash_of
from media_jobs.probe import MediaInfo, mp4_facts, probe_media
from supworker.handlers import PermanentError

PASSTHROUGH_PROFILES = {"Constrained Baseline", "Baseline", "Main", "High"}
PASSTHROUGH_MAX_FPS = 60
X264 = {"c:v": "libx264", "preset": "veryfast", "crf": 23, "pix_fmt": "yuv420p"}
AAC = {"c:a": "aac", "b:a": "128k"}
# No global metadata, no chapters, no subtitle or data streams: nothing but pictures and sound.
CLEAN = {"map_metadata": -1, "map_chapters": -1, "movflags": "+faststart"}
POSTER_QUALITY = 3  # mjpeg qscale: 2 (best) to 31


def process(source: Path, workdir: Path, limits: MediaConfig, deadline: Deadline) -> Processed:
    info = probe_media(source, VIDEO_CONTAINERS, deadline, "video")
    check(info, limits)
    media_path, poster_path = workdir / "video.mp4", workdir / "poster.jpg"
    passthrough = can_pass_through(info, limits)
    if passthrough:
        # Copying decodes nothing, the poster decodes one frame: two short runs side by side. A
        # damaged bitstream is copied as it came (checking every frame would cost a full decode).
        ffmpeg.run_together(
            [
                (passthrough_args(source, media_path, info), "copying the video"),
                (poster_args(source, poster_path, limits.thumbnail_max_edge), "making the poster"),
            ],
            deadline,
        )
        out = _as_output(info)  # a stream copy has the source's size, rate and duration
    else:
        ffmpeg.run(transcode_args(source, media_path, poster_path, info, limits), deadline, "transcoding the video")
        out = describe_output(media_path, info.video.fps if info.video else 0)
    if out["duration_ms"] > limits.video_max_seconds * 1000:
        raise PermanentError(f"the video lasts longer than the {limits.video_max_seconds} s limit")
    if not poster_path.exists():
        raise PermanentError("the video has no decodable frame")
    with Image.open(poster_path) as poster:
        poster.load()
        poster_meta = {"width": poster.width, "height": poster.height, "mime_type": "image/jpeg"}
        poster_hash = blurhash_of(poster)
    poster_meta["bytes"] = poster_path.stat().st_size
    metadata = {
        "kind": "video",
        "width": out["width"],
        "height": out["height"],
        "duration_ms": out["duration_ms"],
        "fps": out["fps"],
        "video_codec": "h264",
        "audio_codec": "aac" if info.audio else None,
        "has_audio": info.audio is not None,
        "bitrate": out["bitrate"],
        "format": "mp4",
        "mime_type": "video/mp4",
        "bytes": media_path.stat().st_size,
        "passthrough": passthrough,
        "blurhash": poster_hash,
        "original": _original(info),
        "thumbnail": poster_meta,
    }
    return Processed(
        outputs=[
            Output("media", media_path, "video.mp4", "video/mp4"),
            Output("thumbnail", poster_path, "poster.jpg", "image/jpeg"),
        ],
        metadata=metadata,
    )


def check(info: MediaInfo, limits: MediaConfig) -> None:
    """Refuse, with the reason, what we will not transcode."""
    if not info.container_is(*VIDEO_CONTAINERS):
        raise PermanentError(f"the container {info.container!r} is not accepted (MP4/MOV, Matroska/WebM, AVI, MPEG-TS)")
    video = info.video
    if video is None:
        raise PermanentError("the file has no video stream")
    if video.width < 2 or video.height < 2:
        raise PermanentError(f"the video stream has no usable size ({video.width}x{video.height})")
    long_edge, short_edge = max(video.width, video.height), min(video.width, video.height)
    if long_edge > MAX_VIDEO_LONG_EDGE or short_edge > MAX_VIDEO_SHORT_EDGE:
        raise PermanentError(f"the video is {video.width}x{video.height}, larger than 4K (4096x2160)")
    if video.fps > MAX_VIDEO_FPS:
        raise PermanentError(f"the video runs at {video.fps:.0f} fps, more than {MAX_VIDEO_FPS}")
    # Recorded in a browser (MediaRecorder WebM), a video often states no duration: it is then
    # cut at the limit while transcoding and checked afterwards.
    if info.duration is not None and info.duration > limits.video_max_seconds:
        raise PermanentError(
            f"the video lasts {info.duration:.0f} s, longer than the {limits.video_max_seconds} s limit"
        )


def can_pass_through(info: MediaInfo, limits: MediaConfig) -> bool:
    video, audio = info.video, info.audio
    assert video is not None
    return (
        info.container_is("mov", "mp4")
        and video.codec == "h264"
        and video.profile in PASSTHROUGH_PROFILES
        and video.pix_fmt == "yuv420p"
        and max(video.width, video.height) <= limits.video_max_edge
        and video.width % 2 == 0
        and video.height % 2 == 0
        and 0 < video.fps <= PASSTHROUGH_MAX_FPS
        and (audio is None or audio.codec == "aac")
        and info.bitrate is not None
        and info.bitrate <= limits.video_passthrough_max_bitrate
    )


# Pictures beyond 4K are refused from the probe; the decoder refuses any that comes later.
VIDEO_MAX_PIXELS = MAX_VIDEO_LONG_EDGE * MAX_VIDEO_SHORT_EDGE


def _input(source: Path, demuxers: tuple[str, ...], max_pixels: int = VIDEO_MAX_PIXELS) -> Any:
    return ffmpeg_lib.input(ffmpeg.input_url(source), **ffmpeg.input_options(demuxers, max_pixels))


def _scale(stream: Any, max_edge: int) -> Any:
    # Fit inside max_edge x max_edge, never upscale, round both sides down to even numbers.
    # Rotation was already applied by ffmpeg's autorotate, so iw/ih are the displayed size.
    return stream.filter(
        "scale",
        f"min({max_edge},iw)",
        f"min({max_edge},ih)",
        force_original_aspect_ratio="decrease",
        force_divisible_by=2,
    )


def transcode_args(source: Path, target: Path, poster: Path, info: MediaInfo, limits: MediaConfig) -> list[str]:
    """One ffmpeg run: the H.264 MP4 and, from the same decoded frames, the poster."""
    src = _input(source, VIDEO_CONTAINERS)
    scaled = _scale(src.video, limits.video_max_edge).filter("format", "yuv420p").split()
    streams = [scaled[0], src.audio] if info.audio else [scaled[0]]
    options = X264 | (AAC if info.audio else {"an": None}) | CLEAN | {"sn": None, "dn": None}
    if info.duration is None:
        options["t"] = limits.video_max_seconds + 1
    main = ffmpeg_lib.output(*streams, ffmpeg.input_url(target), **options)
    thumb = _scale(scaled[1], limits.thumbnail_max_edge)
    still = ffmpeg_lib.output(thumb, ffmpeg.input_url(poster), vframes=1, **{"q:v": POSTER_QUALITY})
    return _compile(ffmpeg_lib.merge_outputs(main, still))


def passthrough_args(source: Path, target: Path, info: MediaInfo) -> list[str]:
    src = _input(source, VIDEO_CONTAINERS)
    streams = [src.video, src.audio] if info.audio else [src.video]
    options = {"c": "copy"} | CLEAN | {"sn": None, "dn": None}
    return _compile(ffmpeg_lib.output(*streams, ffmpeg.input_url(target), **options))


def poster_args(source: Path, poster: Path, max_edge: int) -> list[str]:
    # One decoding thread: frame threading would decode several frames before the first comes out.
    src = ffmpeg_lib.input(
        ffmpeg.input_url(source), threads=1, **ffmpeg.input_options(VIDEO_CONTAINERS, VIDEO_MAX_PIXELS)
    )
    still = ffmpeg_lib.output(
        _scale(src.video, max_edge), ffmpeg.input_url(poster), vframes=1, **{"q:v": POSTER_QUALITY}
    )
    return _compile(still)


def encode_h264(
    source: Path,
    target: Path,
    demuxers: tuple[str, ...],
    max_edge: int,
    deadline: Deadline,
    audio: bool,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> None:
    """A plain H.264 transcode (animated GIFs use it), without a poster."""
    src = _input(source, demuxers, max_pixels)
    streams = [_scale(src.video, max_edge).filter("format", "yuv420p")] + ([src.audio] if audio else [])
    options = X264 | (AAC if audio else {"an": None}) | CLEAN
    ffmpeg.run(_compile(ffmpeg_lib.output(*streams, ffmpeg.input_url(target), **options)), deadline, "encoding")


def describe_output(path: Path, fps: float) -> dict[str, Any]:
    """Facts of the MP4 we just wrote, from its moov box (no second ffprobe run)."""
    try:
        facts = mp4_facts(path)
    except (ValueError, KeyError, struct.error) as exc:
        raise PermanentError(f"the encoded video cannot be read back: {exc}") from None
    if not facts.width:
        raise PermanentError("the encoded video has no picture")
    return {
        "width": facts.width,
        "height": facts.height,
        "duration_ms": round(facts.duration * 1000),
        "fps": round(fps, 3),
        "bitrate": round(path.stat().st_size * 8 / facts.duration) if facts.duration else None,
    }


def _as_output(info: MediaInfo) -> dict[str, Any]:
    assert info.video is not None
    return {
        "width": info.video.width,
        "height": info.video.height,
        "duration_ms": round((info.duration or 0) * 1000),
        "fps": round(info.video.fps, 3),
        "bitrate": info.bitrate,
    }


def _original(info: MediaInfo) -> dict[str, Any]:
    video, audio = info.video, info.audio
    assert video is not None
    return {
        "container": info.container,
        "duration_ms": round((info.duration or 0) * 1000),
        "width": video.width,
        "height": video.height,
        "rotation": video.rotation,
        "fps": round(video.fps, 3),
        "video_codec": video.codec,
        "audio_codec": audio.codec if audio else None,
        "bitrate": info.bitrate,
    }


def _compile(node: Any) -> list[str]:
    return ffmpeg.base_args() + ffmpeg_lib.compile(node, cmd=[])

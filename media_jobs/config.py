"""The media section of the settings, `settings.CONFIG.media`: limits and output sizes (MEDIA_*)."""

from __future__ import annotations

from dataclasses import dataclass

from supworker.env import EnvReader

SECTION = "media"


@dataclass(frozen=True)
class MediaConfig:
    image_max_bytes: int
    image_max_pixels: int
    image_max_edge: int
    thumbnail_max_edge: int
    video_max_bytes: int
    video_max_seconds: int
    video_max_edge: int
    video_passthrough_max_bitrate: int
    audio_max_bytes: int
    audio_max_seconds: int


def read(env: EnvReader) -> MediaConfig:
    return MediaConfig(
        image_max_bytes=env.int("MEDIA_IMAGE_MAX_BYTES", 16 * 1024 * 1024, 1024, 1024**3),
        image_max_pixels=env.int("MEDIA_IMAGE_MAX_PIXELS", 33_177_600, 1, 500_000_000),
        image_max_edge=env.int("MEDIA_IMAGE_MAX_EDGE", 2048, 16, 16384),
        thumbnail_max_edge=env.int("MEDIA_THUMBNAIL_MAX_EDGE", 320, 16, 4096),
        video_max_bytes=env.int("MEDIA_VIDEO_MAX_BYTES", 100 * 1024 * 1024, 1024, 16 * 1024**3),
        video_max_seconds=env.int("MEDIA_VIDEO_MAX_SECONDS", 300, 1, 86400),
        video_max_edge=env.int("MEDIA_VIDEO_MAX_EDGE", 1280, 16, 4096),
        video_passthrough_max_bitrate=env.int("MEDIA_VIDEO_PASSTHROUGH_MAX_BITRATE", 5_000_000, 0, 1_000_000_000),
        audio_max_bytes=env.int("MEDIA_AUDIO_MAX_BYTES", 50 * 1024 * 1024, 1024, 16 * 1024**3),
        audio_max_seconds=env.int("MEDIA_AUDIO_MAX_SECONDS", 900, 1, 86400),
    )

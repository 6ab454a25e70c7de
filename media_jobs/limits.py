"""What media processing accepts besides the configured limits (settings.CONFIG.media,
media_jobs/config.py): containers, hard caps, and the time a job has left."""

from __future__ import annotations

import time

from supworker.handlers import PermanentError

# What we accept, named as the ffprobe `format_name` of each demuxer. Everything else is
# refused before any decoding, and ffmpeg is never allowed to open another demuxer (these are
# its -format_whitelist; a demuxer named "mov,mp4,m4a,3gp,3g2,mj2" is matched by any one name).
ANIMATION_CONTAINERS = ("gif",)
VIDEO_CONTAINERS = ("mov", "matroska", "avi", "mpegts")
AUDIO_CONTAINERS = ("ogg", "matroska", "mov", "wav", "mp3", "flac", "aac", "amr")
MAX_VIDEO_LONG_EDGE = 4096  # "4K": 4096x2160 (DCI) and 3840x2160 (UHD), either way round
MAX_VIDEO_SHORT_EDGE = 2160
MAX_VIDEO_FPS = 120
TIMEOUT_MARGIN_SECONDS = 5  # we stop ffmpeg ourselves before RQ kills the work horse
# Pixels an animated GIF decodes to, all frames together. A GIF may repeat a 1x1 change over a
# large screen thousands of times: a few kB that would keep ffmpeg busy far past the job's time.
MAX_ANIMATION_PIXELS = 1_000_000_000


class Deadline:
    """The time a job has left; every ffmpeg run gets what remains, so none outlives the job."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    @classmethod
    def for_job(cls, job_timeout: float) -> Deadline:
        return cls(max(job_timeout - TIMEOUT_MARGIN_SECONDS, 1))

    def remaining(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise PermanentError(f"processing took longer than the {self.seconds:.0f} s limit")
        return left


def check_size(kind: str, size: int, limit: int) -> None:
    if size == 0:
        raise PermanentError(f"the {kind} file is empty")
    if size > limit:
        raise PermanentError(f"the {kind} file is {size:,} bytes, more than the {limit:,}-byte limit")

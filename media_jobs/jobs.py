"""The media job types the runner calls: thin, the work is in pipeline.py and the processors."""

from __future__ import annotations

from typing import Any

from media_jobs import audio, images, pipeline, video
from supworker.envelope import Envelope
from supworker.handlers import handles


@handles("media.image")
def process_image(envelope: Envelope) -> dict[str, Any]:
    return pipeline.run(envelope, images.process)


@handles("media.video")
def process_video(envelope: Envelope) -> dict[str, Any]:
    return pipeline.run(envelope, video.process)


@handles("media.audio")
def process_audio(envelope: Envelope) -> dict[str, Any]:
    return pipeline.run(envelope, audio.process)

"""What a processor hands back: files to store and the metadata clients read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Output:
    role: str  # "media" (what clients download) or "thumbnail"
    path: Path
    name: str  # file name under the message's output prefix, e.g. "image.jpg"
    content_type: str


@dataclass
class Processed:
    outputs: list[Output]
    metadata: dict[str, Any] = field(default_factory=dict)

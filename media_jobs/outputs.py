"""What a processor hands back: files to store and the metadata clients read.

Outputs of a message always go to the same keys (`media/<messageId>/processed/…`), so a rerun
replaces them and never leaves a second copy. Everything under `media/<messageId>/` is what the
orphaned_media cleanup keeps while the message exists and removes once it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

OUTPUT_DIR = "processed"  # under media/<messageId>/, apart from whatever the messenger uploads there


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


def output_key(message_id: UUID | str, name: str) -> str:
    """Where an output of a message lives; the same message always gets the same keys."""
    return f"media/{UUID(str(message_id))}/{OUTPUT_DIR}/{name}"

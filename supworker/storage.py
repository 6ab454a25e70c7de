"""The media store (Django's default storage): what every domain needs beyond Django's API."""

from __future__ import annotations

from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage


class KeyTaken(Exception):
    """Another writer stored an object under the key between our delete and our save."""


def replace(key: str, content: File) -> None:
    """Store `content` under exactly `key`, replacing what is there, so a rerun never leaves a
    second copy. FileSystemStorage would give a taken key another name; S3 (file_overwrite)
    overwrites, so only the local store needs the delete."""
    if isinstance(default_storage, FileSystemStorage) and default_storage.exists(key):
        default_storage.delete(key)
    saved = default_storage.save(key, content)
    if saved != key:
        default_storage.delete(saved)
        raise KeyTaken(f"{key!r} was written concurrently")

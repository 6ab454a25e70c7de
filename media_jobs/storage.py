"""The media store: read an upload, write outputs under deterministic keys.

The default Django storage is used as configured in settings: files under MEDIA_ROOT, or S3
(django-storages, boto3) when AWS_S3_BUCKET is set. Outputs of a message always go to the
same keys (`media/<messageId>/processed/…`), so a rerun replaces them and never leaves a
second copy. Everything under `media/<messageId>/` is what the orphaned_media cleanup keeps
while the message exists and removes once it is gone.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from pydantic import TypeAdapter, ValidationError

from supworker.handlers import PermanentError, TransientError
from supworker.payloads import StorageKey
from supworker.storage import KeyTaken, replace

OUTPUT_DIR = "processed"  # under media/<messageId>/, apart from whatever the messenger uploads there
COPY_CHUNK = 1024 * 1024
_KEY = TypeAdapter(StorageKey)


@dataclass(frozen=True)
class StoredObject:
    key: str
    content_type: str
    bytes: int


def output_key(message_id: UUID | str, name: str) -> str:
    """Where an output of a message lives; the same message always gets the same keys."""
    return f"media/{UUID(str(message_id))}/{OUTPUT_DIR}/{name}"


def checked_key(key: str) -> str:
    """The same rule as at the door (supworker.payloads), applied again: defence in depth."""
    try:
        return _KEY.validate_python(key)
    except ValidationError as exc:
        reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise PermanentError(f"s3Key {key!r} is not a valid media key: {reason}") from None


def _local_path(storage: FileSystemStorage, key: str) -> Path:
    """The file of `key`, which must resolve (symlinks followed) inside MEDIA_ROOT."""
    try:
        path = Path(storage.path(key))
    except SuspiciousFileOperation:
        raise PermanentError(f"s3Key {key!r} points outside the media store") from None
    root = Path(storage.location).resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise PermanentError(f"s3Key {key!r} points outside the media store")
    return resolved


def source_size(key: str) -> int:
    """Size of the uploaded object, read before downloading anything so limits apply early."""
    key = checked_key(key)
    try:
        if isinstance(default_storage, FileSystemStorage):
            return _local_path(default_storage, key).stat().st_size
        return default_storage.size(key)
    except FileNotFoundError:
        raise PermanentError(f"the uploaded file {key!r} does not exist in the media store") from None
    except (BotoCoreError, ClientError, OSError) as exc:
        raise TransientError(f"media store unavailable while reading {key!r}: {exc}") from exc


def fetch(key: str, workdir: Path) -> Path:
    """A local file with the upload's bytes: the file itself for local storage, a download otherwise."""
    key = checked_key(key)
    try:
        if isinstance(default_storage, FileSystemStorage):
            path = _local_path(default_storage, key)
            if not path.is_file():
                raise FileNotFoundError(key)
            return path
        target = workdir / "source"
        with default_storage.open(key, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, COPY_CHUNK)
        return target
    except FileNotFoundError:
        raise PermanentError(f"the uploaded file {key!r} does not exist in the media store") from None
    except (BotoCoreError, ClientError, OSError) as exc:
        raise TransientError(f"media store unavailable while reading {key!r}: {exc}") from exc


def save(key: str, path: Path, content_type: str) -> StoredObject:
    """Store `path` under exactly `key`, replacing what a previous run left there."""
    try:
        with open(path, "rb") as handle:
            content = File(handle, name=os.path.basename(key))
            content.content_type = content_type  # type: ignore[attr-defined]  # django-storages sends it as Content-Type
            replace(key, content)
    except KeyTaken as exc:
        raise TransientError(f"{exc}; will retry") from None
    except (BotoCoreError, ClientError, OSError) as exc:
        raise TransientError(f"media store unavailable while writing {key!r}: {exc}") from exc
    return StoredObject(key=key, content_type=content_type, bytes=path.stat().st_size)

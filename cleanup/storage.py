"""Deleting and listing objects in the media store, local files or S3 alike.

Rows may hold a storage key ("media/…/a.jpg") or a URL the storage made for it; both are
turned back into a key, and only keys inside the store are ever touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage

S3_DELETE_LIMIT = 1000  # DeleteObjects takes at most 1000 keys


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: datetime


def key_of(value: str | None) -> str | None:
    """The storage key behind a column value (a key or a URL), or None if it is not in our store."""
    if not value:
        return None
    path = unquote(urlsplit(value).path) if "://" in value else value
    media_url = settings.MEDIA_URL
    if path.startswith(media_url):
        path = path[len(media_url) :]
    bucket = getattr(default_storage, "bucket_name", None)
    if "://" in value and bucket and path.lstrip("/").startswith(f"{bucket}/"):
        path = path.lstrip("/")[len(bucket) + 1 :]  # path-style S3 URL
    key = path.lstrip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        return None
    return key


def delete(keys: Iterable[str]) -> int:
    """Delete objects by key; a missing object is not an error (a rerun deletes nothing twice)."""
    keys = sorted({k for k in keys if k})
    if not keys:
        return 0
    if isinstance(default_storage, FileSystemStorage):
        for key in keys:
            default_storage.delete(key)
        return len(keys)
    for start in range(0, len(keys), S3_DELETE_LIMIT):
        chunk = keys[start : start + S3_DELETE_LIMIT]
        default_storage.bucket.delete_objects(Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
    return len(keys)


def list_objects(prefix: str, start_after: str = "", page_size: int = S3_DELETE_LIMIT) -> Iterator[list[StoredObject]]:
    """Pages of objects under `prefix`, in key order, after `start_after` (so a scan can resume)."""
    if isinstance(default_storage, FileSystemStorage):
        yield from _pages(_local_objects(prefix, start_after), page_size)
        return
    client = default_storage.connection.meta.client
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(
        Bucket=default_storage.bucket_name,
        Prefix=prefix,
        StartAfter=start_after,
        PaginationConfig={"PageSize": page_size},
    )
    for page in pages:
        yield [StoredObject(o["Key"], o["LastModified"]) for o in page.get("Contents", [])]


def _local_objects(prefix: str, start_after: str) -> Iterator[StoredObject]:
    root = Path(settings.MEDIA_ROOT)
    keys = []
    for directory, _, files in os.walk(root / prefix if (root / prefix).is_dir() else root):
        for name in files:
            key = str((Path(directory) / name).relative_to(root))
            if key.startswith(prefix) and key > start_after:
                keys.append(key)
    for key in sorted(keys):
        modified = datetime.fromtimestamp((root / key).stat().st_mtime, UTC)
        yield StoredObject(key, modified)


def _pages(objects: Iterator[StoredObject], size: int) -> Iterator[list[StoredObject]]:
    page: list[StoredObject] = []
    for obj in objects:
        page.append(obj)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page

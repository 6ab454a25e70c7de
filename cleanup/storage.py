"""Deleting and listing objects in the media store, local files or S3 alike.

Rows may hold a storage key ("media/…/a.jpg") or a URL of it in one of the forms `url_forms`
lists; both are turned back into a key, and only keys inside the store are ever touched.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, default_storage, storages
from storages.backends.s3 import S3Storage

S3_DELETE_LIMIT = 1000  # DeleteObjects takes at most 1000 keys
_PROBE = "probe"  # a key whose URL shows what the storage puts before every key


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: datetime


def key_of(value: str | None) -> str | None:
    """The storage key behind a column value (a key or one of the URLs `url_forms` lists, a
    presigned one too), or None if it is not in our store.

    A URL is read only when it starts with one of our store's URL prefixes: a URL of another
    host or bucket whose path looks like one of our keys must not delete our object.
    """
    if not value:
        return None
    if "://" not in value and not value.startswith("/"):
        return _valid_key(value)
    url = value.split("#", 1)[0].split("?", 1)[0]  # a presigned URL's signature
    for prefix in url_prefixes():
        if url.startswith(prefix):
            return _valid_key(unquote(url[len(prefix) :]))
    return None


def url_forms(key: str, prefixes: Sequence[str] | None = None) -> set[str]:
    """Every value a row may hold for `key`: the key itself and each of our URL prefixes
    followed by the key, raw and percent-encoded as Python, botocore and JavaScript encode it.
    `key_of` turns each of them back into `key`."""
    spellings = {quote(key, safe="/"), quote(key, safe="/!*'()")}
    if not {"%", "?", "#"} & set(key):
        spellings.add(key)  # unencoded ("IMG 1.jpg"), unless it would read as an escape or a query
    return {key} | {prefix + spelling for prefix in prefixes or url_prefixes() for spelling in spellings}


def url_prefixes() -> tuple[str, ...]:
    """The URL prefixes of an object of our store, longest first: MEDIA_URL; on S3 the URL
    django-storages makes (less its query string), and the AWS and custom-endpoint
    (AWS_S3_ENDPOINT_URL) addresses in virtual-hosted and path style, with and without the region."""
    return _url_prefixes(storages["default"], settings.MEDIA_URL)


@functools.cache  # per storage instance: presigning the probe costs a signature each call
def _url_prefixes(store: Storage, media_url: str) -> tuple[str, ...]:
    prefixes = {media_url, _prefix_of_urls_made_by(store, media_url)}
    bucket = getattr(store, "bucket_name", None)
    if bucket:
        region = getattr(store, "region_name", None) or "us-east-1"
        for host in ("s3.amazonaws.com", f"s3.{region}.amazonaws.com", f"s3-{region}.amazonaws.com"):
            prefixes |= {f"https://{bucket}.{host}/", f"https://{host}/{bucket}/"}
        endpoint = getattr(store, "endpoint_url", None)
        if endpoint:
            parts = urlsplit(endpoint.rstrip("/"))
            prefixes |= {
                f"{parts.scheme}://{parts.netloc}{parts.path}/{bucket}/",
                f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}/",
            }
    return tuple(sorted(prefixes, key=len, reverse=True))


def _prefix_of_urls_made_by(store: Storage, media_url: str) -> str:
    """What the storage's url() puts before a key (scheme, host, bucket; MEDIA_URL locally)."""
    url = store.url(_PROBE).split("?", 1)[0]
    return url[: -len(_PROBE)] if url.endswith(_PROBE) else media_url


def _valid_key(key: str) -> str | None:
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        return None
    return key


def s3_storage() -> S3Storage:
    """The media store, when it is not local files: django-storages' S3 backend (settings.media_storage)."""
    store = default_storage  # a lazy proxy; isinstance sees the backend behind it
    if not isinstance(store, S3Storage):
        raise TypeError(f"the media store is {type(store).__name__}: neither local files nor S3")
    return store


def delete(keys: Iterable[str | None]) -> int:
    """Delete objects by key (None, a value that is no key of ours, is skipped); a missing object is
    not an error (a rerun deletes nothing twice)."""
    present = sorted({k for k in keys if k})
    if not present:
        return 0
    if isinstance(default_storage, FileSystemStorage):
        for key in present:
            default_storage.delete(key)
        return len(present)
    bucket = s3_storage().bucket
    for start in range(0, len(present), S3_DELETE_LIMIT):
        chunk = present[start : start + S3_DELETE_LIMIT]
        bucket.delete_objects(Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
    return len(present)


def list_objects(prefix: str, start_after: str = "", page_size: int = S3_DELETE_LIMIT) -> Iterator[list[StoredObject]]:
    """Pages of objects under `prefix`, in key order, after `start_after` (so a scan can resume)."""
    if isinstance(default_storage, FileSystemStorage):
        yield from _pages(_local_objects(prefix, start_after), page_size)
        return
    store = s3_storage()
    paginator = store.connection.meta.client.get_paginator("list_objects_v2")
    pages = paginator.paginate(
        Bucket=store.bucket_name,
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

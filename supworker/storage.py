"""The media store, as every domain uses it: Django's default storage, files under MEDIA_ROOT
or S3 (django-storages, boto3) when AWS_S3_BUCKET is set, local files and S3 alike.

Reading and writing map the store's failures to the runner's: a missing object or a key outside
the store is a PermanentError, an unreachable store a TransientError. Rows may hold a storage
key ("media/…/a.jpg") or a URL of it in one of the forms `url_forms` lists; `key_of` turns both
back into a key, and only keys inside the store are ever touched.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, default_storage, storages
from pydantic import TypeAdapter, ValidationError
from storages.backends.s3 import S3Storage

from supworker.handlers import PermanentError, TransientError
from supworker.payloads import StorageKey

COPY_CHUNK = 1024 * 1024
S3_DELETE_LIMIT = 1000  # DeleteObjects takes at most 1000 keys
_PROBE = "probe"  # a key whose URL shows what the storage puts before every key
_KEY = TypeAdapter(StorageKey)


@dataclass(frozen=True)
class StoredObject:
    key: str
    bytes: int
    modified: datetime  # as the store reports it; for an object just written, when we wrote it


class KeyTaken(Exception):
    """Another writer stored an object under the key between our delete and our save."""


# Reading and writing objects of one job.


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


def size(key: str) -> int:
    """Size of an object, read before downloading anything so limits apply early."""
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
    """A local file with the object's bytes: the file itself for local storage, a download into
    `workdir` otherwise."""
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
    """Store the file `path` under exactly `key`, replacing what a previous run left there."""
    try:
        with open(path, "rb") as handle:
            content = File(handle, name=os.path.basename(key))
            content.content_type = content_type  # type: ignore[attr-defined]  # django-storages sends it as Content-Type
            replace(key, content)
    except KeyTaken as exc:
        raise TransientError(f"{exc}; will retry") from None
    except (BotoCoreError, ClientError, OSError) as exc:
        raise TransientError(f"media store unavailable while writing {key!r}: {exc}") from exc
    return StoredObject(key=key, bytes=path.stat().st_size, modified=datetime.now(UTC))


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


# The keys behind the values rows hold.


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


# Deleting and listing many objects at once.


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
        yield [StoredObject(o["Key"], o["Size"], o["LastModified"]) for o in page.get("Contents", [])]


def _local_objects(prefix: str, start_after: str) -> Iterator[StoredObject]:
    root = Path(settings.MEDIA_ROOT)
    keys = []
    for directory, _, files in os.walk(root / prefix if (root / prefix).is_dir() else root):
        for name in files:
            key = str((Path(directory) / name).relative_to(root))
            if key.startswith(prefix) and key > start_after:
                keys.append(key)
    for key in sorted(keys):
        facts = (root / key).stat()
        yield StoredObject(key, facts.st_size, datetime.fromtimestamp(facts.st_mtime, UTC))


def _pages(objects: Iterator[StoredObject], page_size: int) -> Iterator[list[StoredObject]]:
    page: list[StoredObject] = []
    for obj in objects:
        page.append(obj)
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page

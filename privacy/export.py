"""A user's export: one zip in the media store under an unguessable key, then the `user.exported`
event and, when asked, an e-mail notice.

The archive holds `<holding>.json` (a JSON array per holding that exports: what the user sent,
their stories, sessions, devices ...), the media files those rows name under `media/<key>`, and
`manifest.json`. It is written into a file in TEMP_DIR, a row or a chunk of a file at a time, then
uploaded from that file (S3: a multipart upload): memory holds a page of rows, a chunk and the
names of the media files, never the files or the whole history.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone
from pika.exceptions import UnroutableError
from storages.backends.s3 import S3Storage

from privacy.jobtypes import EXPORTED_ROUTING_KEY
from privacy.models import UserExport, subject_of
from supworker import storage
from supworker.rabbit.publisher import Publisher
from supworker.user_data import holdings, json_line

log = logging.getLogger(__name__)

EXPORTED = "user.exported"
NOTICE_ROUTING_KEY = "notification.email"  # the messenger's own way to ask for an e-mail
PREFIX = "exports/"
Progress = Callable[[str, int], None]  # what is being written, and how many items of it so far


def preview(user_id: uuid.UUID) -> dict[str, int | None]:
    """What an export would hold, by holding (rows; None: not known before it runs)."""
    return {h.name: h.count(user_id) if h.count else None for h in holdings() if h.export}


def export(
    user_id: uuid.UUID, job_id: str, email: str | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Write the user's export (once per job id: a job run again publishes the same one again)."""
    record, _ = UserExport.objects.get_or_create(
        job_id=job_id,
        defaults={
            "subject": subject_of(user_id),
            "key": f"{PREFIX}{secrets.token_urlsafe(32)}.zip",
            "expires_at": timezone.now() + timedelta(days=settings.CONFIG.privacy.export_retention_days),
        },
    )
    if record.finished_at is None:
        with _scratch_file() as path:
            record.counts = write_archive(user_id, path, progress)
            storage.save(record.key, path, "application/zip")
            record.bytes = path.stat().st_size
        record.finished_at = timezone.now()
        record.expires_at = record.finished_at + timedelta(days=settings.CONFIG.privacy.export_retention_days)
        record.save()
    url = download_url(record.key, record.expires_at.timestamp() - time.time())
    event = {"type": EXPORTED, "jobId": job_id, "userId": str(user_id), "key": record.key, "url": url,
             "bytes": record.bytes, "expiresAt": record.expires_at.isoformat()}  # fmt: skip
    published = _publish(EXPORTED_ROUTING_KEY, event)
    if email:
        _publish(NOTICE_ROUTING_KEY, notice(job_id, user_id, email, url, record.expires_at))
    return {"export": str(record.pk), "key": record.key, "bytes": record.bytes, "event_published": published,
            "notice": bool(email), "counts": record.counts}  # fmt: skip


@contextmanager
def _scratch_file() -> Iterator[Path]:
    directory = Path(settings.CONFIG.temp_dir)
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=directory)
    os.close(handle)  # zipfile opens it by name
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def write_archive(user_id: uuid.UUID, path: Path, progress: Progress | None = None) -> dict[str, int]:
    """The zip of the user's data at `path`; returns what it holds, by holding and media files."""
    counts: dict[str, int] = {}
    media: dict[str, None] = {}  # the keys, in the order the rows name them, once each
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for holding in holdings():
            if holding.export is None:
                continue
            with archive.open(f"{holding.name}.json", "w", force_zip64=True) as out:
                counts[holding.name] = _write_rows(out, holding.export(user_id), holding.media, media, holding.name,
                                                   progress)  # fmt: skip
        counts["media_files"], missing = _write_media(archive, media, progress)
        manifest = {"user": str(user_id), "written_at": timezone.now().isoformat(), "counts": counts,
                    "missing_media": missing}  # fmt: skip
        archive.writestr("manifest.json", json_line(manifest))
    return counts


def _write_rows(
    out: IO[bytes], rows: Iterator[dict[str, Any]], media_of: Callable[[dict[str, Any]], Any],
    media: dict[str, None], name: str, progress: Progress | None,
) -> int:  # fmt: skip
    written = 0
    out.write(b"[")
    for row in rows:
        out.write((",\n" if written else "\n").encode() + json_line(row).encode())
        media.update((key, None) for key in media_of(row) if key)
        written += 1
        if progress and written % 500 == 0:
            progress(name, written)
    out.write(b"\n]\n" if written else b"]\n")
    if progress:
        progress(name, written)
    return written


def _write_media(archive: zipfile.ZipFile, keys: dict[str, None], progress: Progress | None) -> tuple[int, list[str]]:
    """Each file copied in chunks, stored as it is (media is compressed already)."""
    written, missing = 0, []
    for key in keys:
        try:
            source = default_storage.open(key, "rb")
        except FileNotFoundError:
            missing.append(key)
            continue
        info = zipfile.ZipInfo(f"media/{key}", date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_STORED
        with source, archive.open(info, "w", force_zip64=True) as out:
            shutil.copyfileobj(source, out, storage.COPY_CHUNK)
        written += 1
        if progress:
            progress("media_files", written)
    return written, missing


def download_url(key: str, seconds: float) -> str:
    """The link the event and the notice carry: on S3 a presigned URL that ends with the export."""
    if isinstance(default_storage, S3Storage):  # a lazy proxy: isinstance sees the backend behind it
        return default_storage.url(key, expire=max(int(seconds), 1))
    return default_storage.url(key)


def notice(job_id: str, user_id: uuid.UUID, email: str, url: str, expires_at: Any) -> dict[str, Any]:
    """A notification.email job, as the messenger would publish it: sent, logged and rate-limited
    by the notification workers like any other e-mail. Its jobId makes a second publish a no-op."""
    return {
        "type": "email", "jobId": f"{job_id}:notice", "userId": str(user_id), "email": email,
        "title": "Your data export is ready",
        "body": f"The export of your data you asked for is ready. Download it before "
                f"{expires_at:%Y-%m-%d %H:%M} UTC, when it is deleted:\n\n{url}\n",
    }  # fmt: skip


def _publish(routing_key: str, body: dict[str, Any]) -> bool:
    """Publish on the main exchange; False when no queue is bound to the routing key."""
    try:
        with Publisher() as publisher:
            publisher.publish_to(settings.CONFIG.rabbitmq_exchange, routing_key, body | {"timestamp": _now_ms()})
    except UnroutableError:
        log.warning("no queue is bound to %r on the main exchange: nobody hears of this export", routing_key)
        return False
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)


def expire(batch_size: int = 100) -> dict[str, int]:
    """Delete the exports whose time is up, archive and row, a batch at a time."""
    removed = files = 0
    while True:
        batch = list(UserExport.objects.filter(expires_at__lte=timezone.now()).order_by("expires_at")[:batch_size])
        if not batch:
            return {"exports_expired": removed, "export_files_deleted": files}
        files += storage.delete(record.key for record in batch)
        removed += UserExport.objects.filter(pk__in=[record.pk for record in batch]).delete()[0]

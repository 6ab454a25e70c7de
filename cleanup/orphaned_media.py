"""Objects under ORPHAN_MEDIA_PREFIXES that no message or story references and that are older
than ORPHAN_MEDIA_GRACE_HOURS (24) are deleted, at most 1000 keys a request.

The listing is paginated in key order and its position is kept in Redis, so a run stopped by
its time budget (or a crash) resumes where it was; a dry run never moves that position.
An object is referenced when a row's media_url or thumbnail_url is its key or one of its plain
URLs (storage.url_forms: every address of the store, so a URL the messenger built itself
matches too), or when it lies under media/<message id>/ of a message that still exists.

Rows are found by equality with those values (`= ANY`, served by the columns' btree indexes).
A row holding a presigned URL (key plus a signature query string) is not recognised: finding
it would take a prefix search those indexes cannot serve, a scan of the messages table. Such a
URL expires within days anyway (SigV4 allows at most 7), so rows must hold a key or a plain URL.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cleanup.base import Cleanup, Run
from supworker import storage
from supworker.enqueue import redis_connection

CURSOR_KEY = "supworker:cleanup:orphaned_media:cursor:"
_MESSAGE_DIR = re.compile(r"^media/([0-9a-f-]{36})/")

REFERENCED_SQL = """
    SELECT media_url FROM messages WHERE media_url = ANY(%(v)s)
    UNION SELECT thumbnail_url FROM messages WHERE thumbnail_url = ANY(%(v)s)
    UNION SELECT media_url FROM stories WHERE media_url = ANY(%(v)s)
    UNION SELECT thumbnail_url FROM stories WHERE thumbnail_url = ANY(%(v)s)
"""


def referenced(keys: list[str]) -> set[str]:
    """The keys among `keys` that a message or story still points at."""
    prefixes = storage.url_prefixes()
    forms = {key: storage.url_forms(key, prefixes) for key in keys}
    owners = {}
    for key in keys:
        match = _MESSAGE_DIR.match(key)
        if match:
            owners[key] = uuid.UUID(match.group(1))
    with connection.cursor() as cursor:
        cursor.execute(REFERENCED_SQL, {"v": sorted(set().union(*forms.values()))})
        values = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT id FROM messages WHERE id = ANY(%s)", [list(set(owners.values()))])
        live_messages = {row[0] for row in cursor.fetchall()}
    return {key for key in keys if forms[key] & values or owners.get(key) in live_messages}


def _delete_orphans(keys: list[str]) -> dict[str, int]:
    return {"orphans_deleted": storage.delete(keys)}


class OrphanedMedia(Cleanup):
    name = "orphaned_media"
    progress_counts = ("objects_scanned",)  # how many there are is not known before the listing ends

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(hours=settings.CONFIG.cleanup.orphan_grace_hours)

    def work(self, run: Run) -> None:
        cutoff = timezone.now() - self.older_than(run)
        redis = redis_connection()
        for prefix in settings.CONFIG.cleanup.orphan_prefixes:
            start = "" if run.dry_run else (redis.get(CURSOR_KEY + prefix) or b"").decode()
            page_size = min(run.batch_size, storage.S3_DELETE_LIMIT)
            for page in storage.list_objects(prefix, start_after=start, page_size=page_size):
                old = [obj.key for obj in page if obj.modified < cutoff]
                orphans = sorted(set(old) - referenced(old)) if old else []
                run.counts["objects_scanned"] += len(page)
                if run.dry_run:
                    run.counts["orphans_found"] += len(orphans)
                else:
                    run.batch(partial(_delete_orphans, orphans))
                    redis.set(CURSOR_KEY + prefix, page[-1].key)
                if run.out_of_time():
                    run.more = True  # the cursor says where the next run goes on
                    return
            if not run.dry_run:
                redis.delete(CURSOR_KEY + prefix)  # a full pass is done: next run starts over

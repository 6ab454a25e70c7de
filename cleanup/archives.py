"""A user's messages in the archives the messages cleanup writes (archive/messages/…jsonl.gz):
erasure rewrites each archive without them (or deletes an archive left empty), export reads them.

An archive is read and rewritten a line at a time through a file in TEMP_DIR, so memory does not
depend on its size. Erasure walks the archives in key order, a page per step, and resumes after
the last archive it finished: an archive redone after a crash has nothing of the user left in it
and is not written again.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from supworker import storage
from supworker.user_data import DONE, MESSAGES, Holding, Step

PREFIX = "archive/messages/"
ARCHIVES_PER_STEP = 20


def _sent_by(line: str, user: str) -> bool:
    # Cheap before exact: most lines do not name the user at all.
    return user in line and json.loads(line).get("sender_id") == user


def _lines(key: str) -> Iterator[str]:
    with default_storage.open(key, "rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        yield from lines


def _rewrite_without(key: str, user: str) -> int:
    """Rewrite one archive without the user's lines; returns how many went."""
    removed = kept = 0
    temp_dir = Path(settings.CONFIG.temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=temp_dir, suffix=".jsonl.gz") as out:
        with gzip.open(out, "wt", encoding="utf-8") as rewritten:
            for line in _lines(key):
                if _sent_by(line, user):
                    removed += 1
                else:
                    kept += 1
                    rewritten.write(line)
        if not removed:
            return 0
        if kept:
            out.seek(0)
            storage.replace(key, File(out, name=Path(key).name))
        else:
            storage.delete([key])
    return removed


def erase(user_id: uuid.UUID, batch_size: int, resume: str) -> Step:
    pages = storage.list_objects(PREFIX, start_after=resume, page_size=ARCHIVES_PER_STEP)
    page = next(pages, [])
    if not page:
        return Step({}, DONE)
    removed = {obj.key: _rewrite_without(obj.key, str(user_id)) for obj in page}
    rewritten = sum(1 for count in removed.values() if count)
    return Step({"message_archives": sum(removed.values()), "message_archives_rewritten": rewritten}, page[-1].key)


def export(user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    user = str(user_id)
    for page in storage.list_objects(PREFIX):
        for obj in page:
            for line in _lines(obj.key):
                if _sent_by(line, user):
                    yield json.loads(line)


# After the messages themselves: an archive written while they were deleted is then complete.
ARCHIVES = Holding("message_archives", erase, export, order=MESSAGES + 1)

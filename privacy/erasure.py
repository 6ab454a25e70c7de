"""A user's erasure: every holding (supworker.user_data) stepped through until nothing of the
user is left, each step in its own transaction together with the receipt's counts and resume
points. So an erasure stopped anywhere (a crash, a timeout, Ctrl-C) goes on where it was when
its job runs again, and a second request for a user already erased looks everywhere again,
finds nothing more, and leaves the same receipt.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from privacy.models import ErasureReceipt, subject_of
from supworker.user_data import START, Holding, holdings

log = logging.getLogger(__name__)

Progress = Callable[[ErasureReceipt, str], None]  # the receipt after a step, and the holding it stepped


def preview(user_id: uuid.UUID) -> dict[str, int | None]:
    """What an erasure would remove, by holding (None: not known before it runs)."""
    return {h.name: h.count(user_id) if h.count else None for h in holdings()}


def erase(
    user_id: uuid.UUID, job_id: str, batch_size: int | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    batch_size = batch_size or settings.CONFIG.privacy.erasure_batch_size
    receipt = _open(subject_of(user_id), job_id)
    for holding in holdings():
        while _pending(receipt, holding):
            receipt = _step(receipt.pk, holding, user_id, batch_size)
            if progress:
                progress(receipt, holding.name)
    ErasureReceipt.objects.filter(pk=receipt.pk).update(finished_at=timezone.now())
    receipt.refresh_from_db()
    log.info("erasure %s finished: %d rows and files removed", receipt.pk, receipt.removed)
    return {"receipt": str(receipt.pk), "requests": receipt.requests, "removed": receipt.removed,
            "counts": receipt.counts}  # fmt: skip


def _pending(receipt: ErasureReceipt, holding: Holding) -> bool:
    return receipt.progress.get(holding.name, START) is not None


def _open(subject: str, job_id: str) -> ErasureReceipt:
    """The user's receipt: new, the one a retried job left (it goes on), or a finished one a new
    request opens again (every holding is looked at once more)."""
    with transaction.atomic():
        receipt, created = ErasureReceipt.objects.select_for_update().get_or_create(
            subject=subject, defaults={"last_job_id": job_id}
        )
        if not created and receipt.last_job_id != job_id:
            receipt.requests += 1
            receipt.last_job_id = job_id
            if receipt.finished_at is not None:
                receipt.progress, receipt.finished_at = {}, None
            receipt.save()
    return receipt


def _step(receipt_id: uuid.UUID, holding: Holding, user_id: uuid.UUID, batch_size: int) -> ErasureReceipt:
    """One bounded step of one holding, committed with the receipt. The receipt's row lock keeps
    two runs for the same user (a second request while the first runs) one step at a time."""
    with transaction.atomic():
        receipt = ErasureReceipt.objects.select_for_update().get(pk=receipt_id)
        if _pending(receipt, holding):
            step = holding.erase(user_id, batch_size, receipt.progress.get(holding.name, START))
            receipt.counts.setdefault(holding.name, 0)  # every holding is on the receipt, 0 included
            for name, count in step.counts.items():
                receipt.counts[name] = receipt.counts.get(name, 0) + count
            receipt.progress[holding.name] = step.resume
            receipt.save(update_fields=["counts", "progress"])
    return receipt

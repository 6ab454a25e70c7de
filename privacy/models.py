"""The privacy app's records: a receipt per erased user, a row per export written.

Neither holds the user's id: each names its user by `subject`, a keyed hash of the id (HMAC-
SHA256 under the secret key), which a later request for the same user matches and nobody can
turn back into the id. Rotating DJANGO_SECRET_KEY unlinks the receipts from later requests.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from django.conf import settings
from django.db import models

from supworker.models.fields import created_at, uuid_pk


def subject_of(user_id: uuid.UUID) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), b"user:" + user_id.bytes, hashlib.sha256).hexdigest()


class ErasureReceipt(models.Model):
    """What one user's erasure removed, table by table, and when; kept as the proof it was done."""

    id = uuid_pk()
    subject = models.CharField(max_length=64, unique=True, help_text="keyed hash of the user id: names nobody")
    requests = models.PositiveIntegerField(default=1, help_text="erasure jobs run for this user")
    last_job_id = models.CharField(max_length=128, blank=True, default="")
    counts = models.JSONField(default=dict, blank=True, help_text="rows (and files) removed, by table")
    # Each holding's resume point (supworker.user_data.Step.resume); null once it is done.
    progress = models.JSONField(default=dict, blank=True, editable=False)
    started_at = created_at(index=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "privacy_erasure_receipts"

    def __str__(self) -> str:
        return f"erasure {self.subject[:12]}"

    @property
    def removed(self) -> int:
        return sum(self.counts.values())


class UserExport(models.Model):
    """An export archive in the media store, until it expires."""

    id = uuid_pk()
    subject = models.CharField(max_length=64, db_index=True, help_text="keyed hash of the user id: names nobody")
    job_id = models.CharField(max_length=128, unique=True)
    key = models.CharField(max_length=255, unique=True, help_text="unguessable: whoever has it can download")
    bytes = models.PositiveBigIntegerField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="rows and media files, by table")
    created_at = created_at(index=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "privacy_user_exports"

    def __str__(self) -> str:
        return f"export {self.subject[:12]}"

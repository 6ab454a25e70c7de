"""What happened to every job: the records monitoring and the admin read."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Now


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent failure, or retries exhausted


class JobRun(models.Model):
    """One row per job id (the envelope's jobId), updated as the job moves along."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job_id = models.CharField(max_length=128, unique=True)
    job_type = models.CharField(max_length=64, db_index=True, help_text="e.g. media.image, notification.push")
    queue = models.CharField(max_length=64)
    rq_job_id = models.CharField(max_length=64, blank=True, default="", help_text="the RQ job (batch) it ran in")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    payload = models.JSONField(default=dict, blank=True, help_text="secrets masked")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    enqueued_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "job_runs"
        indexes = [
            models.Index(fields=["status", "enqueued_at"], name="job_runs_status_idx"),
            models.Index(fields=["job_type", "finished_at"], name="job_runs_type_finished_idx"),
            models.Index(fields=["finished_at", "id"], name="job_runs_finished_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.job_id}"


class DeadLetter(models.Model):
    """A job or message that will not be retried again, kept so an operator can read and requeue it."""

    class Source(models.TextChoices):
        CONSUMER = "consumer", "rejected by the consumer"
        WORKER = "worker", "failed in a worker"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job_id = models.CharField(max_length=128, db_index=True, blank=True, default="")
    job_type = models.CharField(max_length=64, blank=True, default="", db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    routing_key = models.CharField(max_length=255, blank=True, default="")
    payload = models.JSONField(null=True, blank=True, help_text="secrets masked")
    # The job as it was, secrets sealed (see supworker.envelope), so it can be requeued.
    envelope = models.JSONField(null=True, blank=True, editable=False)
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(db_default=Now(), db_index=True)
    requeued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "dead_letters"

    def __str__(self) -> str:
        return f"{self.job_type or 'message'} {self.job_id}"

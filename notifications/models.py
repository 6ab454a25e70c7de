"""The notification log and the push devices."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from fcm_django.models import AbstractFCMDevice

from supworker.models.fields import seed_id
from supworker.models.messenger import seed_created_at

# The start of the error of a row whose message was deliberately not sent (a muted chat).
SKIPPED_PREFIX = "skipped: "  # not sent on purpose (a muted chat)
SUPPRESSED_PREFIX = "suppressed: "  # not sent: the address is on the suppression list


class Notification(models.Model):
    """One row per delivery outcome: what was sent to whom, and whether it arrived.

    The messenger's `notifications` table (seed schema); the API may write rows of its own."""

    id = seed_id()
    user_id = models.UUIDField()
    type = models.TextField(help_text="push, email or sms")
    title = models.TextField(null=True, blank=True)
    body = models.TextField(null=True, blank=True)
    success = models.BooleanField(null=True)
    created_at = seed_created_at()
    # Beyond the messenger's columns, each with a database default so that the API's inserts,
    # which name only the seed's columns, keep working: "did user X get it, and if not why".
    job_id = models.CharField(max_length=128, null=True, blank=True)
    recipient = models.CharField(
        max_length=255, blank=True, default="", db_default="", help_text="masked address, number or device id"
    )
    error = models.TextField(blank=True, default="", db_default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_default="")
    # The RQ job that claimed the row: its own rerun may take over a claim it left unsettled.
    claimed_by = models.CharField(max_length=128, blank=True, default="", db_default="")

    class Meta:
        db_table = "notifications"
        indexes = [
            models.Index(fields=["user_id"], name="notifications_user_idx"),
            models.Index(fields=["created_at"], name="notifications_created_idx"),
        ]
        constraints = [
            # A redelivered job finds its earlier row instead of sending again.
            models.UniqueConstraint(
                fields=["job_id", "recipient"],
                name="notifications_job_recipient_uniq",
                condition=Q(job_id__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} to {self.user_id}"

    @property
    def status(self) -> str:
        """sent, failed, skipped (a muted chat) or suppressed (a bounced address): not sent on purpose,
        `error` says why; or in flight (claimed, no answer yet)."""
        if self.success is None:
            return "in flight" if self.job_id else ""
        if self.success:
            return "sent"
        for status, prefix in (("skipped", SKIPPED_PREFIX), ("suppressed", SUPPRESSED_PREFIX)):
            if self.error.startswith(prefix):
                return status
        return "failed"


class Device(AbstractFCMDevice):
    """An fcm-django device keyed by the messenger's user id (users live in the messenger's database)."""

    user = None
    user_id = models.UUIDField(null=True, blank=True, db_index=True)
    # The `at` of the last device.register or device.unregister applied to this row: messages
    # about the token that are not newer are ignored (see notifications/devices.py).
    changed_at = models.DateTimeField(
        null=True, blank=True, help_text="when the messenger made the last change applied to this device"
    )

    class Meta(AbstractFCMDevice.Meta):
        db_table = "fcm_devices"
        verbose_name = "FCM device"
        indexes = [models.Index(fields=["registration_id", "user_id"], name="fcm_devices_token_user_idx")]


class MuteMode(models.TextChoices):
    SILENT = "silent", "delivered without sound"
    SKIP = "skip", "not sent"


class MutedChat(models.Model):
    """A chat a user muted: the messenger writes these rows, the push worker reads them.

    The messenger's table `muted_chats` (notifications/messenger_ddl.py; contract in
    docs/notifications.md#muted-chats). A push of the chat to the user is sent without sound
    (`silent`) or not at all (`skip`) until `until` (never ends when null), unless it is urgent.
    """

    pk = models.CompositePrimaryKey("user_id", "chat_id")
    user_id = models.UUIDField()
    chat_id = models.UUIDField()
    mode = models.TextField(choices=MuteMode.choices)
    until = models.DateTimeField(null=True, blank=True, help_text="the mute ends then; null: until unmuted")

    class Meta:
        db_table = "muted_chats"
        constraints = [models.CheckConstraint(condition=Q(mode__in=MuteMode.values), name="muted_chats_mode_check")]

    def __str__(self) -> str:
        return f"chat {self.chat_id} muted by {self.user_id} ({self.mode})"


class EmailSuppression(models.Model):
    """An address the ESP reported as undeliverable for good (a hard bounce) or whose owner
    reported our mail as spam (a complaint): e-mails and OTPs to it are not sent while it is on
    the list (notifications/suppression.py). Filled by the ESP's tracking webhook; an operator
    lifts an entry in the admin, which keeps the row (who lifted it, when) and sends again."""

    class Reason(models.TextChoices):
        BOUNCE = "bounce", "hard bounce"
        COMPLAINT = "complaint", "spam complaint"

    address = models.CharField(max_length=320, unique=True, help_text="lower-case")
    reason = models.CharField(max_length=16, choices=Reason.choices, help_text="of the last event")
    esp = models.CharField(max_length=32, verbose_name="ESP", help_text="the provider that reported it")
    event_id = models.CharField(max_length=255, blank=True, default="", help_text="the ESP's id of the last event")
    description = models.TextField(blank=True, default="", help_text="what the ESP or the receiving server said")
    first_seen = models.DateTimeField(help_text="when the first suppressing event happened")
    last_seen = models.DateTimeField(help_text="when the last suppressing event happened")
    count = models.PositiveIntegerField(default=1, help_text="suppressing events received")
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "email_suppressions"
        verbose_name = "e-mail suppression"
        indexes = [models.Index(fields=["last_seen"], name="email_suppressions_seen_idx")]

    def __str__(self) -> str:
        return f"{self.address} ({self.reason})"

    @property
    def active(self) -> bool:
        return self.lifted_at is None

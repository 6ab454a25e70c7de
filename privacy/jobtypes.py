"""A user's erasure and export (`user.erase`, `user.export`), and the cron job that deletes
exports once they expire. Long, rare jobs: they go to the cleanup workers' queue.

`user.exported`, the event an export publishes, goes out on EXPORTED_ROUTING_KEY, outside this
domain's `user.#`: our consumer never receives it, and the messenger binds a queue of its own
to it (the event carries a download link).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import EmailStr, model_validator

from supworker.jobtypes import Domain, JobType, declare
from supworker.payloads import Message

EXPORTED_ROUTING_KEY = "privacy.user.exported"


class UserJob(Message):
    type: Literal["erase", "export"]
    userId: UUID
    email: EmailStr | None = None  # an export's notice goes there

    @model_validator(mode="after")
    def _email_only_for_an_export(self) -> UserJob:
        if self.email is not None and self.type != "export":
            raise ValueError("'email' is for an export's notice; an erasure sends nothing")
        return self


def _on_cleanup_queue(name: str, timeout: int, published: bool = True, cron: str | None = None) -> JobType:
    return JobType(name, "cleanup", "cleanup", priority=0, timeout=timeout, published=published, cron=cron)


declare(
    Domain("user", UserJob, rabbit_queue="users"),
    # Both resume or start again when a worker dies: an erasure where its receipt says it was.
    _on_cleanup_queue("user.erase", 3600),
    _on_cleanup_queue("user.export", 3600),
    _on_cleanup_queue("user.expire_exports", 600, published=False, cron="20 * * * *"),
)

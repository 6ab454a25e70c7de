"""What the privacy app itself holds of a user: their exports, erased with them."""

from __future__ import annotations

import uuid

from privacy.models import UserExport, subject_of
from supworker import storage
from supworker.user_data import DONE, START, Holding, Step


def erase_exports(user_id: uuid.UUID, batch_size: int, resume: str) -> Step:
    batch = list(UserExport.objects.filter(subject=subject_of(user_id))[:batch_size])
    files = storage.delete(record.key for record in batch)
    removed = UserExport.objects.filter(pk__in=[record.pk for record in batch]).delete()[0]
    return Step({"user_exports": removed, "user_exports_files": files}, START if batch else DONE)


def count_exports(user_id: uuid.UUID) -> int:
    return UserExport.objects.filter(subject=subject_of(user_id)).count()


EXPORTS = Holding("user_exports", erase_exports, count=count_exports)

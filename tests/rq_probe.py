"""A job function for tests that check RQ plumbing: it leaves a mark in Redis."""

import os

from rq import get_current_job


def record(key: str, value: str) -> str:
    job = get_current_job()
    mark = f"{value}:{os.getpid()}"
    job.connection.set(key, mark)
    return mark

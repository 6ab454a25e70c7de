"""How long a failed item waits before its next try.

Where a job goes and how long it may take is its job type's (supworker/jobtypes.py).
"""

from __future__ import annotations

import random

from django.conf import settings


def retry_delay(retries_done: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: min(BASE * 2^n + up to 30 % jitter, MAX), at least Retry-After."""
    config = settings.CONFIG
    exponential = config.base_delay_ms * 2**retries_done
    jitter = random.uniform(0, 0.3 * exponential)  # noqa: S311 - spreading load, not security
    delay = min(exponential + jitter, config.max_delay_ms) / 1000
    return max(delay, retry_after or 0)

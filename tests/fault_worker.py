"""supworker's RQ worker with its recovery timings shortened, for tests that kill a whole worker.

Started with `manage.py rqworker --worker-class tests.fault_worker.QuickRecoveryWorker`. Only
the three numbers differ from supworker.worker.Worker: a job whose worker died counts as
abandoned after about 5 s instead of 70 s, and cleanups run every second instead of every
30 s, so a test sees RQ's whole recovery path in seconds. Kept apart from the test modules so
that a worker process imports nothing of pytest's.
"""

from __future__ import annotations

from supworker.worker import Worker


class QuickRecoveryWorker(Worker):
    heartbeat_interval = 1
    heartbeat_margin = 4
    cleanup_interval = 1

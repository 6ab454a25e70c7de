"""The RQ worker class every `manage.py rqworker` uses (settings.RQ["WORKER_CLASS"])."""

from __future__ import annotations

from rq import Worker as RQWorker

from supworker.handlers import load_handlers


class Worker(RQWorker):
    """Imports every app's jobs.py once, in the worker's own process, before it starts forking:
    each work-horse inherits the handlers instead of importing them again per job."""

    def work(self, *args, **kwargs) -> bool:
        load_handlers()
        return super().work(*args, **kwargs)

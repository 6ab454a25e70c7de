"""The rq-scheduler class `manage.py rqscheduler` uses (settings.RQ["SCHEDULER_CLASS"]).

rq-scheduler's own SIGTERM/SIGINT handler raises SystemExit wherever the signal lands, and it
stays installed while the process exits. Two things go wrong with that under a supervisor:

- A stop signal that lands while due jobs are being moved to their queues cuts a move short:
  between RQ's enqueue and the removal from the schedule, the next start enqueues the same tick
  again; between that removal and the cron entry's next time, the entry is gone until the cron
  table is registered again.
- A second signal (honcho, systemd or an operator sending SIGTERM to the process and then to its
  group) runs the handler again while the interpreter is already exiting, and its SystemExit
  escapes from logging's atexit hook with a traceback.

Here the first signal ignores any further ones, and a signal that lands in the middle of moving
jobs stops the scheduler only once the move is complete.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django_rq.queues import DjangoScheduler


class Scheduler(DjangoScheduler):
    _moving_jobs = False
    _stop_requested = False

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.log.info("Shutting down RQ scheduler (%s)...", signal.Signals(signum).name)
            self._stop_requested = True
            if not self._moving_jobs:
                self._stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def enqueue_jobs(self) -> Any:
        self._moving_jobs = True
        try:
            return super().enqueue_jobs()
        finally:
            self._moving_jobs = False
            if self._stop_requested:
                self._stop()

    def _stop(self) -> None:
        # What rq-scheduler's own handler does; run() registers the death again on its way out.
        self.register_death()
        self.remove_lock()
        raise SystemExit()

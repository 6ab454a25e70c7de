"""Every cleanup by name: the RQ handlers, the cron table and `manage.py cleanup` use this."""

from __future__ import annotations

from cleanup.base import Cleanup
from cleanup.job_records import JobRecords
from cleanup.maintenance import Maintenance
from cleanup.messages import Messages
from cleanup.orphaned_media import OrphanedMedia
from cleanup.prekeys import Prekeys
from cleanup.retention import Retentions
from cleanup.sessions import Sessions
from cleanup.statistics import Statistics
from cleanup.stories import Stories
from cleanup.temp_files import TempFiles
from cleanup.websockets import Websockets

CLEANUPS: dict[str, Cleanup] = {
    cleanup.name: cleanup
    for cleanup in (
        Stories(), Sessions(), TempFiles(), Messages(), Prekeys(), OrphanedMedia(),
        Maintenance(), Statistics(), Websockets(), JobRecords(), Retentions(),
    )
}  # fmt: skip

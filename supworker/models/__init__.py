from supworker.models.job_records import DeadLetter, JobRun
from supworker.models.messenger import (
    GlobalStatistics,
    Message,
    Story,
    TemporaryFile,
    UserPrekey,
    UserSession,
    UserStatistics,
    WebsocketConnection,
)

__all__ = [
    "DeadLetter",
    "GlobalStatistics",
    "JobRun",
    "Message",
    "Story",
    "TemporaryFile",
    "UserPrekey",
    "UserSession",
    "UserStatistics",
    "WebsocketConnection",
]

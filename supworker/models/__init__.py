from supworker.models.job_records import DeadLetter, JobRun
from supworker.models.messenger import Message, Story, TemporaryFile, UserPrekey, UserSession

__all__ = ["DeadLetter", "JobRun", "Message", "Story", "TemporaryFile", "UserPrekey", "UserSession"]

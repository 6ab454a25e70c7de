from django.apps import AppConfig


class SupworkerConfig(AppConfig):
    name = "supworker"
    verbose_name = "Messenger data and job records"

    def ready(self) -> None:
        # Import every app's jobs.py (the handlers) once per process at start-up: an RQ worker
        # forks a work-horse per job, and a horse that inherits them skips the imports.
        from supworker.handlers import load_handlers

        load_handlers()

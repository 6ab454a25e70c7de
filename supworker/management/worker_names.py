"""What `rqworker` and `rqworker-pool` make of the names on their command line."""

from __future__ import annotations

from argparse import ArgumentParser

from django.core.management.base import CommandError

from supworker.queues import worker_queues


def add_name_arguments(parser: ArgumentParser) -> None:
    """Say what the names are (django-rq calls them queues) and add --exact-queues."""
    (names,) = [action for action in parser._actions if action.dest == "args"]
    names.help = "worker kinds (media, notifications, cleanup) and queues, highest priority first"
    parser.add_argument(
        "--exact-queues",
        action="store_true",
        help="take every name as a queue, none as a worker kind (`media --exact-queues`: that one queue)",
    )


def queues_to_work_on(names: tuple[str, ...], options: dict) -> list[str]:
    """The queues to listen to, in order; a clear error for a name that is neither a kind nor a queue."""
    try:
        return worker_queues(list(names), exact=options["exact_queues"])
    except ValueError as error:
        raise CommandError(str(error)) from None

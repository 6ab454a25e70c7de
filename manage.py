#!/usr/bin/env python
"""supworker's command line: web, workers, scheduler and consumer are all management commands."""

import sys

from supworker.startup import load_settings_or_exit


def main() -> None:
    load_settings_or_exit()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

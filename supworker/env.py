"""Typed reading of environment variables that collects every problem before failing.

A service that refuses to start should say at once everything that is wrong with its
configuration, each variable named, instead of one error per restart.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")


class ConfigError(Exception):
    """One or more settings are missing or malformed; the message names each variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class EnvReader:
    """Reads variables from a mapping; problems are collected, defaults stand in for bad values."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def fail(self, name: str, why: str) -> None:
        problem = f"{name} {why}"
        if problem not in self.problems:  # a variable two settings read (REDIS_DB) is named once
            self.problems.append(problem)

    def raw(self, *names: str) -> tuple[str, str | None]:
        """The first of `names` that is set to a non-blank value, as (name, value)."""
        for name in names:
            value = self.environ.get(name)
            if value is not None and value.strip() != "":
                return name, value.strip()
        return names[0], None

    # Each reader is named after the type it returns, which hides that built-in type inside the
    # class: the annotations below name it as builtins.str.
    def str(self, *names: str, default: str = "", required: bool = False) -> str:
        name, value = self.raw(*names)
        if value is None:
            if required:
                self.fail(name, "is required but not set")
            return default
        return value

    def int(self, name: builtins.str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        _, value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.fail(name, f"must be a whole number, got {value!r}")
            return default
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.fail(name, f"must be {bounds}, got {number}")
            return default
        return number

    def bool(self, name: builtins.str, default: bool) -> bool:
        _, value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.fail(name, f"must be true or false, got {value!r}")
        return default

    def choice(self, *names: builtins.str, choices: Mapping[builtins.str, T], default: T) -> T:
        """A value from a fixed vocabulary; `choices` maps accepted spellings (lower case) to values."""
        name, value = self.raw(*names)
        if value is None:
            return default
        if value.lower() not in choices:
            accepted = ", ".join(sorted(set(choices)))
            self.fail(name, f"must be one of {accepted}, got {value!r}")
            return default
        return choices[value.lower()]

    def url(self, *names: builtins.str, schemes: tuple[builtins.str, ...], default: builtins.str = "") -> builtins.str:
        name, value = self.raw(*names)
        if value is None:
            return default
        return value if self.valid_url(name, value, schemes) else default

    def valid_url(self, name: builtins.str, value: builtins.str, schemes: tuple[builtins.str, ...]) -> builtins.bool:
        """Whether `value` is a URL of one of `schemes` naming a host; if not, the problem is noted."""
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            self.fail(name, f"is not a valid URL ({exc})")
            return False
        if parts.scheme not in schemes:
            self.fail(name, f"must be a {'/'.join(schemes)} URL, got scheme {parts.scheme or 'none'!r}")
            return False
        if not parts.hostname and parts.scheme not in ("unix",):
            self.fail(name, "must name a host")
            return False
        return True

    def list(self, name: builtins.str, default: list[builtins.str]) -> list[builtins.str]:
        _, value = self.raw(name)
        if value is None:
            return default
        return [item.strip() for item in value.split(",") if item.strip()]

    def email(self, *names: builtins.str, default: builtins.str = "") -> builtins.str:
        name, value = self.raw(*names)
        if value is None:
            return default
        # Accept "Display Name <addr@host>" as well as a bare address.
        match = re.fullmatch(r"(?:[^<>]*<)?([^<>]+?)>?", value)
        address = match.group(1).strip() if match else value
        if not EMAIL_RE.match(address):
            self.fail(name, f"must be an e-mail address, got {value!r}")
            return default
        return value

    def phone(self, name: builtins.str) -> builtins.str:
        _, value = self.raw(name)
        if value is None:
            return ""
        if not E164_RE.match(value):
            self.fail(name, "must be an E.164 phone number such as +14155550100")
            return ""
        return value

    def name(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """An AMQP exchange or queue name: printable, no spaces, at most 255 bytes."""
        _, value = self.raw(name)
        if value is None:
            return default
        if len(value.encode()) > 255 or not re.fullmatch(r"[\w.:\-]+", value):
            self.fail(name, "must be 1-255 characters of letters, digits, '.', ':', '-' or '_'")
            return default
        return value

    def together(self, *names: builtins.str) -> None:
        """These variables only make sense as a set: all of them or none."""
        present = [name for name in names if self.raw(name)[1] is not None]
        if present and len(present) != len(names):
            missing = [name for name in names if name not in present]
            self.fail(missing[0], f"must be set together with {', '.join(present)}")

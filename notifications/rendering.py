"""E-mail templates: `templates/emails/<name>.subject.txt`, `<name>.txt` and `<name>.html`.

The brand name in every template is the display name of SENDER_EMAIL ("SUP Messenger" in
"SUP Messenger <no-reply@…>"); the look lives in `templates/emails/base.html`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.template.loader import get_template, render_to_string

DEFAULT_BRAND = "SUP Messenger"
TEMPLATES = ("notification", "otp")
PARTS = ("subject.txt", "txt", "html")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def brand_name() -> str:
    return parseaddr(settings.CONFIG.notifications.sender_email)[0] or DEFAULT_BRAND


def render(name: str, context: dict[str, Any]) -> RenderedEmail:
    context = {"brand_name": brand_name(), **context}
    subject = render_to_string(f"emails/{name}.subject.txt", context)
    return RenderedEmail(
        subject=" ".join(subject.split()),  # one line: a newline in a subject would break the header
        text=render_to_string(f"emails/{name}.txt", context).strip() + "\n",
        html=render_to_string(f"emails/{name}.html", context),
    )


def load_templates() -> None:
    """Compile every e-mail template into Django's cached loader (a no-op once they are there)."""
    for name in TEMPLATES:
        for part in PARTS:
            get_template(f"emails/{name}.{part}")

"""Panels the admin dashboard shows for the apps: each app registers its own from its
AppConfig.ready, so the dashboard (monitoring) knows no other app's figures.

A panel is a template fragment and a function giving its context; the dashboard calls the
function on every view and includes the template with that context as `panel`. Panels appear
after the dashboard's own 24-hour chart, in `order`, then by template name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Panel:
    template_name: str
    context: Callable[[], dict[str, Any]]
    order: int


@dataclass(frozen=True)
class RenderedPanel:
    template_name: str
    context: dict[str, Any]


_panels: dict[str, Panel] = {}


def register_panel(template_name: str, context: Callable[[], dict[str, Any]], order: int = 100) -> None:
    """Show `template_name` on the dashboard, with `context()` as `panel`. Keyed by template, so
    registering the same panel again replaces it."""
    _panels[template_name] = Panel(template_name, context, order)


def panels() -> list[RenderedPanel]:
    """Every registered panel with its context, read now, in display order."""
    ordered = sorted(_panels.values(), key=lambda p: (p.order, p.template_name))
    return [RenderedPanel(p.template_name, p.context()) for p in ordered]

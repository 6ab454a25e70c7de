"""Small server-side SVG charts for the admin dashboard: no JavaScript, nothing from a CDN."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Bar:
    label: str
    ok: int
    failed: int


def stacked_bars(bars: list[Bar], width: int = 720, height: int = 180) -> str:
    """Stacked bars (succeeded below, failed on top), one per bar, with a scale on the left."""
    left, bottom, top = 44, 22, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    peak = max([b.ok + b.failed for b in bars] + [1])
    step = plot_w / max(len(bars), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="jobs per hour, succeeded and failed" class="supworker-chart">',
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" font-size="10">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="10">0</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 6}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    for index, bar in enumerate(bars):
        x = left + index * step + 1
        ok_h = plot_h * bar.ok / peak
        failed_h = plot_h * bar.failed / peak
        title = escape(f"{bar.label}: {bar.ok} succeeded, {bar.failed} failed")
        parts.append(
            f"<g><title>{title}</title>"
            f'<rect x="{x:.1f}" y="{top + plot_h - ok_h:.1f}" width="{step - 2:.1f}" '
            f'height="{ok_h:.1f}" fill="#4c9a2a"/>'
            f'<rect x="{x:.1f}" y="{top + plot_h - ok_h - failed_h:.1f}" width="{step - 2:.1f}" '
            f'height="{failed_h:.1f}" fill="#c0392b"/></g>'
        )
        if index % 3 == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10">{escape(bar.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)

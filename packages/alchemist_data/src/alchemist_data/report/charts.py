"""Small inline SVG charts (no script, no library): histograms of per-row values and horizontal bars of counts."""

from __future__ import annotations

import html
from collections.abc import Sequence

BAR = "#3b6ea8"
AXIS = "#666"


def histogram_svg(
    counts: Sequence[int], lo: float, hi: float, title: str, note: str = "", width: int = 300, height: int = 166
) -> str:
    """A histogram of ``counts`` over equal bins spanning [lo, hi], with its title, bin edges and the peak count."""
    left, right, top, bottom = 34, 10, 22, 38
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts) if counts and max(counts) > 0 else 1
    n = max(1, len(counts))
    bar_w = plot_w / n
    parts = [
        f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}" class="chart">',
        f'<text x="{left}" y="14" class="chart-title">{html.escape(title)}</text>',
    ]
    for i, c in enumerate(counts):
        bh = plot_h * c / peak
        x = left + i * bar_w
        parts.append(
            f'<rect x="{x + 0.5:.1f}" y="{top + plot_h - bh:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
            f'height="{bh:.1f}" fill="{BAR}"><title>[{_num(lo + i * (hi - lo) / n)}, '
            f"{_num(lo + (i + 1) * (hi - lo) / n)}): {c}</title></rect>"
        )
    y0 = top + plot_h
    parts.append(f'<line x1="{left}" y1="{y0}" x2="{left + plot_w}" y2="{y0}" stroke="{AXIS}"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y0}" stroke="{AXIS}"/>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">{peak}</text>')
    parts.append(f'<text x="{left - 4}" y="{y0}" text-anchor="end" class="tick">0</text>')
    for frac in (0.0, 0.5, 1.0):
        x = left + frac * plot_w
        anchor = "start" if frac == 0 else "end" if frac == 1 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{y0 + 13}" text-anchor="{anchor}" class="tick">{_num(lo + frac * (hi - lo))}</text>'
        )
    if note:
        parts.append(f'<text x="{left}" y="{height - 8}" class="tick">{html.escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(labels: Sequence[str], values: Sequence[int], title: str, width: int = 300) -> str:
    """Horizontal bars, one per label (e.g. reject reasons), longest first as given."""
    row, top, label_w = 18, 22, 150
    height = top + row * max(1, len(labels)) + 6
    peak = max(values) if values and max(values) > 0 else 1
    plot_w = width - label_w - 40
    parts = [
        f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}" class="chart">',
        f'<text x="0" y="14" class="chart-title">{html.escape(title)}</text>',
    ]
    if not labels:
        parts.append(f'<text x="0" y="{top + 12}" class="tick">none</text>')
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 12}" text-anchor="end" class="tick">'
            f"<title>{html.escape(label)}</title>{html.escape(short)}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{max(1.0, plot_w * v / peak):.1f}" height="{row - 5}" '
            f'fill="{BAR}"/>'
        )
        parts.append(f'<text x="{label_w + plot_w * v / peak + 4:.1f}" y="{y + 12}" class="tick">{v}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"

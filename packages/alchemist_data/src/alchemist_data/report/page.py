"""The report's HTML: one self-contained page (inline CSS and SVG, pictures as files next to it), stdlib only.

Nothing on the page points outside its folder: no CDN, no font or script from the web, so it opens on an offline
machine and can be copied anywhere with its ``img/`` folder.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CSS = """
:root { --fg: #1d232b; --muted: #5d6875; --line: #d9dee4; --card: #fff; --bg: #f3f5f7; --warn: #8a5a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { padding: 14px 22px 10px; background: #1f2d3d; color: #fff; }
header h1 { margin: 0 0 2px; font-size: 20px; }
header .sub { color: #c3ccd6; font-size: 13px; word-break: break-all; }
main { padding: 14px 22px 40px; }
h2 { font-size: 16px; margin: 22px 0 8px; }
.warn { background: #fff4dc; border: 1px solid #f0c36d; color: var(--warn); padding: 6px 10px; border-radius: 4px;
        margin: 8px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px;
        min-width: 118px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; }
.charts, .tables { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.tables h3 { font-size: 13px; margin: 0 0 4px; }
nav { font-size: 13px; margin: 0 0 8px; }
nav a { margin-right: 12px; }
.chart { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 2px; }
.chart-title { font-size: 12px; font-weight: 600; fill: var(--fg); }
.tick { font-size: 10px; fill: var(--muted); }
table { border-collapse: collapse; background: var(--card); font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.clip { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
        margin: 10px 0; }
.clip h3 { margin: 0; font-size: 14px; }
.clip .caption { margin: 2px 0; }
.meta { color: var(--muted); font-size: 12px; }
.row { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; margin-top: 6px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 11px; max-width: 300px; }
.frame { width: 300px; height: auto; border: 1px solid var(--line); display: block; }
.crop { height: 84px; width: auto; max-width: 220px; object-fit: contain; display: block;
        border: 1px solid var(--line);
        background-color: #fff;
        background-image: linear-gradient(45deg, #c8c8c8 25%, transparent 25%),
                          linear-gradient(-45deg, #c8c8c8 25%, transparent 25%),
                          linear-gradient(45deg, transparent 75%, #c8c8c8 75%),
                          linear-gradient(-45deg, transparent 75%, #c8c8c8 75%);
        background-size: 12px 12px; background-position: 0 0, 0 6px, 6px -6px, -6px 0; }
.cropfig { max-width: 170px; }
.thumb { height: 64px; width: auto; display: block; border: 1px solid var(--line); }
.thumbs { display: flex; gap: 2px; }
details { margin: 6px 0; }
pre { background: var(--card); border: 1px solid var(--line); padding: 8px; overflow: auto; font-size: 12px;
      max-height: 420px; }
.empty { color: var(--muted); font-style: italic; }
.warn-text { color: var(--warn); }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if np.isnan(value):
            return "–"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return esc(value)


def cards(items: Iterable[tuple[str, Any]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="v">{fmt(v)}</div><div class="k">{esc(k)}</div></div>' for k, v in items
        )
        + "</div>"
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], raw: Sequence[bool] | None = None) -> str:
    """An HTML table; cells are escaped unless ``raw[i]`` says column i is already HTML. Numbers align right."""
    raw = raw or [False] * len(columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for v, is_raw in zip(r, raw, strict=True):
            numeric = isinstance(v, int | float) and not isinstance(v, bool)
            cells.append(f'<td class="num">{fmt(v)}</td>' if numeric else f"<td>{v if is_raw else esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return '<p class="empty">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, subtitle: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>'
        f"<main>{body}</main></body></html>\n"
    )


def settings_block(config: dict[str, Any] | None, title: str = "Resolved settings (run.json)") -> str:
    if not config:
        return ""
    text = esc(json.dumps(config, indent=2, default=str))
    return f"<details><summary>{esc(title)}</summary><pre>{text}</pre></details>"


class ImageWriter:
    """Writes the page's pictures under ``out/img`` and returns their paths relative to the page."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        (out_dir / "img").mkdir(parents=True, exist_ok=True)
        self.count = 0

    def _name(self, stem: str, ext: str) -> tuple[Path, str]:
        self.count += 1
        rel = f"img/{stem}.{ext}"
        return self.out_dir / rel, rel

    def array(self, stem: str, image: np.ndarray, quality: int = 85) -> str:
        """An RGB array as JPEG (frames) or an RGBA array as PNG."""
        from alchemist_data.media import encode_jpg, encode_png

        rgba = image.ndim == 3 and image.shape[2] == 4
        path, rel = self._name(stem, "png" if rgba else "jpg")
        path.write_bytes(encode_png(image) if rgba else encode_jpg(image, quality=quality))
        return rel

    def encoded(self, stem: str, data: bytes) -> str:
        """Stored PNG/JPEG bytes as they are (crops keep their alpha; nothing is re-encoded)."""
        ext = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg"
        path, rel = self._name(stem, ext)
        path.write_bytes(data)
        return rel


def img(src: str, css: str, alt: str, title: str = "") -> str:
    extra = f' title="{esc(title)}"' if title else ""
    return f'<img src="{esc(src)}" class="{css}" alt="{esc(alt)}" loading="lazy"{extra}>'


def figure(src: str, img_css: str, caption: str, alt: str = "", css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<figure{cls}>{img(src, img_css, alt or caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def write_page(out_dir: Path, text: str) -> Path:
    path = out_dir / "index.html"
    tmp = path.with_name(f".index.html.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

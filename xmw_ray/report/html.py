"""``xmw report``: the search leaderboard, the transfer table, the plots and the global budget on one HTML page.

It reads the files the other rooms write (it computes nothing): ``leaderboard.md`` / ``best.json`` (tune),
``summary.md`` (transfer), ``budget.csv`` (infer) and every ``*.png`` beside them. Images are embedded, so the
page is a single file that can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from xmw_ray.errors import XmwInputError
from xmw_ray.storage import write_text_atomic

SECTIONS = (
    ("Search leaderboard (Ray Tune)", "leaderboard.md"),
    ("Transfer learning results", "summary.md"),
)


def markdown_table_to_html(text: str) -> str:
    """Pipe tables and plain lines of a small Markdown file → HTML (tables, headings, paragraphs)."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            rows.append([c.strip() for c in s.strip("|").split("|")])
            continue
        flush()
        if s.startswith("#"):
            level = min(len(s) - len(s.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{html.escape(s.lstrip('#').strip())}</h{level}>")
        elif s:
            out.append(f"<p>{html.escape(s)}</p>")
    flush()
    return "\n".join(out)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">' \
           f"<figcaption>{html.escape(str(path))}</figcaption></figure>"


def build_report(folders: list[Path], title: str = "xmw_ray report") -> str:
    """The HTML page for everything found under ``folders``."""
    found = [f for f in folders if f.exists()]
    if not found:
        raise XmwInputError(f"{', '.join(map(str, folders))}: nothing to report (no such folder)")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    used: set[Path] = set()
    for heading, name in SECTIONS:
        for path in sorted(p for f in found for p in f.rglob(name)):
            parts.append(f"<h2>{heading}</h2><p><code>{html.escape(str(path))}</code></p>")
            parts.append(markdown_table_to_html(path.read_text()))
            for png in sorted(path.parent.glob("*.png")):
                parts.append(_img(png))
                used.add(png)
            best = path.parent / "best"
            if best.exists():
                parts.append(f"<p>best checkpoint: <code>{html.escape(str(best))}</code></p>")
    for path in sorted(p for f in found for p in f.rglob("budget.csv")):
        table = pd.read_csv(path)
        parts.append(f"<h2>Global wetland CH4 budget (Tg CH4 yr-1)</h2><p><code>{html.escape(str(path))}</code></p>")
        parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.2f}"))
        for png in sorted((path.parent / "plots").glob("*.png"))[-4:]:
            parts.append(_img(png))
            used.add(png)
    if len(parts) == 1:
        raise XmwInputError(f"{', '.join(map(str, found))}: no leaderboard, transfer table or budget found")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"


def write_report(folders: list[Path], out: Path) -> Path:
    page = build_report(folders)
    write_text_atomic(out, page)
    return out

"""Self-contained HTML: inline CSS, images as base64 PNG data URIs, every text escaped."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["details", "figure", "note", "page", "pre", "section", "table"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; }
h3 { margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: .6rem; overflow-x: auto;
      font-size: .85rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; max-width: 900px; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4rem .7rem; }
details { margin: .5rem 0; } summary { cursor: pointer; color: #333; }
"""


def page(title: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def section(ident: str, title: str, body: Iterable[str], level: int = 3) -> str:
    return (f"<section id=\"{escape(ident)}\">\n<h{level}>{escape(title)}</h{level}>\n"
            + "\n".join(body) + "\n</section>")


def figure(png: bytes, caption: str, alt: str) -> str:
    """A figure with the PNG embedded as a data URI and its caption (plain text)."""
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure>\n<img src=\"data:image/png;base64,{data}\" alt=\"{escape(alt)}\">\n"
            f"<figcaption>{escape(caption)}</figcaption>\n</figure>")


def table(header: Sequence[str], rows: Iterable[Sequence[object]], caption: str | None = None,
          cls: str | None = None) -> str:
    """A table; a cell that is a float is written with 4 decimals and right-aligned."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"<td class=\"num\">{value:.4f}</td>"
        return f"<td>{escape(str(value))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    attr = f" class=\"{escape(cls)}\"" if cls else ""
    return f"<table{attr}>{cap}\n<tr>{head}</tr>\n{body}\n</table>"


def pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def note(text: str) -> str:
    return f"<p class=\"note\">{escape(text)}</p>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>\n{body}\n</details>"

"""HTML building blocks of the report: a self-contained page (stdlib only, inline CSS, images as
base64 data URIs, no network), a converter for the small Markdown subset the study's tables use, and a
render check.

The render check is an inline script that runs on `load` and writes, on `<body>`, the attribute
`data-render-check` = JSON `{"images": n, "broken_images": n, "tables": n, "empty_tables": n}`: images
whose `naturalWidth` is 0 did not decode; tables without a body row are empty. A headless browser reads
it back with `--dump-dom` (tests/report/test_report_browser.py).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cmrprior.report.images import compact_image

MAX_IMAGE_PX = 1300  # the page's width: wider figures are scaled down before embedding


@dataclass(frozen=True)
class Section:
    """One report section: `anchor` (id), `title`, `body` (trusted HTML), `missing` (why it is empty, or None)."""

    anchor: str
    title: str
    body: str = ""
    missing: str | None = None


def esc(text: object) -> str:
    """HTML-escape any value's str()."""
    return html.escape(str(text), quote=True)


def img_tag(png: bytes, alt: str, *, width: int | None = None, mime: str = "image/png") -> str:
    """An <img> with the image embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    w = f' width="{int(width)}"' if width else ""
    return f'<img src="data:{mime};base64,{data}" alt="{esc(alt)}"{w}>'


def figure(png: bytes, caption: str, *, width: int | None = None, photo: bool = False) -> str:
    """A captioned image, re-encoded small (`cmrprior.report.images`; `photo`: image-like, JPEG)."""
    data, mime = compact_image(png, photo=photo, max_px=2 * width if width else MAX_IMAGE_PX)
    return f"<figure>{img_tag(data, caption, width=width, mime=mime)}<figcaption>{esc(caption)}</figcaption></figure>"


def table_html(header: Sequence[str], rows: Sequence[Sequence[object]], *, caption: str | None = None,
               trusted_cells: bool = False) -> str:
    """A table with a header row and body rows (cell values escaped; `trusted_cells`: the body cells are HTML
    already built from escaped values, such as links, and are inserted as they are)."""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cell = str if trusted_cells else esc
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    out = esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    if inner.startswith("|"):
        inner = inner[1:]
    if inner.endswith("|"):
        inner = inner[:-1]
    return [c.strip() for c in inner.split("|")]


def markdown_to_html(text: str, *, heading_offset: int = 1) -> str:
    """Convert the Markdown subset of the study's tables: headings, pipe tables, bullet lists, paragraphs.

    Headings are shifted down by `heading_offset` levels (a table's `##` becomes `<h3>` by default).
    Everything is escaped; only `**bold**` and `` `code` `` are kept as markup.
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            level = min(len(m.group(1)) + heading_offset, 6)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
            continue
        if line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            header = _split_row(block[0])
            body = [_split_row(r) for r in block[1:] if not re.match(r"^\s*\|?\s*:?-{3,}", r)]
            head = "".join(f"<th>{_inline(h)}</th>" for h in header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            continue
        if re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                i += 1
                while i < len(lines) and re.match(r"^\s+\S", lines[i]) and not re.match(r"^\s*[-*]\s+", lines[i]):
                    item += " " + lines[i].strip()  # an indented line continues the item
                    i += 1
                items.append(f"<li>{_inline(item)}</li>")
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,6}\s|\s*\||\s*[-*]\s)", lines[i]):
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


RENDER_CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !im.complete || im.naturalWidth === 0; }).length;
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  var empty = tables.filter(function (t) { return t.querySelectorAll('tbody tr').length === 0; }).length;
  document.body.setAttribute('data-render-check', JSON.stringify(
    {images: imgs.length, broken_images: broken, tables: tables.length, empty_tables: empty}));
});
"""

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1300px;
       padding: 1em 2em; color: #1d232a; line-height: 1.4; }
h1 { border-bottom: 2px solid #2a6f97; padding-bottom: .2em; }
h2 { color: #2a6f97; border-bottom: 1px solid #ccd; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em 0; font-size: 13px; }
th, td { border: 1px solid #c8ccd2; padding: 3px 7px; text-align: left; vertical-align: top; }
thead th { background: #eef3f7; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
figure { display: inline-block; margin: .4em 1em .8em 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; max-width: 700px; }
img { max-width: 100%; height: auto; border: 1px solid #dde; }
.missing { background: #fff4e5; border-left: 4px solid #e69500; padding: .5em 1em; }
nav ul { columns: 3; font-size: 14px; }
.meta { color: #555; font-size: 13px; }
code { background: #f3f3f3; padding: 0 3px; }
"""

def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page as one string (no external resources). Section bodies are trusted HTML."""
    nav = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    parts = []
    for s in sections:
        missing = f'<p class="missing">Not available: {esc(s.missing)}</p>' if s.missing else ""
        parts.append(f'<section id="{esc(s.anchor)}">\n<h2>{esc(s.title)}</h2>\n{missing}\n{s.body}\n</section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n<script>{RENDER_CHECK_JS}</script>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"meta\">{esc(subtitle)}</p>\n<nav><ul>{nav}</ul></nav>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )

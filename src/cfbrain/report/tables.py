"""The markdown the table rules write (headings, paragraphs, pipe tables, **bold**) as one HTML page.

Snakemake's report offers a markdown file only as a download; an HTML page it shows in place. The
markdown stays the table of record (readable in a terminal, a diff, the README); the page is its view.
"""
from __future__ import annotations

import html
import re

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; color: #1e293b; margin: 1.5em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; margin-top: 1.3em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #cbd5e1; padding: 0.25em 0.7em; }
th { background: #f1f5f9; } tr:nth-child(even) td { background: #f8fafc; }
"""
_ALIGN = {(True, True): "center", (False, True): "right", (True, False): "left"}


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text.strip()))


def _cells(line: str) -> list[str]:
    return line.strip().strip("|").split("|")


def _alignments(rule: str) -> list[str | None]:
    """Column alignments from a table's ``|---|:--:|---:|`` line."""
    return [_ALIGN.get((cell.strip().startswith(":"), cell.strip().endswith(":"))) for cell in _cells(rule)]


def _cell(text: str, tag: str, align: str | None) -> str:
    style = f' style="text-align:{align}"' if align else ""
    return f"<{tag}{style}>{_inline(text)}</{tag}>"


def _row(cells: list[str], tag: str, alignments: list[str | None]) -> str:
    return "<tr>" + "".join(_cell(text, tag, align) for text, align in zip(cells, alignments)) + "</tr>"


def _table(lines: list[str]) -> str:
    alignments = _alignments(lines[1])
    body = "".join(_row(_cells(line), "td", alignments) for line in lines[2:])
    return f"<table><thead>{_row(_cells(lines[0]), 'th', alignments)}</thead><tbody>{body}</tbody></table>"


def _block(lines: list[str]) -> str:
    if lines[0].startswith("#"):
        level = len(lines[0]) - len(lines[0].lstrip("#"))
        return f"<h{level}>{_inline(lines[0][level:])}</h{level}>" + (_block(lines[1:]) if lines[1:] else "")
    if lines[0].startswith("|"):
        return _table(lines)
    return f"<p>{_inline(' '.join(lines))}</p>"


def markdown_html(markdown: str) -> str:
    """A standalone HTML page of ``markdown``: blocks are separated by blank lines; a block is a heading
    (``#`` to ``######``, possibly followed by more lines), a pipe table (header, alignment line, rows)
    or a paragraph. The first heading becomes the page title."""
    blocks = [block.splitlines() for block in re.split(r"\n\s*\n", markdown.strip()) if block.strip()]
    title = next((line.lstrip("#").strip() for block in blocks for line in block if line.startswith("#")), "")
    body = "\n".join(_block(lines) for lines in blocks)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")

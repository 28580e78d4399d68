"""Markdown tables as the HTML pages the Snakemake report shows (cfbrain.report)."""
from __future__ import annotations

from cfbrain.report import markdown_html

MARKDOWN = """# Exclusions: d<1>

3 input series; 1 kept.
Second line of the same paragraph.

## By reason

| Reason | N | Note |
|---|---:|:-:|
| Localisers | 2 | a & b |
| **Total** | **2** | |
"""


def test_headings_paragraphs_and_a_table_with_alignment():
    page = markdown_html(MARKDOWN)
    assert page.startswith("<!DOCTYPE html>") and "<title>Exclusions: d&lt;1&gt;</title>" in page
    assert "<h1>Exclusions: d&lt;1&gt;</h1>" in page and "<h2>By reason</h2>" in page
    assert "<p>3 input series; 1 kept. Second line of the same paragraph.</p>" in page
    assert ('<thead><tr><th>Reason</th><th style="text-align:right">N</th><th style="text-align:center">Note</th>'
            '</tr></thead>') in page
    assert '<tr><td>Localisers</td><td style="text-align:right">2</td><td style="text-align:center">a &amp; b</td></tr>' in page
    assert '<td><strong>Total</strong></td><td style="text-align:right"><strong>2</strong></td>' in page


def test_a_heading_directly_above_a_table():
    page = markdown_html("### By size\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert "<h3>By size</h3><table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr>" in page

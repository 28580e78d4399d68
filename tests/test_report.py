"""`snakemake --report` on the tiny run, opened in headless Chromium the way a reader opens it.

The report is a JavaScript app: a test page made of the report plus a few clicks (a result category,
then a result's eye and info buttons) is rendered with ``chromium --dump-dom``. The table the viewer
then shows is the report's iframe, whose page (a data URI in the rendered DOM) is parsed and compared
with the TSV files the tables were made from.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from conftest import snakemake
from debian import ensure_installed, which

pytestmark = pytest.mark.workflow
DATASET = "tiny-ct"
PREPARATION, CLASSIFICATION = "1. Data preparation", "2. Classification"
CLICKS_SCRIPT = """<script>
// A reader's first CLICKS clicks, one per 300 ms: the category in the menu, the result's eye and info buttons.
const pick = (selector, text) => [...document.querySelectorAll(selector)].find(el => el.textContent.trim() === text);
const steps = [() => pick("a", CATEGORY).click(), () => pick("tr", RESULT).querySelectorAll("a")[0].click(),
               () => pick("tr", RESULT).querySelectorAll("a")[1].click()];
steps.slice(0, CLICKS).forEach((step, i) => setTimeout(step, 300 * (i + 1)));
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    ensure_installed(["chromium"], ["chromium"])
    return which("chromium")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = snakemake(tiny_run, "--report", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def rendered(chromium: str, page: Path) -> str:
    """The DOM of ``page`` after its scripts ran (5 s of virtual time)."""
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def reader_view(chromium: str, report: Path, category: str, result: str = "", clicks: int = 3) -> str:
    """The rendered DOM after a reader's first ``clicks`` clicks: ``category`` in the menu (the list of its
    results), ``result``'s eye button (its view) and its info button (its description)."""
    script = (CLICKS_SCRIPT.replace("CATEGORY", json.dumps(category)).replace("RESULT", json.dumps(result))
              .replace("CLICKS", str(clicks)))
    page = report.with_name(f"{re.sub(r'[^A-Za-z0-9]+', '_', f'{category} {result} {clicks}')}.html")
    html = report.read_text()
    end = html.rindex("</body>")
    page.write_text(html[:end] + script + html[end:])
    return rendered(chromium, page)


def viewer_page(dom: str) -> str:
    """The HTML page the report's viewer shows (its iframe's data URI)."""
    sources = re.findall(r'<iframe src="data:text/html;[^"]*?base64,([^"]+)"', dom)
    assert len(sources) == 1, "the viewer shows no HTML page"
    return base64.b64decode(sources[0]).decode()


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag):
        self.in_cell = self.in_cell and tag not in ("td", "th")

    def handle_data(self, data):
        if self.in_cell:
            self.tables[-1][-1][-1] += data


def tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def result_labels(dom: str) -> list[str]:
    """The result names a subcategory lists (first cell of each row of the results table)."""
    return re.findall(r'<tr><td class="p-1 pl-2 ?">([^<]+)</td>', dom)


def description(dom: str) -> str:
    """The rendered caption of the result whose info a reader opened."""
    return dom.split(">Description</li>", 1)[1]


def test_menu_has_the_stages_and_the_guide(chromium, report):
    dom = rendered(chromium, report)
    menu = re.findall(r"<span>([^<]+)</span>", dom)
    assert {PREPARATION, CLASSIFICATION} <= set(menu), menu
    assert "How to use this report" in dom


def test_exclusions_table_is_shown_with_the_counts_of_the_exclusion_list(chromium, report, tiny_run):
    dom = reader_view(chromium, report, PREPARATION, "1 Exclusions by reason")
    (counts, *_) = tables(viewer_page(dom))
    assert counts[0] == ["Reason for series exclusion", "N"]
    shown = {reason: int(n) for reason, n in counts[1:]}
    series = pd.read_csv(tiny_run / "results" / DATASET / "qc" / "exclusions.tsv", sep="\t", keep_default_na=False)
    series = series[series.unit == "series"]
    assert shown["Localisers"] == (series.reason == "localiser").sum() > 0
    assert shown["Poor patient positioning"] == (series.reason == "registration").sum() > 0
    assert shown["Total"] == (series.status != "kept").sum()
    assert "What a problem looks like." in description(dom) and f'<span class="pre">{DATASET}</span>' in description(dom)


def test_classification_tables_are_shown_with_every_test_prediction(chromium, report, tiny_run):
    dom = reader_view(chromium, report, CLASSIFICATION, "1 Classification tables")
    metrics, confusion, *strata = tables(viewer_page(dom))
    assert metrics[0][:2] == ["model", "accuracy"] and [row[0] for row in metrics[1:]] == ["mtl"]
    predictions = pd.read_csv(tiny_run / "results" / DATASET / "predictions" / "mtl" / "seed0.tsv", sep="\t")
    assert confusion[0] == ["true", "none", "left", "right", "both"]
    assert sum(int(cell) for row in confusion[1:] for cell in row[1:]) == len(predictions)
    assert len(strata) == 4
    assert "majority-class rate" in description(dom)


def test_every_result_is_listed_in_reading_order(chromium, report, tiny_run):
    clusters = sorted(p.stem for p in (tiny_run / "results" / DATASET / "figures" / "registration_clusters").glob("*.png"))
    assert len(clusters) >= 2
    assert result_labels(reader_view(chromium, report, PREPARATION, clicks=1)) == [
        "1 Exclusions by reason", "1 Exclusions by stage (figure)", "2 Exclusions: every series (TSV, download)",
        "3 Registration QC: clusters of the registrations",
        *(f"4 Registration QC: {cluster} examples" for cluster in clusters), "5 Preprocessing montage"]
    assert result_labels(reader_view(chromium, report, CLASSIFICATION, clicks=1)) == [
        "1 Classification tables", "2 Metrics per model and seed (TSV, download)",
        "3 Test predictions: correct and wrong examples", "4 Training curves: mtl, seed 0"]


@pytest.mark.parametrize("category, result, image", [
    (PREPARATION, "1 Exclusions by stage (figure)", "exclusions.png"),
    (PREPARATION, "3 Registration QC: clusters of the registrations", "registration_qc.png"),
    (PREPARATION, "5 Preprocessing montage", "preprocessing_montage.png"),
    (CLASSIFICATION, "4 Training curves: mtl, seed 0", "training_curves.png"),
])
def test_figures_are_shown_with_their_description(chromium, report, category, result, image):
    dom = reader_view(chromium, report, category, result)
    assert re.search(rf'<img src="data:image/png;[^"]*filename={image};base64,', dom), f"{image} not shown"
    assert "What a problem looks like." in description(dom)

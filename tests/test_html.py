"""The HTML book in a real browser (headless Chromium): every page of the book at 1280 px and
at a phone's 390 px. Math is typeset, no image is broken, nothing makes the page scroll
sideways; at 1280 px code, tables and displayed equations also fit their column.

Run by `make test` after the HTML is built (`pytest -m browser tests/test_html.py`); the
screenshots land in `_build/screenshots/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from book_checks import toc_files
from browser import MEASURE, Browser, find_chromium

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
PAGES = toc_files(ROOT)  # book/index, book/preface, book/01_tokens, ...
WIDTHS = (1280, 390)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.fail("no Chromium on this machine: install Debian's chromium (make test does)")
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built HTML in {HTML}: run `make html` first")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with Browser(executable) as b:
        yield b


def measure(browser: Browser, path: Path, width: int, shot: Path | None = None) -> dict:
    browser.open(path, width)
    if shot is not None:
        browser.screenshot(shot)
    return browser.evaluate(MEASURE)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", PAGES)
def test_page_reads_well(browser, page, width):
    m = measure(browser, HTML / f"{page}.html", width,
                SHOTS / f"{page.replace('/', '-')}-{width}.png")
    assert m["pageWidth"] <= m["windowWidth"], f"the page scrolls sideways: {m}"
    assert not m["unrenderedMath"] and not m["mathErrors"], f"math not typeset: {m}"
    assert not m["brokenImages"], f"broken images: {m['brokenImages']}"
    if width >= 1000:
        assert not m["wideCode"], f"code wider than its column: {m['wideCode']}"
        assert not m["wideTables"], f"tables wider than the column: {m['wideTables']}"
        assert not m["wideMath"], f"equations wider than the column: {m['wideMath']}"


def test_the_measure_sees_what_it_must(browser, tmp_path):
    """A page with a broken image, a wide code line and a too-wide block fails each check."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><article>"
        "<img src='missing.png' width=10 height=10>"
        "<div class='highlight'><pre style='overflow-x:auto;width:200px'>"
        + "x" * 400 + "</pre></div>"
        "<table style='display:block;overflow-x:auto;width:100px'><tr><td>"
        + "y" * 300 + "</td></tr></table>"
        "<div style='width:5000px'>wide</div>"
        "<span class='math'>\\(x\\)</span>"
        "</article></body></html>")
    m = measure(browser, page, 1280)
    assert m["pageWidth"] > m["windowWidth"]
    assert m["brokenImages"] and m["wideCode"] and m["wideTables"] and m["unrenderedMath"]


# ---- The design points of issue 28 (point 11) ----------------------------------------------

VISIBLE = "(e => e.offsetParent !== null)"


def test_narrow_code_keeps_its_indentation(browser):
    """At a phone's width, code scrolls inside its box instead of wrapping back to column 0."""
    browser.open(HTML / "book" / "04_gpt.html", 390)
    spaces = browser.evaluate(
        "[...document.querySelectorAll('article div.highlight pre')]"
        f".filter{VISIBLE}.map(e => getComputedStyle(e).whiteSpace)")
    assert spaces and set(spaces) == {"pre"}, spaces
    assert browser.evaluate("document.documentElement.scrollWidth <= innerWidth")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_index_is_in_the_navigation_and_fits(browser, width):
    browser.open(HTML / "book" / "04_gpt.html", width)
    links = browser.evaluate(
        "[...document.querySelectorAll('.bd-sidebar-primary a')]"
        ".map(a => a.getAttribute('href')).filter(h => h && h.endsWith('genindex.html'))")
    assert links, "no link to the index in the navigation"
    browser.open(HTML / "genindex.html", width)
    assert browser.evaluate("document.querySelectorAll('table.indextable a').length") > 50
    assert browser.evaluate("document.documentElement.scrollWidth <= innerWidth")
    api = browser.evaluate("[...document.querySelectorAll('table.indextable a')]"
                           ".filter(a => a.textContent.includes('in module buildllm')).length")
    assert api == 0, "the index lists ideas; the API reference has its own contents"


def test_glued_numbers_read_as_the_text_around_them(browser):
    browser.open(HTML / "book" / "05_training.html", 1280)
    weights = browser.evaluate(
        "[...document.querySelectorAll('article p > span.pasted-text')]"
        ".map(e => [getComputedStyle(e).fontWeight, getComputedStyle(e.parentElement).fontWeight])")
    assert weights and all(own == around for own, around in weights), weights


@pytest.mark.parametrize("page", ["book/04_gpt", "search"])
@pytest.mark.parametrize("width", WIDTHS)
def test_one_search_box(browser, page, width):
    browser.open(HTML / f"{page}.html", width)
    boxes = browser.evaluate(
        "[...document.querySelectorAll('.search-button-field, .search-button, "
        f"input[type=search]')].filter{VISIBLE}.length")
    assert boxes == 1, f"{boxes} search boxes"


def test_the_api_contents_column_shows_whole_names(browser):
    browser.open(HTML / "book" / "api.html", 1280)
    cut = browser.evaluate(
        "(() => { const col = document.querySelector('.bd-sidebar-secondary');"
        " const right = col.getBoundingClientRect().right;"
        " return [...col.querySelectorAll('a')].filter(a => a.offsetParent !== null &&"
        " (a.getBoundingClientRect().right > right + 1 || a.getClientRects().length > 1))"
        ".map(a => a.textContent.trim()); })()")
    assert not cut, f"cut off or broken over two lines: {cut}"


def test_the_bibliography_is_ragged_right_and_in_order(browser):
    browser.open(HTML / "book" / "bibliography.html", 1280)
    aligns = browser.evaluate("[...document.querySelectorAll('div.citation p')]"
                              ".map(p => getComputedStyle(p).textAlign)")
    assert aligns and set(aligns) <= {"left", "start"}, set(aligns)
    labels = browser.evaluate("[...document.querySelectorAll('div.citation > span.label')]"
                              ".map(s => s.textContent.replace(/[\\[\\]]/g, ''))")
    surnames = [label.split()[0].strip(",").lower() for label in labels]  # by first author
    assert surnames == sorted(surnames), labels

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

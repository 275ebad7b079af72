"""What `make pdf` can check in the printed book by itself (issue 28): no code box split with
fewer than four lines on either side of the break, no notebook wording ("this notebook",
"this cell", "this page") in the text, no page that ends with a colon (what it introduces is
overleaf), no markup of the sources printed (reST's ``x`` and roles, "<factory>",
"# noqa"), and an index with entries. (The copyright page says "(with local changes)" of a
build from a tree with uncommitted changes, as it should; CI builds a clean clone.)

It reads the PDF through poppler's `pdftotext -bbox-layout` (lines with their positions). A
code box that splits ends with Sphinx's "(continues on next page)" and goes on after
"(continued from previous page)"; its rows are those that follow each other at the leading
of code, which differs from the leading of prose.

    python scripts/check_pdf.py _build/latex/book.pdf     # exit status 1 on a finding
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# The leading of code in PDF points, read from the book's style (\bookcoderow, the leading of
# _config.yml's fvset): code rows follow each other at this distance, lines of prose at
# another (13.6 pt).
STYLE = Path(__file__).resolve().parents[1] / "book" / "_ext" / "bookstyle.sty"
CODE_LEADING = float(re.search(r"\\setlength\{\\bookcoderow\}\{([\d.]+)pt\}",
                               STYLE.read_text(encoding="utf-8")).group(1)) * 72 / 72.27
MIN_LINES = 4  # lines of a split code box on each side of the break
CONTINUES = "(continues on next page)"
CONTINUED = "(continued from previous page)"
WORDING = re.compile(r"\b(this (notebook|cell|page)|the (cell|notebook) (above|below)|"
                     r"(next|previous) cell)\b", re.IGNORECASE)

MARKUP = re.compile(r"``|:(?:py:)?(?:class|func|meth|mod|data|attr|exc):`|<factory>|#\s*noqa\b")
FOLIO = re.compile(r"^(\d+|[ivxlc]+)$")


@dataclass(frozen=True)
class Line:
    x: float  # left edge, in points from the page's left edge
    y: float  # top edge, in points from the page's top edge
    text: str


def read_pages(pdf: Path) -> list[list[Line]]:
    """The lines of every page, top to bottom."""
    xhtml = subprocess.run(["pdftotext", "-bbox-layout", str(pdf), "-"], check=True,
                           capture_output=True, text=True).stdout
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    pages = []
    for page in ET.fromstring(xhtml).iterfind(".//h:page", ns):
        lines = [Line(float(ln.get("xMin")), float(ln.get("yMin")),
                      " ".join(w.text or "" for w in ln.iterfind("h:word", ns)))
                 for ln in page.iterfind(".//h:line", ns)]
        pages.append(sorted(lines, key=lambda ln: (round(ln.y), ln.x)))
    return pages


def _rows(lines: list[Line]) -> list[float]:
    """The distinct heights of a page's lines, top to bottom (words of one row at one y)."""
    rows: list[float] = []
    for y in sorted(ln.y for ln in lines):
        if not rows or y - rows[-1] > 3:  # a wrapped line's mark sits 2 pt lower
            rows.append(y)
    return rows


def _code_rows(ys: list[float]) -> int:
    """How many rows of code a run of row heights holds, from its first: as long as rows
    follow each other at the code's leading (a blank code line makes a gap of two)."""
    if not ys:
        return 0
    count = 1
    for previous, y in zip(ys, ys[1:]):
        steps = abs(y - previous) / CODE_LEADING
        if round(steps) not in (1, 2, 3) or abs(steps - round(steps)) > 0.06:
            break
        count += round(steps)
    return count


def stranded_code(pages: list[list[Line]]) -> list[str]:
    """Code boxes split with fewer than MIN_LINES rows before or after the page break."""
    found = []
    for number, lines in enumerate(pages[:-1], start=1):
        ends = [ln.y for ln in lines if ln.text.strip() == CONTINUES]
        if not ends:
            continue
        above = [y for y in _rows(lines) if y < ends[-1] - 1]
        before = _code_rows(above[::-1])
        following = pages[number]
        starts = [ln.y for ln in following if ln.text.strip() == CONTINUED]
        after = _code_rows([y for y in _rows(following) if y > starts[0] + 1]) if starts else 0
        if before < MIN_LINES or after < MIN_LINES:
            found.append(f"PDF page {number}: a code box splits {before} + {after} lines")
    return found


def notebook_wording(pages: list[list[Line]]) -> list[str]:
    """Words that speak of a notebook where the reader holds a book."""
    found = []
    for number, lines in enumerate(pages, start=1):
        text = " ".join(ln.text for ln in lines)
        found += [f"PDF page {number}: {m.group(0)!r}" for m in WORDING.finditer(text)]
    return found


def colon_ends(pages: list[list[Line]]) -> list[str]:
    """Pages whose last line (above the page number at the foot, if any) ends with a colon:
    the sentence introduces what the reader finds only after turning the page."""
    found = []
    for number, lines in enumerate(pages, start=1):
        body = [ln for ln in lines if not FOLIO.match(ln.text.strip())]
        if body and body[-1].text.rstrip().endswith(":"):
            found.append(f"PDF page {number} ends with a colon: {body[-1].text.strip()[-60:]!r}")
    return found


def printed_markup(pages: list[list[Line]]) -> list[str]:
    """Markup of the sources that reached the page."""
    found = []
    for number, lines in enumerate(pages, start=1):
        for ln in lines:
            found += [f"PDF page {number}: {m.group(0)!r} in {ln.text.strip()[:60]!r}"
                      for m in MARKUP.finditer(ln.text)]
    return found


def index_pages(pages: list[list[Line]], at_least: int = 20) -> list[str]:
    """The index is there: a page headed "Index", with at least ``at_least`` entries that end
    in a page number, from there to the end."""
    for number, lines in enumerate(pages):
        if any(ln.text.strip() == "Index" for ln in lines[:3]):
            entries = sum(bool(re.search(r"[a-z].*,\s*\d+$", ln.text))
                          for page in pages[number:] for ln in page)
            if entries >= at_least:
                return []
            return [f"the index (PDF page {number + 1}) has only {entries} entries"]
    return ["no index: no page is headed 'Index'"]


def main(argv: list[str]) -> int:
    pdf = Path(argv[1] if len(argv) > 1 else "_build/latex/book.pdf")
    pages = read_pages(pdf)
    problems = (stranded_code(pages) + notebook_wording(pages) + colon_ends(pages)
                + printed_markup(pages) + index_pages(pages))
    for problem in problems:
        print(f"{pdf}: {problem}")
    print(f"{pdf}: {len(pages)} pages checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

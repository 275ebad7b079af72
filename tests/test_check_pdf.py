"""scripts/check_pdf.py, the check that `make pdf` runs on the printed book, on small pages
made up here: a code box split with too few lines on a side, notebook wording, a page that
ends with a colon, printed markup, the index."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import check_pdf as c  # noqa: E402

CODE, PROSE = c.CODE_LEADING, 13.55


def page(*blocks: tuple[str, int], top: float = 80.0) -> list[c.Line]:
    """Lines from (kind, count) blocks: "code" rows at the code's leading, "prose" lines at
    the text's, a marker as its own line."""
    lines, y = [], top
    for kind, count in blocks:
        if kind in (c.CONTINUES, c.CONTINUED):
            y += 14
            lines.append(c.Line(300, y, kind))
            y += 14
            continue
        y += 9.5  # the space between a box and prose (23 pt from a line of prose to a box's)
        for k in range(count):
            lines.append(c.Line(100, y, f"{kind} line {k}"))
            y += CODE if kind == "code" else PROSE
    return lines


def test_a_box_split_four_and_four_passes():
    pages = [page(("prose", 30), ("code", 4), (c.CONTINUES, 0)),
             page((c.CONTINUED, 0), ("code", 4), ("prose", 5))]
    assert c.stranded_code(pages) == []


def test_a_line_stranded_on_either_side_is_found():
    one_after = [page(("prose", 30), ("code", 6), (c.CONTINUES, 0)),
                 page((c.CONTINUED, 0), ("code", 1), ("prose", 5))]
    two_before = [page(("prose", 30), ("code", 2), (c.CONTINUES, 0)),
                  page((c.CONTINUED, 0), ("code", 9), ("prose", 5))]
    assert c.stranded_code(one_after) == ["PDF page 1: a code box splits 6 + 1 lines"]
    assert c.stranded_code(two_before) == ["PDF page 1: a code box splits 2 + 9 lines"]


def test_a_blank_code_line_counts_and_prose_does_not():
    lines = page(("prose", 3), ("code", 5))
    gap = [ln for k, ln in enumerate(lines) if k != 5]  # the second code row left blank
    assert c._code_rows([ln.y for ln in gap][3:]) == 5
    assert c._code_rows([ln.y for ln in lines][:3]) == 1  # prose lines are not code rows


def test_notebook_wording_is_found_and_book_wording_is_not():
    pages = [[c.Line(90, 100, "as the cell above shows, this notebook")],
             [c.Line(90, 100, "the run that built this book, above")]]
    assert c.notebook_wording(pages) == ["PDF page 1: 'the cell above'",
                                         "PDF page 1: 'this notebook'"]


def test_the_index_must_be_there_with_entries():
    entries = [c.Line(90, 100 + k, f"term {k}, {k + 3}") for k in range(25)]
    assert c.index_pages([[c.Line(90, 50, "Index"), *entries]]) == []
    assert c.index_pages([[c.Line(90, 50, "Index"), *entries[:3]]])
    assert c.index_pages([entries]) == ["no index: no page is headed 'Index'"]


def test_a_page_that_ends_with_a_colon_is_found_above_its_folio():
    ends = [c.Line(90, 100, "and it prints:"), c.Line(300, 700, "17")]
    goes_on = [c.Line(90, 100, "and it prints:"), c.Line(90, 114, "[1, 2, 3]"),
               c.Line(300, 700, "xiv")]
    assert c.colon_ends([ends, goes_on]) == ["PDF page 1 ends with a colon: 'and it prints:'"]


def test_markup_of_the_sources_is_found():
    pages = [[c.Line(90, 100, "x: ``(B, T, C)`` and a :class:`GPT`"),
              c.Line(90, 114, "f(cfg=<factory>)  # noqa: E731")],
             [c.Line(90, 114, "a dict {'a': 1}, `x`, time: 3 s")]]
    assert [p.split(": ", 1)[1].split(" in ")[0] for p in c.printed_markup(pages)] == [
        "'``'", "'``'", "':class:`'", "'<factory>'", "'# noqa'"]

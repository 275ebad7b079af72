"""The pure parts of book/_ext/bookstyle.py, the book's Sphinx extension: where a printed
code box may break, code as printed, and the words an index entry names."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "book" / "_ext"))

import bookstyle  # noqa: E402


def test_a_short_box_never_breaks_and_reserves_all_its_rows():
    breaks, rows = bookstyle.code_box_need("a = 1\nb = 2\n\nc = 3\n")
    assert breaks == "0000" and rows == 4


def test_a_long_box_breaks_only_with_four_filled_lines_on_each_side():
    code = "\n".join(["x = 1"] * 4 + [""] + ["y = 2"] * 4)
    breaks, rows = bookstyle.code_box_need(code)
    # before line 6 (not before the blank line 5: it would open the next page)
    assert breaks == "000001000"
    assert rows == 5  # the rows up to the first break


def test_a_long_line_counts_as_the_rows_it_wraps_to():
    line = "z" * (2 * bookstyle.CODE_COLUMNS + 1)
    assert bookstyle.code_box_need(line) == ("0", 3)


def test_code_as_printed():
    code = ('f = lambda x: x  # noqa: E731\n'
            'g = 1  # noqa: F401  (kept for the reader)\n'
            '"""A :class:`~buildllm.model.GPT`, :func:`buildllm.data.get_batch`, '
            ':meth:`step <buildllm.muon.Muon.step>`."""')
    assert bookstyle.readable_code(code) == (
        'f = lambda x: x\n'
        'g = 1  # (kept for the reader)\n'
        '"""A GPT, buildllm.data.get_batch, step."""')


def test_the_words_an_index_entry_names():
    assert bookstyle._index_term("RoPE (rotary position embedding)") == "RoPE"
    assert bookstyle._index_term("byte-pair encoding; tie-breaking") == "tie-breaking"
    assert bookstyle._index_term("GELU") == "GELU"
    assert bookstyle._index_term("byte-pair encoding; tie-breaking <ties are broken>") == (
        "ties are broken")
    assert bookstyle._index_text("byte-pair encoding; tie-breaking <ties are broken>") == (
        "byte-pair encoding; tie-breaking")


def test_an_index_term_is_found_across_a_line_break_and_emphasis():
    from docutils import nodes

    section = nodes.section()
    start = nodes.comment()
    first = nodes.paragraph("", "", nodes.Text("Nothing here."))
    second = nodes.paragraph("", "", nodes.Text("Add a "), nodes.emphasis("", "residual"),
                             nodes.Text("\nconnection around it."))
    section += [start, first, second]
    text, offset = bookstyle._first_mention(start, "residual connection")
    assert str(text) == "residual" and offset == 0
    assert bookstyle._first_mention(start, "layer norm") is None


def test_a_heading_that_names_an_index_term_counts_as_its_mention():
    from docutils import nodes

    before, after = nodes.section(), nodes.section()
    start = nodes.comment()
    before += [nodes.title("", "Counting"), start, nodes.paragraph("", "Some counts.")]
    after += [nodes.title("", "Training loops"), nodes.paragraph("", "Four moves.")]
    document = nodes.document(None, None)
    document += [before, after]
    text, offset = bookstyle._first_mention(start, "training loop")
    assert str(text) == "Four moves." and offset == 0
    own = nodes.section()
    start = nodes.comment()
    own += [nodes.title("", "Instruction tuning"), start,
            nodes.paragraph("", "A head answers."), nodes.paragraph("", "instruction tuning")]
    text, offset = bookstyle._first_mention(start, "instruction tuning")
    assert str(text) == "A head answers." and offset == 0


def test_a_column_of_numbers_is_numeric():
    from docutils import nodes

    def rows(*cells):
        return [nodes.row("", nodes.entry("", nodes.paragraph("", c))) for c in cells]

    assert bookstyle._numeric_column(rows("128", "1,095,171", "-0.959", "12 %", "-"), 0)
    assert not bookstyle._numeric_column(rows("128", "0.312 to 0.355"), 0)
    assert not bookstyle._numeric_column(rows("-", ""), 0)


def test_numbers_and_intervals_keep_to_one_line():
    from docutils import nodes

    assert bookstyle._atomic("0.312 to 0.355") and bookstyle._atomic("300.00 MiB")
    assert not bookstyle._atomic("GPT-2 small") and not bookstyle._atomic("77.5 % (75.3-79.5)")

    def row(*cells):
        return nodes.row("", *(nodes.entry("", nodes.paragraph("", c)) for c in cells))

    head = row("method", "95 % interval")
    body = [row("pretrained, head only", "0.507 to 0.554"), row("bag of words", "0.483 to 0.529")]
    widths = bookstyle._content_widths([head, *body], body, 75)
    assert widths[0] >= 21 + bookstyle.CELL_PAD and widths[1] >= 14 + bookstyle.CELL_PAD
    narrow = bookstyle._content_widths([head, *body], body, 30)
    assert narrow[1] == 14 + bookstyle.CELL_PAD and narrow[0] < 21 + bookstyle.CELL_PAD

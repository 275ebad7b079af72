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

"""The pure parts of book/_ext/bookstyle.py, the book's Sphinx extension: where a printed
code box may break, code as printed, and the words an index entry names."""

from __future__ import annotations

import math
import re
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


def test_python_breaks_between_statements_not_after_a_header_or_inside_brackets():
    code = ("a = 1\nb = 2\nc = 3\nd = 4\n"
            "for shift in (0, 100):\n    # the body\n    print(shift)\n    print(-shift)\n"
            "x = [a for a in range(10)\n     if a > 2]\n"
            "@torch.no_grad()\ndef f():\n    return 1\n"
            "y = 5\nz = 6\nw = 7\nv = 8\n")
    breaks, rows = bookstyle.code_box_need(code)
    # before "for", the loop's second print, "x = [", "@" and "y" (four lines from it on)
    assert breaks == "00001001101001000"
    assert rows == 4


def test_a_box_whose_statements_leave_long_runs_breaks_at_any_line():
    run = bookstyle.STATEMENT_RUN + 1
    code = "a = 1\nb = 2\nc = 3\nd = 4\nx = f(\n" + "    1,\n" * run + ")\ny = 2\n"
    breaks, _ = bookstyle.code_box_need(code)
    assert breaks.count("1") == len(breaks) - 7  # the four-line rule alone


def test_text_that_is_not_python_breaks_at_any_line():
    out = "step 0:\n" + "loss (1\n" * 9
    assert bookstyle.code_box_need(out)[0] == "0000111000"


def test_a_long_line_counts_as_the_rows_it_wraps_to():
    line = "z" * (2 * bookstyle.CODE_COLUMNS + 1)
    assert bookstyle.code_box_need(line) == ("0", 3)


def test_code_as_printed():
    code = ('f = lambda x: x  # noqa: E731\n'
            'g = 1  # noqa: F401  (kept for the reader)\n'
            '"""A :class:`~buildllm.model.GPT`, :func:`buildllm.data.get_batch`, '
            ':meth:`step <buildllm.muon.Muon.step>`.\n'
            '``x`` ``(B, T, C)`` -> ``(B, T, C)``, ``replace=False``."""')
    assert bookstyle.readable_code(code) == (
        'f = lambda x: x\n'
        'g = 1  # (kept for the reader)\n'
        '"""A GPT, buildllm.data.get_batch, step.\n'
        'x (B, T, C) -> (B, T, C), replace=False."""')


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


def _row(*cells):
    from docutils import nodes

    return nodes.row("", *(nodes.entry("", nodes.paragraph("", c)) for c in cells))


def test_short_formulas_keep_to_one_line():
    from docutils import nodes

    assert bookstyle._formula("top-p = 0.9") and bookstyle._formula("(97, 97) = a + a")
    assert bookstyle._unbreakable("(256, 257) = aa + ab") and bookstyle._unbreakable("T = 0.5")
    assert not bookstyle._formula("top-k") and not bookstyle._formula("greedy")
    assert not bookstyle._formula("the model writes x = 1 and goes on for a while")
    # chapter 6's table of samples gives its columns 16 and 84: "top-p = 0.9" wrapped
    head = _row("setting", "the model's continuation of 'ROMEO:'")
    body = [_row("greedy", "I am a move, and I'll tell thee, / " * 4),
            _row("top-p = 0.9", "Pray, take up from the wisdain. / " * 4)]
    widths = bookstyle._given_widths([head, *body], body, [16, 84], 78)
    assert sum(widths) == 100
    assert widths[0] * 78 / 100 >= len("top-p = 0.9") + bookstyle.CELL_PAD
    # widths that already hold every cell stay as given
    assert bookstyle._given_widths([head, *body], body, [30, 70], 78) == [30, 70]
    # the formula is set in a box, which does not break at its hyphen either; the box's
    # LaTeX does not count as the cell's characters
    bookstyle._keep_numbers_whole(body)
    assert bookstyle._given_widths([head, *body], body, [16, 84], 78) == widths
    cell = body[1][0][0]
    assert isinstance(cell[0], nodes.raw) and cell[0].astext() == "\\mbox{"
    assert isinstance(cell[-1], nodes.raw) and cell[-1].astext() == "}"
    assert not isinstance(body[0][0][0][0], nodes.raw)


def test_a_table_that_gives_widths_keeps_its_formulas_whole():
    from docutils import nodes

    # chapter 1's table of merges: "(97, 97) = a + a" wrapped in a column of 18 of 98
    head = _row("step", "pair", "count", "tied with", "new id", "sequence after", "length")
    body = [_row("1", "(97, 97) = a + a", "4", "-", "256", "aa|a|b|d|aa|a|b|a|c", "9"),
            _row("3", "(256, 257) = aa + ab", "2", "-", "258", "aaab|d|aaab|a|c", "5"),
            _row("4", "(97, 99) = a + c", "1", "(258, 100), (100, 258), (258, 97)", "259",
                 "aaab|d|aaab|ac", "4")]
    given = [6, 18, 7, 20, 8, 31, 8]
    widths = bookstyle._given_widths([head, *body], body, given, 98)
    assert sum(widths) == sum(given)
    assert widths[1] * 98 / sum(widths) >= len("(256, 257) = aa + ab") + bookstyle.CELL_PAD
    # code is wider than text: "aa|a|b|d|aa|a|b|a|c" lost its "c" to the next column
    for row in body:
        row[5][0][:] = [nodes.literal("", row[5].astext())]
    need = bookstyle._given_needs([head, *body], body, 98, 98)
    assert need[5] >= 1.3 * len("aa|a|b|d|aa|a|b|a|c")
    # in \small (87 characters a line) the cells do not fit the widths: \footnotesize
    assert sum(bookstyle._given_needs([head, *body], body, 98, 87)) > 98
    table = nodes.table("", classes=["colwidths-given"])
    tgroup = nodes.tgroup(cols=7)
    tgroup += [nodes.colspec(colwidth=w) for w in given]
    tgroup += [nodes.thead("", head), nodes.tbody("", *body)]
    table += tgroup
    section = nodes.section("", table)
    assert bookstyle.RightAlignedColumns.layout(table, tgroup, 1) == 2
    spec = section[0]["spec"]
    assert spec.startswith("\\Xr{") and spec.count("{98}") == 7


def test_the_api_reference_is_set_ragged_right():
    from docutils import nodes
    from sphinx import addnodes

    def page(docname):
        section = nodes.section("", nodes.title("", "API reference"),
                                nodes.paragraph("", "Every function."))
        return addnodes.start_of_file("", nodes.target(), section, docname=docname)

    document = nodes.document(None, None)
    document += [page("book/10_reward"), page("book/api")]
    assert bookstyle.ragged_api(document)
    section = document[1][1]
    assert isinstance(section[0], nodes.title)
    assert section[1].astext().strip() == "\\bookapibegin"
    assert section[-1].astext().strip() == "\\bookapiend"
    assert not any(isinstance(n, nodes.raw) for n in document[0].findall())
    other = nodes.document(None, None)
    other += page("book/10_reward")
    assert not bookstyle.ragged_api(other)


def test_signatures_run_on_and_break_between_parameters():
    style = (Path(bookstyle.__file__).with_name("bookstyle.sty")).read_text(encoding="utf-8")
    start = style.index("\\renewcommand{\\pysiglinewithargsret}")
    signature = style[start:style.index("\\pysigadjustitemsep", start)]
    # one paragraph as wide as the line, its lines after the first indented; not a box as
    # wide as what the name leaves of the line
    assert "\\hangindent" in signature and "\\settowidth" not in signature
    assert "\\mbox{#3}" in signature  # the return annotation with the closing parenthesis
    # a space inside a parameter is a break of last resort (a penalty below 10000)
    assert re.search(r"\\newcommand\{\\DUrolew\}\[1\]\{\\penalty([1-9]\d{3})\\relax#1\}", style)


def _style() -> str:
    return (Path(bookstyle.__file__).with_name("bookstyle.sty")).read_text(encoding="utf-8")


def test_links_between_exercises_and_solutions_give_a_page_in_print():
    from docutils import nodes

    def link(text, uri):
        return nodes.reference("", "", nodes.inline("", text), refuri=uri, internal=True)

    paragraph = nodes.paragraph("", "", nodes.Text("("),
                                link("solution", "%book/solutions/01_tokens#sol-tokens-1"),
                                nodes.Text(")"))
    back = nodes.paragraph("", "", link("Back to the exercise", "%book/01_tokens#ex-tokens-1"))
    other = nodes.paragraph("", "", link("chapter 2", "%book/02_embeddings#top"))
    document = nodes.document(None, None)
    document += [paragraph, back, other]
    assert bookstyle.page_references(document) == 2
    assert paragraph[2].astext() == (
        ", p.~\\pageref{\\detokenize{book/solutions/01_tokens:sol-tokens-1}}")
    assert paragraph.astext().endswith(")")
    assert back[1].astext() == ", p.~\\pageref{\\detokenize{book/01_tokens:ex-tokens-1}}"
    assert len(other) == 1
    # the exercise in the book: the page of its paragraph's first line, not of the label
    # before it (on the page before where the page breaks there)
    from sphinx import addnodes

    chapter = addnodes.start_of_file(docname="book/01_tokens")
    exercise = nodes.paragraph("", "1.1 Count the bytes.")
    chapter += [nodes.target("", "", ids=["ex-tokens-1"]), exercise]
    back = nodes.paragraph("", "", link("Back to the exercise", "%book/01_tokens#ex-tokens-1"))
    document = nodes.document(None, None)
    document += [chapter, back]
    assert bookstyle.page_references(document) == 1
    assert exercise[0].astext() == "\\label{\\detokenize{book/01_tokens:ex-tokens-1-page}}"
    assert back[1].astext().endswith("\\pageref{\\detokenize{book/01_tokens:ex-tokens-1-page}}")


def test_a_sentence_ending_in_a_colon_keeps_with_its_code_box():
    from docutils import nodes

    def cell(code):
        return nodes.container("", nodes.container("", nodes.literal_block(code, code),
                                                   classes=["cell_input"]), classes=["cell"])

    intro = nodes.paragraph("", "The counts, pair by pair:")
    plain = nodes.paragraph("", "A sentence that ends with a full stop.")
    first, second = cell("x = 1\ny = 2"), cell("z = 3")
    section = nodes.section("", nodes.title("", "Counting"), nodes.paragraph("", "Before."),
                            intro, nodes.target(), first, plain, second)
    document = nodes.document(None, None)
    document += section
    assert bookstyle._lead_in(first) is intro and bookstyle._lead_in(second) is None
    assert bookstyle._box_of(first[0][0]) is first
    assert not bookstyle._under_heading(intro)
    # a paragraph right under its heading: the need stands before the heading
    under = nodes.paragraph("", "Right under the heading:")
    third = cell("w = 4")
    sub = nodes.section("", nodes.title("", "T"), under, third)
    section += sub
    assert bookstyle._lead_in(third) is under and bookstyle._under_heading(under)
    transform = bookstyle.PrintedCodeBoxes.__new__(bookstyle.PrintedCodeBoxes)
    transform.document = document
    transform.run()
    need = 1 + bookstyle.HEADING_LINES
    assert section[section.index(sub) - 1].astext().strip() == f"\\bookkeepwithbox{{{need}}}{{1}}"
    assert section[section.index(intro) - 1].astext().strip() == "\\bookkeepwithbox{1}{2}"
    assert bookstyle._prose_lines("word " * 40) == 3
    style = _style()
    assert "\\newcommand{\\bookkeepwithbox}[2]" in style


def test_table_cells_keep_ranges_units_and_short_groups_whole():
    from docutils import nodes

    head = _row("formula's (T, T)", "CPU s", "speed-up")
    body = [_row("chance 25 %", "97.4 % (96.6-98.2)", "the slowest pair i=7 turns")]
    bookstyle._keep_spans_whole([head, *body], head=[head])
    assert head[1].astext() == "CPU\u00a0s"
    first = head[0][0]
    assert [n.astext() for n in first] == ["formula's ", "\\mbox{", "(T, T)", "}"]
    assert body[0][0].astext() == "chance 25\u00a0%"
    interval = body[0][1][0]
    assert "\\mbox{" in [n.astext() for n in interval if isinstance(n, nodes.raw)]
    assert "97.4\u00a0% " in interval.astext()
    assert "i=7" in [n.astext() for n in body[0][2][0]]
    # a heading breaks at its spaces only: "speed-up" is one word wide
    widths = bookstyle._content_widths([head, *body], body, 78)
    assert widths[2] >= len("speed-up") + bookstyle.CELL_PAD
    assert bookstyle._heading_words("CPU s") == ["CPU s"]
    assert bookstyle._heading_words("trainable parameters") == ["trainable", "parameters"]
    assert bookstyle._formula("sin, i=1") and not bookstyle._formula("sin and cos")
    assert "\\exhyphenpenalty\\@M" in _style().split("sphinxstyletheadfamily", 1)[1][:80]


def test_the_print_style_of_headings_heads_and_contents():
    style = _style()
    # running heads: "1.2 Bytes and UTF-8", as the headings write it
    assert "\\thesection.\\enspace" not in style and "\\thesection\\enspace" in style
    # headings are never hyphenated
    heading = style[style.index("\\g@addto@macro\\py@HeaderFamily"):][:160]
    assert "\\hyphenpenalty\\@M" in heading
    # ... nor end with a word alone on a line: the last line's stretch is finite
    assert "\\parfillskip\\z@\\@plus 10em" in heading
    # an API signature keeps with its description: no item penalty between them
    assert "\\@itempenalty\\@M\\item[\\strut]" in style
    # "10.10" has room before its title in the contents
    m = re.search(r"\\renewcommand\*\{\\l@section\}\{\\@dottedtocline\{1\}\{1.5em\}\{([\d.]+)em\}",
                  style)
    assert m and float(m[1]) > 2.3
    # the date of the build on the copyright page, not the title page
    assert "\\date{}" in style and "on \\book@date" in style


def test_an_index_entry_keeps_its_first_sub_entries():
    style = _style()
    subitem = style[style.index("\\renewcommand\\subitem"):][:160]
    assert "\\ifnum\\book@subitems<\\tw@\\nobreak\\fi" in subitem
    assert "\\global\\book@subitems\\z@" in style[style.index("\\renewcommand\\@idxitem"):][:80]


def test_a_long_entry_of_the_lists_keeps_leader_dots_before_its_page():
    style = _style()
    assert re.search(r"\\patchcmd\{\\@dottedtocline\}\{\\hfill\}"
                     r"\{\\hskip [1-9][.\d]*em \\@plus 1fill", style)


def test_an_empty_table_cell_has_no_empty_paragraph():
    from docutils import nodes

    head = _row("Measure", "book", "Real lines")
    body = [_row("... verse lines", "2.154", ""), _row("real", "0.9", "1.0")]
    table = nodes.table()
    tgroup = nodes.tgroup(cols=3)
    tgroup += [nodes.colspec(colwidth=1) for _ in range(3)]
    tgroup += [nodes.thead("", head), nodes.tbody("", *body)]
    table += tgroup
    nodes.section("", table)
    bookstyle.RightAlignedColumns.layout(table, tgroup, 0)
    assert len(body[0][2]) == 0 and len(body[1][2]) == 1 and len(body[0][0]) == 1


def test_a_long_table_keeps_three_rows_on_either_side_of_a_break(monkeypatch):
    body = [_row(str(k), "x") for k in range(25)]
    bookstyle._keep_rows_together(body)
    kept = [k for k, row in enumerate(body) if row.get("book_nobreak")]
    assert kept == [0, 1, 22, 23]
    grouped = [_row(str(k), "x") for k in range(10)] + [_row("\u2026 k", "x") for _ in "ab"] + [
        _row(str(k), "x") for k in range(10)]
    bookstyle._keep_rows_together(grouped)
    assert [k for k, row in enumerate(grouped) if row.get("book_nobreak")] == [
        0, 1, 9, 10, 19, 20]
    short = [_row(str(k), "x") for k in range(5)]
    bookstyle._keep_rows_together(short)
    assert not any(row.get("book_nobreak") for row in short)

    class Writer(bookstyle.BookLaTeXTranslator):
        def __init__(self):  # only what depart_row reads
            self.body = []

    writer = Writer()
    # Sphinx's depart_row ends a row with "\\" and a newline, then a rule
    monkeypatch.setattr(bookstyle.LaTeXTranslator, "depart_row", lambda self, node: (
        self.body.extend(["\\\\\n", "\\sphinxhline"])))
    writer.depart_row(body[0])
    writer.depart_row(body[5])
    assert writer.body == ["\\\\*\n", "\\sphinxhline", "\\\\\n", "\\sphinxhline"]


def test_a_framed_text_box_starts_where_it_or_its_first_lines_fit():
    from docutils import nodes

    short = nodes.admonition("", nodes.title("", "Solution"),
                             nodes.paragraph("", "word " * 30))
    long = nodes.admonition("", nodes.title("", "Discussion"),
                            *(nodes.paragraph("", "word " * 60) for _ in range(6)))
    section = nodes.section("", nodes.title("", "Exercise 1.1"),
                            nodes.paragraph("", "Back to the exercise."), short)
    chapter = nodes.section("", nodes.title("", "Solutions"), section,
                            nodes.section("", nodes.title("", "Exercise 1.2"),
                                          nodes.paragraph("", "Text."), long))
    document = nodes.document(None, None)
    document += chapter
    assert bookstyle.box_lines(short) == bookstyle.BOX_PAD + 3  # 150 characters of text
    assert bookstyle.keep_boxes_whole(document) == 2
    # the short box whole, with its heading and the line above it: before the heading
    raw = chapter[1]
    need = bookstyle.BOX_PAD + 3 + bookstyle.HEADING_LINES + 1
    assert isinstance(raw, nodes.raw) and raw.astext().strip() == f"\\bookkeepbox{{{need}}}"
    # the long box: its first lines (and its heading and line above, before the heading)
    assert chapter[-2].astext().strip() == (
        f"\\bookkeepbox{{{bookstyle.BOX_HEAD + bookstyle.HEADING_LINES + 1}}}")
    # after more prose than a line, the need stands just before the box
    third = nodes.admonition("", nodes.title("", "Note"), nodes.paragraph("", "word"))
    nodes.section("", nodes.title("", "T"), nodes.paragraph("", "One."),
                  nodes.paragraph("", "Two."), third)
    assert bookstyle.keep_boxes_whole(third.parent) == 1
    assert third.parent[-2].astext().strip() == (
        f"\\bookkeepbox{{{bookstyle.BOX_PAD + 1}}}")
    assert "\\newcommand{\\bookkeepbox}[1]" in _style()
    # not before the API reference's entries, which docutils counts as admonitions
    from sphinx import addnodes

    entry = addnodes.desc("", nodes.paragraph("", "read_problem(error)"))
    assert bookstyle.keep_boxes_whole(nodes.section("", nodes.paragraph("", "A."), entry)) == 0


def _cell(code: str, out: str):
    """A notebook cell as myst-nb writes it: its code, then its output."""
    from docutils import nodes

    return nodes.container("", nodes.container("", nodes.literal_block(code, code),
                                               classes=["cell_input"]),
                           nodes.container("", nodes.literal_block(out, out),
                                           classes=["cell_output"]), classes=["cell"])


def test_a_long_code_cell_breaks_at_its_last_break_rather_than_part_from_its_output():
    from docutils import nodes

    code = "\n".join(f"x{k} = {k}" for k in range(29))
    out = "\n".join(f"line {k}" for k in range(14))
    cell, short = _cell(code, out), _cell("a = 1", "1")
    document = nodes.document(None, None)
    document += nodes.section("", nodes.title("", "T"), cell, short)
    transform = bookstyle.PrintedCodeBoxes.__new__(bookstyle.PrintedCodeBoxes)
    transform.document = document  # (run reads only the document)
    transform.run()
    raws = [n.astext() for n in document.findall(nodes.raw)]
    assert "\\bookcodetail{29}{" in raws[0] and raws[0].rstrip().endswith("{25}")
    assert raws[0].index("\\bookcodebox") < raws[0].index("\\bookcodetail")
    assert not any("\\bookcodetail" in r for r in raws[1:])  # the output, and a short cell
    # a cell that fits with its output, but not with the sentence that introduces it: the
    # code starts under the sentence and may break
    code = "\n".join(f"y{k} = {k}" for k in range(12))
    out = "\n".join(f"row {k}" for k in range(8))
    cell = _cell(code, out)
    lead = nodes.paragraph("", "word " * 200 + "as follows:")
    document = nodes.document(None, None)
    document += nodes.section("", nodes.title("", "T"), nodes.paragraph("", "A."), lead, cell)
    transform.document = document
    transform.run()
    raws = [n.astext() for n in document.findall(nodes.raw)]
    # (a paragraph of 14 lines may break: its last lines go with the code's first rows)
    assert raws[0].strip() == "\\bookbreakinlead{14}{12}{4}"
    section = document[0]
    assert section.index(lead) - 1 == section.index(next(section.findall(nodes.raw)))
    assert "\\bookcodebox{000011111000}{4}" in raws[1] and "\\bookcodetail{12}{20}{8}" in raws[1]
    style = _style()
    assert "\\newcommand{\\bookcodetail}[3]" in style
    assert "\\newcommand{\\bookbreakinlead}[3]" in style
    assert "\\global\\pagegoal\\dimexpr\\pagetotal+#3\\bookcoderow" in style


def test_a_sentence_ending_in_a_colon_keeps_with_its_table():
    from docutils import nodes

    def table(n_rows: int, caption: str):
        rows = [nodes.row("", nodes.entry("", nodes.paragraph("", str(k))))
                for k in range(n_rows)]
        group = nodes.tgroup("", nodes.colspec(), nodes.thead("", rows[0]),
                             nodes.tbody("", *rows[1:]), cols=1)
        return nodes.table("", nodes.title("", caption), group)

    short, long = table(8, "The longest tokens."), table(40, "word " * 20)
    # 8 rows, a line of caption and the rules, at 1.25 rows of code a row
    assert bookstyle.table_rows(short) == math.ceil(bookstyle.TABLE_ROW * 10)
    # a long table breaks across pages: its heading and first rows, and two lines of caption
    assert bookstyle.table_rows(long) == math.ceil(
        bookstyle.TABLE_ROW * (1 + bookstyle.KEEP_ROWS + 2 + 1))
    intro = nodes.paragraph("", "The longest tokens, in capitals when they label a speaker:")
    output = nodes.container("", short, classes=["cell_output"])
    section = nodes.section("", nodes.title("", "T"), nodes.paragraph("", "A."), intro,
                            nodes.container("", output, classes=["cell"]),
                            nodes.paragraph("", "Then a table after a full stop."), long)
    document = nodes.document(None, None)
    document += section
    transform = bookstyle.PrintedCodeBoxes.__new__(bookstyle.PrintedCodeBoxes)
    transform.document = document
    transform.run()
    raws = [n.astext().strip() for n in document.findall(nodes.raw)]
    assert raws == [f"\\bookkeepwithbox{{1}}{{{bookstyle.table_rows(short)}}}"]
    assert section[section.index(intro) - 1].astext().strip() == raws[0]


def test_a_framed_box_that_ends_in_a_colon_keeps_with_the_code_after_it():
    from docutils import nodes

    def solution(words: int):
        return nodes.admonition("", nodes.title("", "Solution"),
                                nodes.paragraph("", "word " * words + "the check:"))

    short, long, longer = solution(60), solution(250), solution(2000)
    cells = [_cell("x = 1\ny = 2", "3") for _ in range(3)]
    section = nodes.section("", nodes.title("", "Solutions"), nodes.paragraph("", "A."),
                            nodes.paragraph("", "B."), short, cells[0], long, cells[1],
                            longer, nodes.target(), cells[2])
    rows = 2 + 1 + bookstyle.OUTPUT_GAP  # the code, its output and the space between
    assert bookstyle._rows_introduced(short) == rows == bookstyle._rows_introduced(long)
    assert bookstyle._lead_in(cells[0]) is short and bookstyle._lead_in(cells[2]) is longer
    assert bookstyle.keep_boxes_whole(section) == 3
    raws = [n.astext().strip() for n in section.findall(nodes.raw)]
    lines = [bookstyle.box_lines(box) for box in (short, long, longer)]
    assert lines[0] <= bookstyle.WHOLE_BOX < lines[1] < 23 < lines[2]
    # a short box, and a long one that fits with the code's first rows on half a page, whole
    assert raws[:2] == [f"\\bookkeepwithbox{{{n}}}{{{rows}}}" for n in lines[:2]]
    # a box longer than that: its first lines, as any long box
    assert raws[2] == f"\\bookkeepbox{{{bookstyle.BOX_HEAD}}}"
    # the same rows once PrintedCodeBoxes has put its LaTeX before each code and output box
    document = nodes.document(None, None)
    document += section
    transform = bookstyle.PrintedCodeBoxes.__new__(bookstyle.PrintedCodeBoxes)
    transform.document = document
    transform.run()
    assert isinstance(cells[0][1][0], nodes.raw)
    assert bookstyle._rows_introduced(short) == rows
    # a box that ends with a full stop, or with no code after it: as before
    plain = nodes.admonition("", nodes.title("", "Note"), nodes.paragraph("", "Done."))
    nodes.section("", nodes.title("", "T"), nodes.paragraph("", "One."),
                  nodes.paragraph("", "Two."), plain, _cell("z = 1", "1"))
    assert bookstyle._rows_introduced(plain) is None
    last = solution(10)
    nodes.section("", nodes.title("", "T"), nodes.paragraph("", "One."),
                  nodes.paragraph("", "Two."), last)
    assert bookstyle._rows_introduced(last) is None


def test_a_number_keeps_its_unit_on_its_line():
    from docutils import nodes

    paragraph = nodes.paragraph("", "", nodes.Text("It spends 2.139 bits a character, (95 % "
                                                   "interval), in 3 steps of 12 heads; "
                                                   "section 2 heads the list. A loss of "),
                                nodes.inline("", "1.48"), nodes.Text(" nats, and "),
                                nodes.literal("", "x = 2 bits"), nodes.Text(" bits, "),
                                nodes.math("", "32 \\times 128 = 4096"), nodes.Text(" tokens."))
    document = nodes.document(None, None)
    document += paragraph
    bookstyle.units_with_numbers(document)
    text = paragraph.astext()
    assert "2.139\u00a0bits" in text and "(95\u00a0%" in text and "3\u00a0steps" in text
    assert "12\u00a0heads" in text and "1.48\u00a0nats" in text
    assert "x = 2 bits" in text  # code is not changed
    assert "2 bits bits," in text  # nor is the text after code
    assert text.endswith("4096\u00a0tokens.")  # a formula that ends in a number is one


def test_a_colon_keeps_its_last_line_with_the_list_or_text_it_introduces():
    from docutils import nodes

    def doc(*children):
        document = nodes.document(None, None)
        document.extend(children)
        bookstyle.colon_leads_keep_with_text(document)
        return document

    lead = nodes.paragraph("", "The pieces:")
    items = nodes.bullet_list("", nodes.list_item("", nodes.paragraph("", "one")))
    document = doc(lead, items)
    assert lead[-1].astext() == "\\nopagebreak"
    assert [type(n).__name__ for n in document] == ["paragraph", "raw", "bullet_list", "raw"]
    assert "\\booknobreakbeforelist" in document[1].astext()
    assert "\\booknobreakbeforelist" in _style()
    # a paragraph after the colon: only the penalty; no colon, or a code box next: nothing
    lead, text = nodes.paragraph("", "It says:"), nodes.paragraph("", "more.")
    assert len(doc(lead, text)) == 2 and lead[-1].astext() == "\\nopagebreak"
    plain = nodes.paragraph("", "A sentence.")
    boxed = nodes.paragraph("", "It prints:")
    doc(plain, nodes.paragraph("", "more."))
    doc(boxed, nodes.literal_block("", "x = 1"))
    assert plain.astext() == "A sentence." and boxed.astext() == "It prints:"


def test_a_dataclass_is_printed_once_with_what_its_factories_make():
    import dataclasses

    from buildllm.config import TrainConfig

    @dataclasses.dataclass
    class Box:
        size: int = 3
        items: list = dataclasses.field(default_factory=list)
        made: object = dataclasses.field(default_factory=lambda: dict(a=1))

    signature = "(size: int = 3, items: list = <factory>, made: object = <factory>)"
    new, _ = bookstyle.readable_factory_defaults(None, "class", "Box", Box, {}, signature, None)
    assert new == "(size: int = 3, items: list = [], made: object = dict(a=1))"
    assert bookstyle.skip_dataclass_fields(None, "class", "items", None, False, {}) is True
    assert bookstyle.skip_dataclass_fields(None, "class", "to_dict", None, False, {}) is None
    assert bookstyle.skip_dataclass_fields(None, "module", "size", None, False, {}) is None
    new, _ = bookstyle.readable_factory_defaults(None, "class", "TrainConfig", TrainConfig, {},
                                                 "(model: GPTConfig = <factory>)", None)
    assert new == "(model: GPTConfig = preset('book'))"
    # a module class without arguments of its own: no torch "(*args, **kwargs)"
    for signature in ("(*args: Any, **kwargs: Any)", "(*args: ~typing.Any, **kwargs: ~typing.Any)"):
        assert bookstyle.readable_factory_defaults(
            None, "class", "NoPositions", object, {}, signature, None) == ("()", None)
    # another class, not a dataclass: its members are documented
    bookstyle.readable_factory_defaults(None, "class", "Plain", int, {}, "()", None)
    assert bookstyle.skip_dataclass_fields(None, "class", "items", None, False, {}) is None


def test_short_code_in_the_text_never_breaks_at_its_spaces():
    from docutils import nodes

    short, long = nodes.literal("", "(B, T, C)"), nodes.literal("", "x" * 15 + " and more")
    document = nodes.document(None, None)
    document += nodes.paragraph("", "", short, nodes.Text(" and "), long)
    bookstyle.short_code_whole(document)
    assert short.astext() == "(B,\u00a0T,\u00a0C)"
    assert long.astext() == "x" * 15 + " and more"
    # longer code keeps the spaces of its strings
    tokens = nodes.literal("", "['Hello', ',', ' world', \"a b\"] and more")
    document += nodes.paragraph("", "", tokens)
    bookstyle.short_code_whole(document)
    assert tokens.astext() == "['Hello', ',', '\u00a0world', \"a\u00a0b\"] and more"


def test_utf8_is_not_a_number_and_gpt2_is_not_broken_at_its_hyphen():
    from docutils import nodes

    cell = nodes.paragraph("", "UTF-8 bytes of a GPT-2-shaped model, distinct-2 and 4 bytes")
    title = nodes.title("", "From GPT-2 on")
    document = nodes.document(None, None)
    document += [nodes.section("", title, cell)]
    bookstyle.units_with_numbers(document)
    bookstyle.names_with_numbers_whole(document)
    # "8 bytes" of "UTF-8 bytes" is no number and its unit
    assert cell.astext() == ("\\mbox{UTF-8} bytes of a \\mbox{GPT-2}-shaped model, "
                             "\\mbox{distinct-2} and 4\u00a0bytes")
    assert [type(n).__name__ for n in cell][:3] == ["raw", "Text", "raw"]
    assert title.astext() == "From GPT-2 on"  # headings are left as they are


def test_code_in_the_text_breaks_before_a_dot_or_slash_and_never_after_a_comma():
    style = _style()
    assert "\\renewcommand*\\sphinxbreaksbeforeactivelist{\\do\\.\\do\\/}" in style
    after = style[style.index("\\renewcommand*\\sphinxbreaksafteractivelist"):].split("\n")[0]
    assert "\\do\\," not in after and "\\do\\." not in after and "\\do\\/" not in after


def test_a_default_value_of_the_api_never_breaks_at_its_spaces():
    from docutils import nodes

    default = nodes.inline("", "(1.0, 1.0, 1.0)", classes=["default_value"])
    name = nodes.inline("", "weights: tuple", classes=["n"])
    document = nodes.document(None, None)
    document += nodes.paragraph("", "", name, default)
    bookstyle.defaults_whole(document)
    assert default.astext() == "(1.0,\u00a01.0,\u00a01.0)"
    assert name.astext() == "weights: tuple"


def test_et_al_is_never_split():
    assert bookstyle.et_al_whole("as Sennrich et al. [2016] say") == (
        "as Sennrich et\u00a0al. [2016] say")
    assert bookstyle.et_al_whole("et al.") == "et\u00a0al."  # as the citations print it
    assert bookstyle.et_al_whole("Bennet al.") == "Bennet al."


def test_a_cell_is_measured_by_its_words_with_no_break_spaces_inside():
    assert bookstyle._words("18.5\u00a0(13.7\u201324.5) and  more") == [
        "18.5\u00a0(13.7\u201324.5)", "and", "more"]

"""The book's Sphinx additions, loaded by `_config.yml` (`local_extensions`).

- The edition on the title page: the library's version, and on its back the git commit the
  book was built from, dated by that commit (not by the day of the build).
- The printed page design, `bookstyle.sty` (this folder), loaded into the LaTeX; before each
  code box the number of its lines and of the rows that must fit on the page
  (`\bookcodebox`), so that a box splits only with four lines on each side and a code cell's
  output starts on the page where its code ends; table columns that Markdown aligns right
  (`|--:|`), or that hold only numbers, are right-aligned in print too, and a table's columns
  are as wide as their cells need, so that numbers and intervals never wrap, nor do short
  formulas ("top-p = 0.9", "(97, 97) = a + a"), also in a table that gives its widths.
- The API reference ragged right, its signatures one paragraph whose parameters run on
  (bookstyle.sty).
- The book's index lists ideas, not the API: the entries that autodoc makes for every function
  of the API reference leave the index (the reference's own headings and links stay).
- Code as a reader reads it: listings of the library and the chapters' code cells show
  docstring roles as their names (":class:`~buildllm.model.GPT`" as "GPT"), inline code
  without reST's double backquotes ("``(B, T, C)``" as "(B, T, C)"), and no linter
  comments ("# noqa: E731"); the API reference shows a dataclass field's default factory
  as what it makes ("{}", "preset('book')"), not "<factory>" (which Sphinx cannot parse, so
  it printed the raw signature), and a dataclass's fields once, in its signature, not again
  as attributes.
- Index entries on the term's own page: an `{index}` directive written before a paragraph
  (or under a heading) gives each of its terms an anchor at the term's first mention in the
  prose that follows (within the next two headings), or under a heading that names it. An
  entry may name the words it anchors on, when the prose says it otherwise:
  "byte-pair encoding; tie-breaking <tie between>". A term not found, at the start of the
  next paragraph (the build says so).
- Print's own links between exercises and solutions: "(solution, p. 205)", "Back to the
  exercise, p. 17" (``\\pageref`` on the link's target).
- What must stay together on a page: a sentence that ends with a colon and the code box it
  introduces (and a heading right above it), or its last line and the first lines of the
  list or paragraph it introduces; a framed box of text (a solution) whole, or its
  first lines; a long code cell's last lines and its output; a long table's first and last
  three rows. In table cells, a parenthesised range ("(96.6-98.2)"), a number and its unit
  ("25 %"), a heading's short unit ("CPU s") and "i=1" never wrap; empty cells are one line.
- A number and its unit on one line in print ("2.139 bits", "96 MiB", "95 %"), short code
  in the text too ("(B, T)"), and a name such as "GPT-2" (not broken at its hyphen).
- Author-year labels in the bibliography, "[Vaswani et al., 2017]", the same style as the
  citations in the text ("Vaswani et al., 2017"), sorted by author and year.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import math
import re
import subprocess
import textwrap
import tokenize
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from docutils import nodes
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting
from sphinx import addnodes
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.writers.latex import LaTeXTranslator

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
STYLE = Path(__file__).resolve().with_name("bookstyle.sty")
# Characters of 8 pt DejaVu Sans Mono on a line of a code box (160 mm, less its padding).
CODE_COLUMNS = 92
# What a row of a box holds in fact, measured in the PDF: a line of 94 characters fits, one
# of 95 wraps (chapter 1); tests/book_checks.py refuses an output line longer than that.
# (CODE_COLUMNS keeps the library's listings two characters inside.)
BOX_COLUMNS = 94
# A code cell whose code and output's first rows fit in this many rows of code (about a third
# of a page) starts on a page where they all fit; a longer one breaks where it may. (At 30, half
# a page, 28 pages were a third empty or more: a long box moved whole to the next page.) What
# lies between the code's last row and the output's first, in rows: the code box's bottom and
# the output box's top (padding, rules and the space between: 17 pt, measured in the PDF),
# with room to spare for the output box's own check for space; with 2, a one-line output fell
# on the page after its code (chapter 4).
KEEP_TOGETHER = 20
OUTPUT_GAP = 4
# A sentence that ends with a colon starts on the page where the box it introduces starts, if
# the two take at most this many rows (about half a page).
KEEP_LEAD = 30
# Tables of more rows than this are set as longtables, which break across pages.
LONG_TABLE = 20
# Tables of this many columns are set in \small, of more in \footnotesize.
WIDE_TABLE = 7


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def set_edition(app, config) -> None:
    """``release`` = "0.2.0, commit abc1234"; ``today`` = the commit's date."""
    try:
        release = version("buildllm")
    except PackageNotFoundError:
        release = "unreleased"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with local changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    config.release = f"{release}, commit {commit}{dirty}" if commit else release
    config.version = release
    config.today = _git("log", "-1", "--format=%cs") or config.today
    # The LaTeX: the design file, and the edition and commit for the title and copyright pages.
    config.latex_additional_files = [*config.latex_additional_files, str(STYLE)]
    elements = dict(config.latex_elements)
    elements["preamble"] = (
        f"\\renewcommand{{\\bookedition}}{{{release}}}\n"
        f"\\renewcommand{{\\bookcommit}}{{{commit or 'unknown'}{dirty}}}\n"
        + elements.get("preamble", ""))
    config.latex_elements = elements


def _surname(person) -> str:
    """"de Jong", "Vaswani": the name's last part, without BibTeX's braces."""
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabels(BaseLabelStyle):
    """"Shannon, 1948", "Kingma and Ba, 2015", "Vaswani et al., 2017"; a, b, ... when two
    entries would share a label."""

    def format_labels(self, sorted_entries):
        labels = [self.label(entry) for entry in sorted_entries]
        for label in labels:
            if labels.count(label) > 1:
                k = sum(1 for seen in labels[:labels.index(label)] if seen == label)
                yield label + "abcdefghij"[k]
            else:
                yield label

    @staticmethod
    def label(entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [_surname(p) for p in persons]
        if len(names) >= 3 or (names and names[-1] == "others"):
            who = f"{names[0]} et al."
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = names[0] if names else entry.fields.get("title", "Anon.")
        return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearSorting(AuthorYearTitleSorting):
    """Author, year, title, with a name's BibTeX braces left out: "{Gemma Team}" sorts under
    G, not after Z."""

    def person_key(self, person) -> str:
        return super().person_key(person).replace("{", "").replace("}", "")


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt formatting, with author-year labels, sorted by author then year."""

    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title_plain"


ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):"
                  r"`(?P<short>~?)(?P<text>[^`<]*?)\s*(?:<(?P<target>[^>`]+)>)?`")
NOQA = re.compile(r"#\s*noqa\b(?::\s*[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*)?\s*")
# reST inline code in a docstring, ``(B, T, C)``: printed as its text.
INLINE_CODE = re.compile(r"``([^`\n]+?)``")


def _role_text(match: re.Match) -> str:
    text = match["text"]
    if match["short"] and not match["target"]:
        return text.rsplit(".", 1)[-1]
    return text


def readable_code(code: str) -> str:
    """Code as printed: roles as their names, reST's double backquotes left out, no
    ``# noqa`` (a comment after it stays)."""
    lines = []
    for line in INLINE_CODE.sub(r"\1", ROLE.sub(_role_text, code)).split("\n"):
        if (m := NOQA.search(line)) is not None:
            rest = line[m.end():]
            line = line[:m.start()] + "# " + rest if rest.strip() else line[:m.start()].rstrip()
        lines.append(line)
    return "\n".join(lines)


def readable_listings(app, doctree) -> None:
    """Rewrite the text of ``literalinclude`` listings and of code cells (not outputs)."""
    for block in list(doctree.findall(nodes.literal_block)):
        parent = block.parent
        is_cell = isinstance(parent, nodes.container) and "cell_input" in parent["classes"]
        if not (is_cell or block.get("source")):
            continue
        text = block.astext()
        new = readable_code(text)
        if new != text:
            block.rawsource = new
            block[:] = [nodes.Text(new)]


# The fields of the dataclass whose members autodoc documents now: its signature lists them,
# with their types and defaults, so they are not listed again one by one (they have no
# docstrings of their own).
_signature_fields: set[str] = set()


def _factory_text(factory) -> str:
    """What a default factory makes, as code: ``{}`` for dict, ``[]`` for list,
    ``preset('book')`` for ``lambda: preset("book")``, ``Name()`` for a class; ``...`` where
    it cannot be told."""
    if factory in (dict, list, set, tuple):
        return {dict: "{}", list: "[]", set: "set()", tuple: "()"}[factory]
    if getattr(factory, "__name__", "") != "<lambda>":
        return f"{getattr(factory, '__qualname__', '...')}()"
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(factory)).strip())
    except (OSError, TypeError, SyntaxError):
        return "..."
    body = next((n.body for n in ast.walk(tree) if isinstance(n, ast.Lambda)), None)
    return ast.unparse(body) if body is not None else "..."


# What autodoc shows for a torch.nn.Module subclass that takes no arguments of its own
# (NoPositions, ReLUSquared): torch's own "(*args, **kwargs)", its annotations as autodoc
# writes them ("~typing.Any", shortened later).
MODULE_SIGNATURE = re.compile(r"\(\*args: [\w.~]*Any, \*\*kwargs: [\w.~]*Any\)")


def readable_factory_defaults(app, what, name, obj, options, signature, return_annotation):
    """``= <factory>`` (a dataclass field's default factory) as what the factory makes
    (``= {}``, ``= preset('book')``), and ``()`` for a module class that takes no arguments;
    remembers a class's dataclass fields for :func:`skip_dataclass_fields`."""
    if what == "class":
        _signature_fields.clear()
        if dataclasses.is_dataclass(obj):
            _signature_fields.update(f.name for f in dataclasses.fields(obj))
        if signature and MODULE_SIGNATURE.fullmatch(signature):  # no __init__ of its own
            return "()", return_annotation
    if signature and "<factory>" in signature:
        if what == "class" and dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                if f.default_factory is not dataclasses.MISSING:
                    made = _factory_text(f.default_factory)
                    signature = signature.replace("<factory>", made, 1)
        return signature.replace("<factory>", "..."), return_annotation
    return None


def skip_dataclass_fields(app, what, name, obj, skip, options):
    """A dataclass's fields are in its signature: not documented again as attributes."""
    return True if what == "class" and name in _signature_fields else None


# An index entry may name the words it anchors on, after its text: "byte-pair encoding;
# tie-breaking <ties are broken>" is listed as "tie-breaking" and anchored where the prose says
# "ties are broken" (the markup never reaches the index).
_ANCHOR_WORDS = re.compile(r"\s*<([^<>]+)>\s*$")


def _index_term(value: str) -> str:
    """The words that an index entry's text names: "RoPE (rotary position embedding)" ->
    "RoPE", "byte-pair encoding; merge" -> "merge"; the words it names to anchor on, if any:
    "tie-breaking <ties>" -> "ties"."""
    if (m := _ANCHOR_WORDS.search(value)) is not None:
        return m[1].strip()
    return re.sub(r"\s*\(.*?\)", "", value.split(";")[-1]).strip()


def _index_text(value: str) -> str:
    """The entry as the index lists it: without the words it anchors on."""
    return _ANCHOR_WORDS.sub("", value)


_NOT_TEXT = (nodes.FixedTextElement, nodes.math, nodes.raw, nodes.title, nodes.comment,
             nodes.target, nodes.caption, addnodes.index)


def _is_prose(node: nodes.Node) -> bool:
    return not any(isinstance(a, _NOT_TEXT) or "cell" in a.get("classes", ())
                   for a in _ancestors(node) if isinstance(a, nodes.Element))


def _term_pattern(term: str) -> re.Pattern:
    """The term as prose may write it: any case, and a line break or a run of spaces (or an
    inline element's edge) wherever the term has a space."""
    words = [re.escape(w) for w in term.split()]
    return re.compile(r"(?<![\w-])" + r"\s+".join(words), re.IGNORECASE)


def _first_mention(start: nodes.Node, term: str, headings: int = 2):
    """(text node, offset) of the first mention of ``term`` after ``start``, before the text
    has passed ``headings`` more headings (an index directive written at the end of the
    section before the one that explains its term still finds it), or None. A mention is one
    in prose, or a heading that names the term (the directive's own, or one that follows): it
    counts as a mention at the start of the first paragraph under it. The prose of a
    paragraph is read as one text, so that a term across a line break or half in emphasis
    ("*residual* connection") is found. Code cells, code, math and captions do not count."""
    pattern = _term_pattern(term)
    section = next((a for a in _ancestors(start) if isinstance(a, nodes.section)), None)
    named = (section is not None and isinstance(section[0], nodes.title)
             and pattern.search(section[0].astext()) is not None)
    passed = 0
    for node in start.findall(include_self=False, siblings=True, ascend=True):
        if isinstance(node, nodes.title):
            passed += 1
            if passed > headings:
                return None
            named = named or pattern.search(node.astext()) is not None
        if not isinstance(node, nodes.paragraph) or not _is_prose(node):
            continue
        texts = [t for t in node.findall(nodes.Text) if _is_prose(t)]
        if not texts:
            continue
        if named:
            return texts[0], 0
        joined = "".join(str(t) for t in texts)
        if (m := pattern.search(joined)) is None:
            continue
        at = m.start()
        for text in texts:
            if at < len(str(text)):
                return text, at
            at -= len(str(text))
    return None


def _insert_before(text: nodes.Text, offset: int, new: list[nodes.Node]) -> None:
    """Put ``new`` before character ``offset`` of ``text``: inside its paragraph, or before
    the inline element (emphasis, code, link) that holds it."""
    parent = text.parent
    if isinstance(parent, nodes.paragraph):
        at = parent.index(text)
        before, after = str(text)[:offset], str(text)[offset:]
        parent[at:at + 1] = [*([nodes.Text(before)] if before else []), *new, nodes.Text(after)]
        return
    inline = text
    while inline.parent is not None and not isinstance(inline.parent, nodes.paragraph):
        inline = inline.parent
    if inline.parent is None:
        return
    at = inline.parent.index(inline)
    inline.parent[at:at] = new


class IndexAtTheTerm(SphinxTransform):
    """Move each entry of a block ``index`` directive to its term's first mention."""

    default_priority = 800  # before SphinxDomains (850) records the entries and their anchors

    def apply(self, **kwargs) -> None:
        for index in list(self.document.findall(addnodes.index)):
            parent = index.parent
            if parent is None or isinstance(parent, nodes.TextElement):
                continue  # an inline {index} role: already at its term
            if isinstance(index.next_node(descend=False, siblings=True), addnodes.desc):
                continue  # the API reference's entry of an object: at the object
            kept = []
            for k, entry in enumerate(index["entries"]):
                kind, value, tid, main, key = entry
                found = _first_mention(index, _index_term(value))
                value = _index_text(value)
                if found is None:
                    logger.info("index: %r is not named in the prose after its directive; "
                                "anchored at the next paragraph", value, location=index)
                    kept.append((kind, value, tid, main, key))
                    continue
                anchor = f"{tid}-{k}"
                new_target = nodes.target("", "", ids=[anchor])
                self.document.ids[anchor] = new_target
                new_index = addnodes.index(entries=[(kind, value, anchor, main, key)],
                                           inline=True)
                _insert_before(*found, [new_target, new_index])
            # Terms the prose does not name as written: at the start of the next paragraph,
            # so that a page break before that paragraph does not leave them behind.
            paragraph = next((p for p in index.findall(nodes.paragraph, include_self=False,
                                                       siblings=True, ascend=True)
                              if _is_prose(p)), None)
            if kept and paragraph is not None and paragraph.children:
                anchor = f"{kept[0][2]}-at"
                new_target = nodes.target("", "", ids=[anchor])
                self.document.ids[anchor] = new_target
                new_index = addnodes.index(entries=[(kind, value, anchor, main, key)
                                                    for kind, value, _tid, main, key in kept],
                                           inline=True)
                paragraph[0:0] = [new_target, new_index]
                kept = []
            if kept:
                index["entries"] = kept
            else:
                # (docutils has already moved the directive's anchor to the next paragraph)
                parent.remove(index)


def drop_api_index_entries(app, doctree) -> None:
    """Remove the index entries of the API reference's page (``book/api``), from the page and
    from what the index domain has recorded (the HTML index is built from that)."""
    if app.env.docname.endswith("api"):
        for node in list(doctree.findall(addnodes.index)):
            node.parent.remove(node)
        app.env.get_domain("index").entries.pop(app.env.docname, None)


def ragged_api(document, docname: str = "book/api") -> bool:
    """Set the API reference ragged right: ``\\bookapibegin`` after its title and
    ``\\bookapiend`` at its end (bookstyle.sty), in the book's LaTeX, where each page's
    doctree is a ``start_of_file`` node. Whether the page was found."""
    for page in document.findall(addnodes.start_of_file):
        if page.get("docname") != docname:
            continue
        section = next((n for n in page.children if isinstance(n, nodes.section)), None)
        if section is None or not section.children:
            return False
        at = 1 if isinstance(section[0], nodes.title) else 0
        section.insert(at, nodes.raw("", "\n\\bookapibegin\n", format="latex"))
        section.append(nodes.raw("", "\n\\bookapiend\n", format="latex"))
        return True
    return False


class RaggedAPI(SphinxPostTransform):
    """The API reference ragged right in print (see ``ragged_api``)."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        if not ragged_api(self.document):
            logger.warning("bookstyle: no page book/api in the LaTeX; its text stays justified")
        defaults_whole(self.document)


def defaults_whole(document) -> None:
    """No-break spaces in the default values of the API's signatures: "(1.0, 1.0, / 1.0)"
    was split at a line's end."""
    for default in list(document.findall(nodes.inline)):
        if "default_value" in default["classes"]:
            for text in list(default.findall(nodes.Text)):
                if " " in text:
                    text.parent.replace(text, nodes.Text(str(text).replace(" ", "\u00a0")))


def _rows(line: str, columns: int = CODE_COLUMNS) -> int:
    """Printed rows of one line of code: a long line wraps."""
    return max(1, math.ceil(len(line.expandtabs()) / columns))


# A break that the statements of a box offer is taken only if it leaves no run of more lines
# than this without one (a long docstring or call): otherwise the box breaks at any line.
STATEMENT_RUN = 30


def code_box_need(text: str, columns: int = CODE_COLUMNS) -> tuple[str, int]:
    """(breaks, rows) for a code box: a 0 or 1 for each line, 1 where the box may break
    before that line (at least four non-blank lines on each side, and no blank line at the
    top of the next page; in Python, only before a statement, and not between a block's
    header and its body: ``_statement_starts``), and the rows that must fit on the page
    where the box starts: up to its first break, or all of them. ``columns``: the
    characters a row holds."""
    lines = text.rstrip("\n").split("\n")
    filled = [bool(line.strip()) for line in lines]
    anywhere = [filled[j] and sum(filled[:j]) >= 4 and sum(filled[j:]) >= 4
                for j in range(len(lines))]
    starts = _statement_starts(text, len(lines))
    clean = [a and s for a, s in zip(anywhere, starts)]
    at = [0] + [j for j, c in enumerate(clean) if c] + [len(lines)]
    if any(clean) and max(b - a for a, b in zip(at, at[1:])) <= STATEMENT_RUN:
        anywhere = clean
    breaks = "".join("1" if a else "0" for a in anywhere)
    first = breaks.find("1")
    return breaks, sum(_rows(line, columns)
                       for line in (lines if first < 0 else lines[:first]))


def _statement_starts(text: str, count: int) -> list[bool]:
    """For each of ``count`` lines of ``text``, whether a page may break before it: where
    it starts a statement or a comment, but not the first line of a block (after a header
    that ends with a colon, or a decorator). A page broke after "def weights(q, k,
    mask=None):", inside a list comprehension, after "with torch.no_grad():". Every line
    where ``text`` is not Python (an output)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [True] * count
    starts = [False] * count
    fresh, held, previous = True, False, ""  # held: the next line stays with this one
    for tok in tokens:
        row = tok.start[0] - 1
        if tok.type in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NEWLINE:  # the end of a statement
            fresh, held = True, held or previous == ":"
        elif tok.type == tokenize.COMMENT:
            if fresh and row < count:  # a comment on a line of its own
                starts[row] = not held
        else:
            if fresh:
                if row < count:
                    starts[row] = not held
                fresh, held = False, tok.string == "@"  # a decorator holds its def
            previous = tok.string
    return starts


class PrintedCodeBoxes(SphinxPostTransform):
    """``\\bookcodebox{breaks}{rows}`` before each code box of the LaTeX. A code cell's box
    also reserves the first rows of its output's box, so that the output starts on the page
    where the code ends (unless together they would take more than half a page)."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        for block in list(self.document.findall(nodes.literal_block)):
            if any(isinstance(a, (nodes.table, nodes.footnote)) for a in _ancestors(block)):
                continue
            breaks, rows, tail = code_box_rows(block)
            target = block.parent if _is_captioned(block) else block
            latex = f"\n\\bookcodebox{{{breaks}}}{{{rows}}}{tail}\n"
            target.parent.insert(target.parent.index(target),
                                 nodes.raw("", latex, format="latex"))
            if not _is_output(block):
                _keep_lead_with(_lead_in(_box_of(block)), rows)
        for table in list(self.document.findall(nodes.table)):
            _keep_lead_with(_lead_in(_box_of(table)), table_rows(table))


def code_box_rows(block) -> tuple[str, int, str]:
    """(breaks, rows, tail) of a code box: where it may break and the rows that must fit
    where it starts (``code_box_need``), and for a code cell with an output, the rows of both
    and the LaTeX that keeps them together (``_with_output``)."""
    text = block.astext()
    breaks, rows = code_box_need(text)
    output = _cell_output_block(block)
    if output is None:
        return breaks, rows, ""
    lead = _lead_in(_box_of(block))
    return (breaks, *_with_output(text, breaks, rows, output, _lead_lines(lead)))


def _with_output(text: str, breaks: str, rows: int, output, lines: int) -> tuple[int, str]:
    """(rows, tail) of a code box whose cell has ``output``: the code and the first rows of
    its output on one page, unless that is more than a third of a page (``KEEP_TOGETHER``): then
    the code breaks where it may. So too where the sentence that introduces the code
    (``lines``) would not fit with them: the code starts under it and breaks where it may (a
    page ended with that sentence, and a third of it empty, chapter 1). Where the code fits on
    the page but its output does not, the tail (``\\bookcodetail``) ends the page at the
    code's last break, so that the output does not start a page alone."""
    code_rows = [_rows(line) for line in text.rstrip("\n").split("\n")]
    whole = sum(code_rows)
    with_output = whole + code_box_need(output.astext())[1] + OUTPUT_GAP
    if with_output <= KEEP_TOGETHER and (
            lines + with_output <= KEEP_LEAD or "1" not in breaks):
        return with_output, ""
    if "1" in breaks:
        before = sum(code_rows[:breaks.rfind("1")])
        return rows, f"\n\\bookcodetail{{{whole}}}{{{with_output}}}{{{before}}}"
    return rows, ""


# A row of a table, in rows of code (12.5 pt against 10.4 pt, measured in the PDF).
TABLE_ROW = 1.25


def table_rows(table) -> int:
    """The rows of code that ``table`` takes where it starts: its caption, its rules and its
    rows; of a long table (which breaks across pages), its heading and first rows."""
    rows = list(table.findall(nodes.row))
    count = len(rows)
    if count > LONG_TABLE:
        count = sum(not isinstance(r.parent, nodes.tbody) for r in rows) + KEEP_ROWS
    caption = sum(_prose_lines(t.astext()) for t in table.children if isinstance(t, nodes.title))
    return math.ceil(TABLE_ROW * (count + caption + 1))


def _lead_lines(lead) -> int:
    """The printed lines of the sentence that introduces a box (and of the heading right
    above it), or of the framed box that ends with it (``_framed_need``); 0 where there is
    none."""
    if lead is None:
        return 0
    if isinstance(lead, nodes.Admonition):
        return _framed_need(lead, box_lines(lead))[0]
    return _prose_lines(lead.astext()) + (HEADING_LINES if _under_heading(lead) else 0)


# A paragraph of this many lines or more that introduces a box may break across pages: its
# last lines go with the box (two at least, as any paragraph's). The most characters of text
# a line of prose holds, to count the fewest lines a paragraph can take.
SPLIT_LEAD = 4
LEAD_CHARS_MAX = 90


def _keep_lead_with(lead, rows: int) -> None:
    """The sentence that introduces a box ("...:") starts on the page where the box's first
    ``rows`` fit, not alone at the foot of the page before; so does the heading right above
    it. Before a paragraph of ``SPLIT_LEAD`` lines or more (after its heading),
    ``\\bookbreakinlead`` instead: where the paragraph and the box do not fit, the page
    breaks inside the paragraph, not before it, and the paragraph's last lines go with the
    box (a whole paragraph, and its heading, moved to the next page and left a third of the
    page empty). (Nothing where there is no such sentence, or where the two are more than
    half a page.)"""
    if lead is None or isinstance(lead, nodes.Admonition):
        return  # (a framed box keeps with the code after it: keep_boxes_whole)
    lines, own = _lead_lines(lead), _prose_lines(lead.astext())
    if own >= SPLIT_LEAD and rows <= KEEP_LEAD:
        # (at least: a line holds more than PROSE_CHARS where words are short, and a
        # formula prints shorter than its source)
        fewest = _prose_lines("".join(t.astext() for t in lead.findall(nodes.Text)
                                      if not isinstance(t.parent, nodes.math)), LEAD_CHARS_MAX)
        lead.parent.insert(lead.parent.index(lead), nodes.raw(
            "", f"\n\\bookbreakinlead{{{own}}}{{{fewest}}}{{{rows}}}\n", format="latex"))
        if _under_heading(lead):  # (its break, made plain: see bookstyle.sty)
            section = lead.parent
            section.parent.insert(section.parent.index(section), nodes.raw(
                "", "\n\\bookbeforeleadheading\n", format="latex"))
        return
    if lines + rows > KEEP_LEAD:
        return
    at = lead.parent if _under_heading(lead) else lead
    at.parent.insert(at.parent.index(at), nodes.raw(
        "", f"\n\\bookkeepwithbox{{{lines}}}{{{rows}}}\n", format="latex"))


# Characters of the text face on a line of prose (the text block), to count a paragraph's lines.
PROSE_CHARS = 75
# Nodes between a paragraph and the box it introduces that print nothing.
_SILENT = (nodes.target, addnodes.index, nodes.raw, nodes.comment)


def _prose_lines(text: str, chars: int = PROSE_CHARS) -> int:
    return max(1, math.ceil(len(" ".join(text.split())) / chars))


def _box_of(block):
    """What a code box is in its section: its notebook cell (code and outputs), its captioned
    container, or the box itself."""
    box = block
    while isinstance(box.parent, nodes.container) and not isinstance(box.parent, nodes.section):
        box = box.parent
        if "cell" in box["classes"]:
            break
    return box


def _under_heading(paragraph) -> bool:
    """Whether ``paragraph`` is the first text of a section (under its heading), in a section
    that has a parent to hold what goes before the heading."""
    section = paragraph.parent
    if not isinstance(section, nodes.section) or section.parent is None:
        return False
    before = [n for n in section[:section.index(paragraph)] if not isinstance(n, _SILENT)]
    return len(before) == 1 and isinstance(before[0], nodes.title)


def _lead_in(box):
    """The paragraph just before ``box`` if it ends with a colon (it introduces the box), or
    the framed box of text just before it if that box's last paragraph does; else None."""
    if box.parent is None:
        return None
    siblings = box.parent.children
    at = siblings.index(box) - 1
    while at >= 0 and isinstance(siblings[at], _SILENT):
        at -= 1
    if at < 0:
        return None
    if _is_framed(siblings[at]):  # (a solution's text that ends "...:", then its code)
        inside = [n for n in siblings[at].children if not isinstance(n, _SILENT)]
        return siblings[at] if inside and _is_lead(inside[-1]) else None
    return siblings[at] if _is_lead(siblings[at]) else None


def _is_lead(node) -> bool:
    return isinstance(node, nodes.paragraph) and node.astext().rstrip().endswith(":")


def _is_output(block) -> bool:
    """Whether ``block`` is the output of a notebook cell (not code)."""
    return isinstance(block.parent, nodes.container) and (
        "cell_output" in block.parent["classes"])


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def _is_captioned(block) -> bool:
    return isinstance(block.parent, nodes.container) and block.parent.get("literal_block")


def _cell_output_block(block):
    """The first output box of the notebook cell whose code is ``block``, or None."""
    box = block.parent
    if not (isinstance(box, nodes.container) and "cell_input" in box["classes"]):
        return None
    cell = box.parent
    after = cell.index(box) + 1
    if after < len(cell) and "cell_output" in cell[after].get("classes", []):
        shown = [n for n in cell[after].children if not isinstance(n, _SILENT)]
        if shown and isinstance(shown[0], nodes.literal_block):
            return shown[0]  # (the LaTeX that PrintedCodeBoxes puts before it is silent)
    return None


# A number as a table prints it: "1,095,171", "-0.959", "4.2", "12 %", "3.4x", "1e-05".
_NUMBER = re.compile(r"[-\u2212+]?(\d[\d,]*)?(\.\d+)?([eE][-+]?\d+)?\s*(%|x|\u00d7)?")


def _numeric_column(body, k: int) -> bool:
    """Whether column ``k`` of the body rows holds numbers only (a dash, "-", stands for a
    missing one): such a column is aligned right even where its Markdown did not say so."""
    cells = [row[k].astext().strip() for row in body]
    numbers = [c for c in cells if c not in ("", "-", "\u2013", "\u2014")]
    return bool(numbers) and all(_NUMBER.fullmatch(c) and any(ch.isdigit() for ch in c)
                                 for c in numbers)


def _plain(entry) -> str:
    """A cell's text, without the LaTeX that ``_keep_numbers_whole`` puts in it."""
    return "".join(str(t) for t in entry.findall(nodes.Text)
                   if not isinstance(t.parent, nodes.raw))


def _longest_word(rows, k: int) -> int:
    return max((len(word) for row in rows for word in _words(_plain(row[k]))), default=1)


def _words(text: str) -> list[str]:
    """The words of a cell, split at its spaces and not at its no-break spaces (which
    ``str.split`` takes for spaces: "18.5\u00a0(13.7-24.5)" was measured as two words)."""
    return [w for w in re.split(r"[ \t\r\n]+", text) if w]


class RightAlignedColumns(SphinxPostTransform):
    """A table whose Markdown aligns columns right (``|--:|``, cells of class
    ``text-right``), or whose columns hold only numbers, gets a LaTeX column spec that aligns
    them right. A table of many columns is set in a smaller size, as is a table whose given
    widths (``:widths:``) cannot hold the cells that must not wrap in the size of its
    columns' count."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        for table in list(self.document.findall(nodes.table)):
            tgroup = next(iter(table.findall(nodes.tgroup)), None)
            if tgroup is None:
                continue
            cols = tgroup["cols"]
            level = self.layout(table, tgroup, 0 if cols < WIDE_TABLE else
                                1 if cols == WIDE_TABLE else 2)
            if level:
                at = table.parent.index(table)
                table.parent.insert(at + 1, nodes.raw("", "\n\\par\\endgroup\n",
                                                      format="latex"))
                size = ("", "\\small", "\\footnotesize")[level]
                table.parent.insert(at, nodes.raw("", f"\n\\begingroup{size}\n",
                                                  format="latex"))

    @staticmethod
    def layout(table, tgroup, level: int) -> int:
        """The column spec of ``table``, set in the size ``level`` (0, 1, 2: the body size,
        \\small, \\footnotesize) or, where the widths a table gives cannot hold its cells
        that must not wrap, a smaller one; the size."""
        rows = list(tgroup.findall(nodes.row))
        _drop_empty_paragraphs(rows)
        if not rows or any(len(row) != tgroup["cols"] for row in rows):
            return level  # merged cells: leave the table to Sphinx
        if any(not all(isinstance(c, nodes.paragraph) for c in entry) for row in rows
               for entry in row):
            return level  # cells with code or lists: Sphinx sets those in a `tabular`
        body = [row for row in rows if isinstance(row.parent, nodes.tbody)] or rows
        right = ["text-right" in rows[-1][k]["classes"] or _numeric_column(body, k)
                 for k in range(tgroup["cols"])]
        if len(rows) > LONG_TABLE:
            table["classes"].append("longtable")  # breaks across pages
            _keep_rows_together(body)
        if "colwidths-given" in table["classes"]:
            given = [c["colwidth"] for c in tgroup.findall(nodes.colspec)]
            while (level < len(LINE_CHARS) - 1
                   and sum(_given_needs(rows, body, sum(given), LINE_CHARS[level])) > sum(given)):
                level += 1
            widths = _given_widths(rows, body, given, LINE_CHARS[level])
            total = sum(widths)
        else:
            widths = given = _content_widths(rows, body, LINE_CHARS[level])
            # (a table of fewer than a line's characters is narrower than the line)
            total = max(sum(widths), LINE_CHARS[level])
        _keep_numbers_whole(body)  # (after the widths, which count the cells' characters)
        _keep_spans_whole(rows, head=[row for row in rows if row not in body])
        if "colwidths-given" in table["classes"] and not any(right) and widths == given:
            return level  # the widths the table gives, as Sphinx sets them
        spec = "".join(f"\\{'Xr' if r else 'X'}{{{w}}}{{{total}}}"
                       for r, w in zip(right, widths))
        table.parent.insert(table.parent.index(table), addnodes.tabular_col_spec(spec=spec))
        return level


# A table that breaks across pages leaves at least this many rows on either side of a break.
KEEP_ROWS = 3


def _keep_rows_together(body) -> None:
    """Mark the rows after which a long table may not break (the first and the last
    ``KEEP_ROWS`` rows stay together, and a row with the row that it continues, whose first
    cell starts with an ellipsis: "... tragedies"): ``BookLaTeXTranslator`` ends them with
    ``\\\\*``. Chapter 8's report cards left two rows alone on the next page, and one
    genre of five."""
    if len(body) < 2 * KEEP_ROWS:
        return
    for row in body[:KEEP_ROWS - 1] + body[-KEEP_ROWS:-1]:
        row["book_nobreak"] = True
    for above, row in zip(body, body[1:]):
        if row.children and row[0].astext().lstrip().startswith(("...", "\u2026")):
            above["book_nobreak"] = True


def _drop_empty_paragraphs(rows) -> None:
    """An empty cell without its empty paragraph: Sphinx wrote "\\sphinxAtStartPar" and a blank
    line for it, and the strut that ends a cell then opened a second, empty line (the rows of
    chapter 8's report cards whose last cell is empty were twice as high as the others)."""
    for row in rows:
        for entry in row:
            if entry.children and all(isinstance(c, nodes.paragraph) and not c.astext().strip()
                                      for c in entry):
                entry[:] = []


# Characters of the text face on a line of a table: in the body size, \small, \footnotesize.
LINE_CHARS = (78, 87, 98)
# A column whose longest cell is at most this many characters is as wide as that cell.
SHORT_CELL = 30
# What a column needs beyond its text, in characters: the space on each side of a cell
# (\tabcolsep, 4 pt in bookstyle.sty) and a little to spare.
CELL_PAD = 3
# A heading is set in a bold sans face, wider than the text face by about this factor.
HEADING_FACE = 1.1
# Code in a cell is set in a monospace face, wider by about this much again.
CODE_FACE = 0.3
# A table narrower than the line widens each column by up to this factor.
SPARE = 1.15
# A cell of at most this many characters that holds one of these operators as a word is a
# formula, set on one line ("top-p = 0.9" wrapped after "top-p =", "(97, 97) = a + a"
# after "a").
SHORT_FORMULA = 24
_OPERATORS = ("=", "+", "\u00d7", "\u2248", "<", ">", "\u2264", "\u2265", "->", "\u2192")


def _formula(cell: str) -> bool:
    """Whether a cell is a short formula, which should not wrap: an equation or a sum of a
    few symbols ("top-p = 0.9", "(97, 97) = a + a", "sin, i=1"), not a sentence that holds
    one."""
    return len(cell) <= SHORT_FORMULA and (any(w in _OPERATORS for w in cell.split())
                                           or re.search(r"\w=\w", cell) is not None)


def _unbreakable(cell: str) -> bool:
    """Whether a cell is kept on one line: numbers with their units, or a short formula."""
    return _atomic(cell) or _formula(cell)


def _atomic(cell: str) -> bool:
    """Whether a cell should not wrap: numbers and the short words between them ("0.312 to
    0.355", "300.00 MiB", "1,024"), not names ("GPT-2 small") or notes ("(98.1-100.0)")."""
    words = cell.split()
    return bool(words) and all(_NUMBER.fullmatch(w) or (len(w) <= 3 and w.isalpha()) or
                               w in ("%", "-", "\u2013") for w in words)


def _content_widths(rows, body, line: int) -> list[int]:
    """Columns' widths in characters, from their cells: a column of short cells (numbers,
    intervals such as "0.312 to 0.355", short names) as wide as its longest cell, so that no
    cell wraps; a heading may wrap at its spaces and hyphens, never inside a word. Columns of
    longer text share the rest of the line, each at least ``SHORT_CELL`` wide. Where that is
    more than a line, short columns give up the room their cells need only to stay on one
    line (a name wraps at its spaces; numbers never do)."""
    head = [row for row in rows if row not in body]
    widths: list[int | None] = []
    least: list[int] = []
    for k in range(len(rows[0])):
        cells = [row[k].astext() for row in body]
        longest = max(_text_len(row[k]) for row in body)
        # (a heading breaks at its spaces only, not after a hyphen: "speed-/up" in print)
        heading = math.ceil(HEADING_FACE * max(
            (len(w) for row in head for w in _heading_words(row[k].astext())),
            default=0))
        least.append(max(heading, *(_text_len(row[k]) if _unbreakable(c) else max(
            (len(w) for w in _words(c)), default=1) for row, c in zip(body, cells)))
                     + CELL_PAD)
        widths.append(max(least[k], longest + CELL_PAD) if longest <= SHORT_CELL else None)
    text = [k for k, w in enumerate(widths) if w is None]
    if text:
        rest = line - sum(w for w in widths if w is not None)
        share = max(SHORT_CELL, rest // len(text))
        for k in text:
            widths[k] = least[k] = max(share, _longest_word(rows, k) + CELL_PAD)
    excess = sum(widths) - line
    slack = sum(w - m for w, m in zip(widths, least))
    if excess > 0 and slack > 0:
        give = min(1.0, excess / slack)
        widths = [w - math.floor((w - m) * give) for w, m in zip(widths, least)]
    elif excess < 0:  # room to spare: a little more for every column, as the estimate is rough
        widths = [round(w * min(SPARE, line / sum(widths))) for w in widths]
    return widths


def _given_needs(rows, body, total: int, line: int) -> list[int]:
    """The least width of each column, in a table's units (``total`` of them on a line of
    ``line`` characters): its longest word (in code, wider) or its longest cell that must not
    wrap."""
    need = []
    for k in range(len(rows[0])):
        whole = max((_text_len(row[k]) for row in body if _unbreakable(_plain(row[k]))),
                    default=0)
        word = max(_word_len(row[k]) for row in rows)
        need.append(round((max(word, whole) + CELL_PAD) * total / line))
    return need


def _word_len(entry) -> int:
    """A cell's longest word, in characters of the text face: in code, wider."""
    code = [w for n in entry.findall(nodes.literal) for w in _words(n.astext())]
    return max([len(w) for w in _words(_plain(entry))]
               + [math.ceil((1 + CODE_FACE) * len(w)) for w in code], default=1)


def _given_widths(rows, body, given: list[int], line: int) -> list[int]:
    """The widths a table gives its columns (``:widths:``), widened where a column is
    narrower than its longest word ("count" was cut to "cour") or its longest cell that must
    not wrap ("top-p = 0.9"); the columns with room to spare give it up, in proportion to
    their room, so that the table keeps its width."""
    total = sum(given)
    need = _given_needs(rows, body, total, line)
    widths = [max(w, n) for w, n in zip(given, need)]
    excess = sum(widths) - total
    slack = sum(w - n for w, n in zip(widths, need) if w > n)
    if excess > 0 and slack > 0:
        give = min(1.0, excess / slack)
        widths = [w - math.ceil((w - n) * give) if w > n else w for w, n in zip(widths, need)]
        # (rounded up, the columns gave a little too much: the roomiest takes it back)
        if (short := total - sum(widths)) > 0:
            k = max(range(len(widths)), key=lambda j: given[j] - need[j])
            widths[k] += short
    return widths


def _keep_numbers_whole(body) -> None:
    """Non-breaking spaces in the cells that should not wrap ("0.312 to 0.355", "300.00
    MiB"): where a column is narrower than the estimate of its widths, they stay whole. A
    short formula ("top-p = 0.9") is set in a box, which does not break at its hyphens
    either."""
    for row in body:
        for entry in row:
            cell = entry.astext()
            if _atomic(cell):
                for text in list(entry.findall(nodes.Text)):
                    if " " in text:
                        text.parent.replace(text, nodes.Text(str(text).replace(" ", "\u00a0")))
            elif _formula(cell) and len(entry) == 1:
                paragraph = entry[0]
                paragraph.insert(0, nodes.raw("", "\\mbox{", format="latex"))
                paragraph.append(nodes.raw("", "}", format="latex"))


# In any cell: a short parenthesised group ("(96.6-98.2)", "(T, T)") or an equation without
# spaces ("i=1") is set in a box, which does not break; a number keeps its unit ("25 %").
_WHOLE_SPAN = re.compile(r"\([^()\s][^()]{0,14}\)|[^\s()=]+=[^\s()=]+")
_NUMBER_UNIT = re.compile(r"(?<=\d) (?=(?:%|[KMGT]i?B|ms|s|x|\u00d7)(?!\w))")
# A heading's last word of this many characters at most stays with the word before ("CPU s").
SHORT_UNIT = 2


def _heading_words(text: str) -> list[str]:
    """The words of a heading as printed: a short last word stays with the one before."""
    words = text.split()
    if len(words) >= 2 and len(words[-1]) <= SHORT_UNIT and (
            words[-1].isalpha() or words[-1] == "%"):
        words[-2:] = [" ".join(words[-2:])]
    return words


def _keep_spans_whole(rows, head=()) -> None:
    """In each cell of ``rows`` that ``_keep_numbers_whole`` has not already kept whole:
    ``_WHOLE_SPAN`` in a box, a number and its unit and a heading's short last word
    ("CPU s") joined by a non-breaking space."""
    for row in rows:
        for entry in row:
            cell = entry.astext()
            if row not in head and (_atomic(cell) or _formula(cell)):
                continue  # (kept whole by _keep_numbers_whole)
            texts = [t for t in entry.findall(nodes.Text)
                     if not isinstance(t.parent, (nodes.raw, nodes.literal))]
            if row in head and texts:
                last = texts[-1]
                words = str(last).rstrip().rsplit(" ", 1)
                if len(words) == 2 and len(_heading_words(str(last))[-1].split()) == 2:
                    new = nodes.Text(words[0] + "\u00a0" + words[1])
                    last.parent.replace(last, new)
                    texts[-1] = new
            for text in texts:
                _box_spans(text)


def _box_spans(text: nodes.Text) -> None:
    value = _NUMBER_UNIT.sub("\u00a0", str(text))
    pieces: list[nodes.Node] = []
    at = 0
    for m in _WHOLE_SPAN.finditer(value):
        if m.start() > at:
            pieces.append(nodes.Text(value[at:m.start()]))
        pieces += [nodes.raw("", "\\mbox{", format="latex"), nodes.Text(m[0]),
                   nodes.raw("", "}", format="latex")]
        at = m.end()
    if at < len(value):
        pieces.append(nodes.Text(value[at:]))
    if [str(p) for p in pieces] != [str(text)]:
        parent = text.parent
        i = parent.index(text)
        parent[i:i + 1] = pieces


def _text_len(entry) -> int:
    """A cell's length in characters of the text face: code (monospace) counts wider."""
    code = sum(len(n.astext()) for n in entry.findall(nodes.literal))
    return len(_plain(entry)) + math.ceil(CODE_FACE * code)


# A framed box of text (an admonition: a solution, a discussion) of at most this many lines
# starts on a page where it fits whole; a longer one where its title and first lines fit.
WHOLE_BOX = 14
BOX_HEAD = 6
# Characters of a line of text inside a framed box (narrower than the text block).
BOX_CHARS = 68
# Lines of a framed box besides its text (its title bar and padding), and lines of a section
# heading with the space around it (Exercise 3.5's box, estimated two lines short, split 5/2).
BOX_PAD = 3
HEADING_LINES = 5
# Lines of a displayed formula, with the space around it.
MATH_LINES = 3


def box_lines(box) -> int:
    """The printed lines of a framed text box: its paragraphs' lines, code boxes' rows, and
    ``BOX_PAD`` for its title and padding."""
    lines = BOX_PAD
    for node in box.findall(include_self=False):
        if isinstance(node, nodes.paragraph) and not isinstance(node.parent, nodes.list_item):
            lines += _prose_lines(node.astext(), BOX_CHARS)
        elif isinstance(node, nodes.list_item):
            lines += _prose_lines(node.astext(), BOX_CHARS - 4)
        elif isinstance(node, nodes.literal_block):
            lines += sum(_rows(line) for line in node.astext().split("\n"))
        elif isinstance(node, nodes.math_block):
            lines += MATH_LINES
    return lines


def keep_boxes_whole(document) -> int:
    """Before each admonition, ``\\bookkeepbox{lines}``: a new page unless the box (up to
    ``WHOLE_BOX`` lines) or its first lines fit on this one. Where a heading and a line of
    text ("Back to the exercise") come just before the box, the need counts them and stands
    before the heading, which would otherwise be left at the foot of the page. A box that ends
    with a sentence that introduces the code box after it ("...:") starts where it fits whole
    with that code's first rows, if the two are at most half a page
    (``\\bookkeepwithbox``). The number of boxes."""
    count = 0
    for box in list(document.findall(nodes.Admonition)):
        if not _is_framed(box):
            continue
        lines = box_lines(box)
        rows = _rows_introduced(box)
        with_code = rows is not None and lines + rows <= KEEP_LEAD
        need, target = _framed_need(box, lines if lines <= WHOLE_BOX or with_code else BOX_HEAD)
        latex = f"\n\\bookkeepbox{{{need}}}\n"
        if with_code and need + rows <= KEEP_LEAD:
            latex = f"\n\\bookkeepwithbox{{{need}}}{{{rows}}}\n"
        target.parent.insert(target.parent.index(target), nodes.raw("", latex, format="latex"))
        count += 1
    return count


def _is_framed(box) -> bool:
    """Whether ``box`` is a framed box of text of its own: an admonition, not in a table or
    another admonition, and not an entry of the API reference (an admonition to docutils)."""
    return (isinstance(box, nodes.Admonition) and not isinstance(box, addnodes.desc)
            and box.parent is not None
            and not any(isinstance(a, (nodes.table, nodes.Admonition)) for a in _ancestors(box)))


def _framed_need(box, lines: int) -> tuple[int, object]:
    """(lines, target): ``lines`` of ``box`` that must fit, and where the need stands: before
    the box, or before the heading just above it, counting the heading and a line of text
    between them."""
    siblings = box.parent.children
    before = [n for n in siblings[:siblings.index(box)] if not isinstance(n, _SILENT)]
    if (isinstance(box.parent, nodes.section) and 1 <= len(before) <= 2
            and isinstance(before[0], nodes.title)
            and all(isinstance(n, nodes.paragraph) for n in before[1:])
            and box.parent.parent is not None):
        return (lines + HEADING_LINES + sum(_prose_lines(n.astext()) for n in before[1:]),
                box.parent)
    return lines, box


def _rows_introduced(box) -> int | None:
    """The rows that must fit where the code box right after ``box`` starts
    (``code_box_rows``), where ``box``'s last paragraph ends with a colon (it introduces that
    code); else None."""
    siblings = box.parent.children
    after = [n for n in siblings[siblings.index(box) + 1:] if not isinstance(n, _SILENT)]
    if not after or not isinstance(after[0], (nodes.container, nodes.literal_block)):
        return None
    block = next(after[0].findall(nodes.literal_block), None)
    if block is None or _lead_in(_box_of(block)) is not box:
        return None
    return code_box_rows(block)[1]


class FramedTextBoxes(SphinxPostTransform):
    """Framed boxes of text split only where enough of them is on each page
    (``keep_boxes_whole``)."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        keep_boxes_whole(self.document)


# Links that a reader of paper follows by page number: each exercise's link to its solution
# and each solution's link back ("(solution, p. 205)", "Back to the exercise, p. 17").
PAGE_REFERENCES = ("solution", "back to the exercise")


def page_references(document) -> int:
    """After each internal link whose text is one of ``PAGE_REFERENCES``, ", p. N" in the
    LaTeX (``\\pageref`` on the link's target); the number of links given a page."""
    count = 0
    files = {f["docname"]: f for f in document.findall(addnodes.start_of_file)}
    for ref in list(document.findall(nodes.reference)):
        uri = ref.get("refuri", "")
        if not uri.startswith("%") or " ".join(ref.astext().lower().split()) not in (
                PAGE_REFERENCES):
            continue
        label = uri[1:].replace("#", ":", 1) if "#" in uri else uri[1:] + "::doc"
        if "#" in uri:
            label = _label_in_paragraph(files.get(uri[1:].split("#")[0]), label)
        ref.parent.insert(ref.parent.index(ref) + 1, nodes.raw(
            "", f", p.~\\pageref{{\\detokenize{{{label}}}}}", format="latex"))
        count += 1
    return count


def _label_in_paragraph(file, label: str) -> str:
    """The label to give a page of: where ``label`` names a paragraph (an exercise), a label
    of its own inside the paragraph's first line. Sphinx's label stands before the paragraph,
    and where the page breaks there, it is on the page before ("Back to the exercise, p. 153"
    for an exercise printed on p. 154)."""
    if file is None:
        return label
    name = label.split(":", 1)[1]
    node = next((n for n in file.findall(nodes.Element) if name in n.get("ids", ())), None)
    if isinstance(node, nodes.target):
        node = node.next_node(descend=False, siblings=True)
    if not isinstance(node, nodes.paragraph):
        return label
    inside = label + "-page"
    if not (node.children and isinstance(node[0], nodes.raw) and inside in node[0].astext()):
        node.insert(0, nodes.raw("", f"\\label{{\\detokenize{{{inside}}}}}", format="latex"))
    return inside


class PageReferences(SphinxPostTransform):
    """Page numbers after the links between exercises and solutions (``page_references``)."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        page_references(self.document)


_FOLLOWS_LEAD = (nodes.paragraph, nodes.bullet_list, nodes.enumerated_list,
                 nodes.definition_list, nodes.block_quote)


def colon_leads_keep_with_text(document) -> None:
    """No page break right after a paragraph that ends with a colon and introduces text (a
    list, a paragraph): its last line goes to the next page with what it introduces (a page
    ended with "each a number a reader can check by ear:", the list overleaf). Code boxes and
    tables after a colon have their own rule (:class:`PrintedCodeBoxes`)."""
    for paragraph in list(document.findall(nodes.paragraph)):
        if not _is_lead(paragraph) or paragraph.parent is None:
            continue
        follower = paragraph.next_node(descend=False, siblings=True,
                                       condition=lambda n: not isinstance(
                                           n, (nodes.target, addnodes.index)))
        if not isinstance(follower, _FOLLOWS_LEAD):
            continue
        # (in the paragraph's last line: a penalty after that line, before the space after it)
        paragraph += nodes.raw("", "\\nopagebreak", format="latex")
        if not isinstance(follower, nodes.paragraph):
            # a list's opening invites a break before it (\@beginparpenalty): not this one
            parent = follower.parent
            at = parent.index(follower)
            parent[at:at + 1] = [nodes.raw("", "\\begingroup\\booknobreakbeforelist\n",
                                           format="latex"),
                                 follower, nodes.raw("", "\\endgroup\n", format="latex")]


class ColonLeadsKeepWithText(SphinxPostTransform):
    """:func:`colon_leads_keep_with_text`."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        colon_leads_keep_with_text(self.document)


# A number and the unit after it stay on one line in print ("2.139 / bits", "96 / MiB" and
# "(95 / %" were split at a line's end): the space between them becomes a no-break space.
UNITS = ("%", "×", "nats?", "bits?", "bytes?", "tokens?", "steps?", "characters?", "chars",
         "seconds?", "minutes?", "hours?", "CPU", "million", "billion",
         "KiB", "MiB", "GiB", "KB", "MB", "GB", "GB/s", "MB/s", "ms", "s", "pt", "mm", "px",
         "threads?", "cores?", "lines?", "words?", "layers?", "heads?", "parameters", "pages?",
         "epochs?", "positions?", "blocks?", "dimensions?", "pairs?", "merges?", "plays?",
         "prompts?", "seeds?", "rows?", "columns?")
_UNIT = r"(?:" + "|".join(UNITS) + r")(?![\w-])"
_PROSE_NUMBER_UNIT = re.compile(r"(?<![\w.-])(\d[\d,.]*) (?=" + _UNIT + ")")
_STARTS_WITH_UNIT = re.compile(r" (?=" + _UNIT + ")")
_NOT_PRINTED_TEXT = (nodes.FixedTextElement, nodes.literal, nodes.math, nodes.raw,
                     nodes.comment, nodes.target, addnodes.index, addnodes.desc_signature)


def units_with_numbers(document) -> None:
    """Join a number to its unit with a no-break space in the prose, captions, headings and
    table cells (not in code), also where the number is a glued value and the unit the text
    after it."""
    for block in document.findall(nodes.TextElement):
        if isinstance(block, _NOT_PRINTED_TEXT) or any(
                isinstance(a, _NOT_PRINTED_TEXT) for a in _ancestors(block)):
            continue
        before = ""
        for text in list(block.findall(nodes.Text)):
            if text.parent is not block and isinstance(text.parent, _NOT_PRINTED_TEXT):
                # a formula that ends in a number ("32 \times 128 = 4096") is one
                before = str(text) if isinstance(text.parent, nodes.math) else ""
                continue
            new = _PROSE_NUMBER_UNIT.sub("\\1\u00a0", str(text))
            if re.search(r"(?<![\w.-])\d[\d,.]*$", before) and _STARTS_WITH_UNIT.match(new):
                new = "\u00a0" + new[1:]
            if new != str(text):
                text.parent.replace(text, nodes.Text(new))
            before = new


# Code in the text this short never breaks at its spaces: "(B," / "T)" and "offset + T -" / "1"
# were split at a line's end.
SHORT_CODE = 20


_QUOTED = re.compile(r"""(['"])[^'"]*\1""")


def short_code_whole(document) -> None:
    """No-break spaces in the inline code of at most ``SHORT_CODE`` characters, and in the
    strings of longer code (``' world'`` lost its space at a line's end)."""
    for literal in list(document.findall(nodes.literal)):
        text = literal.astext()
        if " " not in text or len(literal) != 1 or not isinstance(literal[0], nodes.Text):
            continue
        if len(text) <= SHORT_CODE:
            literal[0] = nodes.Text(text.replace(" ", "\u00a0"))
        elif (whole := _QUOTED.sub(lambda m: m.group(0).replace(" ", "\u00a0"), text)) != text:
            literal[0] = nodes.Text(whole)


# A name that ends in a number after a hyphen ("GPT-2", "distinct-2") is not broken at its
# hyphen ("GPT-" / "2-shaped" was).
_NAME_NUMBER = re.compile(r"(?<![\w-])([A-Za-z]+-\d+)(?![\w])")


def names_with_numbers_whole(document) -> None:
    """Each "GPT-2" of the printed text (not of code, headings or the index) in an \\mbox."""
    for text in list(document.findall(nodes.Text)):
        parent = text.parent
        if parent is None or any(isinstance(a, (*_NOT_PRINTED_TEXT, nodes.title))
                                 for a in [parent, *_ancestors(parent)]):
            continue
        pieces = _NAME_NUMBER.split(str(text))
        if len(pieces) == 1:
            continue
        new = [nodes.raw("", f"\\mbox{{{piece}}}", format="latex") if k % 2
               else nodes.Text(piece) for k, piece in enumerate(pieces) if piece]
        at = parent.index(text)
        parent[at:at + 1] = new


class UnitsWithNumbers(SphinxPostTransform):
    """:func:`units_with_numbers` (after the glued values are in the text),
    :func:`short_code_whole` and :func:`names_with_numbers_whole`."""

    default_priority = 900
    builders = ("latex",)

    def run(self, **kwargs) -> None:
        units_with_numbers(self.document)
        short_code_whole(self.document)
        names_with_numbers_whole(self.document)


def et_al_whole(text: str) -> str:
    """"et al." with a no-break space ("Sennrich et" / "al." was split at a line's end)."""
    return re.sub(r"\bet al\.", "et\u00a0al.", text)


class BookLaTeXTranslator(LaTeXTranslator):
    """Sphinx's LaTeX, with the rows that ``_keep_rows_together`` marks ended by ``\\\\*``
    (no page break after them) rather than ``\\\\``, and "et al." of the citations (which
    sphinxcontrib-bibtex writes after the transforms) never split at its space."""

    def visit_Text(self, node) -> None:
        if not self.in_parsed_literal and not isinstance(node.parent, nodes.FixedTextElement):
            node = nodes.Text(et_al_whole(str(node)))
        super().visit_Text(node)

    def visit_target(self, node) -> None:
        # Sphinx ends the paragraph before a target only where the target follows it directly;
        # after an {index} directive's own target (left between them), the label and the next
        # paragraph ran on in the same paragraph (exercises 6.1-6.3 printed as one).
        at = node.parent.index(node)
        before = [n for n in node.parent[:at]
                  if not isinstance(n, (nodes.target, addnodes.index))]
        if (at > 0 and not isinstance(node.parent[at - 1], nodes.paragraph) and before
                and isinstance(before[-1], nodes.paragraph)):
            self.body.append("\n")
        super().visit_target(node)

    def depart_row(self, node) -> None:
        super().depart_row(node)
        if node.get("book_nobreak"):
            end = "\\\\" + "\n"
            for k in range(len(self.body) - 1, -1, -1):
                if self.body[k] == end:
                    self.body[k] = "\\\\*" + "\n"
                    break


def setup(app):
    register_plugin("pybtex.style.sorting", "author_year_title_plain", AuthorYearSorting)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    app.connect("config-inited", set_edition)
    app.connect("doctree-read", drop_api_index_entries)
    app.connect("doctree-read", readable_listings)
    app.connect("autodoc-process-signature", readable_factory_defaults)
    app.connect("autodoc-skip-member", skip_dataclass_fields)
    app.add_latex_package("bookstyle", after_hyperref=True)
    app.add_transform(IndexAtTheTerm)
    app.add_post_transform(PrintedCodeBoxes)
    app.add_post_transform(RightAlignedColumns)
    app.add_post_transform(RaggedAPI)
    app.add_post_transform(PageReferences)
    app.add_post_transform(FramedTextBoxes)
    app.add_post_transform(UnitsWithNumbers)
    app.add_post_transform(ColonLeadsKeepWithText)
    app.set_translator("latex", BookLaTeXTranslator)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Checks of the book's notebooks that nbval does not make (used by tests/test_book.py).

- every notebook under book/ is listed in _toc.yml, and every listed file exists;
- every notebook is committed executed: each code cell has an execution count, the counts run
  1..n (top to bottom in one fresh kernel), and some cell has a stored output (a notebook
  with no stored output at all checks nothing under nbval);
- every module that teaches is shown in a chapter, no chapter prints plumbing, and the API
  reference lists every module;
- no listing uses a name that only a later chapter introduces (a class, a function, a field
  or an attribute that a later chapter's listing defines);
- no chapter ends in a dump of source: listings sit where their idea is taught, not in a
  closing "The library version" section after the last code cell;
- every `buildllm` command that the book and the README print is one the command line accepts;
- no line of a ``:pyobject:`` listing or of a printed code cell is wider than a printed code
  box (CODE_COLUMNS);
- every figure and table with a name is cited; every drawn figure in book/figures/ is shown by
  a page under a name and drawn by scripts/make_figures.py;
- every chapter ends with exercises, each with a label and a link to its worked solution in
  the Solutions appendix, and every solution has its exercise and links back to it.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import textwrap
from pathlib import Path

import yaml


def toc_files(root: Path) -> list[str]:
    """The files named in _toc.yml (without extension), root first, in book order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def _resolve(root: Path, name: str) -> Path | None:
    for ext in (".ipynb", ".md"):
        p = root / f"{name}{ext}"
        if p.exists():
            return p
    return None


def toc_notebooks(root: Path) -> list[Path]:
    """The notebooks in _toc.yml, in book order."""
    out = []
    for name in toc_files(root):
        p = _resolve(root, name)
        if p is not None and p.suffix == ".ipynb":
            out.append(p)
    return out


def check_toc(root: Path) -> list[str]:
    """Problems: listed files that do not exist, notebooks in book/ that are not listed."""
    problems = []
    listed = set()
    for name in toc_files(root):
        p = _resolve(root, name)
        if p is None:
            problems.append(f"_toc.yml lists {name}, but no {name}.ipynb or {name}.md exists")
        else:
            listed.add(p.resolve())
    for nb in sorted((root / "book").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        if nb.resolve() not in listed:
            problems.append(f"{nb.relative_to(root)} is not in _toc.yml: add it, or delete it")
    return problems


def check_executed(path: Path) -> list[str]:
    """Problems that make a notebook's stored outputs unfit for nbval."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return [f"{path}: not a readable notebook ({e})"]
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    if not code:
        return [f"{path}: has no code cell, so nbval checks nothing; make it a .md page instead"]
    problems = []
    counts = [c.get("execution_count") for c in code]
    missing = sum(c is None for c in counts)
    if missing:
        problems.append(
            f"{path}: {missing} of {len(code)} code cells were never executed; run it top to "
            f"bottom in a fresh kernel (make execute NB={path}) and commit the outputs"
        )
    elif counts != list(range(1, len(code) + 1)):
        problems.append(
            f"{path}: execution counts {counts} are not 1..{len(code)}: it was run out of order; "
            f"run it top to bottom in a fresh kernel (make execute NB={path})"
        )
    with_output = sum(bool(c.get("outputs")) for c in code)
    if with_output == 0:
        problems.append(f"{path}: no code cell has a stored output, so nbval would check nothing")
    for c in code:
        ignored = "nbval-ignore-output" in c.get("metadata", {}).get("tags", [])
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                problems.append(f"{path}: a stored output is an error ({o.get('ename')})")
            if o.get("output_type") == "stream" and o.get("name") == "stderr" and not ignored:
                text = "".join(o.get("text", ""))
                problems.append(f"{path}: a cell wrote to stderr (a warning?): {text[:120]!r}")
    return problems



_INCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)\s*\n((?::[\w-]+:.*\n)*)")


def prose(page: Path) -> list[str]:
    """The text of a page: a notebook's markdown cells, a Markdown file whole, else nothing."""
    if page.suffix == ".ipynb":
        nb = json.loads(page.read_text(encoding="utf-8"))
        return ["".join(c.get("source", "")) for c in nb.get("cells", [])
                if c.get("cell_type") == "markdown"]
    if page.suffix == ".md":
        return [page.read_text(encoding="utf-8")]
    return []


PLUMBING_CODE = ("glue(", "display(Markdown", "NBVAL")  # what a printed page must not show


def check_cells_shown(path: Path) -> list[str]:
    """Problems: a code cell that a reader sees (no ``remove-input`` tag) but that holds build
    plumbing (a glue call, a Markdown table builder, an nbval marker)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for k, c in enumerate(c for c in nb.get("cells", []) if c.get("cell_type") == "code"):
        source = "".join(c.get("source", ""))
        hidden = "remove-input" in c.get("metadata", {}).get("tags", [])
        if not hidden and (found := [p for p in PLUMBING_CODE if p in source]):
            problems.append(f"{path.name} code cell {k} shows {found[0]!r}: move it to a cell "
                            f"tagged remove-input (nbval markers become cell tags)")
    return problems


def check_figures_referenced(root: Path) -> list[str]:
    """Problems: a figure or table with a name that the text never cites with {numref}."""
    names, cited = {}, set()
    for page in sorted((root / "book").rglob("*")):
        for text in prose(page):
            for m in re.finditer(r"^:name: ((?:fig|tbl)-\S+)", text, re.M):
                names[m.group(1)] = page.name
            cited |= set(re.findall(r"\{numref\}`([^`<]+)`", text))
    for page in sorted((root / "book").glob("*.ipynb")):  # tables built by code cells
        nb = json.loads(page.read_text(encoding="utf-8"))
        for c in nb.get("cells", []):
            for m in re.finditer(r":name: (tbl-[\w-]+)", "".join(c.get("source", ""))):
                names[m.group(1)] = page.name
    return [f"{page}: {name} is never cited ({{numref}}`{name}`)"
            for name, page in sorted(names.items()) if name not in cited]


_FIGURE = re.compile(r"```\{figure\}\s+(\S+)\s*\n((?::[\w-]+:.*\n)*)")


def check_static_figures(root: Path) -> list[str]:
    """Problems with the drawn figures of book/figures/: a PNG that no page shows, or that
    scripts/make_figures.py does not draw; a name that the script draws but that is not
    committed; a {figure} of a missing file, or without a ``:name: fig-...`` to cite it by
    (check_figures_referenced then checks that the text cites it)."""
    problems, shown = [], set()
    for page in sorted((root / "book").rglob("*")):
        for text in prose(page):
            for m in _FIGURE.finditer(text + "\n"):
                target = (page.parent / m.group(1)).resolve()
                shown.add(target)
                if not target.is_file():
                    problems.append(f"{page.name}: {{figure}} {m.group(1)} does not exist")
                if not re.search(r"^:name: fig-\S+", m.group(2), re.M):
                    problems.append(f"{page.name}: {{figure}} {m.group(1)} has no "
                                    f":name: fig-... to cite it by")
    script = root / "scripts" / "make_figures.py"
    source = script.read_text(encoding="utf-8") if script.is_file() else ""
    drawn = {a or b for a, b in re.findall(r'save\(fig, "([\w-]+)"\)|"([\w-]+)\.png"', source)}
    committed = sorted((root / "book" / "figures").glob("*.png"))
    for png in committed:
        if png.resolve() not in shown:
            problems.append(f"book/figures/{png.name} is shown by no page: show it in a "
                            f"{{figure}} and cite it, or delete it")
        if png.stem not in drawn:
            problems.append(f"book/figures/{png.name} is not drawn by scripts/make_figures.py")
    for name in sorted(drawn - {png.stem for png in committed}):
        problems.append(f"scripts/make_figures.py draws {name}.png, which book/figures/ lacks: "
                        f"run make figures and commit it")
    return problems


# Modules whose code teaches: each is shown (a literalinclude) in a chapter. The others are
# plumbing, never printed in a chapter; the API reference lists them.
TEACHING = {"repro", "config", "bpe", "bpe_fast", "tokenizer", "tokenizer_export", "data",
            "embeddings", "norms", "attention", "kvcache", "gqa", "layers", "model", "convert",
            "train", "muon", "generate", "quantize", "lora", "finetune", "instruct", "verse",
            "evaluate", "align"}
PLUMBING = {"files", "device", "checkpoint", "pretrained", "plays", "cli", "run", "baselines",
            "adapters"}


def library_modules(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "code" / "buildllm").glob("*.py")
                  if p.name != "__init__.py")


def check_library_shown(root: Path) -> list[str]:
    """Problems: a module that teaches but is never shown, a chapter that prints plumbing, a
    module that is neither (so nobody decided where it belongs)."""
    shown = {Path(m.group(1)).stem for page in sorted((root / "book").rglob("*"))
             for text in prose(page) for m in _INCLUDE.finditer(text + "\n")
             if "code/buildllm/" in m.group(1)}
    problems = []
    for name in library_modules(root):
        if name not in TEACHING | PLUMBING:
            problems.append(f"buildllm.{name} is neither in TEACHING nor in PLUMBING "
                            f"(tests/book_checks.py): decide whether a chapter shows it")
        elif name in TEACHING and name not in shown:
            problems.append(f"buildllm.{name} teaches, but no chapter shows its code (add a "
                            f"literalinclude with :pyobject: where it is taught)")
        elif name in PLUMBING and name in shown:
            problems.append(f"buildllm.{name} is plumbing, but a chapter prints it: describe it "
                            f"in prose; the API reference lists it")
    return problems


def check_api_reference(root: Path) -> list[str]:
    """Problems: a module missing from the API reference, a public function or class without a
    docstring (the reference would show only its name)."""
    page = (root / "book" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"automodule:: buildllm\.(\w+)", page))
    problems = [f"book/api.md does not list buildllm.{name} (add an automodule)"
                for name in library_modules(root) if name not in listed]
    for name in library_modules(root):
        tree = ast.parse((root / "code" / "buildllm" / f"{name}.py").read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and \
                    not node.name.startswith("_") and ast.get_docstring(node) is None:
                problems.append(f"buildllm.{name}.{node.name} has no docstring")
    return problems


# At most this many listings of library code after a chapter's last code cell: a closing word
# on the code may show one, but a run of them is an end-of-chapter dump of source.
MAX_TAIL_LISTINGS = 1


def check_no_source_dump(root: Path) -> list[str]:
    """Problems: a chapter (a numbered one in _toc.yml) with a "The library version" heading, or
    with more than
    MAX_TAIL_LISTINGS listings after its last code cell (the listings belong where the chapter
    teaches what they show; the API reference lists the rest)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    numbered = {e["file"] for part in toc.get("parts", []) if part.get("numbered")
                for e in part.get("chapters", [])}  # the chapters; not front or back matter
    problems = []
    for path in toc_notebooks(root):
        if str(path.relative_to(root).with_suffix("")) not in numbered:
            continue
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        last_code = max((k for k, c in enumerate(cells) if c.get("cell_type") == "code"),
                        default=-1)
        tail = 0
        for k, c in enumerate(cells):
            if c.get("cell_type") != "markdown":
                continue
            text = "".join(c.get("source", ""))
            if re.search(r"^#+\s+The library version", text, re.M):
                problems.append(f"{path.name}: a \"The library version\" section (show each "
                                f"listing where its idea is taught; point to the API reference)")
            if k > last_code:
                tail += sum("code/buildllm/" in m.group(1) for m in _INCLUDE.finditer(text + "\n"))
        if tail > MAX_TAIL_LISTINGS:
            problems.append(f"{path.name}: {tail} listings after the last code cell, an "
                            f"end-of-chapter dump of source (at most {MAX_TAIL_LISTINGS})")
    return problems


# ---- listings hold nothing from later chapters ------------------------------------------------


def listings(page: Path) -> list[tuple[str, Path, range | None]]:
    """``(label, source file, lines)`` of every ``literalinclude`` of library code on ``page``:
    the lines (0-based) that Sphinx shows (``:pyobject:``, then ``:start-at:`` or
    ``:start-after:``, then ``:end-at:`` or ``:end-before:``), or None where the file or the
    object is gone."""
    out = []
    for source, options in _includes(page):
        label = f"{source.stem}.{options.get('pyobject', options.get('start-at'))}"
        try:
            span = _cut(source.read_text(encoding="utf-8").splitlines(), options)
        except (OSError, StopIteration):
            span = None
        out.append((label, source, span))
    return out


def _includes(page: Path) -> list[tuple[Path, dict[str, str]]]:
    """``(source file, options)`` of every ``literalinclude`` of library code on ``page``."""
    out = []
    for text in prose(page):
        for m in _INCLUDE.finditer(text + "\n"):
            if "code/buildllm/" not in m.group(1):
                continue
            options = {k: v.strip().strip('"')
                       for k, v in re.findall(r":([\w-]+):[ \t]*(.*)", m.group(2))}
            out.append(((page.parent / m.group(1)).resolve(), options))
    return out


def _cut(lines: list[str], options: dict[str, str]) -> range:
    span = range(len(lines))
    if "pyobject" in options:
        node = ast.parse("\n".join(lines))
        for part in options["pyobject"].split("."):
            node = next(n for n in node.body if getattr(n, "name", None) == part)
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        span = range(first - 1, node.end_lineno)
    for key, keep in (("start-at", 0), ("start-after", 1)):
        if key in options:
            span = span[next(i for i, n in enumerate(span) if options[key] in lines[n]) + keep:]
    for key, keep in (("end-at", 1), ("end-before", 0)):
        if key in options:
            span = span[:next(i for i, n in enumerate(span) if options[key] in lines[n]) + keep]
    return span


def definitions(tree: ast.Module) -> list[tuple[str, int]]:
    """``(name, line)`` of what a module defines: its classes and functions (methods too), the
    fields of its classes, the attributes set on ``self``, the names assigned at its top."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.name, node.lineno))
            if isinstance(node, ast.ClassDef):
                found += [(t.id, t.lineno) for s in node.body for t in _targets(s)
                          if isinstance(t, ast.Name)]
        for target in _targets(node):
            found += [(t.attr, t.lineno) for t in ast.walk(target)
                      if isinstance(t, ast.Attribute) and getattr(t.value, "id", None) == "self"]
    found += [(t.id, t.lineno) for s in tree.body for t in _targets(s) if isinstance(t, ast.Name)]
    return found


def used_names(code: str) -> set[str]:
    """What ``code`` uses and does not bind itself: free names, attributes, keyword names."""
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a fragment: every identifier
        return set(re.findall(r"[A-Za-z_]\w*", code)) - set(keyword.kwlist)
    bound, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            used.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return used - bound


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def _code_cells(page: Path) -> str:
    if page.suffix != ".ipynb":
        return ""
    nb = json.loads(page.read_text(encoding="utf-8"))
    return "\n".join("".join(c.get("source", "")) for c in nb.get("cells", [])
                     if c.get("cell_type") == "code")


def introduced(root: Path, pages: list[Path]) -> dict[str, int]:
    """The chapter (index into ``pages``) where each name of the library is introduced: the
    first that shows (a listing) or uses (a code cell) it. A name that library code defines
    outside every listing (plumbing, or a detail the chapters leave out) is there from the
    start (0)."""
    shown = {}  # (file, line) -> the first chapter whose listing holds it
    for k, page in reversed(list(enumerate(pages))):
        for _, source, span in listings(page):
            shown.update({(source, n + 1): k for n in span or ()})
    first: dict[str, int] = {}
    for source in sorted((root / "code" / "buildllm").glob("*.py")):
        for name, line in definitions(ast.parse(source.read_text(encoding="utf-8"))):
            first[name] = min(first.get(name, 10**6), shown.get((source.resolve(), line), 0))
    for k, page in enumerate(pages):
        for name in used_names(_code_cells(page)):
            if first.get(name, -1) > k:
                first[name] = k
    return first


def check_later_names(root: Path) -> list[str]:
    """Problems: a listing that uses a name which a later chapter introduces (a class, a
    function, a field, an attribute that only a later chapter's listing shows): the listing
    shows an idea before it is taught. And a listing of code that no longer exists."""
    pages = [p for p in (_resolve(root, name) for name in toc_files(root)) if p is not None]
    first = introduced(root, pages)
    problems = []
    for k, page in enumerate(pages):
        for label, source, span in listings(page):
            if span is None:
                problems.append(f"{page.name} shows {label}, which is not in the library")
                continue
            lines = source.read_text(encoding="utf-8").splitlines()
            code = textwrap.dedent("\n".join(lines[n] for n in span))
            for name in sorted(n for n in used_names(code) if first.get(n, 0) > k):
                problems.append(f"{page.name} shows {label}, which uses {name!r}: a later "
                                f"chapter introduces it ({pages[first[name]].name}); teach it "
                                f"first, or show it there")
    return problems


# ---- listings fit the printed code box ----------------------------------------------------------


def code_columns(name: str = "CODE_COLUMNS") -> int:
    """The characters a line of a printed code box holds: ``CODE_COLUMNS`` of the book's
    Sphinx extension (book/_ext/bookstyle.py), read from its source, the one place it is set;
    ``BOX_COLUMNS``, what a row holds in fact (an output's limit)."""
    style = Path(__file__).resolve().parents[1] / "book" / "_ext" / "bookstyle.py"
    for node in ast.parse(style.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == name):
            return ast.literal_eval(node.value)
    raise LookupError(f"{style} sets no {name}")


def book_pages(root: Path) -> list[Path]:
    """The pages listed in _toc.yml, then any other notebook or Markdown page under book/
    (not in a folder whose name starts with ``_`` or ``.``, such as _build)."""
    pages = [p for p in (_resolve(root, name) for name in toc_files(root)) if p is not None]
    book = root / "book"
    others = sorted(p for p in [*book.rglob("*.ipynb"), *book.rglob("*.md")]
                    if p not in pages
                    and not any(part[0] in "_." for part in p.relative_to(book).parts[:-1]))
    return pages + others


def check_code_width(root: Path, columns: int | None = None) -> list[str]:
    """Problems: a line of a ``:pyobject:`` listing, as printed (after ``:start-at:``,
    ``:end-before:`` and the like, and ``:dedent:``), longer than a printed code box holds
    (``columns``, by default :func:`code_columns`): it would wrap in the PDF. Re-wrap it in the
    library (a break after an opening bracket, a comment on its own line above). The same for
    the lines of the code cells a page prints."""
    columns = code_columns() if columns is None else columns
    box = code_columns("BOX_COLUMNS") + columns - code_columns()  # an output's row, as wide
    problems = []
    for page in book_pages(root):
        for source, options in _includes(page):
            if "pyobject" not in options:
                continue
            try:
                lines = source.read_text(encoding="utf-8").splitlines()
                span = _cut(lines, options)
            except (OSError, StopIteration):
                continue  # check_later_names reports a listing of code that is gone
            dedent = int(options.get("dedent") or 0)
            for n in span:
                shown = lines[n][dedent:]  # as Sphinx dedents: the first characters go
                if len(shown) > columns:
                    problems.append(f"{page.name} shows {source.stem}.{options['pyobject']}: "
                                    f"line {n + 1} of {source.name} is {len(shown)} columns "
                                    f"wide, more than the {columns} of a printed code box: "
                                    f"{shown.strip()[:40]!r}...")
        problems += _wide_cells(page, columns, box)
    return problems


def _wide_cells(page: Path, columns: int, box: int) -> list[str]:
    """Problems: a line of a printed code cell (not tagged remove-input or remove-cell)
    longer than ``columns``; a line of its printed text output longer than a row of a box
    holds (``box``): the PDF would set the whole output in a smaller font, under 8 pt, to
    keep its rows."""
    if page.suffix != ".ipynb":
        return []
    problems = []
    for cell in json.loads(page.read_text(encoding="utf-8")).get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or "remove-cell" in tags:
            continue
        if "remove-input" not in tags:
            for line in "".join(cell.get("source", "")).splitlines():
                if len(line) > columns:
                    problems.append(f"{page.name}, cell {cell.get('id')}: a line of "
                                    f"{len(line)} columns, more than the {columns} of a "
                                    f"printed code box: {line.strip()[:40]!r}...")
        if "remove-output" in tags:
            continue
        for line in _printed_text(cell).splitlines():
            if len(line) > box:
                problems.append(f"{page.name}, cell {cell.get('id')}: its output prints a "
                                f"line of {len(line)} columns, more than the {box} of a row of "
                                f"a printed box (print it in two lines): "
                                f"{line.strip()[:40]!r}...")
    return problems


def _printed_text(cell: dict) -> str:
    """The text a code cell's outputs print as text: streams, and plain-text results that
    have no richer form (a figure, a table, HTML) printed instead."""
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            texts.append("".join(output.get("text", "")))
        data = output.get("data", {})
        if "text/plain" in data and not {"image/png", "text/markdown", "text/html",
                                         "text/latex", "image/svg+xml"} & set(data):
            texts.append("".join(data["text/plain"]))
    return "\n".join(texts)


_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def book_commands(root: Path) -> list[tuple[str, str]]:
    """``(page, command)`` for every ``buildllm ...`` command in a fenced block of the book's
    pages and the README (``torchrun ... -m buildllm.cli ...`` too), continuation lines joined."""
    commands = []
    pages = [root / "README.md", *sorted((root / "book").rglob("*"))]
    for page in pages:
        for text in prose(page):
            for block in _FENCE.findall(text):
                for line in block.replace("\\\n", " ").splitlines():
                    line = line.strip()
                    if line.startswith("buildllm ") or "-m buildllm.cli " in line:
                        commands.append((str(page.relative_to(root)), line))
    return commands


def check_commands(root: Path) -> list[str]:
    """Problems: book commands that `buildllm`'s argument parser refuses."""
    import contextlib
    import io
    import shlex

    from buildllm.cli import build_parser

    problems = []
    for page, line in book_commands(root):
        words = shlex.split(line, comments=True)
        argv = words[words.index("buildllm.cli") + 1:] if "buildllm.cli" in words else words[1:]
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(argv)
        except SystemExit as e:
            if e.code:
                why = stderr.getvalue().strip().splitlines()[-1]
                problems.append(f"{page}: `{line}` is refused: {why}")
    return problems



# Exercises and their solutions: chapter book/NN_slug.ipynb labels its exercises (ex-slug-K)= and
# links each to (sol-slug-K)= in book/solutions/NN_slug.ipynb, which links back.
_LABEL = re.compile(r"^\((ex|sol)-([\w]+)-(\d+)\)=\s*$", re.M)
_REF = re.compile(r"\{ref\}`(?:[^`<]*<)?((?:ex|sol)-[\w-]+?)>?`")


def _labels_and_refs(page: Path) -> tuple[set[str], set[str]]:
    text = "\n".join(prose(page))
    labels = {f"{m.group(1)}-{m.group(2)}-{m.group(3)}" for m in _LABEL.finditer(text)}
    return labels, set(_REF.findall(text))


def chapters(root: Path) -> list[Path]:
    """The numbered chapters in _toc.yml: book/NN_slug.ipynb."""
    return [p for p in toc_notebooks(root)
            if p.parent == root / "book" and re.match(r"\d\d_", p.name)]


def check_exercises(root: Path) -> list[str]:
    """Problems: a chapter without an Exercises section or without labelled exercises, an
    exercise without its solution (or without a link to it), a solution without its exercise
    (or without a link back)."""
    problems = []
    exercises, solutions = {}, {}  # label -> page
    links_to_solution, links_to_exercise = set(), set()
    for ch in chapters(root):
        slug = ch.stem.split("_", 1)[1]
        texts = prose(ch)
        at = [i for i, t in enumerate(texts) if re.search(r"^## Exercises\s*$", t, re.M)]
        if not at:
            problems.append(f"{ch.name}: no '## Exercises' section")
            continue
        section = "\n".join(texts[at[0]:])
        section = section[re.search(r"^## Exercises\s*$", section, re.M).start():]
        nxt = re.search(r"^#{1,2} ", section[3:], re.M)
        section = section[:nxt.start() + 3] if nxt else section
        found = {f"ex-{m.group(2)}-{m.group(3)}" for m in _LABEL.finditer(section)
                 if m.group(1) == "ex"}
        if not found:
            problems.append(f"{ch.name}: its Exercises section has no labelled exercise "
                            f"((ex-{slug}-1)= before the first)")
        for label in found:
            exercises[label] = ch.name
        links_to_solution |= _labels_and_refs(ch)[1]
    for page in sorted((root / "book" / "solutions").glob("*.ipynb")):
        labels, refs = _labels_and_refs(page)
        for label in labels:
            if label.startswith("sol-"):
                solutions[label] = page.name
        links_to_exercise |= refs
    for label, page in sorted(exercises.items()):
        sol = "sol-" + label[3:]
        if sol not in solutions:
            problems.append(f"{page}: exercise {label} has no solution (no ({sol})= in "
                            f"book/solutions/)")
        if sol not in links_to_solution:
            problems.append(f"{page}: exercise {label} does not link to its solution "
                            f"({{ref}}`solution <{sol}>`)")
    for label, page in sorted(solutions.items()):
        ex = "ex-" + label[4:]
        if ex not in exercises:
            problems.append(f"solutions/{page}: solution {label} has no exercise ({ex})")
        if ex not in links_to_exercise:
            problems.append(f"solutions/{page}: solution {label} does not link back to its "
                            f"exercise ({{ref}}`exercise <{ex}>`)")
    return problems


if __name__ == "__main__":  # print the notebooks in _toc.yml, for `make test-notebooks`
    print(" ".join(str(p.relative_to(Path.cwd())) for p in toc_notebooks(Path.cwd())))

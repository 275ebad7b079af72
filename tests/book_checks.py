"""Checks of the book's notebooks that nbval does not make (used by tests/test_book.py).

- every notebook under book/ is listed in _toc.yml, and every listed file exists;
- every notebook is committed executed: each code cell has an execution count, the counts run
  1..n (top to bottom in one fresh kernel), and some cell has a stored output (a notebook
  with no stored output at all checks nothing under nbval);
- every top-level function and class of the library is shown (a literalinclude);
- every `buildllm` command that the book and the README print is one the command line accepts.
"""

from __future__ import annotations

import ast
import json
import re
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
        ignored = "NBVAL_IGNORE_OUTPUT" in "".join(c.get("source", ""))
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                problems.append(f"{path}: a stored output is an error ({o.get('ename')})")
            if o.get("output_type") == "stream" and o.get("name") == "stderr" and not ignored:
                text = "".join(o.get("text", ""))
                problems.append(f"{path}: a cell wrote to stderr (a warning?): {text[:120]!r}")
    return problems



_PARTIAL = {"lines", "start-after", "start-at", "end-before", "end-at"}  # not the whole file
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


def literal_includes(root: Path) -> dict[str, set[str] | None]:
    """What the book shows of each library file: file -> set of :pyobject: names, or None when
    the whole file is included."""
    shown: dict[str, set[str] | None] = {}
    for page in sorted((root / "book").rglob("*")):
        for text in prose(page):
            for m in _INCLUDE.finditer(text + "\n"):
                target = (page.parent / m.group(1)).resolve()
                key = str(target.relative_to(root.resolve()))
                options = dict(re.findall(r":([\w-]+):\s*(.*)", m.group(2)))
                if "pyobject" in options:
                    if shown.get(key, set()) is not None:
                        shown.setdefault(key, set()).add(options["pyobject"].strip())
                elif not _PARTIAL & options.keys():
                    shown[key] = None
    return shown


def check_library_shown(root: Path) -> list[str]:
    """Problems: top-level functions and classes of code/buildllm that the book never shows."""
    shown = literal_includes(root)
    problems = []
    for module in sorted((root / "code" / "buildllm").glob("*.py")):
        key = str(module.relative_to(root))
        if module.name == "__init__.py" or shown.get(key, set()) is None:
            continue
        included = shown.get(key, set())
        missing = []
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name not in included:
                    missing.append(node.name)
            elif isinstance(node, ast.ClassDef) and node.name not in included:
                # a class shown method by method counts when every method is shown
                methods = [f"{node.name}.{m.name}" for m in node.body
                           if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
                missing.extend(m for m in methods if m not in included)
                if not methods:
                    missing.append(node.name)
        if missing:
            problems.append(f"{key}: the book never shows {', '.join(missing)} (add a "
                            f"literalinclude with :pyobject: to the chapter that explains it)")
    return problems


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


if __name__ == "__main__":  # print the notebooks in _toc.yml, for `make test-notebooks`
    print(" ".join(str(p.relative_to(Path.cwd())) for p in toc_notebooks(Path.cwd())))

"""The book's notebooks are listed, committed executed, in order; and the checks themselves work.

nbval (run by `make test-notebooks`) re-executes every notebook and compares outputs; these
tests cover what nbval cannot see: a notebook that is not in _toc.yml is never checked, and one
without stored outputs passes nbval while checking nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from book_checks import (
    book_commands,
    check_api_reference,
    check_cells_shown,
    check_code_width,
    check_commands,
    check_executed,
    check_exercises,
    check_figures_referenced,
    check_later_names,
    check_library_shown,
    check_no_source_dump,
    check_static_figures,
    check_toc,
    code_columns,
    toc_notebooks,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", toc_notebooks(ROOT), ids=lambda p: p.name)
def test_no_build_plumbing_is_printed(path):
    assert check_cells_shown(path) == []


def test_every_figure_and_table_is_cited():
    assert check_figures_referenced(ROOT) == []


def test_plumbing_and_citation_checks_see_problems(tmp_path):
    path = _notebook(tmp_path / "book" / "nb.ipynb", ['glue("x", 1, display=False)'])
    assert "shows 'glue('" in check_cells_shown(path)[0]
    nb = json.loads(path.read_text())
    nb["cells"][1]["metadata"]["tags"] = ["remove-input"]
    path.write_text(json.dumps(nb))
    assert check_cells_shown(path) == []
    (tmp_path / "book" / "ch.md").write_text("```{figure} a.png\n:name: fig-a\n\nA.\n```\n")
    assert "fig-a is never cited" in check_figures_referenced(tmp_path)[0]
    (tmp_path / "book" / "ch.md").write_text("```{figure} a.png\n:name: fig-a\n```\n"
                                             "See {numref}`fig-a`.\n")
    assert check_figures_referenced(tmp_path) == []


def test_every_drawn_figure_is_shown_named_and_committed():
    assert check_static_figures(ROOT) == []


def test_drawn_figure_check_sees_problems(tmp_path):
    (tmp_path / "book" / "figures").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    for name in ("a", "b"):
        (tmp_path / "book" / "figures" / f"{name}.png").write_bytes(b"PNG")
    (tmp_path / "scripts" / "make_figures.py").write_text('save(fig, "a")\nOUT / "c.png"\n')
    (tmp_path / "book" / "ch.md").write_text("```{figure} figures/a.png\n:width: 100%\n```\n"
                                             "```{figure} figures/d.png\n:name: fig-d\n```\n")
    problems = "\n".join(check_static_figures(tmp_path))
    for expected in ("figures/a.png has no :name:", "figures/d.png does not exist",
                     "b.png is shown by no page", "b.png is not drawn",
                     "draws c.png, which book/figures/ lacks"):
        assert expected in problems
    assert "a.png is shown by no page" not in problems
    (tmp_path / "book" / "figures" / "b.png").unlink()
    (tmp_path / "scripts" / "make_figures.py").write_text('save(fig, "a")\n')
    (tmp_path / "book" / "ch.md").write_text("```{figure} figures/a.png\n:name: fig-a\n```\n")
    assert check_static_figures(tmp_path) == []


def test_every_notebook_is_listed_and_every_listed_file_exists():
    assert check_toc(ROOT) == []


@pytest.mark.parametrize("path", toc_notebooks(ROOT), ids=lambda p: p.name)
def test_notebook_is_committed_executed_in_order(path):
    assert check_executed(path) == []


# ---- the checker, on notebooks made here -----------------------------------------------------


def _notebook(path: Path, sources: list[str], executed: bool = True, counts=None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter")]
    for k, src in enumerate(sources):
        cell = nbformat.v4.new_code_cell(src)
        if executed:
            cell.execution_count = counts[k] if counts else k + 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{k}\n")]
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _book(tmp_path: Path, listed: list[str]) -> Path:
    chapters = "\n".join(f"  - file: book/{name}" for name in listed)
    toc = f"format: jb-book\nroot: book/index\nchapters:\n{chapters}\n"
    (tmp_path / "_toc.yml").write_text(toc)
    (tmp_path / "book").mkdir(exist_ok=True)
    (tmp_path / "book" / "index.md").write_text("# Title\n")
    return tmp_path


def test_checker_refuses_a_notebook_missing_from_the_toc(tmp_path):
    root = _book(tmp_path, ["one"])
    _notebook(root / "book" / "one.ipynb", ["print(0)"])
    assert check_toc(root) == []
    _notebook(root / "book" / "two.ipynb", ["print(0)"])
    problems = check_toc(root)
    assert len(problems) == 1 and "two.ipynb is not in _toc.yml" in problems[0]


def test_checker_refuses_a_listed_file_that_does_not_exist(tmp_path):
    root = _book(tmp_path, ["ghost"])
    assert "lists book/ghost" in check_toc(root)[0]


def test_checker_refuses_a_notebook_without_outputs(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", ["print(0)", "print(1)"], executed=False)
    problems = check_executed(path)
    assert any("never executed" in p for p in problems)
    assert any("no code cell has a stored output" in p for p in problems)


def test_checker_refuses_a_notebook_run_out_of_order(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", ["print(0)", "print(1)"], counts=[2, 1])
    assert "not 1..2" in check_executed(path)[0]


def test_checker_accepts_a_notebook_run_top_to_bottom(tmp_path):
    assert check_executed(_notebook(tmp_path / "nb.ipynb", ["print(0)", "print(1)"])) == []


def test_checker_refuses_stderr_outside_ignored_cells(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", ["import warnings"])
    nb = json.loads(path.read_text())
    nb["cells"][1]["outputs"].append({"output_type": "stream", "name": "stderr",
                                      "text": "UserWarning: something\n"})
    path.write_text(json.dumps(nb))
    assert "stderr" in check_executed(path)[0]


# ---- nbval itself: an edited stored output fails ---------------------------------------------


def _run_nbval(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nbval_figures",
         "--nbval",
         "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "tests/nbval_sanitize.cfg"),
         str(path)],
        cwd=path.parent, env=env, capture_output=True, text=True, timeout=300,
    )


def test_nbval_fails_when_a_stored_output_is_edited(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    cell = nbformat.v4.new_code_cell("print(6 * 7)")
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nb.cells = [cell]
    path = tmp_path / "answer.ipynb"
    nbformat.write(nb, path)
    good = _run_nbval(path)
    assert good.returncode == 0, good.stdout + good.stderr

    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="43\n")]
    nbformat.write(nb, path)
    edited = _run_nbval(path)
    assert edited.returncode != 0
    assert "1 failed" in edited.stdout


def _figure_notebook(path: Path, png: bytes, caption: str) -> Path:
    """A notebook whose one cell printed ``caption`` and showed a figure, as a glued record and
    as a plain image, with these (stored) bytes."""
    import base64

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    source = ("import base64\n"
              "from IPython.display import display\n"
              f"data = base64.b64encode({png!r}).decode()\n"
              "display({'application/papermill.record/image/png': data,\n"
              "         'application/papermill.record/text/plain': 'fig'}, raw=True)\n"
              "display({'image/png': data, 'text/plain': '<Figure>'}, raw=True)\n"
              "print('made the figure')\n")
    cell = nbformat.v4.new_code_cell(source)
    cell.execution_count = 1
    data = base64.b64encode(png).decode()
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "application/papermill.record/image/png": data,
            "application/papermill.record/text/plain": "fig"}),
        nbformat.v4.new_output("display_data", data={"image/png": data,
                                                     "text/plain": "<Figure>"}),
        nbformat.v4.new_output("stream", name="stdout", text=caption),
    ]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def test_nbval_skips_figures_but_not_text(tmp_path):
    """A figure's bytes differ between CPUs: a stored figure that differs from the new one
    passes (glued or shown), while a stored text that differs still fails."""
    same = _run_nbval(_figure_notebook(tmp_path / "same.ipynb", b"PNG one", "made the figure\n"))
    assert same.returncode == 0, same.stdout + same.stderr
    # the stored figure is other bytes: the run draws "PNG one" again, and still passes
    other = _figure_notebook(tmp_path / "other.ipynb", b"PNG one", "made the figure\n")
    nb = nbformat.read(other, as_version=4)
    other_data = __import__("base64").b64encode(b"PNG two, drawn on another CPU").decode()
    nb.cells[0].outputs[0]["data"]["application/papermill.record/image/png"] = other_data
    nb.cells[0].outputs[1]["data"]["image/png"] = other_data
    nbformat.write(nb, other)
    figure_differs = _run_nbval(other)
    assert figure_differs.returncode == 0, figure_differs.stdout + figure_differs.stderr
    text_differs = _run_nbval(_figure_notebook(tmp_path / "text.ipynb", b"PNG one",
                                               "made another figure\n"))
    assert text_differs.returncode != 0
    assert "1 failed" in text_differs.stdout


def test_the_chapters_show_the_code_that_teaches_and_no_plumbing():
    assert check_library_shown(ROOT) == []


def test_the_api_reference_lists_every_module_and_documents_every_name():
    assert check_api_reference(ROOT) == []


def _library(tmp_path: Path, modules: dict[str, str], page: str) -> Path:
    (tmp_path / "code" / "buildllm").mkdir(parents=True)
    for name, source in modules.items():
        (tmp_path / "code" / "buildllm" / f"{name}.py").write_text(source)
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.md").write_text(page)
    return tmp_path


def test_library_check_sees_includes(tmp_path):
    root = _library(tmp_path, {"model": "def a():\n    pass\n", "files": "def w():\n    pass\n"},
                    "no code shown\n")
    assert "buildllm.model teaches, but no chapter shows" in check_library_shown(root)[0]
    include = "```{{literalinclude}} ../code/buildllm/{}.py\n:pyobject: {}\n```\n"
    (root / "book" / "ch.md").write_text(include.format("model", "a"))
    assert check_library_shown(root) == []
    both = include.format("model", "a") + include.format("files", "w")
    (root / "book" / "ch.md").write_text(both)
    assert "buildllm.files is plumbing, but a chapter prints it" in check_library_shown(root)[0]
    (root / "code" / "buildllm" / "new.py").write_text("")
    assert any("buildllm.new is neither" in p for p in check_library_shown(root))


def test_no_chapter_ends_in_a_dump_of_source():
    assert check_no_source_dump(ROOT) == []


def test_source_dump_check_sees_a_closing_library_section(tmp_path):
    include = "```{literalinclude} ../code/buildllm/model.py\n:pyobject: GPT\n```\n"
    root = tmp_path
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/index\nparts:\n"
                                   "  - caption: Chapters\n    numbered: true\n"
                                   "    chapters:\n      - file: book/one\n")
    path = _notebook(root / "book" / "one.ipynb", ["print(0)"])
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("## The model\n" + include * 3))
    nb.cells.append(nbformat.v4.new_markdown_cell("The code is in `buildllm.model`.\n" + include))
    nbformat.write(nb, path)
    assert check_no_source_dump(root) == []  # listings before code, one closing listing
    nb.cells.append(nbformat.v4.new_markdown_cell("## The library version\n" + include))
    nbformat.write(nb, path)
    problems = check_no_source_dump(root)
    assert len(problems) == 2
    assert "a \"The library version\" section" in problems[0]
    assert "2 listings after the last code cell" in problems[1]


def test_api_check_sees_missing_modules_and_docstrings(tmp_path):
    root = _library(tmp_path, {"model": "def a():\n    pass\n"}, "")
    (root / "book" / "api.md").write_text("```{eval-rst}\n.. automodule:: buildllm.model\n```\n")
    assert check_api_reference(root) == ["buildllm.model.a has no docstring"]
    (root / "code" / "buildllm" / "model.py").write_text('def a():\n    """Doc."""\n')
    assert check_api_reference(root) == []
    (root / "book" / "api.md").write_text("")
    assert "does not list buildllm.model" in check_api_reference(root)[0]


def test_every_command_in_the_book_parses():
    commands = book_commands(ROOT)
    assert any(c.startswith("buildllm generate") for _, c in commands)
    assert check_commands(ROOT) == []


def test_command_checker_refuses_an_unknown_option(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "README.md").write_text("```bash\nbuildllm generate --model runs/book \\\n"
                                        "    --prompt Hi   # a comment\n```\n")
    assert book_commands(tmp_path) == [
        ("README.md", "buildllm generate --model runs/book      --prompt Hi   # a comment")]
    problems = check_commands(tmp_path)
    assert len(problems) == 1 and "required: --checkpoint" in problems[0]


def test_no_listing_uses_a_name_that_a_later_chapter_introduces():
    assert check_later_names(ROOT) == []


def test_later_names_check_catches_a_planted_violation(tmp_path):
    """Chapter one shows a function that calls a helper and reads an attribute that only
    chapter two's listings introduce; a name used in chapter one's own code, or defined in code
    that no chapter shows, is no violation."""
    source = ("def early(x, cache=None):\n"
              "    return helper(x) + cache.filled + x.detail\n\n\n"
              "def helper(x):\n    return x\n\n\n"
              "class Memory:\n    def __init__(self):\n        self.filled = 0\n\n\n"
              "class Hidden:\n    def __init__(self):\n        self.detail = 0\n")
    include = "```{{literalinclude}} ../code/buildllm/mod.py\n:pyobject: {}\n```\n"
    root = _book(tmp_path, ["one", "two"])
    (root / "code" / "buildllm").mkdir(parents=True)
    (root / "code" / "buildllm" / "mod.py").write_text(source)
    (root / "book" / "one.md").write_text("# One\n" + include.format("early"))
    (root / "book" / "two.md").write_text("# Two\n" + include.format("helper")
                                          + include.format("Memory"))
    problems = check_later_names(root)
    assert len(problems) == 2 and all("one.md shows mod.early" in p for p in problems)
    assert "'filled'" in problems[0] and "'helper'" in problems[1] and "two.md" in problems[0]
    (root / "book" / "one.md").write_text("# One\n" + include.format("helper")
                                          + include.format("Memory") + include.format("early"))
    assert check_later_names(root) == []  # taught first: no violation
    (root / "book" / "one.md").write_text("# One\n" + include.format("gone"))
    assert "one.md shows mod.gone, which is not in the library" in check_later_names(root)


def test_no_listing_is_wider_than_a_printed_code_box():
    assert check_code_width(ROOT) == []


def test_code_width_is_the_one_the_book_style_sets():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import bookstyle
    finally:
        sys.path.remove(str(ROOT / "book" / "_ext"))
    assert code_columns() == bookstyle.CODE_COLUMNS


def test_code_width_check_catches_a_wide_line_of_a_printed_code_cell(tmp_path):
    """A code cell's line one column wider than the box is caught; one exactly as wide is not,
    nor a wide line of a cell whose input the book removes."""
    n = code_columns()
    root = _book(tmp_path, ["one"])
    path = _notebook(root / "book" / "one.ipynb",
                     ["x = 1  # " + "f" * (n - 9), "y = 2  # " + "w" * (n - 8),
                      "z = 3  # " + "h" * n])
    nb = nbformat.read(path, as_version=4)
    nb.cells[3].metadata["tags"] = ["remove-input"]
    nbformat.write(nb, path)
    problems = check_code_width(root)
    assert len(problems) == 1 and f"a line of {n + 1} columns" in problems[0], problems


def test_code_width_check_catches_a_wide_line_of_a_printed_output(tmp_path):
    """An output line one column wider than a row of a box is caught (it would be printed
    under 8 pt); one exactly as wide is not, nor the output of a cell tagged remove-output, nor
    a figure's text form."""
    box = code_columns("BOX_COLUMNS")
    root = _book(tmp_path, ["one"])
    path = _notebook(root / "book" / "one.ipynb", ["print(1)", "print(2)", "print(3)", "f"])
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs[0].text = "a" * box + "\n"
    nb.cells[2].outputs[0].text = "short\n" + "b" * (box + 1) + "\n"
    nb.cells[3].outputs[0].text = "c" * (box + 5)
    nb.cells[3].metadata["tags"] = ["remove-output"]
    nb.cells[4].outputs = [nbformat.v4.new_output(
        "display_data", data={"text/plain": "<Figure " + "d" * box + ">", "image/png": ""})]
    nbformat.write(nb, path)
    problems = check_code_width(root)
    assert len(problems) == 1 and f"a line of {box + 1} columns" in problems[0], problems
    assert "its output" in problems[0]


def test_code_width_check_catches_a_planted_long_line(tmp_path):
    """A line one column wider than the box is caught, named by page, object and line; a line
    exactly as wide is not, nor one that ``:dedent:`` or ``:end-before:`` leaves out or narrows,
    nor a line outside the listed object."""
    n = code_columns()
    source = ("def fits():\n    # " + "f" * (n - 6) + "\n    return 1\n\n\n"
              "def wide():\n    # " + "w" * (n - 5) + "\n    return 2\n\n\n"
              "class Box:\n    def method(self):\n        # " + "m" * (n - 6)
              + "\n        # cut here\n        # " + "c" * n + "\n        return 3\n\n\n"
              "# " + "o" * n + "\n")
    assert max(map(len, source.splitlines())) > n + 1
    include = "```{{literalinclude}} ../code/buildllm/mod.py\n:pyobject: {}\n{}```\n"
    root = _book(tmp_path, ["one", "two"])
    (root / "code" / "buildllm").mkdir(parents=True)
    (root / "code" / "buildllm" / "mod.py").write_text(source)
    (root / "book" / "one.md").write_text(
        "# One\n" + include.format("fits", "")
        + include.format("Box.method", ":dedent: 4\n:end-before: cut here\n"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Two\n" + include.format("wide", ""))]
    nbformat.write(nb, root / "book" / "two.ipynb")
    problems = check_code_width(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"two.ipynb shows mod.wide: line 7 of mod.py is {n + 1} "
                                  f"columns wide, more than the {n}")
    # without :dedent: and :end-before:, the method's two comments are too wide
    (root / "book" / "one.md").write_text("# One\n" + include.format("Box.method", ""))
    problems = check_code_width(root)
    assert [p.split(" is ")[0] for p in problems] == [
        "one.md shows mod.Box.method: line 13 of mod.py",
        "one.md shows mod.Box.method: line 15 of mod.py",
        "two.ipynb shows mod.wide: line 7 of mod.py"]
    assert check_code_width(root, columns=n + 10) == []


def test_every_chapter_has_exercises_and_every_exercise_a_solution():
    assert check_exercises(ROOT) == []


def _page(path: Path, markdown: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(m) for m in markdown]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_exercise_check_sees_missing_sections_solutions_and_links(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nchapters:\n- file: book/01_a\n"
        "- file: book/solutions/01_a\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "index.md").write_text("# Index\n")
    chapter = tmp_path / "book" / "01_a.ipynb"
    solutions = tmp_path / "book" / "solutions" / "01_a.ipynb"
    _page(chapter, ["# A\n\n## Summary\n\nText."])
    _page(solutions, ["# Solutions"])
    assert check_exercises(tmp_path) == ["01_a.ipynb: no '## Exercises' section"]
    _page(chapter, ["# A\n\n## Exercises\n\n1. Do it."])
    assert "has no labelled exercise" in check_exercises(tmp_path)[0]
    _page(chapter, ["# A\n\n## Exercises\n\n(ex-a-1)=\n**1.** Do it."])
    problems = check_exercises(tmp_path)
    assert "ex-a-1 has no solution" in problems[0]
    assert "does not link to its solution" in problems[1]
    _page(chapter, ["# A\n\n## Exercises\n\n(ex-a-1)=\n**1.** Do it "
                    "({ref}`solution <sol-a-1>`)."])
    _page(solutions, ["# Solutions\n\n(sol-a-1)=\n## Exercise 1\n\nDone.",
                      "(sol-a-2)=\n## Exercise 2\n\n{ref}`Exercise 2 <ex-a-2>`."])
    problems = check_exercises(tmp_path)
    assert problems == ["solutions/01_a.ipynb: solution sol-a-1 does not link back to its "
                        "exercise ({ref}`exercise <ex-a-1>`)",
                        "solutions/01_a.ipynb: solution sol-a-2 has no exercise (ex-a-2)"]
    _page(solutions, ["# Solutions\n\n(sol-a-1)=\n## Exercise 1\n\n"
                      "{ref}`Exercise 1 <ex-a-1>`: done."])
    assert check_exercises(tmp_path) == []

"""Two Sphinx additions of the book, loaded by `_config.yml` (`local_extensions`).

- The edition on the title page: the library's version and the git commit the book was built
  from, dated by that commit (not by the day of the build).
- The book's index lists ideas, not the API: the entries that autodoc makes for every function
  of the API reference leave the index (the reference's own headings and links stay).
- Author-year labels in the bibliography, "[Vaswani et al., 2017]", the same style as the
  citations in the text ("Vaswani et al., 2017"), sorted by author and year.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pybtex.plugin import register_plugin
from sphinx import addnodes
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle

ROOT = Path(__file__).resolve().parents[2]


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


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt formatting, with author-year labels, sorted by author then year."""

    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def drop_api_index_entries(app, doctree) -> None:
    """Remove the index entries of the API reference's page (``book/api``)."""
    if app.env.docname.endswith("api"):
        for node in list(doctree.findall(addnodes.index)):
            node.parent.remove(node)


def setup(app):
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    app.connect("config-inited", set_edition)
    app.connect("doctree-read", drop_api_index_entries)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

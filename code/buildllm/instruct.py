"""Instruction tuning: a language model trained to answer questions in words. Explained in the
chapter "Fine-tuning".

The model is trained on prompts followed by answers, with the loss on the answer only:
:func:`instruction_example` puts -1, which the loss ignores, on every position whose next token
is still the prompt's. The questions: a passage's genre (:func:`genre_questions`), and who
speaks a line of a scene (:func:`speaker_questions`). :func:`train_lm` trains on them with the
loop of :func:`buildllm.finetune.fit`; :func:`answer_logprob` and :func:`greedy_answer`
measure what the model learned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from buildllm import generate
from buildllm import plays as plays_
from buildllm.finetune import CLASSES, fit, pad
from buildllm.model import GPT

GENRE_QUESTION = "Is this from a comedy, a history or a tragedy?"
SPEAKER_QUESTION = "Who speaks this line?"


def genre_questions(texts: Sequence[str], labels: torch.Tensor) -> list[tuple[str, str]]:
    """The genre task as (prompt, answer) pairs: the question, the passage, ``Answer:``; the
    answer is a space, the genre (comedy, history or tragedy) and a newline."""
    return [(f"{GENRE_QUESTION}\n{t}\nAnswer:", f" {CLASSES[k]}\n")
            for t, k in zip(texts, labels.tolist())]


def speaker_prompt(context: Sequence[plays_.Speech], line: str) -> str:
    """The scene so far, as Tiny Shakespeare prints speeches (``NAME:``, the text, a blank
    line), then the question, the line, and ``Answer:`` with a newline; the answer is ``NAME``
    and a newline. Names start their line in the scene and in the answer alike, so they are
    the same tokens in both (``" NAME"``, after a space, would be other tokens)."""
    scene = "".join(f"{s.speaker}:\n{s.text}\n\n" for s in context)
    return f"{scene}{SPEAKER_QUESTION}\n{line}\nAnswer:\n"


def _recent(speeches: Sequence[plays_.Speech], max_chars: int) -> list[plays_.Speech]:
    """The last speeches, each cut to its last lines, that fit in ``max_chars`` together."""
    out, room = [], max_chars
    for s in reversed(speeches):
        lines = []
        for line in reversed(s.lines):
            if len(line) + 1 > room - len(s.speaker) - 3:
                break
            lines.insert(0, line)
            room -= len(line) + 1
        if not lines:
            break
        out.insert(0, dataclasses.replace(s, lines=tuple(lines)))
        room -= len(s.speaker) + 3
    return out


def speaker_questions(plays: Sequence[plays_.Play], n: int, context_chars: int = 160,
                      seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (prompt, answer) pairs drawn from ``plays``: a speech's first line, after up to
    ``context_chars`` characters of the speeches before it in its scene. Only questions that
    the prompt can answer are kept: the speaker must be one of the speakers shown, since a
    held-out play's names are never seen in training. (The book's small model does not learn
    to copy the name in a few hundred steps; the chapter's exercises come back to it.)"""
    pairs = []
    for play in plays:
        for i, speech in enumerate(play.speeches):
            before = [s for s in play.speeches[max(0, i - 6):i] if s.scene == speech.scene]
            context = _recent(before, context_chars)
            if (speech.speaker in {s.speaker for s in context}
                    and len(speech.lines[0]) <= 80):
                pairs.append((speaker_prompt(context, speech.lines[0]), f"{speech.speaker}\n"))
    return plays_.sample(pairs, n, seed)


def instruction_example(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Input ids and targets for one (prompt, answer) pair, each of length ``P + A - 1``:
    the targets are the next tokens, with -1 wherever the next token is still the prompt's,
    so the loss (which skips -1) trains the answer only."""
    p, a = tokenizer.encode(prompt), tokenizer.encode(answer)
    if not p or not a:
        raise ValueError("an instruction example needs a non-empty prompt and answer")
    ids = p + a
    return ids[:-1], [-1] * (len(p) - 1) + a


def pad_pairs(pairs: Sequence[tuple[list[int], list[int]]],
              pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, padded on the right: ``(B, T)`` each, targets padded with -1."""
    x, _ = pad([ids for ids, _ in pairs], pad_id)
    y, _ = pad([t for _, t in pairs], -1)
    return x, y


def train_lm(model: GPT, pairs: Sequence[tuple[list[int], list[int]]], steps: int,
             pad_id: int = 0, **kwargs) -> dict:
    """Train a language model on (ids, targets) pairs with its own loss, which skips the -1
    targets; the keyword arguments of :func:`fit` (lr, batch_size, ...)."""

    def loss_of(b: torch.Tensor) -> torch.Tensor:
        return model(*pad_pairs([pairs[i] for i in b], pad_id))[1]

    return fit(model, loss_of, len(pairs), steps, **kwargs)


@torch.no_grad()
def answer_logprob(model: GPT, pairs: Sequence[tuple[list[int], list[int]]],
                   batch_size: int = 32, pad_id: int = 0) -> torch.Tensor:
    """The log-probability (nats) the model gives each whole answer after its prompt, ``(N,)``."""
    model.eval()
    out = []
    for i in range(0, len(pairs), batch_size):
        x, y = pad_pairs(pairs[i:i + batch_size], pad_id)
        logp = model(x)[0].log_softmax(-1)  # (B, T, V)
        picked = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]  # (B, T)
        out.append((picked * (y >= 0)).sum(1))
    return torch.cat(out)


@torch.no_grad()
def greedy_answer(model: GPT, tokenizer, prompt: str, max_tokens: int = 8) -> str:
    """The model's answer to ``prompt``: greedy tokens up to the first newline, stripped."""
    ids, newline = tokenizer.encode(prompt), tokenizer.encode("\n")
    stop = newline[0] if len(newline) == 1 else None
    out = generate.generate(model, ids, max_tokens, temperature=0.0, eos_id=stop)[len(ids):]
    return tokenizer.decode(out.tolist()).split("\n")[0].strip()

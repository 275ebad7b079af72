"""Fine-tuning the pretrained model as a classifier. Explained in the chapter "Fine-tuning".

Keep the transformer's body, drop the next-token head, and put a small linear head on the
hidden state of the last real token (:class:`GPTClassifier`). Train only the head (the body
frozen), everything, or LoRA adapters plus the head (:func:`prepare`), with one loop
(:func:`fit`). Batches are padded on the right (:func:`pad`): in a causal model no real token
ever attends to a padding token after it, so a padded sequence gets the very prediction it
gets alone.

The task (:func:`genre_task`): a passage's genre, comedy, history or tragedy, on Shakespeare's
plays (:mod:`buildllm.plays`) split by play; a speaker would not do, as characters rarely cross
from one play into another. Its baselines are in :mod:`buildllm.baselines`; the same question
asked in words, answered by the language model itself, in :mod:`buildllm.instruct`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from buildllm import plays as plays_
from buildllm.bpe import ENDOFTEXT
from buildllm.files import is_number
from buildllm.lora import apply_lora, trainable_parameters
from buildllm.model import GPT
from buildllm.plays import TEST_PLAYS, VAL_PLAYS

# The genres of the First Folio (1623), which printed 36 of the plays under three headings;
# Pericles and Edward III, which it left out, are left out here too.
FOLIO = {
    "comedy": ("the-tempest", "two-gentlemen-of-verona", "the-merry-wives-of-windsor",
               "measure-for-measure", "the-comedy-of-errors", "much-ado-about-nothing",
               "love-s-labours-lost", "a-midsummer-night-s-dream", "the-merchant-of-venice",
               "as-you-like-it", "the-taming-of-the-shrew", "all-s-well-that-ends-well",
               "twelfth-night", "a-winter-s-tale"),
    "history": ("king-john", "richard-ii", "henry-iv-part-1", "henry-iv-part-2", "henry-v",
                "henry-vi-part-1", "henry-vi-part-2", "henry-vi-part-3", "richard-iii",
                "henry-viii"),
    "tragedy": ("troilus-and-cressida", "coriolanus", "titus-andronicus", "romeo-and-juliet",
                "timon-of-athens", "julius-caesar", "macbeth", "hamlet", "king-lear", "othello",
                "antony-and-cleopatra", "cymbeline"),
}
GENRE_OF = {play: genre for genre, names in FOLIO.items() for play in names}
CLASSES = tuple(FOLIO)
METHODS = ("head", "full", "lora")
# The learning rate of each method: adapters and a new head start from nothing and take larger
# steps than the pretrained weights (chosen on the validation plays).
LEARNING_RATES = {"head": 3e-3, "full": 1e-3, "lora": 3e-3}


# ---------------------------------------------------------------------------------------------
# The task: passages, labels, token ids, padded batches
# ---------------------------------------------------------------------------------------------


def genre_examples(plays: Sequence[plays_.Play], per_class: int, max_chars: int = 192,
                   seed: int = 0, genre_of: dict[str, str] | None = None,
                   ) -> tuple[list[str], torch.Tensor]:
    """``per_class`` passages (:func:`plays.passages`) of each genre in :data:`CLASSES`, drawn
    from ``plays``, shuffled: texts and labels ``(N,)`` (indices into ``CLASSES``). A play's
    genre is ``genre_of[play.name]`` (:data:`GENRE_OF`); plays it does not name are skipped."""
    genre_of = GENRE_OF if genre_of is None else genre_of
    pool: dict[str, list[str]] = {c: [] for c in CLASSES}
    for play in plays:
        if play.name in genre_of:
            pool[genre_of[play.name]] += plays_.passages(play, max_chars)
    if short := [c for c in CLASSES if len(pool[c]) < per_class]:
        raise ValueError(f"too few passages of {short} for per_class={per_class} "
                         f"({ {c: len(pool[c]) for c in CLASSES} }); use fewer or add plays")
    pairs = [(t, k) for k, c in enumerate(CLASSES) for t in plays_.sample(pool[c], per_class, seed)]
    pairs = plays_.sample(pairs, len(pairs), seed)
    return [t for t, _ in pairs], torch.tensor([k for _, k in pairs])


def encode_all(tokenizer, texts: Sequence[str], max_tokens: int,
               end_id: int | None = None) -> list[list[int]]:
    """Each text's token ids, cut to at most ``max_tokens``; with ``end_id``, that token ends
    every text, as GPT-1 ended its inputs with an "extract" token: its hidden state, last and
    attending to the whole text, is the same kind of summary whatever word the text ends on."""
    keep = max_tokens - (end_id is not None)
    if keep < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for text; use 2 or more")
    end = [] if end_id is None else [end_id]
    return [tokenizer.encode(t)[:keep] + end for t in texts]


def pad(seqs: Sequence[Sequence[int]], pad_id: int = 0,
        side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of different lengths as one batch ``(B, T)``, ``T`` the longest, filled
    with ``pad_id`` on the ``side`` given; and ``last`` ``(B,)``, the index of each row's
    last real token (``len - 1`` when padded on the right, ``T - 1`` on the left)."""
    assert side in ("left", "right") and seqs and min(map(len, seqs)), (
        "sequences, none empty")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, :len(s)] = torch.as_tensor(s)
        else:
            ids[i, T - len(s):] = torch.as_tensor(s)
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, (lengths - 1 if side == "right" else torch.full_like(lengths, T - 1))


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------


class GPTClassifier(nn.Module):
    """The body of a GPT and a linear head on the hidden state of each sequence's last real
    token: ids ``(B, T)`` and ``last`` ``(B,)`` -> class scores ``(B, n_classes)``."""

    def __init__(self, body: GPT, n_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.config.n_embd, n_classes)

    def forward(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        h = self.body.features(idx)  # (B, T, C)
        return self.head(h[torch.arange(idx.size(0)), last])  # (B, C) -> (B, n_classes)


def prepare(model: GPTClassifier, method: str, r: int = 8, alpha: float = 16.0,
            targets: Sequence[str] | None = None) -> GPTClassifier:
    """Choose what trains: ``"head"`` (the body frozen), ``"full"`` (everything) or
    ``"lora"`` (rank-``r`` adapters on the ``targets`` layers, by default every attention
    and feed-forward matrix, and the head). In place; returns ``model``."""
    model.requires_grad_(method == "full")
    if method == "lora":
        apply_lora(model.body, r, alpha, targets)
    model.head.requires_grad_(True)
    return model


@torch.no_grad()
def last_hidden(body: GPT, ids: Sequence[Sequence[int]], batch_size: int = 64,
                pad_id: int = 0) -> torch.Tensor:
    """The hidden state of each sequence's last token, ``(N, C)``: the head's input."""
    body.eval()
    out = []
    for i in range(0, len(ids), batch_size):
        x, last = pad(ids[i:i + batch_size], pad_id)
        out.append(body.features(x)[torch.arange(len(x)), last])
    return torch.cat(out)


@torch.no_grad()
def predict(model: GPTClassifier, ids: Sequence[Sequence[int]], batch_size: int = 64,
            pad_id: int = 0) -> torch.Tensor:
    """The predicted class of each sequence, ``(N,)``."""
    model.eval()
    return model.head(last_hidden(model.body, ids, batch_size, pad_id)).argmax(-1)


# ---------------------------------------------------------------------------------------------
# Training and measuring
# ---------------------------------------------------------------------------------------------


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of random batches, epoch after epoch: each epoch visits all ``n`` once (fewer
    than ``batch_size`` examples make batches of all ``n``)."""
    assert n > 0, "no examples to train on"
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i:i + batch_size]


def fit(model: nn.Module, loss_of: Callable[[torch.Tensor], torch.Tensor], n: int,
        steps: int,
        max_seconds: float | None = None, lr: float = 1e-3, batch_size: int = 32,
        weight_decay: float = 0.01, seed: int = 0) -> dict:
    """The fine-tuning loop: AdamW on the trainable parameters of ``model``, minimizing
    ``loss_of(batch indices)`` over random batches of ``n`` examples, the learning rate
    falling linearly to zero over ``steps``; it stops early after ``max_seconds`` CPU
    seconds. Returns the steps done, the CPU seconds and the losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    model.train()
    start, losses = time.process_time(), []
    for _, b in zip(range(steps),
                    batches(n, batch_size, torch.Generator().manual_seed(seed))):
        if max_seconds is not None and time.process_time() - start > max_seconds:
            break
        loss = loss_of(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss is {losses[-1]} at step {len(losses)}: "
                                     f"the learning rate ({lr}) is too high for this "
                                     f"model; lower it")
    model.eval()
    return {"steps": len(losses), "cpu_seconds": time.process_time() - start,
            "losses": losses}


def train_classifier(model: GPTClassifier, ids: Sequence[Sequence[int]], labels: torch.Tensor,
                     steps: int, pad_id: int = 0, **kwargs) -> dict:
    """Train on token ids and labels ``(N,)`` with the cross-entropy of the class scores, in
    right-padded batches; the keyword arguments of :func:`fit` (lr, batch_size, ...)."""

    def loss_of(b: torch.Tensor) -> torch.Tensor:
        x, last = pad([ids[i] for i in b], pad_id)
        return F.cross_entropy(model(x, last), labels[b])

    return fit(model, loss_of, len(ids), steps, **kwargs)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion of ``k`` successes in ``n`` trials (95%
    for ``z = 1.96``): honest near 0 and 1, where ``p ± z·sqrt(p(1-p)/n)`` is not."""
    assert 0 <= k <= n and n >= 1, f"need 0 <= k <= n and n >= 1, got k={k}, n={n}"
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of predictions ``(N,)`` with its 95% Wilson interval: ``acc``, ``lo``, ``hi``."""
    k, n = int((pred == labels).sum()), len(labels)
    lo, hi = wilson(k, n)
    return {"acc": k / n, "lo": lo, "hi": hi, "n": n}


@dataclasses.dataclass
class GenreTask:
    """The genre task, ready to train: token ids (each ending with ``end_id``) and labels, and
    the passages as text (for the baselines, which read words)."""

    train_ids: list[list[int]]
    train_labels: torch.Tensor  # (N,)
    test_ids: list[list[int]]
    test_labels: torch.Tensor  # (M,)
    end_id: int  # <|endoftext|>: ends every passage, and pads batches
    train_texts: list[str] = dataclasses.field(default_factory=list)
    test_texts: list[str] = dataclasses.field(default_factory=list)


def genre_task(tokenizer, per_class: int = 2000, test_per_class: int = 600,
               max_chars: int = 192, max_tokens: int = 64) -> GenreTask:
    """Passages of the training plays and of the held-out :data:`TEST_PLAYS`, encoded; the
    settings of the chapter "Fine-tuning". Needs a tokenizer with ``<|endoftext|>`` (BPE)."""
    end_id = tokenizer.special_tokens.get(ENDOFTEXT)
    if end_id is None:
        raise ValueError(f"the genre task ends each passage with {ENDOFTEXT}, which this "
                         f"tokenizer lacks; fine-tune a model with a BPE tokenizer")
    split = plays_.split_by_play(plays_.load_plays(), TEST_PLAYS, VAL_PLAYS)
    tr_x, tr_y = genre_examples(split["train"], per_class, max_chars, seed=0)
    te_x, te_y = genre_examples(split["test"], test_per_class, max_chars, seed=1)
    return GenreTask(encode_all(tokenizer, tr_x, max_tokens, end_id), tr_y,
                     encode_all(tokenizer, te_x, max_tokens, end_id), te_y, end_id, tr_x, te_x)


def check_finetune_settings(method: str, steps: int, lr: float, r: int,
                            alpha: float) -> None:
    """Raise ``ValueError`` naming the first setting of a fine-tuning run that cannot work."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (is_number(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}; try 200")
    if not (is_number(lr) and lr > 0):
        raise ValueError(f"the learning rate must be a positive number, got {lr!r}; try 1e-3")
    if not (is_number(r, int) and r >= 1):
        raise ValueError(f"LoRA rank r must be a positive int, got {r!r}; try r=8")
    if not (is_number(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha must be a positive number, got {alpha!r}; "
                         f"alpha=2*r is a common choice")


def check_fits(model: GPT, task: GenreTask) -> None:
    """Raise ``ValueError`` when the task's longest passage is longer than the model's context."""
    longest = max(map(len, task.train_ids + task.test_ids))
    if longest > model.config.block_size:
        raise ValueError(f"passages of up to {longest} tokens do not fit the model's context of "
                         f"{model.config.block_size}: make the task with max_tokens <= "
                         f"{model.config.block_size} (buildllm finetune --max-tokens)")


def finetune_classifier(model: GPT, task: GenreTask, method: str, steps: int = 200,
                        lr: float | None = None, r: int = 8, alpha: float = 16.0,
                        max_seconds: float | None = None) -> tuple[GPTClassifier, dict]:
    """Fine-tune a copy of ``model`` on ``task`` by ``method`` (head, full or lora) at the
    learning rate ``lr`` (by default the method's, :data:`LEARNING_RATES`); returns the
    classifier and its held-out accuracy with the trainable parameters and CPU seconds."""
    lr = LEARNING_RATES.get(method) if lr is None else lr
    check_finetune_settings(method, steps, lr, r, alpha)
    check_fits(model, task)
    clf = prepare(GPTClassifier(copy.deepcopy(model), len(CLASSES)), method, r, alpha)
    log = train_classifier(clf, task.train_ids, task.train_labels, steps, task.end_id,
                           lr=lr, max_seconds=max_seconds)
    pred = predict(clf, task.test_ids, pad_id=task.end_id)
    return clf, {**accuracy(pred, task.test_labels), "trainable": trainable_parameters(clf),
                 "cpu_seconds": log["cpu_seconds"], "steps": log["steps"]}

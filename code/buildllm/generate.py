"""Generating text: from next-token distributions to new tokens. Explained in "Generating text".

A trained :class:`~buildllm.model.GPT` gives, for every position, logits over the vocabulary for
the token that comes next. Generation repeats one step: look at the logits of the last position,
pick a token, append it, go again. This module holds the two halves of that step:

- *choosing* a token (:func:`sample_next`): greedy (the most likely token), or a random draw after
  the logits are reshaped by a temperature, by top-k and by top-p (nucleus) filtering, which
  combine, and from a seeded ``torch.Generator`` so that a sample can be drawn again;
- *computing* the logits (:func:`stream`): naively, by running the whole sequence through the
  model at every step, or with the key/value cache of the attention layers: the prompt goes
  through once (the *prefill*), then each step feeds only the newest token. Both give the same
  logits at every step (the tests and the chapter prove it).

:func:`generate` collects the stream into a tensor; :func:`stream_text` turns it into text as it
comes, for the command ``buildllm generate`` (:mod:`buildllm.cli`).

When the sequence outgrows the model's context (``block_size``), generation keeps going on a
sliding window: each step sees the last ``block_size`` tokens. A window that slides changes
every position, so the cache cannot be reused then; those steps run without it. A *prompt*
longer than the context is an error.

A batch of prompts must have one length: prompts of different lengths would need left padding
and a padding mask in attention, which this model does not have; generate them one at a time.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence

import torch

from buildllm.model import GPT
from buildllm.tokenizer import Tokenizer

# ---------------------------------------------------------------------------------------------
# Choosing the next token
# ---------------------------------------------------------------------------------------------


def check_settings(temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> None:
    """Raise ``ValueError`` unless the sampling settings make sense."""
    if not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(
            f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}"
        )
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)
                              or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (no limit), got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None (no limit), got {top_p!r}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row and set the others to ``-inf``: ``(B, V)``.

    Exactly ``k`` survive (of tied values, those ``torch.topk`` lists first); a ``k`` larger
    than the vocabulary keeps everything.
    """
    k = min(k, logits.size(-1))
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least ``p``.

    Nucleus sampling (Holtzman et al., 2020). ``logits``: ``(B, V)``; the rest become ``-inf``.
    A token stays if the tokens more likely than it hold less than ``p`` of the mass, so the
    most likely token always stays.
    """
    if p >= 1:  # everything: the sums below could round the last tiny probabilities away
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    keep_sorted = mass_before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocab order
    return logits.masked_fill(~keep, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one token per row of ``logits`` ``(B, V)``; returns ids ``(B,)``.

    Temperature 0 is greedy: the largest logit wins, nothing is random. Otherwise the logits
    are divided by the temperature, filtered by top-k then top-p, and a token is drawn from the
    softmax of what is left, with ``generator`` as the source of randomness.
    """
    check_settings(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature  # no overflow at tiny t
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Computing the logits, step by step
# ---------------------------------------------------------------------------------------------


def _as_batch(idx: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
              model: GPT) -> torch.Tensor:
    """The prompt as a ``(B, T)`` tensor of ids on the model's device, checked."""
    device = model.wte.weight.device
    if hasattr(idx, "__array__") and not isinstance(idx, torch.Tensor):  # a numpy array
        idx = torch.as_tensor(idx)
        if not (idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool):
            idx = idx.long()  # uint16 ids from encode_corpus, say
    if not isinstance(idx, torch.Tensor):
        rows = list(idx)
        if rows and not isinstance(rows[0], numbers.Integral):  # numpy ints are Integral
            lengths = sorted({len(r) for r in rows})
            if len(lengths) > 1:
                raise ValueError(
                    f"prompts of different lengths {lengths} cannot share a batch: that needs "
                    f"left padding and a padding mask in attention, which this model does not "
                    f"have; generate each prompt on its own (or batch prompts of one length)"
                )
        idx = torch.tensor(rows, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None, :]
    if idx.dim() != 2 or idx.dtype != torch.long:
        raise TypeError(f"the prompt must be token ids (T,) or (B, T) of dtype long, got "
                        f"shape {tuple(idx.shape)} and dtype {idx.dtype}")
    T, block_size, V = idx.size(1), model.config.block_size, model.config.vocab_size
    if T == 0:
        raise ValueError("the prompt is empty: generation needs at least one token to start")
    if T > block_size:
        raise ValueError(
            f"the prompt has {T} tokens, more than the model's context (block_size="
            f"{block_size}); shorten the prompt to its last {block_size} tokens"
        )
    if idx.min() < 0 or idx.max() >= V:
        raise ValueError(f"token ids must be in 0 .. {V - 1}, got {idx.min()} .. {idx.max()}")
    return idx.to(device)


@torch.no_grad()
def stream(model: GPT, idx: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
           max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, eos_id: int | None = None, seed: int | None = None,
           generator: torch.Generator | None = None,
           use_cache: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Generate token by token: yields ``(token (B,), logits (B, V))`` at each step.

    ``idx`` is the prompt, ``(T,)`` or ``(B, T)``. ``logits`` are the raw next-token logits the
    token was chosen from. A row that has produced ``eos_id`` is finished: it yields ``eos_id``
    from then on, and the stream ends when every row is finished or after ``max_new_tokens``
    steps. ``seed`` (or a ``generator`` of your own) makes the draws reproducible. The model is
    put in eval mode for the duration and restored afterwards.
    """
    check_settings(temperature, top_k, top_p)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    idx = _as_batch(idx, model)
    if generator is None and seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(seed)
    B, T = idx.shape
    block_size = model.config.block_size
    cache = model.new_cache(B, min(block_size, T + max_new_tokens)) if use_cache else None
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    was_training = model.training
    model.eval()
    try:
        new = idx  # what the model has not seen yet: with a cache, only these are fed
        for _ in range(max_new_tokens):
            if cache is not None and cache[0].length + new.size(1) <= block_size:
                logits, _ = model(new, cache=cache)  # prefill, then one token at a time
            else:  # no cache, or the window is full and slides: the last block_size tokens
                cache = None
                logits, _ = model(idx[:, -block_size:])
            logits = logits[:, -1, :]  # (B, V): only the last position predicts a new token
            token = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            if eos_id is not None:
                token = token.masked_fill(finished, eos_id)
                finished |= token == eos_id
            yield token, logits
            new = token[:, None]  # (B, 1)
            idx = torch.cat([idx, new], dim=1)  # (B, T + 1)
            if finished.all():
                break
    finally:
        model.train(was_training)


def generate(model: GPT, idx: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
             max_new_tokens: int, **kwargs) -> torch.Tensor:
    """The prompt followed by the generated tokens: ``(B, T + n)`` (``(T + n,)`` for ``(T,)``).

    ``n`` is ``max_new_tokens``, or fewer if every row reached ``eos_id``. Takes the keyword
    arguments of :func:`stream`.
    """
    prompt = _as_batch(idx, model)
    tokens = [token for token, _ in stream(model, prompt, max_new_tokens, **kwargs)]
    out = torch.cat([prompt, *(t[:, None] for t in tokens)], dim=1)  # (B, T + n)
    one_row = torch.as_tensor(idx).dim() == 1  # the prompt was a single sequence (T,)
    return out[0] if one_row else out


def stream_text(model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
                **kwargs) -> Iterator[str]:
    """Generate from a text prompt and yield the new text piece by piece, as it comes.

    A byte-level token can end in the middle of a character: the text decoded so far then ends
    in U+FFFD, and that piece is held back until the next tokens complete it.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"the prompt must be a non-empty string, got {prompt!r}")
    ids: list[int] = []
    shown = 0  # characters of the decoded text already yielded
    for token, _ in stream(model, tokenizer.encode(prompt), max_new_tokens, **kwargs):
        ids.append(int(token[0]))
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):
            yield text[shown:]
            shown = len(text)
    text = tokenizer.decode(ids)
    if len(text) > shown:
        yield text[shown:]

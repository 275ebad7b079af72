"""Generating text: from next-token distributions to new tokens. Explained in "Generating text".

Generation repeats one step: take the logits of the last position, choose a token, append it.
*Choosing* (:func:`sample_next`): greedy, or a draw from a seeded generator after a temperature,
top-k and top-p (nucleus) filtering. *Computing the logits* (:func:`stream`): the whole
sequence at every step, or the prompt once and then the newest token alone, with the key/value
cache (:mod:`buildllm.kvcache`); both give the same logits. :func:`generate` collects the
stream into a tensor, :func:`stream_text` turns it into text as it comes (``buildllm
generate``). Past the context, the window slides, without the cache. A batch of prompts must
have one length (others would need left padding and a mask in attention).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from buildllm.config import check_sampling
from buildllm.files import is_number
from buildllm.model import GPT
from buildllm.tokenizer import Tokenizer

# ---------------------------------------------------------------------------------------------
# Choosing the next token
# ---------------------------------------------------------------------------------------------


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
    """Keep the smallest set of most likely tokens whose probabilities sum to at least
    ``p``.

    Nucleus sampling (Holtzman et al., 2020). ``logits``: ``(B, V)``; the rest become
    ``-inf``. A token stays if the tokens more likely than it hold less than ``p`` of the
    mass, so the most likely token always stays.
    """
    if p >= 1:  # everything: the sums below could round the last tiny probabilities away
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    keep_sorted = mass_before < p
    # back to vocab order
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one token per row of ``logits`` ``(B, V)``; returns ids ``(B,)``.

    Temperature 0 is greedy: the largest logit wins, nothing is random. Otherwise the logits
    are divided by the temperature, filtered by top-k then top-p, and a token is drawn from
    the softmax of what is left, with ``generator`` as the source of randomness.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    # no overflow at tiny t
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Computing the logits, step by step
# ---------------------------------------------------------------------------------------------


def as_batch(idx: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
             model: GPT) -> torch.Tensor:
    """The prompt, ids ``(T,)`` or ``(B, T)`` as a tensor, list or array, as token ids ``(B, T)``
    on the model's device; one that does not fit the context is a ``ValueError``."""
    idx = torch.as_tensor(idx, device=model.wte.weight.device)
    idx = (idx if idx.dim() == 2 else idx[None]).long()  # (B, T)
    if not 0 < idx.size(1) <= model.config.block_size:
        raise ValueError(f"the prompt has {idx.size(1)} tokens; it needs 1 to "
                         f"{model.config.block_size} (the model's context): shorten it")
    return idx


@torch.no_grad()
def stream(model: GPT, idx: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
           max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, eos_id: int | None = None, seed: int | None = None,
           generator: torch.Generator | None = None,
           use_cache: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Generate token by token: yields ``(token (B,), logits (B, V))`` at each step.

    ``idx`` is the prompt, ``(T,)`` or ``(B, T)``. ``logits`` are the raw next-token logits
    the token was chosen from. A row that has produced ``eos_id`` is finished: it yields
    ``eos_id`` from then on, and the stream ends when every row is finished or after
    ``max_new_tokens`` steps. ``seed`` (or a ``generator`` of your own) makes the draws
    reproducible. The model is put in eval mode for the duration and restored afterwards.
    """
    check_sampling(temperature, top_k, top_p)
    if not (is_number(max_new_tokens, int) and max_new_tokens >= 0):
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    idx = as_batch(idx, model)
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
    """The prompt followed by the generated tokens: ``(B, T + n)`` (``(T + n,)`` for
    ``(T,)``).

    ``n`` is ``max_new_tokens``, or fewer if every row reached ``eos_id``. Takes the keyword
    arguments of :func:`stream`.
    """
    prompt = as_batch(idx, model)
    tokens = [token for token, _ in stream(model, prompt, max_new_tokens, **kwargs)]
    out = torch.cat([prompt, *(t[:, None] for t in tokens)], dim=1)  # (B, T + n)
    one_row = torch.as_tensor(idx).dim() == 1  # the prompt was a single sequence (T,)
    return out[0] if one_row else out


def stream_text(model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
                **kwargs) -> Iterator[str]:
    """Generate from a text prompt and yield the new text piece by piece, as it comes.

    A byte-level token can end in the middle of a character: the text decoded so far then
    ends in U+FFFD, and that piece is held back until the next tokens complete it.
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

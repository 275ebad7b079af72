"""Training: quality at equal time against nanoGPT's CPU recipe, and training throughput
against a plain PyTorch model of the same shape.

1. nanoGPT's CPU recipe for Tiny Shakespeare (one id per character, 4 layers, 4 heads, 128
   wide, 64-character context, 12 sequences per step, 2000 steps, lr 1e-3 cosine to 1e-4),
   reimplemented as the recipe ``nanogpt_cpu``, runs first; the book's recipe then trains for
   exactly as long. Both are scored on the whole validation text in nats per character. The
   time is CPU time of this process (``clock=time.process_time``): on an idle machine it is
   the wall-clock time times the threads, and on a shared machine it does not count the
   neighbours' work.
   Goal: ours <= 0.9 x the reference.
2. Tokens per second of one training step (forward, backward, AdamW) of the book's model
   against a plain PyTorch GPT of the same shape written below. Goal: >= 1.0 x.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench import Result
from buildllm.config import RECIPES
from buildllm.model import GPT
from buildllm.repro import best_time, threads
from buildllm.train import make_optimizer, train

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


class PlainBlock(nn.Module):
    """A pre-norm transformer block in plain PyTorch (nanoGPT's layout)."""

    def __init__(self, C: int, H: int):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C, bias=False), nn.LayerNorm(C, bias=False)
        self.qkv, self.proj = nn.Linear(C, 3 * C, bias=False), nn.Linear(C, C, bias=False)
        self.fc, self.out = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, V: int, T: int, L: int, H: int, C: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(PlainBlock(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, bias=False)
        self.head = nn.Linear(C, V, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


UNREACHABLE = 10**9  # a step count that a time budget always ends first
SEEDS = (0, 1, 2)  # the recipe benchmark reports the median of these; quality uses the first


@functools.cache
def nanogpt_reference(seed: int = SEEDS[0]) -> dict:
    """nanoGPT's CPU recipe, its 2000 steps, timed in CPU seconds; run once per seed and
    benchmark run (the recipe benchmark shares it). Returns :func:`train`'s final evaluation."""
    config = dataclasses.replace(RECIPES["nanogpt_cpu"], seed=seed)
    return train(config, clock=time.process_time).final


def equal_time(recipe: str, seed: int = SEEDS[0]) -> tuple[dict, dict]:
    """Train ``RECIPES[recipe]`` for as long as nanoGPT's 2000 steps took with the same seed,
    its learning-rate schedule ending with the budget. Returns the final evaluations
    ``(ours, nanoGPT's)``."""
    ref = nanogpt_reference(seed)
    config = dataclasses.replace(RECIPES[recipe], max_steps=UNREACHABLE,
                                 max_seconds=ref["train_seconds"], eval_interval=UNREACHABLE,
                                 seed=seed)
    return train(config, clock=time.process_time).final, ref


def quality() -> Result:
    ours, ref = equal_time("book")
    return Result("training: val loss at equal time, book vs nanoGPT CPU recipe",
                  ours["nats_per_char"], ref["nats_per_char"], "nats/char", goal=0.9,
                  higher_is_better=False,
                  note=f"{ref['train_seconds']:.0f} CPU-s each; steps {ours['step']} vs "
                       f"{ref['step']}; bits/char {ours['bits_per_char']:.3f} vs "
                       f"{ref['bits_per_char']:.3f}")


def throughput() -> Result:
    config = RECIPES["book"]
    model_config = config.model
    V, T, B = model_config.vocab_size, model_config.block_size, config.batch_size
    torch.manual_seed(0)
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    ours = GPT(model_config)
    ours_opt = make_optimizer(ours, config)
    plain = PlainGPT(V, T, model_config.n_layer, model_config.n_head, model_config.n_embd)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=config.lr)

    def ours_step():
        _, loss = ours(x, y)
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
        ours_opt.step()

    def plain_step():
        loss = plain(x, y)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        plain_opt.step()

    ours_step(), plain_step()  # warm up
    rounds = []  # (ours, plain) seconds per step; interleaved, so both see the same machine
    for _ in range(20):
        rounds.append((best_time(ours_step, repeat=1, number=3),
                       best_time(plain_step, repeat=1, number=3)))
    t_ours, t_plain = min(r[0] for r in rounds), min(r[1] for r in rounds)
    paired = sorted(plain / ours for ours, plain in rounds)  # each round's tokens/s ratio
    return Result("training: tokens/s, book model vs plain PyTorch GPT", B * T / t_ours,
                  B * T / t_plain, "tokens/s", goal=1.0, higher_is_better=True,
                  note=f"batch {B} x {T} tokens, {THREADS} threads; the 20 rounds' own ratios: "
                       f"median {statistics.median(paired):.3f}, middle half "
                       f"{paired[5]:.3f}-{paired[14]:.3f}")


def run() -> list[Result]:
    with threads(THREADS):
        return [throughput(), quality()]

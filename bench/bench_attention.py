"""Our CausalSelfAttention against torch.nn.MultiheadAttention (chapter "Attention").

Both layers get the same weights and the same input, and are timed forward and backward (a
training step's worth of work) at two sequence lengths. MultiheadAttention is given every
advantage it has: the causal hint (``is_causal=True``) and ``need_weights=False``, which
together let it call the same fused kernel we call instead of building the (T, T) weights.
The measurements are interleaved (ours, reference, ours, ...) so that noise from other work
on the machine falls on both alike; the best of the rounds counts.

Why ours can be faster although both call the same kernel: MultiheadAttention works in a
(T, B, C) layout inside, so with ``batch_first=True`` it transposes its input and output and
reshapes the heads through extra copies (``aten::copy_`` is its largest cost after the matrix
products and the kernel in ``torch.profiler``); our layer stays in (B, T, C) and copies once,
when it merges the heads.
"""

from __future__ import annotations

import torch
from torch import nn

from bench import Result
from buildllm.attention import CausalSelfAttention, causal_mask
from buildllm.config import GPTConfig
from buildllm.repro import best_time

N_EMBD, N_HEAD, BATCH = 256, 8, 4
ROUNDS = 10
THREADS = 1  # one thread: on a shared machine, waiting threads add more noise than signal


def _pair(T: int) -> tuple[CausalSelfAttention, nn.MultiheadAttention]:
    config = GPTConfig(n_embd=N_EMBD, n_head=N_HEAD, block_size=T, dropout=0.0, bias=True)
    ours = CausalSelfAttention(config)
    mha = nn.MultiheadAttention(N_EMBD, N_HEAD, bias=True, batch_first=True)
    with torch.no_grad():  # the same weights: c_attn stacks Q, K, V exactly as in_proj does
        mha.in_proj_weight.copy_(ours.c_attn.weight)
        mha.in_proj_bias.copy_(ours.c_attn.bias)
        mha.out_proj.weight.copy_(ours.c_proj.weight)
        mha.out_proj.bias.copy_(ours.c_proj.bias)
    return ours, mha


def _measure(T: int) -> tuple[float, float]:
    torch.manual_seed(0)
    ours, mha = _pair(T)
    x = torch.randn(BATCH, T, N_EMBD, requires_grad=True)
    mask = causal_mask(T)

    def step_ours():
        ours(x).sum().backward()

    def step_mha():
        y, _ = mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)
        y.sum().backward()

    with torch.no_grad():  # same answer before timing anything
        y_mha, _ = mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)
        torch.testing.assert_close(ours(x), y_mha, atol=1e-5, rtol=1e-4)
    step_ours(), step_mha()  # warm-up
    t_ours = t_mha = float("inf")
    for _ in range(ROUNDS):
        t_ours = min(t_ours, best_time(step_ours, repeat=1))
        t_mha = min(t_mha, best_time(step_mha, repeat=1))
    return t_ours, t_mha


def run() -> list[Result]:
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        timings = {T: _measure(T) for T in (256, 1024)}
    finally:
        torch.set_num_threads(threads)
    for T, (t_ours, t_mha) in timings.items():
        results.append(Result(
            name=f"attention fwd+bwd T={T} (B={BATCH}, C={N_EMBD}, H={N_HEAD})",
            ours=t_ours * 1e3, reference=t_mha * 1e3, unit="ms", goal=1.0,
            higher_is_better=False,
            note=f"vs nn.MultiheadAttention (is_causal, need_weights=False), {THREADS} thread",
        ))
    return results

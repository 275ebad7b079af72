"""The book's best CPU recipe against nanoGPT's CPU recipe: the same wall-clock, one process.

Chapter "From GPT-2 to today's LLMs". Both recipes train back to back, in this process, for
``BUILDLLM_BENCH_SECONDS`` seconds each (default 180) on ``BUILDLLM_BENCH_THREADS`` threads
(default 2), and are scored on the whole validation text in nats per character, which
compares a character model with a BPE model. Both learning-rate schedules end when the time
budget does (``max_steps`` is set out of reach), so each recipe uses all of its time.

Goal: ours / nanoGPT's <= 0.8 (nanoGPT's recipe reaches about 1.89 nats per character in about
three minutes on two cores).
"""

from __future__ import annotations

import os

import torch

from bench import Result
from buildllm.train import RECIPES, TrainConfig, train

# The book's recipe: the `llama` preset (RoPE, RMSNorm, SwiGLU, grouped-query attention, no
# biases, untied head) cut to two blocks, on a BPE tokenizer of 1,024 tokens (about 2.3
# characters per token), with small batches of 8 x 128 tokens and a learning rate three times
# nanoGPT's. On a budget of minutes, more and cheaper steps beat a deeper model: tuned at equal
# compute against nanoGPT's 2000 steps, 2 blocks beat 3, 4 and 6, batches of 8 beat 16.
RECIPE: dict = dict(model={"preset": "llama", "n_layer": 2}, tokenizer="bpe", vocab_size=1024,
                    batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=50)

GOAL = 0.8
UNREACHABLE_STEPS = 10**9  # the time budget, not a step count, ends every run


def compare(seconds: float = 180.0, threads: int = 2) -> dict[str, dict]:
    """Train nanoGPT's recipe, then ours, for ``seconds`` each on ``threads`` threads.

    Returns ``{"nanogpt": final, "book": final}`` where ``final`` is :func:`train`'s final
    evaluation (``nats_per_char``, ``bits_per_char``, ``step``, ``train_seconds``, ...) plus
    ``tokens_per_step``.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = {}
        for name, recipe in (("nanogpt", RECIPES["nanogpt_cpu"]), ("book", RECIPE)):
            config = TrainConfig.from_dict({**recipe, "max_steps": UNREACHABLE_STEPS,
                                            "max_seconds": float(seconds),
                                            "eval_interval": UNREACHABLE_STEPS})
            result = train(config)
            block = result.model.config.block_size
            results[name] = {**result.final, "steps": result.final["step"],
                             "tokens_per_step": config.batch_size * block}
        return results
    finally:
        torch.set_num_threads(previous)


def run() -> list[Result]:
    seconds = float(os.environ.get("BUILDLLM_BENCH_SECONDS", "180"))
    threads = int(os.environ.get("BUILDLLM_BENCH_THREADS", "2"))
    r = compare(seconds, threads)
    ours, ref = r["book"], r["nanogpt"]
    note = (f"{seconds:.0f} s each on {threads} threads; nanoGPT {ref['steps']} steps, "
            f"{ref['nats_per_char']:.3f} nats/char; ours {ours['steps']} steps, "
            f"{ours['nats_per_char']:.3f} nats/char")
    return [Result("validation loss per character, book recipe vs nanoGPT CPU",
                   ours["nats_per_char"], ref["nats_per_char"], "nats/char", GOAL,
                   higher_is_better=False, note=note)]

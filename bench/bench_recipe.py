"""The book's best CPU recipe against nanoGPT's CPU recipe, at equal time, in one run.

Chapter "From GPT-2 to today's LLMs". nanoGPT's recipe (``RECIPES["nanogpt_cpu"]``, the
reference preset of chapter "Training on a CPU": 2000 steps of 12 x 64 characters) trains
first and is timed; the book's best recipe (``RECIPES["modern"]``) then trains for exactly as
long, its learning-rate schedule ending with the budget. Both are scored on the whole
validation text in nats per character, which compares a character model with a BPE model.
Time is CPU time of this process, as in ``bench_train`` (which shares the reference run when
both benchmarks run together).

Goal: ours / nanoGPT's <= 0.8 (nanoGPT's recipe reaches about 1.89 nats per character; 0.8 of
it is about 1.51).
"""

from __future__ import annotations

import torch

from bench import Result
from bench.bench_train import THREADS, equal_time


def run() -> list[Result]:
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        ours, ref = equal_time("modern")
    finally:
        torch.set_num_threads(previous)
    note = (f"{ref['train_seconds']:.0f} CPU-s each on {THREADS} threads; nanoGPT "
            f"{ref['step']} steps, {ref['nats_per_char']:.3f} nats/char; ours {ours['step']} "
            f"steps, {ours['nats_per_char']:.3f} nats/char")
    return [Result("validation loss per character, modern recipe vs nanoGPT CPU",
                   ours["nats_per_char"], ref["nats_per_char"], "nats/char", goal=0.8,
                   higher_is_better=False, note=note)]

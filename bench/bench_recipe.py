"""The book's best CPU recipe against nanoGPT's CPU recipe, at equal time, in one run.

Chapter "From GPT-2 to today's LLMs". For each of three seeds, nanoGPT's recipe
(``RECIPES["nanogpt_cpu"]``, the reference preset of chapter "Training on a CPU": 2000 steps of
12 x 64 characters) trains first and is timed; the book's best recipe (``RECIPES["modern"]``)
then trains, with the same seed, for exactly as long, its learning-rate schedule ending with
the budget. Both are scored on the whole validation text in nats per character, which compares
a character model with a BPE model. Time is CPU time of this process, as in ``bench_train``
(which shares the first seed's reference run when both benchmarks run together). The result is
the median of the three seeds' losses for each recipe; the note gives every seed's ratio.

Cost: six trainings of nanoGPT's 2000 steps each, about 19 CPU-minutes (10 minutes on an idle
2-core machine).

Goal: ours / nanoGPT's <= 0.75 (nanoGPT's recipe reaches about 1.91 nats per character; 0.75 of
it is about 1.43).
"""

from __future__ import annotations

import statistics

from bench import Result
from bench.bench_train import SEEDS, THREADS, equal_time
from buildllm.repro import threads


def run() -> list[Result]:
    with threads(THREADS):
        runs = [equal_time("modern", seed) for seed in SEEDS]
    ours = [o["nats_per_char"] for o, _ in runs]
    ref = [r["nats_per_char"] for _, r in runs]
    ratios = ", ".join(f"{o / r:.3f}" for o, r in zip(ours, ref))
    note = (f"median of seeds {SEEDS}; {statistics.median(r['train_seconds'] for _, r in runs):.0f}"
            f" CPU-s each on {THREADS} threads; nanoGPT {runs[0][1]['step']} steps, "
            f"{min(ref):.3f}-{max(ref):.3f} nats/char; ours {min(o['step'] for o, _ in runs)}-"
            f"{max(o['step'] for o, _ in runs)} steps, {min(ours):.3f}-{max(ours):.3f} nats/char;"
            f" ratio per seed {ratios}")
    return [Result("validation loss per character, modern recipe vs nanoGPT CPU",
                   statistics.median(ours), statistics.median(ref), "nats/char", goal=0.75,
                   higher_is_better=False, note=note)]

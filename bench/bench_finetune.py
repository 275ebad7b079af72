"""Fine-tuning: LoRA against full fine-tuning at equal CPU time (chapter "Fine-tuning").

The book's pretrained model becomes a genre classifier (comedy, history, tragedy) on the plays
of ``buildllm.plays``, tested on six held-out plays. Full fine-tuning runs its 200 steps and is
timed in CPU seconds of this process; LoRA (rank 8 on every attention and feed-forward matrix,
plus the head) then runs the same 200 steps, stopped early if it would take longer. Both are
scored on the same held-out passages.

Goal: LoRA's accuracy >= 0.95 x full fine-tuning's, with a few percent of the trainable
parameters (reported in the note).
"""

from __future__ import annotations

import os

from bench import Result
from buildllm import finetune as ft
from buildllm.pretrained import pretrained
from buildllm.repro import threads

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def run() -> list[Result]:
    with threads(THREADS):
        model, tokenizer = pretrained("book")
        task = ft.genre_task(tokenizer)
        _, full = ft.finetune_classifier(model, task, "full", steps=200)
        _, lora = ft.finetune_classifier(model, task, "lora", steps=200,
                                         max_seconds=full["cpu_seconds"])
    note = (f"{full['cpu_seconds']:.0f} CPU-s each on {THREADS} threads; full {full['steps']} "
            f"steps, acc {full['acc']:.3f} [{full['lo']:.3f}, {full['hi']:.3f}]; LoRA "
            f"{lora['steps']} steps, acc {lora['acc']:.3f} [{lora['lo']:.3f}, {lora['hi']:.3f}]"
            f", {lora['trainable'] / full['trainable']:.1%} of the trainable parameters")
    return [Result("finetune: LoRA vs full fine-tuning at equal CPU time, held-out accuracy",
                   lora["acc"], full["acc"], "accuracy", goal=0.95, higher_is_better=True,
                   note=note)]

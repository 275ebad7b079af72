"""Learning from a reward (chapter "Learning from a reward"): best-of-N, DPO and GRPO on the
book's model, GRPO with a gentler siblings term, and GRPO with the terms that stop reward
hacking taken away, each measured on 200 held-out speech openings.

Each method runs at its default settings (:data:`buildllm.align.SETTINGS`); DPO and GRPO train
a copy of the book's model, best-of-N samples 8 lines where the others sample one and keeps
the best by the training reward (:meth:`buildllm.align.Sampling.reward`). The
measures (:func:`buildllm.align.measure`): the share of lines with exactly ten syllables (95%
interval), the mean verse reward, English words, distinct-2 and the held-out nats per
character. Everything goes to ``bench/results/align.json`` with the machine, the threads, each
run's CPU seconds and its log (reward per step); the chapter reads that file.

Cost: six training runs of two to five CPU-minutes each and eight measurements, about 12
minutes on an idle 2-core machine.

Reported: the reward gained per CPU second of training (DPO, GRPO) against best-of-N's gain
per CPU second of its extra sampling, for information.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from bench import Result
from buildllm import align, data
from buildllm.files import write_atomically
from buildllm.pretrained import pretrained
from buildllm.repro import threads

THREADS = 2
BEST_OF = 8
RESULTS = Path(__file__).parent / "results" / "align.json"
GENTLER = {  # GRPO with the siblings term on the overlap itself, not its cube
    "grpo, siblings on the overlap": {"sibling_power": 1.0}}
HACKS = {  # GRPO with the terms that stop reward hacking taken away, one after another
    "grpo, no siblings": {"siblings": False},
    "grpo, no siblings, no distinct pairs": {"siblings": False, "distinct": False},
    "grpo, syllables only, no KL": {"weights": (1.0, 0.0, 0.0), "siblings": False,
                                    "distinct": False, "kl_coef": 0.0},
}


def measured(model, tokenizer, corpus: str, best_of: int = 1) -> dict:
    """:func:`align.measure` with its CPU seconds; the lines kept."""
    start = time.process_time()
    m = align.measure(model, tokenizer, best_of=best_of, corpus=corpus,
                      reward=align.BestOfNSettings().reward)
    return {**m, "measure_cpu_seconds": time.process_time() - start}


def trained(model, tokenizer, corpus: str, method: str, settings) -> dict:
    """Train by ``method``, then measure; the settings, the log and the CPU seconds."""
    start = time.process_time()
    tuned, log = align.align(model, tokenizer, method, settings, corpus=corpus)
    seconds = time.process_time() - start
    return {"settings": dataclasses.asdict(settings), "cpu_seconds": seconds, "log": log,
            **measured(tuned, tokenizer, corpus)}


def measure(path: Path = RESULTS) -> dict:
    """Every run of the benchmark, written to ``path``."""
    with threads(THREADS):
        model, tokenizer = pretrained("book", THREADS)
        corpus = data.load_text()
        runs = {"base": measured(model, tokenizer, corpus),
                "best-of-n": measured(model, tokenizer, corpus, BEST_OF)}
        for method in ("dpo", "grpo"):
            runs[method] = trained(model, tokenizer, corpus, method,
                                   align.SETTINGS[method]())
        for name, settings in (GENTLER | HACKS).items():
            runs[name] = trained(model, tokenizer, corpus, "grpo", align.GRPOSettings(**settings))
    doc = {"machine": platform.machine(), "processor": platform.processor(),
           "threads": THREADS, "torch": torch.__version__, "best_of": BEST_OF, "runs": runs}
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1), "utf-8"))
    return doc


def run() -> list[Result]:
    runs = measure()["runs"]
    base = runs["base"]["reward"]
    bon = runs["best-of-n"]
    bon_gain = (bon["reward"] - base) / (bon["measure_cpu_seconds"]
                                         - runs["base"]["measure_cpu_seconds"])
    note = f"runs in {RESULTS.relative_to(Path(__file__).parent.parent)}"
    return [Result(f"verse reward gained per CPU second, {m} vs best-of-{BEST_OF}",
                   (runs[m]["reward"] - base) / runs[m]["cpu_seconds"], bon_gain,
                   "reward/CPU-s", None, True, note) for m in ("dpo", "grpo")]

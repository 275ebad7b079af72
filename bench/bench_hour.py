"""A reader's hour: the recipe ``hour`` (a larger model, Tiny Shakespeare and the plays it lacks)
trained once on two threads, its validation loss against CPU time beside the book's two recipes.

Chapter "Training on a CPU" reads the results. Each of ``book``, ``modern`` and ``hour`` trains
with the same seed on :data:`THREADS` threads, its time counted as CPU time of this process
(``time.process_time``: on an idle machine the wall-clock time times the threads; on a shared
one it leaves out the neighbours' work). The validation loss of each evaluation during training
makes the curve; the final one scores the whole validation text of Tiny Shakespeare. Each model
then gets a report card (:func:`buildllm.evaluate.report_card`) on the fine-tuning chapter's
held-out plays only, since ``hour`` trains on the other plays that Tiny Shakespeare lacks. All of
it goes to ``bench/results/hour.json`` with the machine, the thread count and the CPU seconds.

The hour's run checkpoints into the cache as it goes (``cache_dir()/bench/hour-<key>``), so an
interrupted benchmark continues where it stopped; its result is the same as an unbroken run's.

Cost: about an hour on an idle 2-core machine for ``hour`` (7,200 CPU seconds), a few minutes
for the other two, and a couple of minutes for each card.

Goals: ``hour`` reaches <= 1.40 nats per character on Tiny Shakespeare's validation text
(nanoGPT's GPU run of its Shakespeare character model reports 1.47; the ratio is against that)
and >= 95% English words in its sampled lines (the ratio is against 95%).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from bench import Result
from buildllm import data
from buildllm.config import RECIPES
from buildllm.evaluate import Settings, report_card
from buildllm.files import write_atomically
from buildllm.plays import TEST_PLAYS
from buildllm.pretrained import recipe_hash
from buildllm.repro import threads
from buildllm.train import train

RESULTS = Path(__file__).parent / "results" / "hour.json"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
NAMES = ("hour", "book", "modern")  # the hour first: an interrupted run keeps its checkpoints
NANOGPT_GPU = 1.47  # nanoGPT's README: its GPU run of the Shakespeare character model
GOAL_NATS, GOAL_ENGLISH = 1.40, 0.95


def curve(log: list[dict]) -> list[dict]:
    """``(step, cpu_seconds, val_nats_per_char)`` of each evaluation during training and of
    the final one: the seconds of an evaluation's step come from the training record of that
    step."""
    seconds = {r["step"]: r["seconds"] for r in log if "seconds" in r}
    points = [{"step": r["step"], "cpu_seconds": seconds.get(r["step"], 0.0),
               "nats_per_char": round(r["val_nats_per_char"], 4)}
              for r in log if "val_nats_per_char" in r]
    return points + [{"step": r["step"], "cpu_seconds": r["final_train_seconds"],
                      "nats_per_char": round(r["final_nats_per_char"], 4)}
                     for r in log if "final_nats_per_char" in r]


def trained(name: str) -> tuple[torch.nn.Module, object, dict]:
    """Train recipe ``name`` (``hour`` continues its checkpoint in the cache, if any)."""
    config = RECIPES[name]
    out = None
    if name == "hour":
        out = data.cache_dir() / "bench" / f"hour-{recipe_hash(config)}"
    resume = out is not None and (out / "checkpoint").is_dir()
    result = train(config, out_dir=out, resume=resume, clock=time.process_time)
    log = result.log
    if resume:  # the whole log, from the first step: the file holds every part of the run
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    run = {"parameters": sum(p.numel() for p in result.model.parameters()),
           "steps": result.final["step"], "cpu_seconds": round(result.final["train_seconds"]),
           "nats_per_char": round(result.final["nats_per_char"], 4), "curve": curve(log)}
    return result.model, result.tokenizer, run


def measure(path: Path = RESULTS, names=NAMES) -> dict:
    """Train each recipe, score it, write everything to ``path``."""
    with threads(THREADS):
        corpus, runs = data.load_text(), {}
        for name in names:
            model, tokenizer, runs[name] = trained(name)
            runs[name]["card"] = report_card(model, tokenizer, Settings(plays=TEST_PLAYS),
                                             corpus)
    doc = {"machine": platform.machine(), "processor": platform.processor(),
           "threads": THREADS, "torch": torch.__version__, "clock": "CPU seconds",
           "runs": runs}
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1), "utf-8"))
    return doc


def run() -> list[Result]:
    hour = measure()["runs"]["hour"]
    english = hour["card"]["words"]["sampled"]["english_words"]["share"]
    note = (f"{hour['steps']} steps, {hour['cpu_seconds']} CPU-s on {THREADS} threads; "
            f"results in {RESULTS.relative_to(Path(__file__).parent.parent)}")
    return [Result("hour: validation nats/char vs nanoGPT's GPU run", hour["nats_per_char"],
                   NANOGPT_GPU, "nats/char", GOAL_NATS / NANOGPT_GPU, False, note),
            Result("hour: English words in sampled lines vs 95%", english, GOAL_ENGLISH,
                   "share", 1.0, True, note)]

"""The report card of three recipes side by side: nanoGPT's CPU recipe, the book's model and the
modern recipe (chapter "Measuring a language model").

Each recipe is trained once, deterministically, and cached (``buildllm.pretrained``), then
measured with :func:`buildllm.evaluate.report_card` at the default settings: bits per
character on Tiny Shakespeare's validation text and on the plays it never saw, and the words,
copying and metre of one line sampled after each of 200 held-out speech openings, and 1,000
multiple-choice questions. The cards go to ``bench/results/eval.json`` with the machine, the
thread count and the seconds each part took; the chapter reads that file.

Cost: training the three recipes (about 6 minutes on an idle 2-core machine, none if cached)
and three cards (a minute or two each).

The results are reported for information (no goal): the modern recipe against the book's
model, on the share of English words and on the multiple choice.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from bench import Result
from buildllm import data
from buildllm.evaluate import Settings, report_card
from buildllm.files import write_atomically
from buildllm.pretrained import pretrained
from buildllm.repro import threads

RECIPES = ("nanogpt_cpu", "book", "modern")
THREADS = 2
RESULTS = Path(__file__).parent / "results" / "eval.json"


def measure(path: Path = RESULTS, recipes=RECIPES) -> dict:
    """Train (or load) each recipe, take its card, write every card to ``path``."""
    with threads(THREADS):
        corpus, cards = data.load_text(), {}
        for name in recipes:
            model, tokenizer = pretrained(name, THREADS)
            cards[name] = report_card(model, tokenizer, Settings(), corpus)
    doc = {"machine": platform.machine(), "processor": platform.processor(),
           "threads": THREADS, "torch": torch.__version__, "cards": cards}
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1), "utf-8"))
    return doc


def run() -> list[Result]:
    cards = measure()["cards"]
    modern, book = cards["modern"], cards["book"]
    words = [c["words"]["sampled"]["english_words"]["share"] for c in (modern, book)]
    choice = [c["choice"]["by_total"]["share"] for c in (modern, book)]
    note = f"cards in {RESULTS.relative_to(Path(__file__).parent.parent)}"
    return [Result("English words in sampled lines, modern vs book", *words, "share", None,
                   True, note),
            Result("next line chosen (4 options), modern vs book", *choice, "share", None,
                   True, note)]

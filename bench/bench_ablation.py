"""The ablation of the chapter "From GPT-2 to today's LLMs": what each published trick buys the
modern recipe at one CPU budget.

For each seed, nanoGPT's CPU recipe trains its 2000 steps and is timed in CPU seconds; then the
baseline (:data:`BASELINE`, AdamW, cosine schedule) and each variant of it in
:data:`VARIANTS` train for exactly as long with the same seed, the learning-rate schedule
ending with the budget. Every run is scored on the whole validation text in nats per character
and appended, as one JSON line, to ``bench/results/ablation.jsonl`` (the chapter reads that
file; runs already there are not repeated, so an interrupted ablation continues).

Each result compares a variant with the modern recipe (median over the seeds); no goal, it is
the measurement the chapter reports. Cost: 9 runs of about nanoGPT's time per seed, about 21
CPU-minutes per seed. ``python -m bench.bench_ablation --seeds 0 1`` runs some seeds alone
(two such processes with one thread each use both cores of a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from bench import Result
from bench.bench_train import SEEDS, UNREACHABLE, nanogpt_reference
from buildllm.repro import threads
from buildllm.train import TrainConfig, train

RESULTS = Path(__file__).parent / "results" / "ablation.jsonl"
THREADS = int(os.environ.get("BENCH_THREADS", "1"))

# The baseline: the `llama` preset cut to two blocks and a 64-token context, BPE with 1024
# tokens, AdamW with a cosine schedule (the modern recipe of the book's first edition; the
# recipe now is this one with the "WSD schedule" below).
BASELINE = dict(model={"preset": "llama", "n_layer": 2, "block_size": 64}, tokenizer="bpe",
                vocab_size=1024, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=50)

# name -> changes to BASELINE ("model" entries change the model's fields)
VARIANTS: dict[str, dict] = {
    "baseline (AdamW, cosine)": {},
    "Muon": {"optimizer": "muon"},
    "WSD schedule": {"schedule": "wsd", "cooldown": 0.5, "min_lr": 0.0},
    "value embeddings": {"model": {"value_embed": True}},
    "ReLU² feed-forward": {"model": {"mlp": "relu2"}},
    "logit soft-cap 30": {"model": {"logit_softcap": 30.0}},
    "context 128, batch 8": {"batch_size": 8, "model": {"block_size": 128}},
}


def variant_config(changes: dict, seed: int, seconds: float) -> TrainConfig:
    """The baseline with ``changes``, for ``seconds`` of CPU time."""
    base = BASELINE
    recipe = {**base, **changes, "model": {**base["model"], **changes.get("model", {})}}
    return TrainConfig.from_dict({**recipe, "seed": seed, "max_steps": UNREACHABLE,
                                  "max_seconds": seconds, "eval_interval": UNREACHABLE})


def record(name: str, seed: int, final: dict, path: Path) -> None:
    row = {"variant": name, "seed": seed, "nats_per_char": final["nats_per_char"],
           "steps": final["step"], "cpu_seconds": final["train_seconds"], "threads": THREADS,
           "torch": torch.__version__, "machine": platform.machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def done(path: Path) -> set[tuple[str, int]]:
    if not path.is_file():
        return set()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {(r["variant"], r["seed"]) for r in rows}


def measure(seeds=SEEDS, path: Path = RESULTS, variants=tuple(VARIANTS)) -> None:
    """Train what ``path`` does not hold yet, for each seed: nanoGPT, then each variant."""
    for seed in seeds:
        if all((v, seed) in done(path) for v in ("nanoGPT CPU", *variants)):
            continue
        ref = nanogpt_reference(seed)
        if ("nanoGPT CPU", seed) not in done(path):
            record("nanoGPT CPU", seed, ref, path)
        for name in variants:
            if (name, seed) not in done(path):
                config = variant_config(VARIANTS[name], seed, ref["train_seconds"])
                record(name, seed, train(config, clock=time.process_time).final, path)


def medians(path: Path = RESULTS) -> dict[str, float]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    names = dict.fromkeys(r["variant"] for r in rows)
    return {n: statistics.median(r["nats_per_char"] for r in rows if r["variant"] == n)
            for n in names}


def run() -> list[Result]:
    with threads(THREADS):
        measure()
    m = medians()
    base = m["baseline (AdamW, cosine)"]
    return [Result(f"ablation: {name} vs the baseline", value, base, "nats/char",
                   goal=None, higher_is_better=False, note=f"median of seeds {SEEDS}")
            for name, value in m.items() if name != "baseline (AdamW, cosine)"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    measure(args.seeds, args.out)

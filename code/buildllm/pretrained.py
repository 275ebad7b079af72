"""The book's model, trained once and cached: later chapters call :func:`pretrained`.

Explained in the chapter "Training on a CPU". The first call trains a recipe (deterministically:
fixed seeds and threads) and caches the checkpoint; later calls load it. A lock file makes a
second caller wait for a run in progress rather than train a second copy on the same cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import torch

from buildllm import checkpoint, data, repro
from buildllm.config import RECIPES, GPTConfig, TrainConfig
from buildllm.model import GPT
from buildllm.tokenizer import Tokenizer
from buildllm.train import train

try:
    import fcntl
except ImportError:  # Windows: no lock; racing callers each train and publish the same model
    fcntl = None


LATER_DEFAULTS = {"optimizer": "adamw", "schedule": "cosine", "cooldown": 0.2,
                  "corpus": "tiny_shakespeare"}
# Models as the book first wrote them when it first cached them: a preset and the fields changed
# from it, the size of the BPE vocabulary beside them (1024, which a character tokenizer
# ignored). A recipe whose model is one of these keeps that form in its cache key.
FIRST_MODELS = [
    ({"preset": "llama", "n_layer": 2, "block_size": 64},  # the modern recipe's
     GPTConfig(vocab_size=1024, block_size=64, n_layer=2, n_head=4, n_embd=128, bias=False,
               pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2,
               tie_weights=False)),
    ({"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "bias": False},  # nanoGPT's
     GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)),
]


def recipe_hash(config: TrainConfig) -> str:
    """A short hash of a recipe and the corpus: the cache key of :func:`pretrained`.

    Settings that cannot change the training leave the key: Muon's own settings while the
    optimizer is AdamW, the cooldown of a cosine schedule, and the settings added after the
    book first cached its models (:data:`LATER_DEFAULTS`) at their defaults. Models the book
    first cached are keyed as they were first written (:data:`FIRST_MODELS`). So changing how
    the library writes them retrains nothing.
    """
    settings = config.to_dict()
    settings["model"] = next((first for first, model in FIRST_MODELS if config.model == model),
                             settings["model"])
    settings["vocab_size"] = config.model.vocab_size if config.tokenizer == "bpe" else 1024
    if settings.get("optimizer") == "adamw":
        settings = {k: v for k, v in settings.items() if not k.startswith("muon_")}
    if settings.get("schedule") == "cosine":
        settings.pop("cooldown", None)
    settings = {k: v for k, v in settings.items()
                if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
    key = {"config": settings, "corpus": data.SHA256, "format": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock on the file ``path`` (created if missing) while the block runs;
    other processes (and threads) that ask for it wait. POSIX only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def pretrained_dir(name: str = "book", threads: int = 2) -> Path:
    """The checkpoint folder of the recipe ``name`` trained on Tiny Shakespeare, in
    ``cache_dir()/models/<name>-<recipe hash>`` with its ``log.jsonl``; trained on the first
    call (with ``threads`` threads), and again if the cached copy is damaged."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    config = RECIPES[name]
    folder = data.cache_dir() / "models" / f"{name}-{recipe_hash(config)}"
    with exclusive(folder.with_name(folder.name + ".lock")):
        try:
            checkpoint.read_config(folder)
            return folder
        except checkpoint.CheckpointError:  # missing, or damaged: trained again and replaced
            pass
        rng = torch.get_rng_state()
        try:
            with repro.threads(threads):
                result = train(config, clock=time.process_time)  # train_seconds: CPU seconds
        finally:
            torch.set_rng_state(rng)
        log = "".join(json.dumps(r) + "\n" for r in result.log)
        state = {"step": result.final["step"], "config": config.to_dict(), "final": result.final}
        checkpoint.save_checkpoint(folder, result.model, result.tokenizer, train_state=state,
                                   extra_files={"log.jsonl": log})
    return folder


def pretrained(name: str = "book", threads: int = 2) -> tuple[GPT, Tokenizer]:
    """``(model, tokenizer)`` of :func:`pretrained_dir`: trained once, then loaded."""
    return checkpoint.load_model(pretrained_dir(name, threads))

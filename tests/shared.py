"""What several test files share: the small model, the table of model options, the devices, and
a tiny training run. One place, so that a change of size or option reaches every test.

- ``SMALL``, :func:`small`, :func:`small_model`: a GPT small enough to run in milliseconds;
- ``OPTIONS``: every option of GPTConfig that touches the forward pass, alone and all together
  (the model, attention and generation tests run over it);
- ``DEVICES``, ``CUDA``: parametrize a test over the CPU and a CUDA GPU. The GPU case is marked
  ``cuda`` and skipped where PyTorch sees no GPU, as on the book's CI; on a machine with one,
  ``pytest -m cuda`` runs just those cases;
- ``TEXT``, :func:`tiny`: a short text and a training configuration that trains on it in
  seconds (training, the cached pretrained model, the command line);
- ``HARD_PIECES``: text that tokenizers get wrong (the tokenizer tests);
- :func:`fake_plays`: five small plays, three of the Folio's genres and two others (the
  fine-tuning and instruction tests).
"""

from __future__ import annotations

import pytest
import torch

from buildllm.config import GPTConfig
from buildllm.model import GPT
from buildllm.plays import Play, Speech
from buildllm.train import TrainConfig

SMALL = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32)

OPTIONS: dict[str, dict] = {
    "gpt2": {},
    "sinusoidal": dict(pos_encoding="sinusoidal"),
    "rope": dict(pos_encoding="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "relu": dict(mlp="relu"),
    "swiglu": dict(mlp="swiglu"),
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "qk_norm": dict(qk_norm=True),
    "untied": dict(tie_weights=False),
    "no_bias": dict(bias=False),
    "all": dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=True,
                tie_weights=False, bias=False),
}

CUDA = pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
])
DEVICES = ["cpu", CUDA]

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
        * 120)
TINY = dict(model={"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32},
            tokenizer="char", batch_size=8, max_steps=20, lr=3e-3, min_lr=3e-4,
            warmup_steps=5, eval_interval=10, eval_windows=8, log_interval=1)


# Text a reader could meet: several scripts, combining marks, emoji (with zero-width joiners and
# skin tones), control characters, whitespace of many kinds, digits, contractions.
HARD_PIECES = [
    "Hello", " world", "naïve", "e\u0301", "Ångström", "日本語のテキスト", "中文", "한국어",
    "Привет", "مرحبا", "שלום", "🙂", "👩\u200d👩\u200d👧\u200d👦", "👍🏽", "🇫🇷", "\u200d",
    "\ufeff", "\x00", "\x1b[0m", "\r\n", "\t", "\n\n\n", "    ", " " * 40, "\u00a0",
    "\u3000", "don't", "'ll", "1234567", "½", "Ⅻ", "²", "<|endoftext|>", "<|", "|>",
    "\U0010ffff", "\ud7ff", "\ue000",
]


def small(**overrides) -> GPTConfig:
    """``SMALL``, with fields overridden by keyword."""
    return GPTConfig(**{**SMALL, **overrides})


def small_model(seed: int = 0, **overrides) -> GPT:
    """A seeded GPT of :func:`small`'s configuration, in eval mode."""
    torch.manual_seed(seed)
    return GPT(small(**overrides)).eval()


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (fresh norms are all 1 or 0 and would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + 0.05)
    return module


def tiny(**overrides) -> TrainConfig:
    """A training configuration that trains on ``TEXT`` in a few seconds."""
    return TrainConfig.from_dict({**TINY, **overrides})


def losses(log: list[dict]) -> list[tuple[int, float]]:
    """The (step, training loss) records of a run's log."""
    return [(r["step"], r["loss"]) for r in log if "loss" in r]


def fake_plays() -> list[Play]:
    """Five small plays of four speakers: a comedy, a history, a tragedy and two of genres the
    Folio does not name; each scene four speeches long."""
    out = []
    for name, genre in [("a", "comedies"), ("b", "histories"), ("c", "tragedies"),
                        ("d", "roman"), ("e", "romances")]:
        speeches = [Speech(name, genre, who, (f"{name} line {i}.", "Another line."), i // 4)
                    for i, who in enumerate(["ROMEO", "JULIET", "ROMEO", "NURSE"] * 4)]
        out.append(Play(name, genre, name.upper(), speeches))
    return out

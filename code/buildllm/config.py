"""Configurations: of the model (:class:`GPTConfig`), of a training run (:class:`TrainConfig`),
and the book's named ones (:data:`PRESETS`, :data:`RECIPES`). Each is checked once, here, when
it is made; the layers and the training loop take a checked configuration and check nothing.

Explained in the chapters "The GPT model" (GPTConfig, presets), "Training on a CPU"
(TrainConfig, recipes) and "From GPT-2 to today's LLMs" (the options that are off by default,
the `llama` preset, the `modern` recipe); the settings of sampling are checked here too
(:func:`check_sampling`, chapter "Generating text"). ``buildllm train --config book`` trains a
recipe by name; a JSON file with the fields of :class:`TrainConfig` is a recipe of your own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field

from buildllm.files import check_types, is_number, read_text

CHOICES = {
    "pos_encoding": ("learned", "sinusoidal", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "relu", "swiglu", "relu2"),
    "tokenizer": ("char", "bpe"),
    "corpus": ("tiny_shakespeare", "plays"),
    "schedule": ("cosine", "wsd"),
    "optimizer": ("adamw", "muon"),
    "dtype": ("float32", "bfloat16"),
}


def check_choices(config: object) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` outside its :data:`CHOICES`."""
    for name, allowed in CHOICES.items():
        if getattr(config, name, allowed[0]) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")


def check_positive(config: object, names: tuple[str, ...], kind: type = int) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is not a positive number."""
    for name in names:
        value = getattr(config, name)
        if not (is_number(value, kind) and value > 0):
            what = "integer" if kind is int else "number"
            raise ValueError(f"{name} must be a positive {what}, got {value!r}")


def check_sampling(temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> None:
    """Raise ``ValueError`` unless the settings of sampling (chapter "Generating text") make
    sense: where they come in, :func:`buildllm.generate.stream` and the command line."""
    if not (is_number(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got "
                         f"{temperature!r}")
    if top_k is not None and not (is_number(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be a positive integer or None (no limit), got {top_k!r}")
    if top_p is not None and not (is_number(top_p) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None (no limit), got {top_p!r}")


def from_fields(cls: type, d: dict, item: str) -> object:
    """``cls(**d)`` for a dict read from JSON; unknown keys (each an ``item``) are an error that
    lists the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := set(d) - known:
        raise ValueError(f"unknown {item}(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**d)


@dataclass
class GPTConfig:
    """Every size and switch of the model. The defaults are GPT-2 small (124M
    parameters)."""

    vocab_size: int = 50257
    block_size: int = 1024  # the longest context, in tokens
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in linear layers and LayerNorms
    pos_encoding: str = "learned"  # a learned table, or "sinusoidal" (fixed waves)
    mlp: str = "gelu"  # the feed-forward network's nonlinearity: "gelu" or "relu"
    mlp_hidden: int | None = None  # the feed-forward network's width: None is 4 * n_embd
    tie_weights: bool = True  # the output head shares the token embedding matrix
    norm_eps: float = 1e-5
    # From GPT-2 to today's LLMs: each off by default, so that GPT-2 stays GPT-2.
    norm: str = "layernorm"  # or "rmsnorm"; mlp may be "swiglu" or "relu2" (relu squared)
    n_kv_head: int | None = None  # None: one key/value head per query head
    qk_norm: bool = False
    rope_base: float = 10000.0  # with pos_encoding="rope"
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap), as in Gemma 2
    value_embed: bool = False  # each block adds a token embedding of its own to the values

    def __post_init__(self):
        check_choices(self)
        check_positive(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"))
        if not (is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.logit_softcap is not None:
            check_positive(self, ("logit_softcap",), float)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head "
                             f"({self.n_head}): each head gets n_embd / n_head dimensions")
        kv = self.kv_heads if self.n_kv_head is not None else self.n_head
        if not (is_number(kv, int) and kv > 0 and self.n_head % kv == 0):
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head "
                             f"({kv}): each key/value head serves the same number of query "
                             f"heads")
        paired = {"sinusoidal": ("n_embd", self.n_embd),
                  "rope": ("head_dim", self.head_dim)}
        if self.pos_encoding in paired and paired[self.pos_encoding][1] % 2:
            name, size = paired[self.pos_encoding]
            raise ValueError(f"{self.pos_encoding} positions pair dimensions two by two "
                             f"(sin and cos), so {name} must be even, got {size}")

    @property
    def head_dim(self) -> int:
        """The width of one attention head."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """How many key/value heads: ``n_kv_head``, or one per query head."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def hidden_dim(self) -> int:
        """The feed-forward network's inner width."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":  # three matrices instead of two: keep the parameter count
            return 64 * math.ceil(2 * 4 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        """The fields as a dict, as checkpoints write them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """A configuration from a dict such as :meth:`to_dict` writes."""
        if not isinstance(d, dict):
            raise ValueError(f"a model configuration is a JSON object of fields, got "
                             f"{type(d).__name__}")
        return from_fields(cls, d, "GPTConfig field")


def preset(name: str, **overrides) -> GPTConfig:
    """A named configuration (see :data:`PRESETS`), with fields overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(),  # GPT-2 small: 124,439,808 parameters with the tied head
    # The model of the chapter "The GPT model". No biases, as in nanoGPT's recipe.
    "book": GPTConfig(vocab_size=1024, block_size=128, n_layer=4, n_head=4, n_embd=128,
                      bias=False),
}
# The book's model with Llama's parts (chapter "From GPT-2 to today's LLMs"): rotary positions,
# RMSNorm, SwiGLU, two query heads per key/value head, an untied head.
PRESETS["llama"] = preset("book", pos_encoding="rope", norm="rmsnorm", mlp="swiglu",
                          n_kv_head=2, tie_weights=False)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the corpus: :data:`RECIPES` holds the book's;
    a JSON file with these fields is a recipe of your own."""

    model: GPTConfig = field(default_factory=lambda: preset("book"))  # vocab_size: of BPE
    tokenizer: str = "bpe"  # "char" (one id per character) or "bpe"
    # What it trains on: Tiny Shakespeare's first 90%, or that and the plays it lacks, less
    # the held-out ones ("plays": data.more_plays). Validation is always Tiny Shakespeare's
    # 10%.
    corpus: str = "tiny_shakespeare"
    batch_size: int = 32  # sequences per step, summed over all processes
    max_steps: int = 2000
    max_seconds: float | None = None  # a time budget for the training steps
    lr: float = 2e-3  # peak learning rate
    min_lr: float = 2e-4  # where the learning rate ends
    warmup_steps: int = 100
    # how the rate falls after the warmup: "cosine", a half cosine down to min_lr; "wsd"
    # (warm-up, stable, decay), flat and then a straight line down to min_lr
    schedule: str = "cosine"
    cooldown: float = 0.2  # with "wsd": the last fraction of the run, where the rate falls
    weight_decay: float = 0.1  # on matrices only
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_interval: int = 250  # steps between evaluations (and checkpoints)
    eval_windows: int = 64  # validation windows for the evaluations during training
    log_interval: int = 10
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16": autocast the forward pass (GPU)
    # From GPT-2 to today's LLMs: another optimizer.
    optimizer: str = "adamw"  # or "muon": Muon for the hidden matrices, AdamW for the rest
    muon_momentum: float = 0.95
    muon_rms: float = 0.2  # a Muon step's root mean square per unit of lr (AdamW's is ~0.2)

    def __post_init__(self):
        check_choices(self)
        check_positive(self, ("batch_size", "max_steps", "eval_interval", "eval_windows",
                              "log_interval"))
        if not (is_number(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.max_seconds is not None:
            check_positive(self, ("max_seconds",), float)
        # every field of its annotated type (JSON gives any)
        check_types(vars(self), TrainConfig)
        if not (is_number(self.min_lr) and is_number(self.lr)
                and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr!r}, "
                             f"lr={self.lr!r}")
        if not (is_number(self.cooldown) and 0 < self.cooldown <= 1):
            raise ValueError(f"cooldown must be a fraction of the run in (0, 1], got "
                             f"{self.cooldown!r}")
        for name in ("beta1", "beta2", "muon_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_positive(self, ("muon_rms",), float)

    def to_dict(self) -> dict:
        """The fields as a dict (the model's too), as a JSON recipe and a checkpoint write
        it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A configuration from a dict such as :meth:`to_dict` writes. The model may also be
        written as a preset and its changes (``{"preset": "llama", "n_layer": 2}``), and, as
        the first recipes were, with the size of the BPE vocabulary beside it
        (``vocab_size``)."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config is a JSON object, got {type(d).__name__}")
        fields = dict(d)
        model = fields.pop("model", {"preset": "book"})
        if not isinstance(model, dict):
            raise ValueError(f"model must be an object of GPTConfig fields (and an "
                             f"optional 'preset'), got {model!r}")
        check_types(model, {"preset": str | None, **typing.get_type_hints(GPTConfig)},
                    "model.")
        check_types(fields, {"vocab_size": int})
        model = {"vocab_size": fields.pop("vocab_size", 1024), **model}
        name = model.pop("preset", None)
        made = preset(name, **model) if name else GPTConfig.from_dict(model)
        return from_fields(cls, {**fields, "model": made}, "training option")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrainConfig:
        """The training options in a JSON file (an object of :class:`TrainConfig`
        fields)."""
        fix = "write a UTF-8 JSON object of training options (see RECIPES)"
        # missing, a folder, or not UTF-8: a ValueError naming it
        text = read_text(path, fix)
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a JSON file of training options ({e.msg} "
                             f"at line {e.lineno}, column {e.colno}); {fix}") from None
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None


RECIPES: dict[str, TrainConfig] = {
    # The book's model: the `book` preset made shallower and wider (two blocks of 192), with a
    # 64-token context, the shape that the chapter "From GPT-2 to today's LLMs" finds trains
    # best in minutes on a CPU; BPE with 1024 tokens, many small steps (16 windows) at a high
    # learning rate, held for the first half of the run and then brought down to 0 in a
    # straight line (WSD), and a little dropout, since the run reads the training text about
    # nine times. Minutes on two CPU cores.
    "book": TrainConfig(
        model=preset("book", n_layer=2, n_head=6, n_embd=192, block_size=64, dropout=0.05),
        tokenizer="bpe", batch_size=16, max_steps=4000, lr=3e-3, min_lr=0.0, warmup_steps=50,
        schedule="wsd", cooldown=0.5, eval_interval=500),
    # nanoGPT's CPU recipe for Shakespeare (its README): one id per character (65), 4 layers,
    # 4 heads, 128 wide, a 64-character context, 12 sequences a step, 2000 steps, no dropout.
    "nanogpt_cpu": TrainConfig(
        model=GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128,
                        bias=False), tokenizer="char", batch_size=12, max_steps=2000, lr=1e-3,
        min_lr=1e-4, warmup_steps=100, eval_interval=250),
}
# The book's best CPU recipe (chapter "From GPT-2 to today's LLMs"): the "llama" preset cut to
# two blocks and a 64-token context, on the same BPE tokenizer, many small steps at a high
# learning rate, held for the first half of the run, then brought down to 0 in a straight line
# (WSD). Tuned on two cores for the time that nanogpt_cpu's 2,000 steps take there
# (make bench BENCH=recipe; the ablation behind it: make bench BENCH=ablation).
RECIPES["modern"] = TrainConfig(
    model=preset("llama", n_layer=2, block_size=64), tokenizer="bpe", batch_size=16,
    max_steps=2000, lr=3e-3, min_lr=0.0, warmup_steps=50, schedule="wsd", cooldown=0.5,
    eval_interval=500)
# A reader's hour (make bench BENCH=hour): what two CPU cores train in about 60 minutes (a
# step took 2.3 CPU seconds on two idle AVX-512 cores, so 3000 steps take about 57 minutes). The
# "llama" preset made deeper and wider (six blocks of 256), and more text: Tiny Shakespeare and
# the plays it lacks, less the held-out ones (data.more_plays).
RECIPES["hour"] = TrainConfig(
    model=preset("llama", n_layer=6, n_embd=256, n_head=8, n_kv_head=4, block_size=128,
                 dropout=0.1), tokenizer="bpe", corpus="plays", batch_size=32, max_steps=3000,
    lr=2e-3, min_lr=0.0, warmup_steps=100, schedule="wsd", cooldown=0.3, eval_interval=200)


def recipe(name_or_path: str | os.PathLike) -> TrainConfig:
    """A recipe by name (a copy of :data:`RECIPES`'s) or a JSON file of training options: what
    ``buildllm train --config`` takes."""
    if str(name_or_path) in RECIPES:
        return TrainConfig.from_dict(RECIPES[str(name_or_path)].to_dict())  # a copy of its own
    if not os.path.exists(name_or_path):
        raise ValueError(f"--config {str(name_or_path)!r} is neither a recipe "
                         f"({', '.join(RECIPES)}) nor a JSON file")
    return TrainConfig.from_json(name_or_path)

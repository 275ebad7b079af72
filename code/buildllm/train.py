"""Training: from a corpus and a configuration to a checkpoint. Explained in the chapter
"Training on a CPU".

:func:`train` is a short loop built from named pieces: :func:`prepare_data` (the tokenizer,
the corpus as ids, the validation windows), :func:`start_run` (the seeded model, AdamW, the
batch sampler), :func:`resume_run` (a checkpoint's state), :func:`train_step` (forward,
backward, clip, step), :func:`evaluate` (loss per token and per character) and
:func:`save_run` (a checkpoint that resumes exactly). The learning rate warms up, then follows
a cosine (:func:`learning_rate`). The same loop runs on a CPU, on a GPU (``device="cuda"``,
bf16 autocast) and on several processes under ``torchrun`` (:class:`Processes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from buildllm import checkpoint, data
from buildllm.config import GPTConfig, preset
from buildllm.device import check_bf16, resolve_device
from buildllm.files import check_types, read_text
from buildllm.model import GPT
from buildllm.muon import Muon, param_groups
from buildllm.recipes import RECIPES
from buildllm.tokenizer import CharTokenizer, Tokenizer, load_tokenizer, train_bpe

LN2 = math.log(2)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and what to try."""


@dataclass
class TrainConfig:
    """Everything a training run needs besides the corpus. :data:`~buildllm.recipes.RECIPES`
    holds the book's; a JSON file with these fields is a recipe of your own."""

    model: dict = field(default_factory=lambda: {"preset": "book"})  # GPTConfig fields
    tokenizer: str = "bpe"  # "char" (one id per character) or "bpe"
    vocab_size: int = 1024  # of the BPE tokenizer (ignored for "char")
    batch_size: int = 32  # sequences per step, summed over all processes
    max_steps: int = 2000
    max_seconds: float | None = None  # a time budget for the training steps
    lr: float = 2e-3  # peak learning rate
    min_lr: float = 2e-4  # where the cosine ends
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" to min_lr; "wsd": flat, then a straight line to min_lr
    cooldown: float = 0.2  # with "wsd": the last fraction of the run, where the rate falls
    weight_decay: float = 0.1  # on matrices only
    beta1: float = 0.9
    beta2: float = 0.99
    optimizer: str = "adamw"  # or "muon": Muon for the hidden matrices, AdamW for the rest
    muon_momentum: float = 0.95
    muon_rms: float = 0.2  # a Muon step's root mean square per unit of lr (AdamW's is ~0.2)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_interval: int = 250  # steps between evaluations (and checkpoints)
    eval_windows: int = 64  # validation windows for the evaluations during training
    log_interval: int = 10
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16": autocast the forward pass (GPU)

    def __post_init__(self):
        for name, allowed in (("tokenizer", ("char", "bpe")), ("dtype", ("float32", "bfloat16")),
                              ("optimizer", ("adamw", "muon")), ("schedule", ("cosine", "wsd"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "max_steps", "eval_interval", "eval_windows", "log_interval",
                     "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.max_seconds is not None and not _positive(self.max_seconds):
            raise ValueError(f"max_seconds must be positive (or null), got {self.max_seconds!r}")
        if not (_number(self.min_lr) and _number(self.lr) and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr!r}, lr={self.lr!r}")
        if not (_number(self.cooldown) and 0 < self.cooldown <= 1):
            raise ValueError(f"cooldown must be a fraction of the run in (0, 1], got "
                             f"{self.cooldown!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be an object of GPTConfig fields (and an optional "
                             f"'preset'), got {self.model!r}")
        check_types(vars(self), TrainConfig)  # every field of its annotated type (JSON gives any)
        check_types(self.model, GPTConfig, "model.")
        check_types(self.model, {"preset": str | None}, "model.")
        self.model_config(256)  # sizes that do not fit are found now, not after the data is read

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model's configuration, with the tokenizer's vocabulary size."""
        fields = dict(self.model)
        name = fields.pop("preset", None)
        fields["vocab_size"] = vocab_size
        return preset(name, **fields) if name else GPTConfig.from_dict(fields)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a training config is a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(d) - known:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, name_or_path: str | os.PathLike) -> TrainConfig:
        """A recipe by name (``"book"``, see :data:`~buildllm.recipes.RECIPES`) or a JSON
        file's path."""
        if str(name_or_path) in RECIPES:
            return cls.from_dict(RECIPES[str(name_or_path)])
        path = Path(name_or_path)
        if not path.exists():
            raise ValueError(f"--config {name_or_path!r} is neither a recipe "
                             f"({', '.join(RECIPES)}) nor a JSON file")
        fix = "pass a recipe's name, or a UTF-8 JSON object of training options (see RECIPES)"
        try:  # a folder, or a file that is not UTF-8, is a ValueError that names it
            doc = json.loads(read_text(path, fix))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a JSON file of training options ({e.msg} at line "
                             f"{e.lineno}, column {e.colno}); {fix}") from None
        try:
            return cls.from_dict(doc)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive(x) -> bool:
    return _number(x) and x > 0


# ---- data ------------------------------------------------------------------------------------


def make_tokenizer(config: TrainConfig, text: str) -> Tokenizer:
    """The run's tokenizer, learned from ``text``; BPE is cached on disk, keyed by the text."""
    if config.tokenizer == "char":
        return CharTokenizer(text)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = data.cache_dir() / "tokenizers" / f"bpe-{config.vocab_size}-{key}.json"
    if path.is_file():
        try:
            return load_tokenizer(path)
        except ValueError:  # a damaged cache file: learn it again below
            path.unlink()
    tok = train_bpe(text, config.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


def load_splits(tokenizer: Tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as token ids, split 90/10 *as text*, so that every tokenizer is measured on
    exactly the same validation characters. Returns (train ids, validation ids), each ``(N,)``."""
    train_text, val_text = data.train_val_split(text)
    return (torch.from_numpy(data.encode_corpus(tokenizer, train_text).astype("int32")),
            torch.from_numpy(data.encode_corpus(tokenizer, val_text).astype("int32")))


@dataclass
class Data:
    """What a run trains and is measured on."""

    tokenizer: Tokenizer
    train_ids: torch.Tensor  # (N,)
    val_ids: torch.Tensor  # (M,)
    counts: torch.Tensor  # (vocab_size,): characters each id covers
    val_x: torch.Tensor  # (eval_windows, T): the fixed validation windows
    val_y: torch.Tensor


def prepare_data(config: TrainConfig, text: str | None = None) -> Data:
    """The tokenizer (BPE learns from the training 90 % only; a character tokenizer takes its
    alphabet from the whole text, as nanoGPT does), the two splits as ids, the eval windows."""
    text = data.load_text() if text is None else text
    train_text = data.train_val_split(text)[0]
    tokenizer = make_tokenizer(config, text if config.tokenizer == "char" else train_text)
    train_ids, val_ids = load_splits(tokenizer, text)
    T = config.model_config(tokenizer.vocab_size).block_size
    val_x, val_y = data.eval_windows(val_ids, T, config.eval_windows)
    counts = torch.tensor(tokenizer.token_chars())
    return Data(tokenizer, train_ids, val_ids, counts, val_x, val_y)


# ---- measuring -------------------------------------------------------------------------------


def per_character(loss_sum: float, n_chars: int) -> dict[str, float]:
    """A summed loss (nats) over text of ``n_chars`` characters, as nats and bits per char."""
    nats = loss_sum / n_chars
    return {"nats_per_char": nats, "bits_per_char": nats / LN2}


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor,
             batch_size: int = 64, autocast=contextlib.nullcontext) -> dict[str, float]:
    """Loss on fixed windows ``x``, ``y`` ``(N, T)``: per token, per character, in bits.

    ``counts[id]`` is how many characters token ``id`` covers (``tokenizer.token_chars()``):
    the summed loss over all targets divided by the characters they cover is the loss per
    character, comparable between tokenizers.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, n_tokens, n_chars = 0.0, 0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        with autocast():
            logits, _ = model(xb)
        loss_sum += F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                                    reduction="sum").item()
        n_tokens += yb.numel()
        n_chars += int(counts[yb.cpu()].sum())
    model.train(was_training)
    return {"loss": loss_sum / n_tokens, **per_character(loss_sum, n_chars),
            "chars_per_token": n_chars / n_tokens}


# ---- optimizing ------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on the matrices (linear and embedding weights) only; biases and
    normalization gains (vectors) are not pulled towards zero. With ``optimizer="muon"``, one
    :class:`~buildllm.muon.Muon` optimizer: Muon for the matrices of the hidden layers, AdamW
    for the embeddings, the output head and the vectors, all on the same schedule."""
    if config.optimizer == "muon":
        return Muon(param_groups(model, config.weight_decay), lr=config.lr,
                    momentum=config.muon_momentum, rms=config.muon_rms,
                    betas=(config.beta1, config.beta2))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=False)


def learning_rate(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then down from ``lr`` to ``min_lr``: a cosine over
    the rest of the run, or with ``schedule="wsd"`` (warmup, stable, decay) the full rate until
    the last ``cooldown`` fraction of the run, then a straight line.

    ``progress`` runs from 0 to 1 over the run: the fraction of steps done, or of the time
    budget spent, whichever is further along.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(progress, 1.0)
    if config.schedule == "wsd":
        fall = min(1.0, (1.0 - progress) / config.cooldown)  # 1 until the cooldown, then -> 0
    else:
        fall = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + fall * (config.lr - config.min_lr)


@dataclass
class Run:
    """A run's state: what a checkpoint saves and a resume restores."""

    model: GPT
    optimizer: torch.optim.Optimizer
    batches: torch.Generator  # which windows each step trains on
    step: int = 0
    seconds: float = 0.0  # time spent in training steps, by the run's clock


def start_run(config: TrainConfig, vocab_size: int, device: torch.device) -> Run:
    """A new model and optimizer; the same seed gives the same start on every process."""
    torch.manual_seed(config.seed)
    model = GPT(config.model_config(vocab_size)).to(device)
    return Run(model, make_optimizer(model, config), torch.Generator().manual_seed(config.seed))


def train_step(model: torch.nn.Module, run: Run, x: torch.Tensor, y: torch.Tensor, lr: float,
               config: TrainConfig, autocast=contextlib.nullcontext):
    """One step: forward, backward, clip the gradient norm, update. Returns (loss, norm)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with autocast():
        _, loss = model(x, y)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"the loss is {loss.item()} at step {run.step} (learning rate {lr:.3g}): training "
            f"diverged. Lower lr (now {config.lr}), keep grad_clip on (now {config.grad_clip}), "
            f"or use more warmup_steps (now {config.warmup_steps}).")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = (torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
            if config.grad_clip > 0 else None)
    run.optimizer.step()
    return loss.detach(), norm


# ---- checkpoints and logs --------------------------------------------------------------------


def save_run(run: Run, out: Path, config: TrainConfig, tokenizer: Tokenizer) -> None:
    """A checkpoint in ``out/checkpoint`` with everything needed to continue exactly."""
    rng = {"batches": run.batches.get_state(), "torch": torch.get_rng_state()}
    device = next(run.model.parameters()).device
    if device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
        rng["cuda"] = torch.cuda.get_rng_state(device)
    state = {"step": run.step, "train_seconds": run.seconds, "config": config.to_dict()}
    checkpoint.save_checkpoint(out / "checkpoint", run.model, tokenizer,
                               optimizer=run.optimizer, train_state=state, rng_state=rng)


def resume_run(run: Run, out: Path | None, config: TrainConfig) -> None:
    """Restore ``run`` from ``out``'s checkpoint, which must come from the same configuration."""
    if out is None:
        raise ValueError("resume=True needs the out_dir of the run to resume")
    device = next(run.model.parameters()).device
    ckpt = checkpoint.load_checkpoint(out, device)
    saved = ckpt.train_state.get("config") or {}
    if saved != config.to_dict():
        changed = ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}"
                            for k, v in config.to_dict().items() if saved.get(k) != v)
        raise ValueError(f"the checkpoint in {out} was trained with another configuration "
                         f"({changed}); resume with the same settings (config file and options "
                         f"such as --max-steps), or train into a new --out")
    if ckpt.optimizer_state is None or not {"batches", "torch"} <= ckpt.rng_state.keys():
        raise checkpoint.CheckpointError(
            f"the checkpoint in {out} holds no optimizer state or random generators' states "
            f"(optimizer.safetensors): it cannot be resumed exactly; train into a new --out")
    run.model.load_state_dict(ckpt.model.state_dict())
    run.optimizer.load_state_dict(ckpt.optimizer_state)
    run.batches.set_state(ckpt.rng_state["batches"])
    torch.set_rng_state(ckpt.rng_state["torch"])
    if device.type == "cuda" and "cuda" in ckpt.rng_state:
        torch.cuda.set_rng_state(ckpt.rng_state["cuda"], device)
    run.step, run.seconds = ckpt.train_state["step"], ckpt.train_state["train_seconds"]


def read_records(path: Path) -> list[dict]:
    """The records of a ``log.jsonl``; a line that is not a record (the torn last line of a
    run stopped in the middle of a write) is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


class RunLog:
    """The records of a run, in memory and, with a path, as JSON lines in ``log.jsonl``."""

    def __init__(self, path: Path | None):
        self.path, self.records = path, []

    def start(self, resume_step: int | None) -> None:
        """A new log, or, when resuming, the old one without the records after the checkpoint."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = read_records(self.path) if resume_step is not None else []
        self.records = [r for r in kept if r["step"] <= (resume_step or 0)]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# ---- processes and devices -------------------------------------------------------------------


@dataclass
class Processes:
    """This process's place in a run: ``rank`` of ``world`` processes (1 without torchrun)."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def start(cls, config: TrainConfig) -> Processes:
        """Check the device; under torchrun, join the process group (gloo on CPUs, nccl on
        GPUs) and take this process's GPU."""
        device = resolve_device(config.device)
        if config.dtype == "bfloat16":
            check_bf16(device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if not dist.is_initialized():
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if config.batch_size % dist.get_world_size():
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the "
                             f"{dist.get_world_size()} processes")
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def share(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of the global batch, on its device."""
        n = x.size(0) // self.world
        part = slice(self.rank * n, (self.rank + 1) * n)
        return x[part].to(self.device), y[part].to(self.device)

    def reduce(self, value: torch.Tensor | float, op: str = "mean") -> float:
        """The mean (or max) of a number over the processes; the number itself for one."""
        if self.world == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return float(t) / (self.world if op == "mean" else 1)


def run_progress(run: Run, config: TrainConfig, procs: Processes) -> float:
    """From 0 to 1: steps done or time spent, whichever is further along (the same number on
    every process, so that all stop at the same step)."""
    p = run.step / config.max_steps
    if config.max_seconds:
        p = procs.reduce(max(p, run.seconds / config.max_seconds), "max")
    return p


class ProgressBar:
    """A tqdm bar of the run's progress in percent, with the step and loss; or nothing."""

    def __init__(self, on: bool):
        self.bar = tqdm(total=100, unit="%", dynamic_ncols=True) if on else None

    def update(self, p: float, step: int, loss: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.n = min(100, round(100 * p))
            self.bar.set_postfix(step=step, loss=f"{loss.item():.3f}", refresh=False)
            self.bar.update(0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- the loop --------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and tokenizer, the log, the final eval."""

    model: GPT
    tokenizer: Tokenizer
    log: list[dict]
    final: dict
    out_dir: Path | None = None


def train(config: TrainConfig, out_dir: str | os.PathLike | None = None, resume: bool = False,
          progress: bool = False, text: str | None = None,
          final_eval_windows: int | None = None,
          clock: Callable[[], float] = time.perf_counter) -> TrainResult:
    """Train a model as ``config`` says; with ``out_dir``, log and checkpoint there.

    ``out_dir`` receives ``log.jsonl`` and ``checkpoint/`` (every ``eval_interval`` steps and
    at the end); ``resume=True`` continues from that checkpoint exactly where it stopped.
    ``progress`` shows a progress bar; ``text`` replaces the corpus (tests use a small one);
    ``clock`` measures the time budget (``time.process_time`` counts CPU seconds). The final
    evaluation scores the whole validation text, or ``final_eval_windows`` windows of it.
    """
    checkpoint.check_run_folder(out_dir, resume)  # a file, unwritable, nothing to resume: now
    procs = Processes.start(config)
    autocast = make_autocast(config, procs.device)
    d = prepare_data(config, text)
    run = start_run(config, d.tokenizer.vocab_size, procs.device)
    out = Path(out_dir) if out_dir is not None else None
    if resume:
        resume_run(run, out, config)
    log = RunLog(out / "log.jsonl" if out is not None and procs.rank == 0 else None)
    log.start(run.step if resume else None)
    model = DistributedDataParallel(run.model) if procs.world > 1 else run.model
    bar = ProgressBar(progress and procs.rank == 0)
    run.model.train()
    if run.step == 0 and procs.rank == 0:
        validate(run, d, log, autocast)
    p = run_progress(run, config, procs)
    while p < 1.0:
        start = clock()
        batch = data.get_batch(d.train_ids, d.val_x.size(1), config.batch_size, run.batches)
        lr = learning_rate(run.step, p, config)
        loss, norm = train_step(model, run, *procs.share(*batch), lr, config, autocast)
        run.step += 1
        run.seconds += clock() - start
        if run.step % config.log_interval == 0 or run.step == 1:
            log.add({"step": run.step, "loss": procs.reduce(loss), "lr": lr,
                     "grad_norm": None if norm is None else norm.item(),
                     "seconds": round(run.seconds, 3)})
        p = run_progress(run, config, procs)
        if run.step % config.eval_interval == 0 and p < 1.0 and procs.rank == 0:
            validate(run, d, log, autocast)
            if out is not None:
                save_run(run, out, config, d.tokenizer)
        bar.update(p, run.step, loss)
    bar.close()
    final = finish(run, d, log, procs, autocast, final_eval_windows)
    if out is not None and procs.rank == 0:
        save_run(run, out, config, d.tokenizer)
    return TrainResult(run.model, d.tokenizer, log.records, final, out)


def make_autocast(config: TrainConfig, device: torch.device) -> Callable:
    """What the forward pass runs under: bfloat16 autocast when asked for, else nothing."""
    if config.dtype == "bfloat16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def validate(run: Run, d: Data, log: RunLog, autocast: Callable) -> None:
    """Score the fixed validation windows and log the scores (``val_loss``, ...)."""
    scores = evaluate(run.model, d.val_x, d.val_y, d.counts, autocast=autocast)
    log.add({"step": run.step, **{f"val_{k}": v for k, v in scores.items()}})


def finish(run: Run, d: Data, log: RunLog, procs: Processes, autocast: Callable,
           final_eval_windows: int | None) -> dict:
    """The final scores, on the whole validation text (or ``final_eval_windows`` windows of
    it), logged as ``final_...``; an empty dict on processes other than the first."""
    if procs.rank != 0:
        return {}
    fx, fy = data.eval_windows(d.val_ids, d.val_x.size(1), final_eval_windows)
    final = {"step": run.step, "train_seconds": run.seconds,
             **evaluate(run.model, fx, fy, d.counts, autocast=autocast)}
    log.add({"step": run.step, **{f"final_{k}": v for k, v in final.items() if k != "step"}})
    return final

"""Training: from a corpus and a configuration to a checkpoint. Explained in the chapter
"Training on a CPU".

:func:`train` is the whole loop: tokenize the corpus (cached), build the model, then repeat
*sample a batch, compute the loss, backpropagate, clip, step* with AdamW, a warmup-then-cosine
learning rate, a fixed validation set measured in bits per character, a JSON-lines log,
checkpoints that resume exactly, and a wall-clock budget. The same function runs on one CPU,
on a GPU (``device="cuda"``, bf16 autocast) and on several processes under ``torchrun``
(DistributedDataParallel, ``gloo`` on CPUs, ``nccl`` on GPUs).

:func:`pretrained` trains the book's model once and caches it; later chapters call it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from buildllm import checkpoint, data
from buildllm.model import GPT, GPTConfig, preset
from buildllm.tokenizer import BPETokenizer, CharTokenizer

LN2 = math.log(2)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and what to try."""


# ---------------------------------------------------------------------------------------------
# The configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a training run needs besides the corpus. JSON files in ``configs/`` hold one
    each (:meth:`from_json`); :data:`RECIPES` holds the book's."""

    model: dict = field(default_factory=lambda: {"preset": "book"})  # GPTConfig fields
    tokenizer: str = "bpe"  # "char" (one id per character) or "bpe"
    vocab_size: int = 1024  # of the BPE tokenizer (ignored for "char")
    batch_size: int = 32  # sequences per step, summed over all processes
    max_steps: int = 2000
    max_seconds: float | None = None  # a time budget for the training steps
    clock: str = "wall"  # "wall": seconds; "cpu": CPU seconds of this process (shared machines)
    lr: float = 2e-3  # peak learning rate
    min_lr: float = 2e-4  # where the cosine ends
    warmup_steps: int = 100
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

    def __post_init__(self):
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("batch_size", "max_steps", "eval_interval", "eval_windows", "log_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive (or null), got {self.max_seconds}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model's configuration, with the tokenizer's vocabulary size."""
        fields = dict(self.model)
        name = fields.pop("preset", None)
        fields["vocab_size"] = vocab_size
        return preset(name, **fields) if name else GPTConfig(**fields)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(d) - known:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, name_or_path: str | os.PathLike) -> TrainConfig:
        """A recipe by name (``"book"``, see :data:`RECIPES`) or a JSON file's path."""
        if str(name_or_path) in RECIPES:
            return cls.from_dict(RECIPES[str(name_or_path)])
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"--config {name_or_path!r} is neither a recipe "
                             f"({', '.join(RECIPES)}) nor a JSON file")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


RECIPES: dict[str, dict] = {
    # The book's model: BPE with 1024 tokens, 4 layers, 128 wide, 128-token context, many
    # small steps. A minute or two on two CPU cores; configs/book.json is this recipe.
    "book": dict(model={"preset": "book", "bias": False}, tokenizer="bpe", vocab_size=1024,
                 batch_size=8, max_steps=1200, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                 eval_interval=200),
    # nanoGPT's CPU recipe for Shakespeare (its README): one id per character, 4 layers, 4 heads,
    # 128 wide, a 64-character context, 12 sequences a step, 2000 steps, no dropout.
    "nanogpt_cpu": dict(model={"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128,
                               "bias": False}, tokenizer="char", batch_size=12,
                        max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                        eval_interval=250),
    # The book's best CPU recipe (chapter "From GPT-2 to today's LLMs"): the `llama` preset cut
    # to two blocks and a 64-token context, on the same BPE tokenizer, many small steps at a high
    # learning rate. Tuned on two cores for the time that nanogpt_cpu's 2000 steps take there
    # (`make bench BENCH=recipe`).
    "modern": dict(model={"preset": "llama", "n_layer": 2, "block_size": 64}, tokenizer="bpe",
                   vocab_size=1024, batch_size=16, max_steps=2000, lr=3e-3, min_lr=3e-4,
                   warmup_steps=50, eval_interval=500),
}


# ---------------------------------------------------------------------------------------------
# Data: tokenizer, token arrays, the loss per character
# ---------------------------------------------------------------------------------------------


def make_tokenizer(config: TrainConfig, text: str):
    """The run's tokenizer, learned from ``text`` (the training split); BPE is cached on disk."""
    if config.tokenizer == "char":
        return CharTokenizer(text)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = data.cache_dir() / "tokenizers" / f"bpe-{config.vocab_size}-{key}.json"
    if path.is_file():
        try:
            return BPETokenizer.load(path)
        except ValueError:  # a damaged cache file: learn it again below
            path.unlink()
    tok = BPETokenizer().train(text, config.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


def load_splits(tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as token ids, split 90/10 *as text*, so that every tokenizer is measured on
    exactly the same validation characters. Returns (train ids, validation ids), each ``(N,)``."""
    train_text, val_text = data.train_val_split(text)
    return (torch.from_numpy(data.encode_corpus(tokenizer, train_text).astype("int32")),
            torch.from_numpy(data.encode_corpus(tokenizer, val_text).astype("int32")))


def per_character(loss_sum: float, n_chars: int) -> dict[str, float]:
    """A summed loss (nats) over text of ``n_chars`` characters, as nats and bits per char."""
    nats = loss_sum / n_chars
    return {"nats_per_char": nats, "bits_per_char": nats / LN2}


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor,
             batch_size: int = 64, autocast=contextlib.nullcontext) -> dict[str, float]:
    """Loss on fixed windows ``x``, ``y`` ``(N, T)``: per token, per character, in bits.

    ``counts[id]`` is how many characters token ``id`` covers (:func:`data.char_counts`); the
    summed loss over all targets divided by the characters they cover is the loss per
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
        losses = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), yb.flatten(), reduction="sum")
        loss_sum += losses.item()
        n_tokens += yb.numel()
        n_chars += int(counts[yb.cpu()].sum())
    model.train(was_training)
    return {"loss": loss_sum / n_tokens, **per_character(loss_sum, n_chars),
            "chars_per_token": n_chars / n_tokens}


# ---------------------------------------------------------------------------------------------
# Optimizer and learning rate
# ---------------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (linear and embedding weights) only; biases and
    normalization gains (vectors) are not pulled towards zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=False)


def learning_rate(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then a cosine from ``lr`` down to ``min_lr``.

    ``progress`` runs from 0 to 1 over the run: the fraction of steps done, or of the time
    budget spent, whichever is further along.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))  # 1 -> 0
    return config.min_lr + cosine * (config.lr - config.min_lr)


def resolve_device(name: str) -> torch.device:
    """The device called ``name`` ("cpu", "cuda", "cuda:1", "mps"), checked usable here."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r} ({e}); use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this PyTorch ({torch.__version__}) sees no CUDA "
                             f"GPU; use --device cpu, or install a CUDA build of PyTorch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                             f"GPU(s), numbered from cuda:0")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: this PyTorch sees no Apple GPU; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: the book's code runs on cpu, cuda or mps")
    return device


# ---------------------------------------------------------------------------------------------
# Several processes (torchrun)
# ---------------------------------------------------------------------------------------------


def setup_distributed(device: str) -> tuple[int, int]:
    """``(rank, world_size)``; under torchrun, join the process group first."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and tokenizer, the log, the final eval."""

    model: GPT
    tokenizer: CharTokenizer | BPETokenizer
    log: list[dict]
    final: dict
    out_dir: Path | None = None


def _append_log(path: Path | None, record: dict, log: list[dict]) -> None:
    log.append(record)
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def train(config: TrainConfig, out_dir: str | os.PathLike | None = None, resume: bool = False,
          progress: bool = False, text: str | None = None,
          final_eval_windows: int | None = None) -> TrainResult:
    """Train a model as ``config`` says; with ``out_dir``, log and checkpoint there.

    ``out_dir`` receives ``log.jsonl`` (one JSON record per logged step and per evaluation)
    and ``checkpoint/`` (every ``eval_interval`` steps and at the end). ``resume=True``
    continues from that checkpoint exactly where it stopped. ``text`` replaces the corpus
    (tests use a small one). The final evaluation scores the whole validation text, or
    ``final_eval_windows`` windows of it.
    """
    rank, world = setup_distributed(config.device)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the "
                         f"{world} processes")
    device = resolve_device(config.device)
    if config.dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16; train with "
                         f"dtype float32 (drop --dtype bfloat16)")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    use_bf16 = config.dtype == "bfloat16"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 \
        else contextlib.nullcontext

    # The data: one tokenizer, learned from the training text; the corpus as ids.
    text = data.load_text() if text is None else text
    # BPE learns from the training text only; a character tokenizer's alphabet is taken from
    # the whole text, as nanoGPT does (the validation text may hold a character that the
    # training text lacks, and a list of characters teaches the model nothing)
    train_text = data.train_val_split(text)[0]
    tokenizer = make_tokenizer(config, text if config.tokenizer == "char" else train_text)
    train_ids, val_ids = load_splits(tokenizer, text)
    counts = data.char_counts(tokenizer)
    model_config = config.model_config(tokenizer.vocab_size)
    T = model_config.block_size
    val_x, val_y = data.eval_windows(val_ids, T, config.eval_windows)

    # The model and optimizer; the same seed gives the same start on every process.
    torch.manual_seed(config.seed)
    model = GPT(model_config).to(device)
    optimizer = make_optimizer(model, config)
    batches = torch.Generator().manual_seed(config.seed)  # which windows each step trains on
    step, train_seconds = 0, 0.0
    out = Path(out_dir) if out_dir is not None else None
    log_path = out / "log.jsonl" if out is not None and rank == 0 else None
    log: list[dict] = []
    if resume:
        if out is None:
            raise ValueError("resume=True needs the out_dir of the run to resume")
        ckpt = checkpoint.load_checkpoint(out, device)
        saved = ckpt.train_state.get("config") or {}
        if saved != config.to_dict():
            changed = ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}"
                                for k, v in config.to_dict().items() if saved.get(k) != v)
            raise ValueError(f"the checkpoint in {out} was trained with another configuration "
                             f"({changed}); resume with the same settings (config file and "
                             f"options such as --max-steps), or train into a new --out")
        model.load_state_dict(ckpt.model.state_dict())
        optimizer.load_state_dict(ckpt.optimizer_state)
        batches.set_state(ckpt.rng_state["batches"])
        torch.set_rng_state(ckpt.rng_state["torch"])
        if device.type == "cuda" and "cuda" in ckpt.rng_state:
            torch.cuda.set_rng_state(ckpt.rng_state["cuda"], device)
        step, train_seconds = ckpt.train_state["step"], ckpt.train_state["train_seconds"]
        if log_path is not None and log_path.is_file():  # drop records after the checkpoint
            kept = [json.loads(line) for line in log_path.read_text().splitlines()]
            log = [r for r in kept if r["step"] <= step]
            log_path.write_text("".join(json.dumps(r) + "\n" for r in log))
    elif out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if log_path.exists():
            log_path.unlink()
    ddp = DistributedDataParallel(model) if world > 1 else model

    def save() -> None:
        if out is None or rank != 0:
            return
        rng = {"batches": batches.get_state(), "torch": torch.get_rng_state()}
        if device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
            rng["cuda"] = torch.cuda.get_rng_state(device)
        state = {"step": step, "train_seconds": train_seconds, "config": config.to_dict()}
        checkpoint.save_checkpoint(out / "checkpoint", model, tokenizer, optimizer=optimizer,
                                   train_state=state, rng_state=rng)

    def run_eval() -> None:
        result = evaluate(model, val_x, val_y, counts, autocast=autocast)
        _append_log(log_path, {"step": step, **{f"val_{k}": v for k, v in result.items()}}, log)

    def done() -> float:
        """Progress from 0 to 1: steps done or time spent, whichever is further along."""
        p = step / config.max_steps
        if config.max_seconds:
            p = max(p, train_seconds / config.max_seconds)
        if world > 1 and config.max_seconds:  # every process must stop at the same step
            t = torch.tensor([p], dtype=torch.float64, device=device)  # nccl: on the GPU
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            p = float(t)
        return p

    clock = time.process_time if config.clock == "cpu" else time.perf_counter
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=100, initial=round(100 * done()), unit="%", dynamic_ncols=True)
    model.train()
    if step == 0 and rank == 0:
        run_eval()
    p = done()
    while p < 1.0:
        start = clock()
        lr = learning_rate(step, p, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = data.get_batch(train_ids, T, config.batch_size, batches)  # the global batch
        share = config.batch_size // world
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        x, y = x.to(device), y.to(device)
        with autocast():
            _, loss = ddp(x, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss is {loss.item()} at step {step} (learning rate {lr:.3g}): training "
                f"diverged. Lower lr (now {config.lr}), keep grad_clip on (now "
                f"{config.grad_clip}), or use more warmup_steps (now {config.warmup_steps}).")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if config.grad_clip > 0 else None)
        optimizer.step()
        step += 1
        train_seconds += clock() - start
        if step % config.log_interval == 0 or step == 1:
            loss_value = loss.detach()
            if world > 1:
                dist.all_reduce(loss_value)  # the sum over processes
                loss_value /= world
            record = {"step": step, "loss": loss_value.item(), "lr": lr,
                      "grad_norm": None if norm is None else norm.item(),
                      "seconds": round(train_seconds, 3)}
            if rank == 0:
                _append_log(log_path, record, log)
        p = done()
        if step % config.eval_interval == 0 and p < 1.0:
            if rank == 0:
                run_eval()
            save()
        if bar is not None:
            bar.n = min(100, round(100 * p))
            bar.set_postfix(step=step, loss=f"{loss.item():.3f}", refresh=False)
            bar.update(0)
    if bar is not None:
        bar.close()

    # The end: the whole validation text (or final_eval_windows of it), and a checkpoint.
    final: dict = {}
    if rank == 0:
        fx, fy = data.eval_windows(val_ids, T, final_eval_windows)
        final = {"step": step, "train_seconds": train_seconds,
                 **evaluate(model, fx, fy, counts, autocast=autocast)}
        _append_log(log_path, {"step": step, **{f"final_{k}": v for k, v in final.items()
                                                if k != "step"}}, log)
        save()
    return TrainResult(model, tokenizer, log, final, out)


# ---------------------------------------------------------------------------------------------
# The book's model, trained once and cached
# ---------------------------------------------------------------------------------------------


def recipe_hash(config: TrainConfig) -> str:
    """A short hash of a recipe and the corpus: the cache key of :func:`pretrained`."""
    key = {"config": config.to_dict(), "corpus": data.SHA256, "format": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock on the file ``path`` (created if missing) while the block runs;
    other processes (and threads) that ask for it wait. POSIX only; elsewhere no lock is taken,
    and racing callers of :func:`pretrained_dir` each train and publish the same checkpoint."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pretrained_dir(name: str = "book", threads: int = 2) -> Path:
    """The checkpoint folder of the recipe ``name`` trained on Tiny Shakespeare.

    The first call trains (deterministically: fixed seeds, ``threads`` threads) and caches the
    checkpoint, with its ``log.jsonl``, in ``cache_dir()/models/<name>-<recipe hash>``; later
    calls find it there, and a damaged one is trained again and replaced. A call made while
    another process trains the same recipe waits for it (a lock file beside the folder), then
    loads its checkpoint, rather than training a second copy on the same cores.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    config = TrainConfig.from_dict(RECIPES[name])
    folder = data.cache_dir() / "models" / f"{name}-{recipe_hash(config)}"
    with exclusive(folder.with_name(folder.name + ".lock")):
        try:
            checkpoint.read_config(folder)
            return folder
        except checkpoint.CheckpointError:  # missing, or damaged: trained again and replaced
            pass
        previous, rng = torch.get_num_threads(), torch.get_rng_state()
        torch.set_num_threads(threads)
        try:
            result = train(config)
        finally:
            torch.set_num_threads(previous)
            torch.set_rng_state(rng)
        log = "".join(json.dumps(r) + "\n" for r in result.log)
        state = {"step": result.final["step"], "config": config.to_dict(), "final": result.final}
        checkpoint.save_checkpoint(folder, result.model, result.tokenizer, train_state=state,
                                   extra_files={"log.jsonl": log})
    return folder


def pretrained(name: str = "book", threads: int = 2) -> tuple[GPT, CharTokenizer | BPETokenizer]:
    """``(model, tokenizer)`` of :func:`pretrained_dir`: trained once, then loaded."""
    return checkpoint.load_model(pretrained_dir(name, threads))


# ---------------------------------------------------------------------------------------------
# The command line: buildllm train
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    """Add ``buildllm train`` to the ``buildllm`` command line."""
    p = subparsers.add_parser(
        "train", help="train a model on Tiny Shakespeare",
        description="Train a GPT as a config says; log and checkpoint into --out. Under "
                    "`torchrun --nproc_per_node N -m buildllm.cli train ...` the N processes "
                    "share each batch (DistributedDataParallel).")
    p.add_argument("--config", default="book",
                   help=f"a recipe ({', '.join(RECIPES)}) or a JSON file (default: book)")
    p.add_argument("--out", default="runs/book", help="output folder (default: runs/book)")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, mps ...")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="bfloat16: autocast")
    p.add_argument("--max-steps", type=int, help="override the config's max_steps")
    p.add_argument("--max-seconds", type=float, help="a time budget for the training steps")
    p.add_argument("--clock", choices=("wall", "cpu"),
                   help="what --max-seconds counts: wall-clock seconds (the default) or this "
                        "process's CPU seconds, as make bench does")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")
    p.set_defaults(func=_cli_train)


def _cli_train(args: argparse.Namespace) -> int:
    config = TrainConfig.from_json(args.config)
    overrides = {"device": args.device, "dtype": args.dtype, "max_steps": args.max_steps,
                 "max_seconds": args.max_seconds, "clock": args.clock}
    config = TrainConfig.from_dict({**config.to_dict(),
                                    **{k: v for k, v in overrides.items() if v is not None}})
    if args.device is None and torch.cuda.is_available():
        print("note: a GPU is available; add --device cuda --dtype bfloat16 to use it",
              file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = train(config, args.out, resume=args.resume, progress=True)
    except NonFiniteLossError as e:
        print(f"buildllm train: error: {e}", file=sys.stderr)
        return 1
    if result.final:
        f = result.final
        print(f"step {f['step']}: validation loss {f['loss']:.4f} nats/token, "
              f"{f['nats_per_char']:.4f} nats/char, {f['bits_per_char']:.4f} bits/char")
        print(f"checkpoint: {Path(args.out) / 'checkpoint'}   log: {Path(args.out) / 'log.jsonl'}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0

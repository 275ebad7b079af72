"""A training run's machinery: its state (:class:`Run`), saving and resuming it, its log, its
processes, its progress. Described in the chapter "Training on a CPU", whose loop
(:func:`buildllm.train.train`) uses it.

- :func:`save_run` writes a checkpoint from which :func:`resume_run` continues exactly: the
  model, the optimizer's moments, the random generators, the step and the seconds spent;
- :class:`RunLog` keeps the records of a run, in ``log.jsonl`` with an output folder;
- :class:`Processes` is this process's place among those of ``torchrun`` (one without it): it
  shares each batch out and averages numbers over the processes;
- :func:`run_progress` and :class:`ProgressBar` say how far the run is, by steps or by time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from buildllm import checkpoint
from buildllm.config import TrainConfig
from buildllm.device import check_bf16, resolve_device
from buildllm.model import GPT
from buildllm.tokenizer import Tokenizer


@dataclass
class Run:
    """A run's state: what a checkpoint saves and a resume restores."""

    model: GPT
    optimizer: torch.optim.Optimizer
    batches: torch.Generator  # which windows each step trains on
    step: int = 0
    seconds: float = 0.0  # time spent in training steps, by the run's clock


# ---- checkpoints -----------------------------------------------------------------------------


def save_run(run: Run, out: Path, config: TrainConfig, tokenizer: Tokenizer) -> None:
    """A checkpoint in ``out/checkpoint`` with everything needed to continue exactly."""
    rng = {"batches": run.batches.get_state(), "torch": torch.get_rng_state()}
    device = next(run.model.parameters()).device
    if device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
        rng["cuda"] = torch.cuda.get_rng_state(device)
    state = {"step": run.step, "train_seconds": run.seconds, "config": config.to_dict()}
    checkpoint.save_checkpoint(out / "checkpoint", run.model, tokenizer,
                               optimizer=run.optimizer, train_state=state, rng_state=rng)


def resume_run(run: Run, out: Path, config: TrainConfig) -> None:
    """Restore ``run`` from ``out``'s checkpoint, which must come from the same configuration
    (:func:`~buildllm.checkpoint.check_run_folder` has checked that it holds a run's state)."""
    device = next(run.model.parameters()).device
    ckpt = checkpoint.load_checkpoint(out, device)
    saved = TrainConfig.from_dict(ckpt.train_state["config"])
    if saved != config:
        old, new = saved.to_dict(), config.to_dict()
        changed = ", ".join(f"{k}: {old[k]!r} -> {v!r}" for k, v in new.items() if old[k] != v)
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


# ---- the log ---------------------------------------------------------------------------------


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
        """Keep ``record``, and append it to the file."""
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


def make_autocast(config: TrainConfig, device: torch.device) -> Callable:
    """What the forward pass runs under: bfloat16 autocast when asked for, else nothing."""
    if config.dtype == "bfloat16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# ---- progress --------------------------------------------------------------------------------


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
        """Show progress ``p`` (0 to 1), the step and the loss."""
        if self.bar is not None:
            self.bar.n = min(100, round(100 * p))
            self.bar.set_postfix(step=step, loss=f"{loss.item():.3f}", refresh=False)
            self.bar.update(0)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()

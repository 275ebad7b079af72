"""Training: from a corpus and a configuration to a trained model. Explained in the chapter
"Training on a CPU".

:func:`train` is a short loop built from named pieces: :func:`~buildllm.data.prepare_data` (the
tokenizer, the corpus as ids, the validation windows), :func:`start_run` (the seeded model, the
optimizer, the batch sampler), :func:`train_step` (forward, backward, clip, step) and
:func:`evaluate` (loss per token and per character). The learning rate warms up, then follows a
cosine (:func:`learning_rate`). The run's machinery (its log, checkpoints that resume exactly,
processes under ``torchrun``, a progress bar) is in :mod:`buildllm.run`. The same loop runs on
a CPU, on a GPU (``device="cuda"``, bf16 autocast) and on several processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from buildllm import checkpoint, data
from buildllm.config import TrainConfig
from buildllm.data import Data
from buildllm.model import GPT
from buildllm.muon import Muon, param_groups
from buildllm.run import (
    Processes,
    ProgressBar,
    Run,
    RunLog,
    make_autocast,
    resume_run,
    run_progress,
    save_run,
)
from buildllm.tokenizer import Tokenizer

LN2 = math.log(2)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and what to try."""


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


def adamw(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (linear and embedding weights) only; biases
    and normalization gains (vectors) are not pulled towards zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2],
               "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=False)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names: :func:`adamw`, or one
    :class:`~buildllm.muon.Muon` optimizer (Muon for the matrices of the hidden layers, AdamW
    for the embeddings, the output head and the vectors, all on the same schedule)."""
    if config.optimizer == "muon":
        return Muon(param_groups(model, config.weight_decay), lr=config.lr,
                    momentum=config.muon_momentum, rms=config.muon_rms,
                    betas=(config.beta1, config.beta2))
    return adamw(model, config)


def learning_rate(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then down from ``lr`` to ``min_lr`` as
    :func:`decay` falls from 1 to 0 (a cosine, by default).

    ``progress`` runs from 0 to 1 over the run: the fraction of steps done, or of the time
    budget spent, whichever is further along.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    fall = decay(min(progress, 1.0), config)  # 1 -> 0
    return config.min_lr + fall * (config.lr - config.min_lr)


def cosine(progress: float) -> float:
    """Half a cosine, from 1 at the start of the run (``progress`` 0) to 0 at its end."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd(progress: float, cooldown: float) -> float:
    """Warmup, stable, decay: 1 until the last ``cooldown`` fraction of the run, then a
    straight line down to 0 at its end."""
    return min(1.0, (1.0 - progress) / cooldown)


def decay(progress: float, config: TrainConfig) -> float:
    """The schedule ``config.schedule`` names: :func:`cosine` or :func:`wsd`."""
    return wsd(progress, config.cooldown) if config.schedule == "wsd" else cosine(progress)


# ---- the loop --------------------------------------------------------------------------------


def start_run(config: TrainConfig, vocab_size: int, device: torch.device) -> Run:
    """A new model (``config.model`` with the tokenizer's ``vocab_size``) and optimizer; the
    same seed gives the same start on every process."""
    torch.manual_seed(config.seed)
    model = GPT(dataclasses.replace(config.model, vocab_size=vocab_size)).to(device)
    return Run(model, make_optimizer(model, config), torch.Generator().manual_seed(config.seed))


def train_step(model: torch.nn.Module, run: Run, x: torch.Tensor, y: torch.Tensor,
               lr: float, config: TrainConfig, autocast=contextlib.nullcontext):
    """One step: forward, backward, clip the gradient norm, update. Returns (loss, norm)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with autocast():
        _, loss = model(x, y)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"the loss is {loss.item()} at step {run.step} (learning rate {lr:.3g}): "
            f"training diverged. Lower lr (now {config.lr}), keep grad_clip on "
            f"(now {config.grad_clip}), "
            f"or use more warmup_steps (now {config.warmup_steps}).")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = (torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
            if config.grad_clip > 0 else None)
    run.optimizer.step()
    return loss.detach(), norm


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and tokenizer, the log, the final eval."""

    model: GPT
    tokenizer: Tokenizer
    log: list[dict]
    final: dict
    out_dir: Path | None = None


def train(config: TrainConfig, out_dir: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = False, text: str | None = None,
          final_eval_windows: int | None = None,
          clock: Callable[[], float] = time.perf_counter) -> TrainResult:
    """Train a model as ``config`` says; with ``out_dir``, log and checkpoint there.

    ``out_dir`` receives ``log.jsonl`` and ``checkpoint/`` (every ``eval_interval`` steps
    and at the end); ``resume=True`` continues from that checkpoint exactly where it
    stopped. ``progress`` shows a progress bar; ``text`` replaces the corpus (tests use a
    small one); ``clock`` measures the time budget (``time.process_time`` counts CPU
    seconds). The final evaluation scores the whole validation text, or
    ``final_eval_windows`` windows of it.
    """
    # a file, unwritable, nothing to resume
    out = checkpoint.check_run_folder(out_dir, resume)
    procs = Processes.start(config)
    autocast = make_autocast(config, procs.device)
    d = data.prepare_data(config, text)
    run = start_run(config, d.tokenizer.vocab_size, procs.device)
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

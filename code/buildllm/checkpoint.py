"""Checkpoints: a trained model in a folder, safe to write, safe to read. Explained in the
chapter "Training on a CPU".

A checkpoint is a folder::

    config.json              what the model is and where training stood (readable JSON)
    model.safetensors        the weights
    tokenizer.json           the tokenizer that turns text into the model's ids
    optimizer.safetensors    AdamW's moments and the random number generators' states (resume)

Nothing is ever unpickled: weights and optimizer moments are safetensors, everything else is
JSON. ``config.json`` also records the sha256 of the weights, tokenizer and optimizer files,
so a damaged or mixed-up folder is found when it is loaded, with a message that says which file
is wrong.

The folder is written *atomically*: every file goes into a temporary folder beside the
destination, which is then renamed into place (the old folder is first renamed aside, then
deleted). A reader sees the old checkpoint or the new one, never a half-written mixture; a
writer killed between the two renames leaves the old one aside, where readers still find it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as _load_weights
from safetensors.torch import save_model as _save_weights

from buildllm.config import GPTConfig
from buildllm.files import write_atomically
from buildllm.model import GPT
from buildllm.tokenizer import Tokenizer, load_tokenizer

FORMAT = "buildllm-checkpoint"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, OPTIMIZER = (
    "config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, damaged or does not fit; the message says what to do."""


@dataclass
class Checkpoint:
    """Everything :func:`load_checkpoint` read from a folder."""

    model: GPT
    tokenizer: Tokenizer
    path: Path
    train_state: dict = field(default_factory=dict)  # step, training config, ...
    optimizer_state: dict | None = None  # a torch optimizer state_dict, when saved
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)


# -- writing -----------------------------------------------------------------------------------

def _write_json(path: Path, doc) -> None:
    """Write JSON atomically (:func:`~buildllm.files.write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1), "utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A torch optimizer ``state_dict`` as flat named tensors plus its (JSON) param groups."""
    tensors = {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            tensors[f"state.{index}.{name}"] = torch.as_tensor(value).clone()
    return tensors, state_dict["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict:
    """The inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": dict(sorted(state.items())), "param_groups": param_groups}


def publish_folder(tmp: Path, dest: Path, replace: bool = True) -> None:
    """Rename the finished folder ``tmp`` to ``dest``, replacing an older ``dest`` if any
    (with ``replace=False``, an existing ``dest`` raises ``FileExistsError`` and stays as it
    is). The older one is renamed aside first; a leftover from an interrupted publish, which
    :func:`find_checkpoint` falls back to, is deleted once the new one is in place."""
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} exists; pass replace=True to replace it")
    if dest.exists():
        os.replace(dest, dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}"))
    os.replace(tmp, dest)
    for old in dest.parent.glob(f".{dest.name}.old-*"):
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(path: str | os.PathLike, model: GPT, tokenizer: Tokenizer, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    train_state: dict | None = None,
                    rng_state: dict[str, torch.Tensor] | None = None,
                    extra_files: dict[str, str] | None = None, replace: bool = True) -> Path:
    """Write a checkpoint folder at ``path`` atomically and return its path.

    ``train_state`` (JSON-able: step, the training config, ...) goes into config.json;
    ``optimizer`` and ``rng_state`` (named uint8 tensors from ``get_rng_state()``) go into
    optimizer.safetensors; ``extra_files`` (name -> text) are copied in as they are. With
    ``replace=False`` an existing checkpoint at ``path`` is kept and ``FileExistsError`` is raised.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # the usual permissions (tempfile.mkdtemp's folders are private)
    try:
        write_atomically(tmp / WEIGHTS,  # save_model handles the tied embedding/head
                         lambda p: _save_weights(model, str(p)))
        tokenizer.save(tmp / TOKENIZER)
        if optimizer is not None or rng_state:
            tensors, groups = flatten_optimizer(optimizer.state_dict()) if optimizer else ({}, [])
            for name, value in (rng_state or {}).items():
                tensors[f"rng.{name}"] = value.contiguous()
            write_atomically(tmp / OPTIMIZER, lambda p: save_file(
                tensors, str(p), metadata={"param_groups": json.dumps(groups)}))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        files = {name: _sha256(tmp / name)
                 for name in (WEIGHTS, TOKENIZER, OPTIMIZER) if (tmp / name).exists()}
        _write_json(tmp / CONFIG, {
            "format": FORMAT, "version": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "tokenizer": {"kind": tokenizer.kind, "file": TOKENIZER,
                          "vocab_size": tokenizer.vocab_size},
            "train": train_state or {},
            "sha256": files,
        })
        publish_folder(tmp, dest, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# -- reading -----------------------------------------------------------------------------------

def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder at ``path``: the folder itself, or its ``checkpoint`` subfolder
    (a training run's output folder holds its log beside ``checkpoint/``), or, when a save was
    interrupted between its two renames, the previous checkpoint that it had renamed aside."""
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        if (candidate / CONFIG).is_file():
            return candidate
        # a writer stopped inside publish_folder left the previous checkpoint renamed aside
        aside = [p for p in candidate.parent.glob(f".{candidate.name}.old-*")
                 if (p / CONFIG).is_file()]
        if aside:
            return max(aside, key=lambda p: (p / CONFIG).stat().st_mtime)
    raise CheckpointError(
        f"no checkpoint at {path}: expected {path / CONFIG} or {path / 'checkpoint' / CONFIG}. "
        f"Train one with `buildllm train --out {path}` or pass the folder that holds it.")


def read_config(path: str | os.PathLike) -> dict:
    """The checked contents of a checkpoint's config.json."""
    folder = find_checkpoint(path)
    try:
        doc = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / CONFIG} is not valid JSON ({e}): the checkpoint is "
                              f"damaged; train again or restore it from a copy") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise CheckpointError(f"{folder / CONFIG} is not a {FORMAT} config (its 'format' is "
                              f"{found!r}); pass a folder written by save_checkpoint")
    if doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder} has checkpoint version {doc.get('version')!r}; this "
                              f"buildllm reads version {FORMAT_VERSION}")
    for name, expected in doc.get("sha256", {}).items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing: the checkpoint is incomplete")
        if _sha256(file) != expected:
            raise CheckpointError(
                f"{file} does not match the sha256 recorded in {CONFIG}: the file is damaged "
                f"or comes from another checkpoint; train again or restore it from a copy")
    return doc


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint folder: model (in eval mode), tokenizer, training and optimizer state."""
    folder = find_checkpoint(path)
    doc = read_config(folder)
    try:
        config = GPTConfig.from_dict(doc["model"])
        tok_info = doc["tokenizer"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG} has a bad model config: {e}") from None
    try:
        tokenizer = load_tokenizer(folder / tok_info.get("file", TOKENIZER))
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"the tokenizer in {folder} has {tokenizer.vocab_size} tokens but the model only "
            f"{config.vocab_size}: the tokenizer belongs to another model")
    model = GPT(config)
    try:
        _load_weights(model, str(folder / WEIGHTS), strict=True)
    except (RuntimeError, SafetensorError, OSError) as e:
        raise CheckpointError(f"the weights in {folder / WEIGHTS} do not fit the model that "
                              f"{CONFIG} describes: {e}") from None
    model.to(device).eval()
    optimizer_state, rng_state = None, {}
    if (folder / OPTIMIZER).is_file():
        tensors = load_file(str(folder / OPTIMIZER))
        rng_state = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
        opt_tensors = {k: v for k, v in tensors.items() if k.startswith("state.")}
        with safe_open(str(folder / OPTIMIZER), framework="pt") as f:
            groups = json.loads((f.metadata() or {}).get("param_groups", "[]"))
        if groups:
            optimizer_state = unflatten_optimizer(opt_tensors, groups)
    return Checkpoint(model, tokenizer, folder, doc.get("train", {}), optimizer_state, rng_state)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` from a checkpoint folder (or a training run's output folder)."""
    ckpt = load_checkpoint(path, device)
    return ckpt.model, ckpt.tokenizer

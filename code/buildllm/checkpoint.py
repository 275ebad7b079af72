"""Checkpoints: a trained model in a folder, safe to write, safe to read. Explained in the
chapter "Training on a CPU".

A checkpoint is a folder:

.. code-block:: text

    config.json              what the model is and where training stood (readable JSON)
    model.safetensors        the weights
    tokenizer.json           the tokenizer that turns text into the model's ids
    optimizer.safetensors    AdamW's moments and the random number generators' states (resume)

Nothing is ever unpickled: weights and optimizer moments are safetensors, everything else is
JSON. ``config.json`` also records the sha256 of the weights, tokenizer and optimizer files,
so a damaged or mixed-up folder is found when it is loaded, with a message that says which file
is wrong. Every file is read through one function (:func:`read_checked`) that turns each way a
file can be unreadable into a :class:`CheckpointError` naming it, and every field of
``config.json`` is checked for its type (:func:`check_fields`). Weights load exactly, in the
dtype they were saved in.

The folder is written *atomically*: every file goes into a temporary folder beside the
destination, which is then renamed into place (the old folder is first renamed aside, then
deleted). A reader sees the old checkpoint or the new one, never a half-written mixture; a
writer killed between the two renames leaves the old one aside, where readers still find it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_model as _load_weights
from safetensors.torch import save_file
from safetensors.torch import save_model as _save_weights

from buildllm.config import GPTConfig
from buildllm.files import (
    check_output_folder,
    check_sha256,
    check_types,
    json_text,
    read_file,
    read_versioned_json,
    sha256_of,
    write_atomically,
)
from buildllm.model import GPT
from buildllm.tokenizer import Tokenizer, load_tokenizer

FORMAT = "buildllm-checkpoint"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, OPTIMIZER = (
    "config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors")
T = TypeVar("T")


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
    is). The older one is renamed aside first, and back if the new one cannot be renamed into
    place; a leftover from a writer killed in between, which :func:`find_checkpoint` falls back
    to, is deleted once a new one is in place."""
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} exists; pass replace=True to replace it")
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} is a file, not a checkpoint folder; it is kept as it "
                                 f"is: choose another place, or move the file away")
    aside = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.replace(dest, aside)
    try:
        os.replace(tmp, dest)
    except OSError:  # the old checkpoint goes back where it was
        if aside.exists():
            os.replace(aside, dest)
        raise
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
    dest = check_output_folder(path)  # not a file, not under one, writable: before any work
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} exists; pass replace=True to replace it")
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
        files = {name: sha256_of(tmp / name)
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

DAMAGED = "the checkpoint is damaged or incomplete: train again, or restore it from a copy"
SCHEMA = {"format": str, "version": int, "model": dict, "tokenizer": dict, "train": dict,
          "sha256": dict}  # the fields of config.json and their types
MODEL_SIZES = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")  # never defaulted
TOKENIZER_FIELDS = {"kind": str, "file": str, "vocab_size": int}
TRAIN_FIELDS = {"step": int, "train_seconds": float, "config": dict}  # as train.save_run writes
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16}  # safetensors' names of the floating-point dtypes


def read_checked(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)`` for a file of a checkpoint: every way the file can be unreadable (missing,
    a folder, not UTF-8, not JSON, not safetensors) is a :class:`CheckpointError` naming it."""
    return read_file(path, read, DAMAGED, CheckpointError)


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


def check_fields(doc: dict) -> None:
    """Check every field of a config.json for its type (a damaged or hand-edited file may hold
    ``null`` or a string anywhere), and that the files it names lie in its folder: a
    ``ValueError`` naming the first bad field."""
    check_types(doc, SCHEMA)
    if missing := [name for name in ("model", "tokenizer") if name not in doc]:
        raise ValueError(f"the field {missing[0]!r} is missing")
    if missing := [name for name in MODEL_SIZES if name not in doc["model"]]:
        raise ValueError(f"the field model.{missing[0]} is missing")
    check_types(doc["model"], GPTConfig, "model.")
    check_types(doc["tokenizer"], TOKENIZER_FIELDS, "tokenizer.")
    check_types(doc.get("train", {}), TRAIN_FIELDS, "train.")
    names = [("tokenizer.file", doc["tokenizer"].get("file", TOKENIZER)),
             *(("a key of sha256", name) for name in doc.get("sha256", {}))]
    for field_name, name in names:
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"{field_name} is {json_text(name)}, not the name of a file in "
                             f"the checkpoint's folder")
    for name, digest in doc.get("sha256", {}).items():
        if not (isinstance(digest, str) and len(digest) == 64
                and set(digest) <= set("0123456789abcdef")):
            raise ValueError(f"sha256.{name} must be 64 hex digits, got {json_text(digest)}")


def read_config(path: str | os.PathLike) -> dict:
    """The checked contents of a checkpoint's config.json: every field of the right type, and
    the files whose sha256 it records present and unchanged."""
    folder = find_checkpoint(path)
    doc = read_versioned_json(folder / CONFIG, FORMAT, FORMAT_VERSION,
                              "pass a folder written by save_checkpoint", CheckpointError)
    try:
        check_fields(doc)
    except ValueError as e:
        raise CheckpointError(f"{folder / CONFIG}: {e}; {DAMAGED}") from None
    for name, expected in doc.get("sha256", {}).items():
        check_sha256(folder / name, expected, CONFIG, DAMAGED, CheckpointError)
    return doc


def _model_config(doc: dict, path: Path) -> GPTConfig:
    """The checked model configuration of a config.json (read from ``path``)."""
    try:
        return GPTConfig.from_dict(doc["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has a bad model config: {e}; {DAMAGED}") from None


def read_tokenizer(folder: Path, doc: dict, config: GPTConfig) -> Tokenizer:
    """The tokenizer that config.json (``doc``) names, checked to fit the model's vocabulary."""
    try:
        tokenizer = load_tokenizer(folder / doc["tokenizer"].get("file", TOKENIZER))
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"the tokenizer in {folder} has {tokenizer.vocab_size} tokens but the model only "
            f"{config.vocab_size}: the tokenizer belongs to another model")
    return tokenizer


def common_dtype(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    """The floating-point dtype that holds every floating-point dtype of ``dtypes`` exactly:
    the one they share (float64 stays float64, bfloat16 stays bfloat16), else the smallest wider
    one; float32 when there is none."""
    found = {d for d in dtypes if d.is_floating_point}
    return functools.reduce(torch.promote_types, sorted(found, key=str)) if found \
        else torch.float32


def weights_dtype(path: Path) -> torch.dtype:
    """The dtype of the weights in a safetensors file, read from its header
    (:func:`common_dtype` of theirs)."""
    with safe_open(str(path), framework="pt") as f:
        return common_dtype(DTYPES[f.get_slice(name).get_dtype()] for name in f.keys()
                            if f.get_slice(name).get_dtype() in DTYPES)


def read_weights(path: Path, config: GPTConfig) -> GPT:
    """The model that ``config`` describes with the weights of ``path``, exactly, in the
    file's own dtype (a float64 or bfloat16 file gives a float64 or bfloat16 model)."""
    model = GPT(config).to(read_checked(path, weights_dtype))
    try:
        read_checked(path, lambda p: _load_weights(model, str(p), strict=True))
    except RuntimeError as e:  # names or shapes that do not fit: say the first few
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:4])
        raise CheckpointError(f"the weights in {path} do not fit the model that {CONFIG} "
                              f"describes ({detail}); {DAMAGED}") from None
    return model


def _tensors_and_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a safetensors file, and its metadata."""
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}


def read_optimizer(path: Path) -> tuple[dict | None, dict[str, torch.Tensor]]:
    """``(optimizer state_dict or None, rng states)`` from optimizer.safetensors, if there is
    one; damage of any kind is a :class:`CheckpointError` that names the file."""
    if not path.exists():
        return None, {}
    tensors, metadata = read_checked(path, _tensors_and_metadata)
    rng_state = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    try:
        groups = json.loads(metadata.get("param_groups", "[]"))
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise ValueError(f"param_groups is {json_text(groups)}, not a list of objects")
        state = unflatten_optimizer(
            {k: v for k, v in tensors.items() if k.startswith("state.")}, groups)
    except ValueError as e:  # bad JSON, or a tensor name that is not state.<index>.<name>
        raise CheckpointError(f"{path} holds a damaged optimizer state ({e}); {DAMAGED}") from None
    return (state if groups else None), rng_state


def check_run_folder(out_dir: str | os.PathLike | None, resume: bool = False) -> Path | None:
    """A training run's output folder, checked before any work: a folder that can be written
    (:func:`~buildllm.files.check_output_folder`), with no file where its ``checkpoint/``
    goes, and, to ``resume``, a readable checkpoint in it that holds a training state (the
    step, the seconds, the configuration, the optimizer's file). ``None`` stays ``None``; to
    resume, an output folder is needed (the only place this is checked)."""
    if out_dir is None:
        if resume:
            raise ValueError("resume=True needs the out_dir of the run to resume")
        return None
    out = check_output_folder(out_dir)
    check_output_folder(out / "checkpoint")
    if resume:
        doc = read_config(out)
        lacks = [f"train.{k}" for k in TRAIN_FIELDS if k not in doc.get("train", {})]
        lacks += [] if OPTIMIZER in doc.get("sha256", {}) else [OPTIMIZER]
        if lacks:
            raise CheckpointError(f"the checkpoint in {out} has no {lacks[0]}: it was not "
                                  f"saved by a training run, so it cannot be resumed; train "
                                  f"into a new --out")
    return out


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint folder: model (in eval mode, in the dtype its weights were saved in),
    tokenizer, training and optimizer state. Any damage is a :class:`CheckpointError`."""
    folder = find_checkpoint(path)
    doc = read_config(folder)
    config = _model_config(doc, folder / CONFIG)
    tokenizer = read_tokenizer(folder, doc, config)
    model = read_weights(folder / WEIGHTS, config).to(device).eval()
    optimizer_state, rng_state = read_optimizer(folder / OPTIMIZER)
    return Checkpoint(model, tokenizer, folder, doc.get("train", {}), optimizer_state, rng_state)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` from a checkpoint folder (or a training run's output folder)."""
    ckpt = load_checkpoint(path, device)
    return ckpt.model, ckpt.tokenizer

"""An adapter folder on disk: what :func:`buildllm.lora.save_adapters` writes and
:func:`buildllm.lora.load_adapters` reads, checked where it comes in. Plumbing of the chapter
"Fine-tuning".

The folder holds ``adapters.safetensors`` (the tensors that training changed) and
``adapter_config.json``: the format and its version, LoRA's ``r`` and ``alpha``, the adapted
layers, the shapes of the base model's parameters (:func:`base_shapes`) and the sha256 of the
tensors. :func:`read_adapter_config` checks all of it; :func:`check_base` refuses a model of
other shapes, :func:`check_tensors` tensors that do not fit; each failure is an
:class:`AdapterError` that names the file and says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from buildllm.files import check_sha256, check_types, read_versioned_json

FORMAT = "buildllm-lora"
FORMAT_VERSION = 2  # 2 records the base model's shapes
CONFIG, ADAPTERS = "adapter_config.json", "adapters.safetensors"
CONFIG_FIELDS = {"format": str, "version": int, "r": int, "alpha": float, "targets": list,
                 "base": dict, "sha256": str}
SAVE_AGAIN = "the adapter folder is damaged or from another version: save the adapters again"


class AdapterError(ValueError):
    """An adapter folder is missing, damaged or does not fit the model; the message names it."""


def base_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The shape of every parameter of the base model, by name, as it was before LoRA wrapped
    its layers (LoRA's own tensors left out): what an adapter folder fits, and nothing else."""
    return {name.replace(".base.", "."): list(p.shape) for name, p in model.named_parameters()
            if not name.rpartition(".")[2].startswith("lora_")}


def read_adapter_config(path: str | os.PathLike) -> dict:
    """The checked ``adapter_config.json`` of an adapter folder; the adapters' hash checked."""
    file, weights = Path(path) / CONFIG, Path(path) / ADAPTERS
    config = read_versioned_json(file, FORMAT, FORMAT_VERSION, SAVE_AGAIN, AdapterError)
    try:
        check_types(config, CONFIG_FIELDS)
        if missing := sorted(set(CONFIG_FIELDS) - set(config)):
            raise ValueError(f"the field {missing[0]!r} is missing")
        if not all(isinstance(t, str) for t in config["targets"]):
            raise ValueError("targets must be a list of layer names")
    except ValueError as e:
        raise AdapterError(f"{file}: {e}; {SAVE_AGAIN}") from None
    check_sha256(weights, config["sha256"], CONFIG, SAVE_AGAIN, AdapterError)
    return config


def check_base(model: nn.Module, config: dict, path: str | os.PathLike) -> None:
    """Raise :class:`AdapterError` unless ``model`` is the base the adapters were saved from:
    the same parameters with the same shapes (a third block would run unadapted)."""
    have, saved = base_shapes(model), config["base"]
    if have == saved:
        return
    extra, missing = sorted(set(have) - set(saved)), sorted(set(saved) - set(have))
    differ = sorted(n for n in set(have) & set(saved) if have[n] != saved[n])
    what = (f"this model has {extra[0]}, which the base lacks" if extra else
            f"the base has {missing[0]}, which this model lacks" if missing else
            f"{differ[0]} is {have[differ[0]]} here and {saved[differ[0]]} in the base")
    raise AdapterError(f"the adapters in {path} were saved from another base model ({what}; "
                       f"{len(saved)} tensors there, {len(have)} here): load them onto the "
                       f"model they were trained on")


def check_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`AdapterError` unless each of ``tensors`` (read from ``path``) is a
    parameter of ``model`` of the same shape."""
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        if name not in params or params[name].shape != value.shape:
            have = tuple(params[name].shape) if name in params else "no such parameter"
            raise AdapterError(f"{path} holds {name} of shape {tuple(value.shape)}, but the "
                               f"model has {have}: the adapters belong to another model")

"""LoRA, low-rank adaptation, from scratch. Explained in the chapter "Fine-tuning".

Fine-tuning changes a weight matrix ``W`` ``(out, in)`` by some ``ΔW``. LoRA (Hu et al., 2021)
bets that a useful ``ΔW`` has low rank and trains it as a product ``ΔW = B A · alpha / r``, with
``A`` ``(r, in)`` and ``B`` ``(out, r)``, while ``W`` stays frozen: ``r (in + out)`` numbers
to train instead of ``in · out``. ``B`` starts at zero, so the adapted model starts out exactly
equal to the pretrained one; ``alpha / r`` keeps the size of the update comparable across ranks.

* :class:`LoRALinear` wraps an ``nn.Linear``; :func:`apply_lora` puts one in place of every
  linear layer whose name matches a target and freezes everything else.
* :func:`merge_lora` folds ``B A · alpha / r`` into ``W`` for inference: a plain model again,
  no slower than the original.
* :func:`save_adapters` writes only what training changed, a few kilobytes, beside a JSON
  config; :func:`load_adapters` puts it back onto a fresh copy of the base model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from buildllm.files import write_atomically

FORMAT = "buildllm-lora"
FORMAT_VERSION = 1
CONFIG, ADAPTERS = "adapter_config.json", "adapters.safetensors"
DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")  # attention and feed-forward matrices


class AdapterError(ValueError):
    """An adapter folder is missing, damaged or does not fit the model; the message names it."""


def check_rank_alpha(r: int, alpha: float) -> None:
    """Raise ``ValueError`` unless ``r`` is a positive int and ``alpha`` a positive number."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"LoRA rank r must be a positive int, got {r!r}; try r=8")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a positive number, got {alpha!r}; "
                         f"alpha=2*r is a common choice")


class LoRALinear(nn.Module):
    """``base(x) + x Aᵀ Bᵀ · alpha / r``: a frozen ``nn.Linear`` plus a trainable low-rank update.

    ``x`` ``(..., in)`` -> ``(..., out)``. ``A`` ``(r, in)`` starts random, ``B`` ``(out, r)``
    starts at zero, so at first the layer computes exactly what ``base`` computes.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0):
        super().__init__()
        check_rank_alpha(r, alpha)
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear does its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update ``B A · alpha / r`` ``(out, in)`` that LoRA adds to ``base.weight``."""
        return self.lora_B @ self.lora_A * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight is ``base.weight + delta_weight()``."""
        layer = nn.Linear(self.base.in_features, self.base.out_features,
                          bias=self.base.bias is not None, device=self.base.weight.device,
                          dtype=self.base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def matching_linears(model: nn.Module, targets: Iterable[str]) -> list[str]:
    """Names of the ``nn.Linear`` layers whose name is a target or ends in ``.target``.

    Raises ``ValueError`` for a target that matches none, listing the names that would.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = []
    for target in targets:
        found = [n for n in linears if n == target or n.endswith("." + target)]
        if not found:
            last = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise ValueError(f"LoRA target {target!r} matches no linear layer of the model; "
                             f"choose among {last} (or full names such as {linears[0]!r})")
        chosen += [n for n in found if n not in chosen]
    return chosen


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16.0,
               targets: Iterable[str] = DEFAULT_TARGETS) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each matching linear layer in a
    :class:`LoRALinear`, in place. Only the adapters train; unfreeze anything else (a classifier
    head) afterwards. Returns ``model``."""
    check_rank_alpha(r, alpha)
    names = matching_linears(model, targets)
    if tied := [n for n in names if _is_tied(model, n)]:
        raise ValueError(f"LoRA target(s) {tied} share their weight with another layer (a tied "
                         f"output head); choose other targets, such as {list(DEFAULT_TARGETS)}")
    model.requires_grad_(False)
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), r, alpha))
    return model


def _is_tied(model: nn.Module, name: str) -> bool:
    weight = model.get_submodule(name).weight
    return sum(p is weight for _, p in model.named_parameters(remove_duplicate=False)) > 1


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's :class:`LoRALinear` layers by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear``, in place; returns
    ``model``. The merged model computes the same function (to float rounding) at the base
    model's speed. The merged weights are trainable, like any ``nn.Linear``."""
    for name, layer in lora_layers(model).items():
        _set_module(model, name, layer.merged())
    return model


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers training changes: the parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Saving and loading adapters
# ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the trainable tensors of a LoRA model (the adapters, and a classifier head if it
    trains) to ``path/adapters.safetensors`` and ``r``, ``alpha``, the adapted layers and the
    file's sha256 to ``path/adapter_config.json``. The frozen base weights are not written.
    Each file is written atomically, the config last. Returns the folder."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save; call apply_lora(model, ...) "
                         "first, or save a whole model with checkpoint.save_checkpoint")
    first = next(iter(layers.values()))
    tensors = {n: p.detach().contiguous().cpu()
               for n, p in model.named_parameters() if p.requires_grad}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / ADAPTERS, lambda tmp: save_file(tensors, str(tmp)))
    config = {"format": FORMAT, "version": FORMAT_VERSION, "r": first.r, "alpha": first.alpha,
              "targets": sorted(layers), "sha256": _sha256(folder / ADAPTERS)}
    write_atomically(folder / CONFIG,
                     lambda tmp: tmp.write_text(json.dumps(config, indent=1), "utf-8"))
    return folder


def read_adapter_config(path: str | os.PathLike) -> dict:
    """The checked ``adapter_config.json`` of an adapter folder; the adapters' hash checked."""
    folder = Path(path)
    file = folder / CONFIG
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{file} does not exist: {folder} is not an adapter folder "
                           f"written by save_adapters") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{file} is not valid JSON ({e}): the adapter folder is damaged; "
                           f"save the adapters again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise AdapterError(f"{file} is not a {FORMAT} config; pass a folder from save_adapters")
    if config.get("version") != FORMAT_VERSION:
        raise AdapterError(f"{file} has version {config.get('version')!r}; this buildllm "
                           f"reads version {FORMAT_VERSION}")
    weights = folder / ADAPTERS
    if not weights.is_file() or _sha256(weights) != config.get("sha256"):
        raise AdapterError(f"{weights} is missing or does not match the sha256 in {file}: the "
                           f"file is damaged or from another save; save the adapters again")
    return config


def load_adapters(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Put adapters saved by :func:`save_adapters` onto ``model``, in place; returns it.

    A model without LoRA layers gets them first (:func:`apply_lora` with the saved ``r``,
    ``alpha`` and layers). Every saved tensor must fit a parameter of the same name and shape.
    """
    config = read_adapter_config(path)
    weights = Path(path) / ADAPTERS
    try:
        if not lora_layers(model):
            apply_lora(model, config["r"], config["alpha"], config["targets"])
        tensors = load_file(str(weights))
    except (ValueError, KeyError, SafetensorError) as e:
        raise AdapterError(f"the adapters in {weights} do not fit this model: {e}") from None
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        if name not in params or params[name].shape != value.shape:
            have = tuple(params[name].shape) if name in params else "no such parameter"
            raise AdapterError(f"{weights} holds {name} of shape {tuple(value.shape)}, but the "
                               f"model has {have}: the adapters belong to another model")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    return model

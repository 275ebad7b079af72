"""LoRA, low-rank adaptation, from scratch. Explained in the chapter "Fine-tuning".

Fine-tuning changes a weight matrix ``W`` ``(out, in)`` by some ``ΔW``. LoRA (Hu et al., 2022)
bets that a useful ``ΔW`` has low rank and trains it as a product ``ΔW = B A · alpha / r``, with
``A`` ``(r, in)`` and ``B`` ``(out, r)``, while ``W`` stays frozen: ``r (in + out)`` numbers
to train instead of ``in · out``. ``B`` starts at zero, so the adapted model starts out exactly
equal to the pretrained one; ``alpha / r`` keeps the size of the update comparable across ranks.

* :class:`LoRALinear` wraps an ``nn.Linear``; :func:`apply_lora` puts one in place of every
  linear layer whose name matches a target (by default every matrix of attention and of the
  feed-forward network, whichever parts the model has) and freezes everything else.
* :func:`merge_lora` folds ``B A · alpha / r`` into ``W`` for inference: a plain model again,
  no slower than the original.
* :func:`save_adapters` writes only what training changed, a few hundred kilobytes, beside a JSON
  config that records the shapes of the base model; :func:`load_adapters` puts it back onto a
  fresh copy of that base model, and refuses any other (the folder's format and its checks:
  :mod:`buildllm.adapters`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from buildllm.adapters import (
    ADAPTERS,
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    AdapterError,
    base_shapes,
    check_base,
    check_tensors,
    read_adapter_config,
)
from buildllm.files import sha256_of, write_atomically

# The default targets: the matrices of attention (c_attn, c_proj) and of the feed-forward
# network (GPT-2's c_fc and c_proj, SwiGLU's gate, up and c_proj), whichever the model has.
PARTS = ("c_attn", "c_proj", "c_fc", "gate", "up")

class LoRALinear(nn.Module):
    """``base(x) + x Aᵀ Bᵀ · alpha / r``: a frozen ``nn.Linear`` plus a trainable low-rank
    update.

    ``x`` ``(..., in)`` -> ``(..., out)``. ``A`` ``(r, in)`` starts random, ``B``
    ``(out, r)`` starts at zero, so at first the layer computes exactly what ``base``
    computes.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **like))
        # as nn.Linear does its weight
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update ``B A · alpha / r`` ``(out, in)`` that LoRA adds to
        ``base.weight``."""
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


def matching_linears(model: nn.Module, targets: Iterable[str] | None = None) -> list[str]:
    """Names of the ``nn.Linear`` layers whose name is a target or ends in ``.target``; with no
    targets, every linear layer of attention and feed-forward (GPT-2's ``c_attn``, ``c_proj``,
    ``c_fc``; SwiGLU's ``gate``, ``up``, ``c_proj``), never an output or classifier head.

    Raises ``ValueError`` for a target that matches none, listing the names that would.
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if targets is None:
        targets = [t for t in PARTS if any(n == t or n.endswith("." + t) for n in linears)]
        if not targets:
            raise ValueError(f"the model has none of the linear layers {list(PARTS)}: name "
                             f"the LoRA targets")
    targets = [targets] if isinstance(targets, str) else list(targets)
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
               targets: Iterable[str] | None = None) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each matching linear layer in a
    :class:`LoRALinear`, in place (``targets`` as :func:`matching_linears` reads them). Only
    the adapters train; unfreeze anything else (a classifier head) afterwards. Returns
    ``model``."""
    names = matching_linears(model, targets)
    if tied := [n for n in names if _is_tied(model, n)]:
        raise ValueError(f"LoRA target(s) {tied} share their weight with another layer "
                         f"(a tied output head); leave targets out to adapt attention and "
                         f"feed-forward")
    narrow = min(min(model.get_submodule(n).weight.shape) for n in names)
    if not 1 <= r <= narrow:
        raise ValueError(f"LoRA rank r={r} does not fit the narrowest adapted matrix "
                         f"({narrow}): a low-rank update needs 1 <= r <= {narrow}; try r=8")
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


def save_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the trainable tensors of a LoRA model (the adapters, and a classifier head if it
    trains) to ``path/adapters.safetensors`` and ``r``, ``alpha``, the adapted layers and the
    file's sha256 to ``path/adapter_config.json``. The frozen base weights are not written.
    The config records the base model's parameter shapes (:func:`base_shapes`). Each file is
    written atomically, the config last. Returns the folder."""
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
              "targets": sorted(layers), "base": base_shapes(model),
              "sha256": sha256_of(folder / ADAPTERS)}
    write_atomically(folder / CONFIG,
                     lambda tmp: tmp.write_text(json.dumps(config, indent=1), "utf-8"))
    return folder


def load_adapters(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Put adapters saved by :func:`save_adapters` onto ``model``, in place; returns it.

    ``model`` must be the base they were saved from (:func:`check_base`). A model without LoRA
    layers gets them first (:func:`apply_lora` with the saved ``r``, ``alpha`` and layers).
    """
    config = read_adapter_config(path)
    check_base(model, config, path)
    weights = Path(path) / ADAPTERS
    try:
        if not lora_layers(model):
            apply_lora(model, config["r"], config["alpha"], config["targets"])
        tensors = load_file(str(weights))
    except (ValueError, KeyError, SafetensorError) as e:
        raise AdapterError(f"the adapters in {weights} do not fit this model: {e}") from None
    check_tensors(model, tensors, weights)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    return model

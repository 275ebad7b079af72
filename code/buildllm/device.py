"""Where the model runs: a device name checked before any work starts.

Used by training and generation alike (chapters "Training on a CPU" and "Generating text"),
which is why it has a module of its own: neither has to import the other for it.
"""

from __future__ import annotations

import torch


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


def check_bf16(device: torch.device) -> None:
    """Refuse bfloat16 autocast on a GPU that has no bfloat16, saying what to do instead."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16; train with "
                         f"dtype float32 (drop --dtype bfloat16)")

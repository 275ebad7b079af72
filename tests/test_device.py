"""buildllm.device: a device name is checked before any work starts, with a message that says
what is missing; bfloat16 is refused on a GPU that lacks it."""

from __future__ import annotations

import pytest
import torch

from buildllm.device import check_bf16, resolve_device
from shared import CUDA


def test_resolve_device_explains_what_is_missing():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'.*use cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device 'meta': the book's code runs on cpu, cuda or mps"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu"):
            resolve_device("cuda")
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"has {n} GPU"):
            resolve_device(f"cuda:{n}")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="no Apple GPU"):
            resolve_device("mps")


@pytest.mark.parametrize("device", [CUDA])
def test_a_gpu_resolves(device):
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_check_bf16_passes_the_cpu():
    check_bf16(torch.device("cpu"))  # the CPU autocasts to bfloat16 everywhere


def test_check_bf16_refuses_a_gpu_without_bfloat16(monkeypatch):
    """Simulated: a GPU of the kind that has no bfloat16 (before Ampere)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ValueError, match="Tesla T4 has no bfloat16; train with dtype float32"):
        check_bf16(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    check_bf16(torch.device("cuda"))


@pytest.mark.parametrize("device", [CUDA])
def test_check_bf16_passes_a_gpu_with_bfloat16(device):
    if torch.cuda.is_bf16_supported():
        check_bf16(torch.device(device))
    else:
        with pytest.raises(ValueError, match="has no bfloat16"):
            check_bf16(torch.device(device))

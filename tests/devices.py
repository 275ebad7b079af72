"""Parametrize a test over devices: ``DEVICES`` is the CPU and a CUDA GPU, ``CUDA`` the GPU
alone. The GPU case is marked ``cuda`` and skipped where PyTorch sees no GPU, as on the book's
CI; on a machine with one, ``pytest -m cuda`` runs just those cases."""

from __future__ import annotations

import pytest
import torch

CUDA = pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
])
DEVICES = ["cpu", CUDA]

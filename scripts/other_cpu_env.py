"""The second numeric environment of `make test`: settings that make PyTorch, MKL and oneDNN add
floating-point numbers in other orders than they do on this CPU by default, a stand-in for a
reader's CPU. Prints them as NAME=value words for `env`.

The environment must differ from the first run on every CPU: where AVX-512 is the best, the
AVX2 kernels; where AVX2 is the best (or less), PyTorch's portable kernels and MKL and oneDNN
limited to SSE4.2 and SSE4.1.
"""

from __future__ import annotations

import sys

import torch

AVX2 = "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"
PORTABLE = "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41"


def other_environment(capability: str) -> str:
    """The settings for a CPU whose best kernels are ``capability`` (PyTorch's name)."""
    return AVX2 if capability.upper().startswith("AVX512") else PORTABLE


if __name__ == "__main__":
    capability = torch.backends.cpu.get_cpu_capability()
    settings = other_environment(capability)
    print(f"second numeric environment (this CPU's best: {capability}): {settings}",
          file=sys.stderr)
    print(settings)

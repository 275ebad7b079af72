"""Int8 weights: reading four times fewer bytes per generated token. Explained in the chapter
"Generating text".

With the cache, each new token reads every weight once for two floating-point operations:
generation is limited by memory bandwidth, and one byte a weight (int8) instead of four reads a
quarter of the bytes. :func:`quantize_int8` makes int8 codes and one scale per output row, to
the bit as PyTorch does, and :func:`dequantize_int8` goes back; :class:`Int8Linear` multiplies
with PyTorch's int8 kernel (fbgemm's dynamically quantized linear layer, the fastest on a CPU
where it was measured), which :func:`int8_linear_reference` writes out; :func:`quantize_model`
makes every ``nn.Linear`` of a model an :class:`Int8Linear`.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from buildllm.model import GPT

EPS = torch.finfo(torch.float32).eps  # the smallest scale PyTorch allows

# ---------------------------------------------------------------------------------------------
# Quantizing a matrix, from scratch
# ---------------------------------------------------------------------------------------------


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one scale per output channel: ``w ~ q * scale``.

    ``weight``: ``(out, in)``, any float dtype (computed in float32). Returns ``q``
    ``(out, in)`` int8 and ``scale`` ``(out,)`` float32, with
    ``|w - q * scale| <= scale / 2``.

    PyTorch's convention (its per-channel symmetric qint8 observer and
    ``quantize_per_channel``), followed to the bit: codes run over the whole range
    -128 .. 127, whose 255 steps give a half-width of 127.5, so ``scale = max|w| / 127.5``
    (at least float32's eps, which gives an all-zero row a usable scale); then
    ``w * (1 / scale)`` (a product with the reciprocal, not a division) is rounded half to
    even and clamped. The largest ``|w|`` lands on 127.5, give or take float rounding, and
    becomes 127, or -127 or -128 if negative.
    """
    assert weight.dim() == 2 and weight.is_floating_point(), (
        "weight: a float matrix (out, in)")
    w = weight.detach().float()
    assert torch.isfinite(w).all(), (
        "weights hold NaN or infinity (or values beyond float32)")
    scale = (w.abs().amax(dim=1) / 127.5).clamp(min=EPS)  # (out,)
    q = torch.round(w * (1.0 / scale)[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weights that codes ``q`` ``(out, in)`` int8 and ``scale`` ``(out,)``
    stand for: ``q * scale``, ``(out, in)``."""
    assert q.dtype == torch.int8 and scale.shape == (q.size(0),), (
        "int8 codes, one scale a row")
    return q.float() * scale.float()[:, None]


# ---------------------------------------------------------------------------------------------
# A linear layer with int8 weights
# ---------------------------------------------------------------------------------------------


def int8_linear_reference(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """What :class:`Int8Linear` computes, written out: ``(..., in)`` -> ``(..., out)``.

    Each input row is quantized too, on the fly, with its own scale ``sx`` and zero point
    ``zx`` from its range (stretched to contain 0), to 7-bit codes 0 .. 127 (PyTorch's
    ``reduce_range``: AVX2 adds two u8 x s8 products in 16 bits, which 8-bit codes would
    overflow). Integers multiply and add exactly (int32); one float multiply rescales.
    """
    lo = x.amin(dim=-1, keepdim=True).clamp(max=0)  # (..., 1)
    hi = x.amax(dim=-1, keepdim=True).clamp(min=0)
    sx = ((hi - lo) / 127).clamp(min=6.1e-5)  # the kernel's smallest activation scale
    zx = torch.round(-lo / sx)  # the code of 0.0
    qx = (torch.round(x * (1 / sx)) + zx).clamp(0, 127)  # (..., in), codes 0 .. 127
    acc = (qx - zx).int() @ q.int().T  # (..., out) int32: exact
    y = acc.float() * (sx * scale)
    return y if bias is None else y + bias


def _pack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.ScriptObject:
    """``q``, ``scale`` and ``bias`` in the kernel's own layout (fbgemm's packed matrix).

    PyTorch (2.13 here) warns that its quantized tensors, the way into this kernel, are
    deprecated and will be removed; the warning is silenced here, where the tests check the
    packed codes exactly. Should the kernel go, :func:`int8_linear_reference` computes the same.
    """
    zeros = torch.zeros(len(scale), dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_channel", category=UserWarning)
        qw = torch.quantize_per_channel(dequantize_int8(q, scale), scale.double(), zeros, 0,
                                        torch.qint8)  # recomputes q exactly
        return torch.ops.quantized.linear_prepack(qw, bias)


def _kernel(rows: torch.Tensor, packed: torch.ScriptObject) -> torch.Tensor:
    """fbgemm's int8 linear layer on ``rows`` ``(N, in)``: ``(N, out)``, 7-bit input codes.

    Given ``packed`` (a TorchScript object), PyTorch's op call looks for
    ``packed.__torch_function__``, and that failing lookup raises and catches a C++ exception:
    15-30 us a call in PyTorch 2.13, more than the kernel itself takes for a small matrix.
    Switching torch functions off around the call skips the lookup.
    """
    with torch._C.DisableTorchFunction():
        return torch.ops.quantized.linear_dynamic(rows, packed, True)  # reduce_range=True


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored as int8 codes and per-row scales.

    Input ``(..., in_features)`` float32 on the CPU, output ``(..., out_features)`` float32.
    ``weight_q`` ``(out, in)`` int8 and ``weight_scale`` ``(out,)`` are the codes
    (:func:`quantize_int8`); the kernel, ``torch.ops.quantized.linear_dynamic``, reads its own
    packed copy of them and computes :func:`int8_linear_reference`.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = q.size(1), q.size(0)
        self.register_buffer("weight_q", q.detach().cpu())
        self.register_buffer("weight_scale", scale.detach().float().cpu())
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu())
        self.repack()
        self.register_load_state_dict_post_hook(lambda module, _: module.repack())

    def repack(self) -> None:
        """Pack the buffers again for the kernel (done after loading a state dict)."""
        self._packed = _pack(self.weight_q, self.weight_scale, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 version of ``linear``; its bias stays float32."""
        for name, p in linear.named_parameters():
            if not torch.isfinite(p).all():
                raise ValueError(f"the layer's {name} holds NaN or infinite values, which int8 "
                                 f"codes cannot stand for; quantize a layer of finite weights")
        q, scale = quantize_int8(linear.weight)
        return cls(q, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and x.device.type == "cpu", "float32 CPU inputs only"
        rows = x.reshape(-1, self.in_features)  # (N, in)
        # The kernel quantizes its whole input with one scale: one call per row keeps each
        # token's result independent of the others (the key/value cache relies on it).
        y = torch.cat([_kernel(row, self._packed) for row in rows.split(1)]) if len(rows) > 1 \
            else _kernel(rows, self._packed)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# ---------------------------------------------------------------------------------------------
# A whole model
# ---------------------------------------------------------------------------------------------


def quantize_model(model: GPT) -> GPT:
    """A copy of ``model`` with every ``nn.Linear`` (the output head too) made an Int8Linear.

    Embeddings and normalizations stay float32. A head tied to the token embedding gets its own
    int8 copy of the matrix; the embedding keeps the float32 one. The original is untouched.
    """
    p = model.wte.weight
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"the int8 kernel runs on the CPU in float32, but the model is {p.dtype}"
                         f" on {p.device}; quantize model.float().cpu()")
    for name, p in model.named_parameters():  # int8 codes would hide a NaN: refuse it here
        if not torch.isfinite(p).all():
            raise ValueError(f"{name} holds NaN or infinite values, which int8 codes cannot "
                             f"stand for; the model is damaged: train it again or reload it")
    qmodel = copy.deepcopy(model).eval()
    for module in list(qmodel.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear.from_linear(child))
    return qmodel

"""Int8 weights: reading four times fewer bytes per generated token. Explained in the chapter
"Generating text".

With the key/value cache, each new token runs one vector through every matrix of the model: a
matrix of ``out x in`` weights is read from memory for ``2 * out * in`` floating-point
operations, far too few to keep a CPU busy. Generation is then limited by memory bandwidth,
and the way to go faster is to read fewer bytes. Storing each weight in one byte (int8) instead
of four (float32) cuts the bytes read by four.

- :func:`quantize_int8` turns a weight matrix into int8 codes ``q`` and one float32 ``scale``
  per output row (``w ~ q * scale``), written out from scratch; :func:`dequantize_int8` goes
  back. They follow PyTorch's convention to the bit, so the codes are exactly those PyTorch's
  kernel computes with (the tests prove it).
- :class:`Int8Linear` holds the codes and multiplies with PyTorch's int8 kernel (fbgemm's
  dynamically quantized linear layer), which quantizes its input too, row by row, so that
  integers multiply integers; :func:`int8_linear_reference` is the same arithmetic written
  out, for reading and for checking.
- :func:`quantize_model` swaps every ``nn.Linear`` of a :class:`~buildllm.model.GPT` for an
  :class:`Int8Linear`; :func:`buildllm.evaluate.quantization_cost` measures what that costs
  (bits per character, greedy tokens).

Why this kernel: of the int8 routes PyTorch offers on a CPU (fbgemm's dynamically quantized
linear layer, oneDNN's ``torch._int_mm``, ``_weight_int8pack_mm``, or widening the codes back to
float32 before a float32 product), fbgemm's was the fastest where it was measured, by far for
the last two; ``make bench BENCH=generate`` measures it against float32 on the reader's CPU.
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


def _check_matrix(weight: torch.Tensor, name: str = "weight") -> None:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{name} must be a matrix (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}; quantize each matrix of a model on its own")


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one scale per output channel: ``w ~ q * scale``.

    ``weight``: ``(out, in)``, any float dtype (computed in float32). Returns ``q`` ``(out, in)``
    int8 and ``scale`` ``(out,)`` float32, with ``|w - q * scale| <= scale / 2``.

    PyTorch's convention (its per-channel symmetric qint8 observer and ``quantize_per_channel``),
    followed to the bit: codes run over the whole range -128 .. 127, whose 255 steps give a
    half-width of 127.5, so ``scale = max|w| / 127.5`` (at least float32's eps, which gives an
    all-zero row a usable scale); then ``w * (1 / scale)`` (a product with the reciprocal, not
    a division) is rounded half to even and clamped. The largest ``|w|`` lands on 127.5, give
    or take float rounding, and becomes 127, or -127 or -128 if negative.
    """
    _check_matrix(weight)
    if not weight.is_floating_point():
        raise TypeError(f"weight must hold floats, got {weight.dtype}; int8 codes come from "
                        f"real-valued weights (pass the float matrix)")
    w = weight.detach().float()
    assert torch.isfinite(w).all(), "weights hold NaN or infinity (or values beyond float32)"
    scale = (w.abs().amax(dim=1) / 127.5).clamp(min=EPS)  # (out,)
    q = torch.round(w * (1.0 / scale)[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weights that codes ``q`` ``(out, in)`` int8 and ``scale`` ``(out,)`` stand
    for: ``q * scale``, ``(out, in)``."""
    _check_codes(q, scale)
    return q.float() * scale.float()[:, None]


def _check_codes(q: torch.Tensor, scale: torch.Tensor) -> None:
    _check_matrix(q, "q")
    if q.dtype != torch.int8:
        raise TypeError(f"q must be int8 codes, got {q.dtype}; make them with quantize_int8")
    if scale.shape != (q.size(0),) or not scale.is_floating_point():
        raise ValueError(f"scale must be floats of shape ({q.size(0)},), one per row of q, got "
                         f"{scale.dtype} {tuple(scale.shape)}")


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
        _check_codes(q, scale)
        if bias is not None and bias.shape != (q.size(0),):
            raise ValueError(f"bias must have shape ({q.size(0)},), got {tuple(bias.shape)}")
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
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected a torch.nn.Linear, got {type(linear).__name__}")
        for name, p in linear.named_parameters():
            if not torch.isfinite(p).all():
                raise ValueError(f"the layer's {name} holds NaN or infinite values, which int8 "
                                 f"codes cannot stand for; quantize a layer of finite weights")
        q, scale = quantize_int8(linear.weight)
        return cls(q, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise TypeError(f"Int8Linear computes on float32 CPU tensors, got {x.dtype} on "
                            f"{x.device}; pass x.float().cpu()")
        if x.size(-1) != self.in_features:
            raise ValueError(f"input must be shaped (..., {self.in_features}), got "
                             f"{tuple(x.shape)}")
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
    if not isinstance(model, GPT):
        raise TypeError(f"quantize_model takes a buildllm GPT, got {type(model).__name__}; for "
                        f"a single layer use Int8Linear.from_linear")
    p = model.wte.weight
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"the int8 kernel runs on the CPU in float32, but the model is {p.dtype}"
                         f" on {p.device}; quantize model.float().cpu()")
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        raise ValueError("the model is already quantized; quantize the float32 model")
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

"""Tests for buildllm.quantize: int8 codes from scratch equal PyTorch's, error bounds, a quantized
GPT and generation with it, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from buildllm import generate as gen
from buildllm.config import GPTConfig
from buildllm.evaluate import greedy_agreement
from buildllm.model import GPT
from buildllm.quantize import (
    EPS,
    Int8Linear,
    dequantize_int8,
    int8_linear_reference,
    quantize_int8,
    quantize_model,
)
from shared import OPTIONS, SMALL

TINY = {**SMALL, "block_size": 24}  # room for a prompt and the tokens after it
# Float32 rounding on top of the exact bounds: w * (1 / scale) is off by at most 128 ulps of
# 1.0 (|w / scale| <= 128), and so is q * scale; both are far below 1e-4 of a step.
SLACK = 1e-4


def weights(seed: int, out: int = 37, inp: int = 53) -> torch.Tensor:
    """Rows of very different magnitudes (1e-4 .. 1e2), as a model's matrices have."""
    g = torch.Generator().manual_seed(seed)
    magnitude = 10 ** torch.empty(out, 1).uniform_(-4, 2, generator=g)
    return torch.randn(out, inp, generator=g) * magnitude


def halfway_weights(seed: int) -> torch.Tensor:
    """Weights that sit exactly between two codes, where the rounding convention shows."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(29, generator=g) + 0.01
    codes = torch.randint(-127, 127, (29, 41), generator=g).float() + 0.5
    w = codes * scale[:, None]
    w[:, 0] = 127.5 * scale  # the row's largest |w|: the scale comes out as `scale` again
    return w


def pytorch_codes(w: torch.Tensor, bias: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's own int8 codes and scales for ``w``: its per-channel dynamic quantization."""
    linear = nn.Linear(w.size(1), w.size(0), bias=bias)
    linear.weight.data = w.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization and qint8 are deprecated
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        qlinear = quantize_dynamic(nn.Sequential(linear), {nn.Linear: per_channel_dynamic_qconfig},
                                   dtype=torch.qint8)[0]
        qw = qlinear.weight()
    assert qw.q_per_channel_axis() == 0 and not qw.q_per_channel_zero_points().any()
    return qw.int_repr(), qw.q_per_channel_scales().float()


def tiny_model(seed: int = 0, spread: float = 1.0, **overrides) -> GPT:
    """A small random GPT; ``spread=10`` spreads the logits apart (no near-ties for greedy)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(spread)
    return model.eval()


def rand_ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], shape, generator=g)


# --- quantizing a matrix -----------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), out=st.integers(1, 40), inp=st.integers(1, 70))
def test_round_trip_error_is_at_most_half_a_step(seed, out, inp):
    w = weights(seed, out, inp)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (out,)
    error = (w - dequantize_int8(q, scale)).abs()
    assert (error <= scale[:, None] * (0.5 + SLACK)).all()
    ends = (q.amax(dim=1) >= 127) | (q.amin(dim=1) <= -127)  # the whole range is used ...
    assert ends[w.abs().amax(dim=1) > 127.5 * EPS].all()  # ... unless the smallest scale is


def test_the_largest_weight_takes_the_end_code():
    q, scale = quantize_int8(torch.tensor([[1.0, -0.5, 0.25], [-2.0, 1.0, 0.0]]))
    torch.testing.assert_close(scale, torch.tensor([1 / 127.5, 2 / 127.5]))
    assert q[0].tolist() == [127, -64, 32]  # 1 / scale = 127.5 -> 127; -63.75 -> -64
    assert q[1, 0] in (-128, -127) and q[1, 1:].tolist() == [64, 0]  # about -127.5, as it falls


def test_all_zero_rows():
    w = weights(0, 6, 9)
    w[2] = 0
    q, scale = quantize_int8(w)
    assert scale[2] == EPS and not q[2].any()
    assert not dequantize_int8(q, scale)[2].any()
    q, scale = quantize_int8(torch.zeros(3, 4))
    assert not q.any() and (scale == EPS).all()


@pytest.mark.parametrize("seed", range(6))
def test_codes_and_scales_equal_pytorchs(seed):
    for w in (weights(seed), halfway_weights(seed)):
        w[0] = 0  # an all-zero row too
        ref_q, ref_scale = pytorch_codes(w)
        q, scale = quantize_int8(w)
        assert torch.equal(q, ref_q)
        assert torch.equal(scale, ref_scale)


def test_division_instead_of_the_reciprocal_would_differ():
    """Why quantize_int8 multiplies by 1 / scale: at half-way points w / scale rounds apart."""
    w = halfway_weights(0)
    ref_q, _ = pytorch_codes(w)
    scale = (w.abs().amax(dim=1) / 127.5).clamp(min=EPS)
    divided = torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8)
    assert not torch.equal(divided, ref_q)


# --- a linear layer ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_the_kernel_runs_with_exactly_our_codes(bias):
    linear = nn.Linear(53, 37, bias=bias)
    linear.weight.data = weights(1)
    layer = Int8Linear.from_linear(linear)
    packed_w, packed_b = torch.ops.quantized.linear_unpack(layer._packed)
    q, scale = quantize_int8(linear.weight)
    assert torch.equal(packed_w.int_repr(), q) and torch.equal(layer.weight_q, q)
    assert torch.equal(packed_w.q_per_channel_scales().float(), scale)
    assert torch.equal(layer.weight_scale, scale)
    assert (packed_b is None) == (not bias)
    if bias:
        assert torch.equal(packed_b, linear.bias.detach()) and torch.equal(layer.bias, packed_b)


def activation_step(x: torch.Tensor) -> torch.Tensor:
    """The step of the kernel's 7-bit activation codes for each row of ``x``: ``(..., 1)``."""
    lo = x.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = x.amax(dim=-1, keepdim=True).clamp(min=0)
    return ((hi - lo) / 127).clamp(min=6.1e-5)


@pytest.mark.parametrize("shape", [(1, 53), (4, 53), (2, 3, 53)])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_within_the_error_bound_of_float(shape, bias):
    """``y - y_int8 = x (w - w_q) + (x - x_q) w_q`` per output, so with half a step of error in
    each weight (``scale / 2``) and each input (``step / 2``):
    ``|y - y_int8| <= scale / 2 * sum |x| + step / 2 * sum |w_q|``."""
    torch.manual_seed(2)
    linear = nn.Linear(53, 37, bias=bias)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(shape) * torch.tensor([0.01, 1.0, 30.0])[torch.arange(53) % 3]
    w_q = dequantize_int8(layer.weight_q, layer.weight_scale)
    bound = (layer.weight_scale / 2 * x.abs().sum(-1, keepdim=True)
             + activation_step(x) / 2 * w_q.abs().sum(1))  # (..., 37)
    error = (layer(x) - linear(x)).abs()
    assert error.shape == shape[:-1] + (37,)
    assert (error <= bound * (1 + SLACK) + 1e-6).all()
    assert error.max() > 0  # int8 is not exact: the bound is what holds


def test_int8_linear_equals_the_written_out_arithmetic():
    torch.manual_seed(3)
    layer = Int8Linear.from_linear(nn.Linear(64, 50))
    x = torch.randn(3, 5, 64)
    x[0, 0] = x[0, 0].abs()  # a row without negatives: its range is stretched to 0
    x[1, 1] *= 1e-4  # a row so small that the kernel's smallest activation step applies
    x[2, 2] = 0
    ref = int8_linear_reference(x, layer.weight_q, layer.weight_scale, layer.bias)
    torch.testing.assert_close(layer(x), ref, rtol=1e-6, atol=1e-6)


def test_rows_are_independent():
    """One row's result does not depend on the others (the kernel runs once per row)."""
    layer = Int8Linear.from_linear(nn.Linear(32, 8))
    x = torch.randn(5, 32)
    x[3] *= 100  # an outlier row would coarsen the others if they shared a scale
    together = layer(x)
    for i in range(5):
        assert torch.equal(together[i], layer(x[i:i + 1])[0])


def test_state_dict_round_trip_repacks():
    a, b = Int8Linear.from_linear(nn.Linear(16, 8)), Int8Linear.from_linear(nn.Linear(16, 8))
    x = torch.randn(2, 16)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


# --- a whole model -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_quantized_gpt_logits_are_close_to_float(name):
    """Relative error of the logits (Frobenius norm) below 5%.

    Why 5%: rounding errors are spread evenly over half a step, so their RMS is step / sqrt(12).
    A row of Gaussian weights has its largest |w| near 3.5 sigma, so the weight step is about
    3.5 / 127.5 sigma: an RMS error of 0.8% of the weights; an input row spans about 7 sigma in
    127 steps: 1.6%. Together about 1.8% per matrix, and the residual stream adds the errors
    of the matrices rather than multiplying them. The models here come out at 1 - 1.5%.
    """
    model = tiny_model(**OPTIONS[name])
    qmodel = quantize_model(model)
    idx = rand_ids((2, TINY["block_size"]), seed=1)
    with torch.no_grad():
        ref, _ = model(idx)
        logits, _ = qmodel(idx)
    assert (logits - ref).norm() / ref.norm() < 0.05


@pytest.mark.parametrize("tie", [True, False])
def test_every_linear_is_replaced_and_the_original_is_untouched(tie):
    model = tiny_model(tie_weights=tie)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = quantize_model(model)
    assert not any(isinstance(m, nn.Linear) for m in qmodel.modules())
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in qmodel.modules()) == n_linear
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # The embedding stays float32; the head has its own int8 copy of its matrix.
    assert qmodel.wte.weight.dtype == torch.float32
    assert torch.equal(qmodel.wte.weight, model.wte.weight)
    q, scale = quantize_int8(model.lm_head.weight)
    assert torch.equal(qmodel.lm_head.weight_q, q) and torch.equal(qmodel.lm_head.weight_scale,
                                                                   scale)


@pytest.mark.parametrize("name", OPTIONS)
def test_generation_with_and_without_cache_gives_the_same_tokens(name):
    qmodel = quantize_model(tiny_model(spread=10.0, **OPTIONS[name]))
    prompt = rand_ids((2, 7), seed=1)
    n = 14  # 7 + 14 <= block_size: the cache serves every step
    cached = gen.generate(qmodel, prompt, n, temperature=0, use_cache=True)
    plain = gen.generate(qmodel, prompt, n, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)


def test_generation_past_the_context_and_with_sampling_runs():
    qmodel = quantize_model(tiny_model())
    out = gen.generate(qmodel, rand_ids((20,), seed=2), 12, temperature=0.8, top_k=5, seed=0)
    assert out.shape == (32,)


def test_greedy_agreement_of_a_model_with_itself_is_complete():
    model = tiny_model(spread=10.0)
    result = greedy_agreement(model, model, [1, 2, 3], steps=30)  # 33 > 24: the window slides
    assert result == {"steps": 30, "same_before_first_difference": 30, "same_positions": 30,
                      "same_choice_on_model_text": 30}


# --- errors --------------------------------------------------------------------------------------


def test_bad_inputs():
    """The teaching functions assert what they need; a whole model, the public entry, is
    refused with a message that says what to do."""
    for bad in (torch.randn(2, 3, 4), torch.randn(5), torch.ones(2, 3, dtype=torch.long)):
        with pytest.raises(AssertionError, match="a float matrix"):
            quantize_int8(bad)
    with pytest.raises(AssertionError, match="int8 codes, one scale a row"):
        dequantize_int8(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(AssertionError, match="int8 codes, one scale a row"):
        dequantize_int8(torch.ones(2, 3, dtype=torch.int8), torch.ones(3))
    layer = Int8Linear.from_linear(nn.Linear(8, 4))
    with pytest.raises(AssertionError, match="float32 CPU inputs only"):
        layer(torch.randn(2, 8, dtype=torch.float64))
    model = tiny_model()
    with pytest.raises(ValueError, match=r"float32, but the model is torch.float64.*\.float\(\)"):
        quantize_model(model.double())
    twice = quantize_model(quantize_model(model.float()))  # nothing left to quantize
    assert not any(isinstance(m, nn.Linear) for m in twice.modules())

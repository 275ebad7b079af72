"""buildllm.layers: the feed-forward network (GPT-2's GELU, ReLU, Llama's SwiGLU) works token by
token and equals its formula; the block is pre-norm with residual connections."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from buildllm.kvcache import KVCache
from buildllm.layers import Block, FeedForward, ReLUSquared, SwiGLU, make_mlp
from buildllm.norms import LayerNorm, RMSNorm
from shared import SMALL, randomize, small

# ---- the feed-forward network ------------------------------------------------------------------


@pytest.mark.parametrize("mlp, act", [("gelu", lambda h: nn.functional.gelu(h, approximate="tanh")),
                                      ("relu", torch.relu)])
def test_feed_forward_is_two_linear_layers(mlp, act):
    cfg = small(mlp=mlp)
    ffn = randomize(make_mlp(cfg))
    assert type(ffn) is FeedForward and ffn.c_fc.weight.shape == (4 * 32, 32)
    assert ffn.c_proj.weight.shape == (32, 4 * 32)
    x = torch.randn(2, 5, 32)
    h = x @ ffn.c_fc.weight.T + ffn.c_fc.bias
    expected = act(h) @ ffn.c_proj.weight.T + ffn.c_proj.bias
    torch.testing.assert_close(ffn(x), expected)


def test_gelu_is_gpt2_gelu_new():
    x = torch.linspace(-6, 6, 101)
    gelu_new = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    ffn = FeedForward(small())
    torch.testing.assert_close(ffn.act(x), gelu_new)


@pytest.mark.parametrize("bias", [True, False])
def test_swiglu_matches_the_formula(bias):
    torch.manual_seed(3)
    ffn = randomize(SwiGLU(small(mlp="swiglu", bias=bias))).eval()
    assert (ffn.gate.bias is None) != bias and (ffn.c_proj.bias is None) != bias
    x = torch.randn(2, 7, SMALL["n_embd"])
    # Shazeer: FFN_SwiGLU(x) = (Swish(x W) * (x V)) W2, with Swish(z) = z * sigmoid(z).
    W, Vm, W2 = ffn.gate.weight.T, ffn.up.weight.T, ffn.c_proj.weight.T
    a, u = x @ W, x @ Vm
    if bias:
        a, u = a + ffn.gate.bias, u + ffn.up.bias
    ref = (a * (1 / (1 + torch.exp(-a))) * u) @ W2
    if bias:
        ref = ref + ffn.c_proj.bias
    torch.testing.assert_close(ffn(x), ref)


def test_swiglu_gate_closed_gives_zero():
    """When the gate's pre-activation is very negative, silu ~ 0 and the output vanishes."""
    ffn = randomize(SwiGLU(small(mlp="swiglu", bias=True))).eval()
    with torch.no_grad():
        ffn.gate.weight.zero_()
        ffn.gate.bias.fill_(-40.0)
        ffn.c_proj.bias.zero_()
    out = ffn(torch.randn(3, SMALL["n_embd"]))
    torch.testing.assert_close(out, torch.zeros_like(out))


@pytest.mark.parametrize("mlp", ["gelu", "relu", "swiglu"])
def test_feed_forward_mixes_nothing_across_positions(mlp):
    cfg = small(mlp=mlp)
    ffn = randomize(make_mlp(cfg))
    x = torch.randn(2, 6, 32)
    whole = ffn(x)
    one_by_one = torch.stack([ffn(x[:, t]) for t in range(6)], dim=1)
    tol = dict(atol=1e-5, rtol=1e-4)  # matrix products of other shapes round differently
    torch.testing.assert_close(whole, one_by_one, **tol)
    shuffled = torch.randperm(6)
    torch.testing.assert_close(ffn(x[:, shuffled]), whole[:, shuffled], **tol)


def test_hidden_width_can_be_set():
    ffn = FeedForward(small(mlp_hidden=48))
    assert ffn.c_fc.out_features == 48 and ffn.c_proj.in_features == 48
    swiglu = SwiGLU(small(mlp="swiglu"))
    assert swiglu.gate.out_features == swiglu.up.out_features == small(mlp="swiglu").hidden_dim


def test_dropout_acts_in_train_mode_only():
    ffn = randomize(FeedForward(small(dropout=0.5)))
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(ffn.eval()(x), ffn(x))
    ffn.train()
    assert (ffn(x) == 0).float().mean() > 0.3  # about half the outputs dropped


# ---- the block ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, norm, mlp", [({}, LayerNorm, FeedForward),
                                           (dict(norm="rmsnorm", mlp="swiglu"), RMSNorm, SwiGLU)])
def test_block_is_pre_norm_residual(kw, norm, mlp):
    torch.manual_seed(0)
    block = randomize(Block(small(**kw))).eval()
    assert isinstance(block.ln_1, norm) and isinstance(block.ln_2, norm)
    assert isinstance(block.mlp, mlp)
    x = torch.randn(2, 7, 32)
    h = x + block.attn(block.ln_1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.ln_2(h)))
    assert block(x).shape == x.shape


def test_block_is_causal():
    block = randomize(Block(small())).eval()
    x = torch.randn(1, 8, 32)
    y = block(x)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 32)
    torch.testing.assert_close(block(x2)[:, :5], y[:, :5])


def test_block_with_zero_branches_is_identity():
    block = Block(small())
    with torch.no_grad():
        block.attn.c_proj.weight.zero_()
        block.attn.c_proj.bias.zero_()
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(block(x), x)


def test_block_with_a_cache_equals_the_full_sequence():
    block = randomize(Block(small(pos_encoding="rope", n_kv_head=2))).eval()
    x = torch.randn(2, 9, 32)
    kv = KVCache(2, 16)
    parts = [block(x[:, :5], kv), block(x[:, 5:6], kv), block(x[:, 6:], kv)]
    torch.testing.assert_close(torch.cat(parts, dim=1), block(x), atol=1e-5, rtol=1e-4)


def test_make_mlp_follows_the_config():
    assert isinstance(make_mlp(small()).act, nn.GELU)
    assert isinstance(make_mlp(small(mlp="relu")).act, nn.ReLU)
    assert isinstance(make_mlp(small(mlp="relu2")).act, ReLUSquared)
    assert type(make_mlp(small(mlp="swiglu"))) is SwiGLU

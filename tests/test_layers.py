"""buildllm.layers: the written-out norms equal the modules and PyTorch; the feed-forward network
works token by token; the block is pre-norm with residual connections."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from buildllm.layers import (
    Block,
    FeedForward,
    LayerNorm,
    RMSNorm,
    SwiGLU,
    layer_norm,
    make_norm,
    rms_norm,
)
from buildllm.model import GPTConfig


def small(**kw) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32), **kw})


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + 0.05)
    return module


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_equals_torch(bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32) * 4 + 2
    ours = randomize(LayerNorm(32, bias=bias))
    ref = nn.LayerNorm(32, bias=bias)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(layer_norm(x, ours.weight, ours.bias), ref(x))


def test_layer_norm_gives_mean_0_variance_1_before_scaling():
    x = torch.randn(4, 7, 64) * 10 - 3
    y = LayerNorm(64)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, 7), atol=1e-3, rtol=0)


def test_layer_norm_is_per_token():
    x = torch.randn(2, 6, 16)
    norm = randomize(LayerNorm(16))
    y = norm(x)
    x2 = x.clone()
    x2[:, 3] += torch.randn(2, 16)  # change one token: only its output may change
    y2 = norm(x2)
    changed = (y - y2).abs().amax(-1) > 1e-4
    assert changed[:, 3].all() and changed.sum() == 2


def test_rms_norm_equals_formula_and_torch():
    x = torch.randn(3, 5, 32) * 3
    ours = randomize(RMSNorm(32, eps=1e-6))
    ref = nn.RMSNorm(32, eps=1e-6)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(rms_norm(x, ours.weight, 1e-6), ref(x))


def test_make_norm_follows_config():
    assert isinstance(make_norm(small()), LayerNorm)
    assert make_norm(small(bias=False)).bias is None
    assert isinstance(make_norm(small(norm="rmsnorm")), RMSNorm)


@pytest.mark.parametrize("mlp, act", [("gelu", lambda h: nn.functional.gelu(h, approximate="tanh")),
                                      ("relu", torch.relu)])
def test_feed_forward_is_two_linear_layers(mlp, act):
    cfg = small(mlp=mlp)
    ffn = randomize(FeedForward(cfg))
    assert ffn.c_fc.weight.shape == (4 * 32, 32) and ffn.c_proj.weight.shape == (32, 4 * 32)
    x = torch.randn(2, 5, 32)
    h = x @ ffn.c_fc.weight.T + ffn.c_fc.bias
    expected = act(h) @ ffn.c_proj.weight.T + ffn.c_proj.bias
    torch.testing.assert_close(ffn(x), expected)


def test_gelu_is_gpt2_gelu_new():
    x = torch.linspace(-6, 6, 101)
    gelu_new = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    ffn = FeedForward(small())
    torch.testing.assert_close(ffn.act(x), gelu_new)


@pytest.mark.parametrize("mlp", ["gelu", "relu", "swiglu"])
def test_feed_forward_mixes_nothing_across_positions(mlp):
    cfg = small(mlp=mlp)
    ffn = randomize(SwiGLU(cfg) if mlp == "swiglu" else FeedForward(cfg))
    x = torch.randn(2, 6, 32)
    whole = ffn(x)
    one_by_one = torch.stack([ffn(x[:, t]) for t in range(6)], dim=1)
    tol = dict(atol=1e-5, rtol=1e-4)  # matrix products of other shapes round differently
    torch.testing.assert_close(whole, one_by_one, **tol)
    shuffled = torch.randperm(6)
    torch.testing.assert_close(ffn(x[:, shuffled]), whole[:, shuffled], **tol)


def test_hidden_width_can_be_set():
    ffn = FeedForward(small(mlp_hidden=48))
    assert ffn.c_fc.out_features == 48
    assert SwiGLU(small(mlp="swiglu")).gate.out_features == small(mlp="swiglu").hidden_dim


def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    block = randomize(Block(small())).eval()
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

"""buildllm.norms: the written-out LayerNorm and RMSNorm equal the modules, PyTorch's own layers
and the papers' formulas; what each normalization does to a vector; make_norm follows the
configuration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from buildllm.norms import LayerNorm, RMSNorm, layer_norm, make_norm, rms_norm
from shared import randomize, small

# ---- LayerNorm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_equals_torch(bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32) * 4 + 2
    ours = randomize(LayerNorm(32, bias=bias))
    assert (ours.bias is None) != bias
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


# ---- RMSNorm -----------------------------------------------------------------------------------


def test_rms_norm_equals_the_paper_and_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 3 + 1
    ours = randomize(RMSNorm(16, eps=1e-6))
    # Zhang & Sennrich: a_i / RMS(a) * g_i with RMS(a) = sqrt(mean(a^2) + eps), in float64, one
    # vector at a time.
    g64 = ours.weight.detach().double()
    ref = torch.stack([torch.stack([row / math.sqrt(sum(v * v for v in row.tolist()) / 16 + 1e-6)
                                    for row in batch]) for batch in x.double()]) * g64
    torch.testing.assert_close(ours(x), ref.float())
    torch.testing.assert_close(rms_norm(x, ours.weight, eps=1e-6), ref.float())
    torch_norm = nn.RMSNorm(16, eps=1e-6)
    torch_norm.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), torch_norm(x))


def test_rms_norm_of_centred_input_is_layer_norm():
    """LayerNorm = centre, then RMSNorm: on a zero-mean vector the two agree."""
    torch.manual_seed(1)
    x = torch.randn(4, 32)
    centred = x - x.mean(-1, keepdim=True)
    ones = torch.ones(32)
    torch.testing.assert_close(rms_norm(centred, ones, eps=1e-5),
                               F.layer_norm(x, (32,), eps=1e-5))
    torch.testing.assert_close(rms_norm(centred, ones, eps=1e-5),
                               layer_norm(x, ones, None, eps=1e-5))


def test_rms_norm_is_scale_invariant_and_unit_rms():
    torch.manual_seed(2)
    x = torch.randn(6, 64)
    norm = RMSNorm(64, eps=0.0)
    torch.testing.assert_close(norm(x * 7.5), norm(x))
    rms = norm(x).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(6))
    assert not torch.allclose(norm(x).mean(-1), torch.zeros(6), atol=1e-3)  # no centring


# ---- make_norm ---------------------------------------------------------------------------------


def test_make_norm_follows_config():
    layer = make_norm(small(norm_eps=1e-4))
    assert isinstance(layer, LayerNorm) and layer.eps == 1e-4
    assert layer.weight.shape == (32,) and layer.bias.shape == (32,)
    assert make_norm(small(bias=False)).bias is None
    rms = make_norm(small(norm="rmsnorm", norm_eps=1e-6))
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-6 and rms.weight.shape == (32,)
    assert [n for n, _ in rms.named_parameters()] == ["weight"]  # RMSNorm has no shift

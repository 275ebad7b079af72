"""buildllm.model: the configuration, the parameter count of GPT-2 small, the forward pass, the
loss, GPT-2's initialization, the key/value cache, and every option of GPTConfig."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from buildllm.model import GPT, PRESETS, GPTConfig, preset

SMALL = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32)
OPTIONS = [
    {},
    dict(mlp="relu"),
    dict(pos_encoding="sinusoidal"),
    dict(pos_encoding="rope"),
    dict(norm="rmsnorm"),
    dict(mlp="swiglu"),
    dict(n_kv_head=2),
    dict(qk_norm=True),
    dict(tie_weights=False),
    dict(bias=False),
    dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True,
         tie_weights=False, bias=False),
]


def small(**kw) -> GPTConfig:
    return GPTConfig(**{**SMALL, **kw})


def expected_gpt2_count(c: GPTConfig) -> int:
    """GPT-2's parameter count from its shapes: embeddings, blocks, final LayerNorm."""
    C, H = c.n_embd, c.hidden_dim
    attn = C * 3 * C + 3 * C + C * C + C
    mlp = C * H + H + H * C + C
    norms = 2 * 2 * C
    return c.vocab_size * C + c.block_size * C + c.n_layer * (attn + mlp + norms) + 2 * C


def test_gpt2_small_has_124_439_808_parameters():
    model = GPT(preset("gpt2"))
    counts = model.parameter_counts()
    assert counts["total"] == 124_439_808
    assert counts["total"] == expected_gpt2_count(model.config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())  # each tensor once
    assert counts["head"] == 0  # tied to the token embedding
    assert counts["feed-forward"] == 12 * (2 * 768 * 3072 + 3072 + 768)


@pytest.mark.parametrize("kw", OPTIONS, ids=str)
def test_parameter_counts_add_up(kw):
    model = GPT(small(**kw))
    counts = model.parameter_counts()
    parts = {k: v for k, v in counts.items() if k != "total"}
    assert sum(parts.values()) == counts["total"] == sum(p.numel() for p in model.parameters())
    c = model.config
    C, hd, kv = c.n_embd, c.n_embd // c.n_head, c.n_kv_head or c.n_head
    b = 1 if c.bias else 0
    assert counts["head"] == (0 if c.tie_weights else c.vocab_size * C)
    assert counts["embeddings"] == c.vocab_size * C + (
        c.block_size * C if c.pos_encoding == "learned" else 0)
    qkv = (c.n_head + 2 * kv) * hd
    assert counts["attention"] == c.n_layer * (C * qkv + b * qkv + C * C + b * C)
    n_in = 2 if c.mlp == "swiglu" else 1  # matrices into the hidden layer
    H = c.hidden_dim
    assert counts["feed-forward"] == c.n_layer * (n_in * (C * H + b * H) + H * C + b * C)


def test_book_preset_counts():
    c = preset("book")
    assert GPT(c).parameter_counts()["total"] == expected_gpt2_count(c)


def test_tied_head_shares_the_embedding():
    model = GPT(small())
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(small(tie_weights=False))
    assert untied.lm_head.weight is not untied.wte.weight


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(small()).eval()
    idx = torch.randint(0, 61, (3, 10))
    targets = torch.randint(0, 61, (3, 10))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 10, 61)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 61), targets.reshape(-1)))
    assert model(idx)[1] is None


def test_targets_minus_one_are_ignored():
    model = GPT(small()).eval()
    idx = torch.randint(0, 61, (2, 8))
    targets = torch.randint(0, 61, (2, 8))
    masked = targets.clone()
    masked[:, :4] = -1
    logits, loss = model(idx, masked)
    torch.testing.assert_close(
        loss, F.cross_entropy(logits[:, 4:].reshape(-1, 61), targets[:, 4:].reshape(-1)))


def test_untrained_loss_is_close_to_uniform_guess():
    torch.manual_seed(0)
    model = GPT(preset("book")).eval()
    idx = torch.randint(0, 1024, (4, 64))
    _, loss = model(idx, torch.randint(0, 1024, (4, 64)))
    assert abs(loss.item() - math.log(1024)) < 0.1


def test_gpt2_initialization():
    torch.manual_seed(0)
    model = GPT(small(n_layer=8, n_embd=128, vocab_size=500))
    assert abs(model.wte.weight.std().item() - 0.02) < 0.002
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    for proj in (model.h[3].attn.c_proj, model.h[3].mlp.c_proj):
        assert abs(proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.001
    assert (model.h[0].attn.c_attn.bias == 0).all()
    assert (model.h[0].ln_1.weight == 1).all() and (model.h[0].ln_1.bias == 0).all()


def test_model_is_causal():
    model = GPT(small()).eval()
    idx = torch.randint(0, 61, (1, 12))
    idx2 = idx.clone()
    idx2[0, 7:] = (idx2[0, 7:] + 1) % 61
    torch.testing.assert_close(model(idx2)[0][:, :7], model(idx)[0][:, :7])


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal"])
def test_positions_matter(pos_encoding):
    """The same token at positions 0 and 3 (after copies of itself, so attention alone cannot
    tell them apart): only the position encoding makes the outputs differ."""
    model = GPT(small(pos_encoding=pos_encoding)).eval()
    idx = torch.full((1, 4), 5)
    logits = model(idx)[0]
    assert not torch.allclose(logits[0, 0], logits[0, 3])


def test_too_long_input_is_refused():
    model = GPT(small())
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_one_dimensional_input_is_refused():
    with pytest.raises(ValueError, match=r"idx\[None\]"):
        GPT(small())(torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("kw", OPTIONS, ids=str)
def test_every_option_runs_and_learns(kw):
    torch.manual_seed(0)
    model = GPT(small(**kw))
    idx = torch.randint(0, 61, (2, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 16, 61) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kw", [{}, dict(pos_encoding="rope", n_kv_head=2)], ids=str)
def test_cache_gives_the_same_logits(kw):
    model = GPT(small(**kw)).eval()
    idx = torch.randint(0, 61, (2, 11))
    full = model(idx)[0]
    cache = model.new_cache(2)
    parts = [model(idx[:, :6], cache=cache)[0]]
    parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(6, 11)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_config_round_trip_and_errors():
    c = small(mlp="relu", dropout=0.1)
    assert GPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="bogus"):
        GPTConfig.from_dict({**c.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="'tanh'"):
        GPTConfig(mlp="tanh")
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_presets():
    assert set(PRESETS) >= {"gpt2", "book"}
    assert preset("gpt2") == GPTConfig()  # the defaults are GPT-2 small
    assert preset("book", n_layer=2).n_layer == 2
    with pytest.raises(ValueError, match="gpt3"):
        preset("gpt3")


def test_hidden_dim():
    assert small().hidden_dim == 4 * 32
    assert small(mlp_hidden=50).hidden_dim == 50
    h = GPTConfig(n_embd=768, mlp="swiglu").hidden_dim
    assert h % 64 == 0 and abs(h - 8 * 768 / 3) < 64

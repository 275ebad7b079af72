"""buildllm.model: the parameter count of GPT-2 small, the forward pass and its features, the
loss, GPT-2's initialization, the key/value cache, and every option of GPTConfig (alone and
all together: shapes, parameter counts against a formula written from the papers, learning)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from buildllm.config import GPTConfig, preset
from buildllm.embeddings import NoPositions
from buildllm.model import GPT, SpeedrunGPT
from buildllm.norms import LayerNorm, RMSNorm
from shared import OPTIONS, SMALL, small, small_model

V = SMALL["vocab_size"]


def expected_parameters(cfg: GPTConfig) -> dict[str, int]:
    """The parameter count of each part from the shapes in the papers, written independently of
    the model."""
    C, L = cfg.n_embd, cfg.n_layer
    hd = C // cfg.n_head
    kv = cfg.n_kv_head or cfg.n_head
    b = 1 if cfg.bias else 0
    hidden = cfg.hidden_dim
    qkv_out = (cfg.n_head + 2 * kv) * hd
    attn = C * qkv_out + b * qkv_out + C * C + b * C
    if cfg.mlp == "swiglu":  # gate and up (C -> hidden), down (hidden -> C)
        mlp = 2 * (C * hidden + b * hidden) + hidden * C + b * C
    else:
        mlp = C * hidden + b * hidden + hidden * C + b * C
    norm = C if cfg.norm == "rmsnorm" else C + b * C
    qk = 2 * hd if cfg.qk_norm else 0
    parts = {"embeddings": cfg.vocab_size * C + (cfg.block_size * C
                                                 if cfg.pos_encoding == "learned" else 0),
             "attention": L * attn, "feed-forward": L * mlp, "norms": L * (2 * norm + qk) + norm,
             "head": 0 if cfg.tie_weights else cfg.vocab_size * C}
    return {**parts, "total": sum(parts.values())}


# ---- parameter counts ------------------------------------------------------------------------


def test_gpt2_small_has_124_439_808_parameters():
    assert expected_parameters(GPTConfig())["total"] == 124_439_808  # the published size
    model = GPT(preset("gpt2"))
    counts = model.parameter_counts()
    assert counts == expected_parameters(model.config)
    assert counts["total"] == 124_439_808
    assert counts["total"] == sum(p.numel() for p in model.parameters())  # each tensor once
    assert counts["head"] == 0  # tied to the token embedding
    assert counts["feed-forward"] == 12 * (2 * 768 * 3072 + 3072 + 768)


@pytest.mark.parametrize("name", OPTIONS)
def test_parameter_counts_match_the_formula(name):
    model = small_model(**OPTIONS[name])
    counts = model.parameter_counts()
    assert counts == expected_parameters(model.config)
    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a tied one once
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"] == unique


def test_book_preset_counts():
    c = preset("book")
    assert GPT(c).parameter_counts() == expected_parameters(c)


def test_tied_head_shares_the_embedding_and_untied_has_its_own():
    tied, untied = small_model(), small_model(**OPTIONS["untied"])
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    extra = V * SMALL["n_embd"]
    assert untied.parameter_counts()["total"] == tied.parameter_counts()["total"] + extra


def test_no_bias_means_no_bias_parameters():
    names = [n for n, _ in small_model(**OPTIONS["no_bias"]).named_parameters()]
    assert not any(n.endswith(".bias") for n in names)
    assert any(n.endswith(".bias") for n, _ in small_model().named_parameters())


def test_position_encodings_make_their_parts():
    learned, sinusoidal, rope = (small_model(pos_encoding=p)
                                 for p in ("learned", "sinusoidal", "rope"))
    assert isinstance(learned.wpe, torch.nn.Embedding)
    assert not list(sinusoidal.wpe.parameters())  # a fixed table
    assert isinstance(rope.wpe, NoPositions)  # positions enter inside attention
    assert not any(n.startswith("wpe.") for n, _ in rope.named_parameters())
    assert all(block.attn.rope is not None for block in rope.h)
    assert isinstance(small_model().ln_f, LayerNorm)
    assert isinstance(small_model(norm="rmsnorm").ln_f, RMSNorm)


# ---- the forward pass ------------------------------------------------------------------------


def test_forward_shapes_and_loss():
    model = small_model()
    idx = torch.randint(0, V, (3, 10))
    targets = torch.randint(0, V, (3, 10))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 10, V)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)))
    assert model(idx)[1] is None


def test_features_are_what_the_head_reads():
    """``features`` is the last block's output after the final norm: the logits are the head
    applied to it."""
    model = small_model()
    idx = torch.randint(0, V, (2, 9))
    h = model.features(idx)
    assert h.shape == (2, 9, SMALL["n_embd"])
    torch.testing.assert_close(model(idx)[0], h @ model.wte.weight.T)
    x = model.wte(idx) + model.wpe(torch.arange(9))  # the forward pass, written out
    for block in model.h:
        x = block(x)
    torch.testing.assert_close(h, model.ln_f(x))
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)  # normalized
    cache = model.new_cache(2)  # with a cache: the same features, a piece at a time
    pieces = [model.features(idx[:, :4], cache), model.features(idx[:, 4:], cache)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), h, atol=1e-5, rtol=1e-4)


def test_targets_minus_one_are_ignored():
    model = small_model()
    idx = torch.randint(0, V, (2, 8))
    targets = torch.randint(0, V, (2, 8))
    masked = targets.clone()
    masked[:, :4] = -1
    logits, loss = model(idx, masked)
    torch.testing.assert_close(
        loss, F.cross_entropy(logits[:, 4:].reshape(-1, V), targets[:, 4:].reshape(-1)))


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
    assert abs(model.wpe.weight.std().item() - 0.02) < 0.002
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    for proj in (model.h[3].attn.c_proj, model.h[3].mlp.c_proj):
        assert abs(proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.001
    assert (model.h[0].attn.c_attn.bias == 0).all()
    assert (model.h[0].ln_1.weight == 1).all() and (model.h[0].ln_1.bias == 0).all()


def test_model_is_causal():
    model = small_model()
    idx = torch.randint(0, V, (1, 12))
    idx2 = idx.clone()
    idx2[0, 7:] = (idx2[0, 7:] + 1) % V
    torch.testing.assert_close(model(idx2)[0][:, :7], model(idx)[0][:, :7])


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal"])
def test_positions_matter(pos_encoding):
    """The same token at positions 0 and 3 (after copies of itself, so attention alone cannot
    tell them apart): only the position encoding makes the outputs differ."""
    model = small_model(pos_encoding=pos_encoding)
    idx = torch.full((1, 4), 5)
    logits = model(idx)[0]
    assert not torch.allclose(logits[0, 0], logits[0, 3])


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_too_long_input_is_refused(pos_encoding):
    """Whatever encodes the positions, the model refuses more than block_size of them, with or
    without a cache: no table is read past its end."""
    model = small_model(pos_encoding=pos_encoding)
    assert model(torch.zeros(1, 16, dtype=torch.long))[0].shape == (1, 16, V)
    for run in (model, model.features):
        with pytest.raises(AssertionError, match="17 tokens: the context holds 16; crop"):
            run(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache(1, max_len=32)  # a cache larger than the context changes nothing
    model(torch.zeros(1, 10, dtype=torch.long), cache=cache)
    with pytest.raises(AssertionError, match="17 tokens: the context holds 16"):
        model(torch.zeros(1, 7, dtype=torch.long), cache=cache)
    assert len(cache[0]) == 10  # refused before anything was appended


# ---- every option ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_runs_and_reaches_every_parameter(name):
    model = small_model(**OPTIONS[name]).train()
    idx = torch.randint(0, V, (3, 11))
    targets = torch.randint(0, V, (3, 11))
    logits, loss = model(idx, targets=targets)
    assert logits.shape == (3, 11, V)
    assert torch.isfinite(logits).all()
    # At initialization every token is about equally likely: loss near ln(vocab_size).
    assert abs(loss.item() - math.log(V)) < 0.5
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_every_option_together_learns():
    """A few optimizer steps on one batch lower the loss: gradients reach every parameter."""
    model = small_model(**OPTIONS["all"]).train()
    idx = torch.randint(0, V, (4, SMALL["block_size"]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        _, loss = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        if first is None:
            first = loss.item()
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
    assert loss.item() < first - 0.5


# ---- the key/value cache ---------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_cache_fed_in_uneven_chunks_equals_one_pass(name):
    model = small_model(**OPTIONS[name])
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        full = model(idx)[0]
        cache = model.new_cache(batch_size=2)
        parts, start = [], 0
        for size in (4, 1, 6, 1, 1, 3):  # chunks longer than one token after a prefix use a mask
            parts.append(model(idx[:, start:start + size], cache=cache)[0])
            start += size
            assert all(layer.length == start for layer in cache)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_kv_head", [None, 4, 2, 1])
def test_cache_holds_one_entry_per_key_value_head(n_kv_head):
    model = small_model(n_kv_head=n_kv_head)
    cache = model.new_cache(batch_size=3)
    hd = SMALL["n_embd"] // SMALL["n_head"]
    assert len(cache) == SMALL["n_layer"] and cache[0].k is None  # allocated when filled
    model(torch.zeros(3, 1, dtype=torch.long), cache=cache)
    assert cache[0].k.shape == (3, n_kv_head or SMALL["n_head"], SMALL["block_size"], hd)
    assert cache[0].v.shape == cache[0].k.shape
    assert model.new_cache(1, max_len=5)[0].max_len == 5
    assert cache[0].k.dtype == model.wte.weight.dtype


# ---- the options of the book's best recipe: ReLU squared, value embeddings, soft-capping -------


NEW_OPTIONS = {"relu2": dict(mlp="relu2"), "value_embed": dict(value_embed=True),
               "value_embed_gqa_rope": dict(value_embed=True, n_kv_head=2, pos_encoding="rope"),
               "softcap": dict(logit_softcap=2.0)}


@pytest.mark.parametrize("name", NEW_OPTIONS)
def test_new_options_reach_every_parameter_and_keep_the_cache_exact(name):
    model = small_model(**NEW_OPTIONS[name]).train()
    idx = torch.randint(0, V, (2, 16))
    _, loss = model(idx[:, :-1], targets=idx[:, 1:])
    assert abs(loss.item() - math.log(V)) < 0.5
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        full, cache, parts = model(idx)[0], model.new_cache(batch_size=2), []
        for start, size in ((0, 5), (5, 1), (6, 10)):
            parts.append(model(idx[:, start:start + size], cache=cache)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_relu2_squares_the_relu():
    ffn = small_model(mlp="relu2").h[0].mlp
    x = torch.randn(2, 3, SMALL["n_embd"])
    by_hand = F.relu(x @ ffn.c_fc.weight.T + ffn.c_fc.bias).pow(2) @ ffn.c_proj.weight.T
    torch.testing.assert_close(ffn(x), by_hand + ffn.c_proj.bias)
    assert small(mlp="relu2").hidden_dim == 4 * SMALL["n_embd"]


def test_value_embeddings_are_added_to_the_values():
    """One embedding table per block, kv_heads * head_dim wide; zeroed, the model is the plain
    one with the same weights."""
    model = small_model(value_embed=True, n_kv_head=2)
    kv_dim = 2 * SMALL["n_embd"] // SMALL["n_head"]
    assert [tuple(e.weight.shape) for e in model.wve] == [(V, kv_dim)] * SMALL["n_layer"]
    counts = model.parameter_counts()
    plain = small_model(n_kv_head=2)
    assert counts["embeddings"] == plain.parameter_counts()["embeddings"] + SMALL[
        "n_layer"] * V * kv_dim
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    idx = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        assert not torch.allclose(model(idx)[0], plain(idx)[0])
        for e in model.wve:
            e.weight.zero_()
        plain.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("wve.")})
        torch.testing.assert_close(model(idx)[0], plain(idx)[0])


def test_soft_capping_bounds_the_logits_and_is_tanh():
    model = small_model(logit_softcap=2.0)
    plain = small_model()
    with torch.no_grad():
        for p in list(model.parameters()) + list(plain.parameters()):
            p.mul_(3)  # large logits
        idx = torch.randint(0, V, (2, 9))
        capped, raw = model(idx)[0], plain(idx)[0]
    assert raw.abs().max() > 2 and capped.abs().max() < 2
    torch.testing.assert_close(capped, 2.0 * torch.tanh(raw / 2.0))


def test_the_new_options_are_off_by_default():
    cfg = GPTConfig()
    assert cfg.logit_softcap is None and not cfg.value_embed and cfg.mlp == "gelu"
    assert type(GPT(small())) is GPT and not hasattr(GPT(small()), "wve")
    assert type(GPT(small(logit_softcap=3.0))) is SpeedrunGPT
    assert type(GPT(small(value_embed=True))) is SpeedrunGPT
    assert type(copy.deepcopy(GPT(small(value_embed=True)))) is SpeedrunGPT

"""The options of chapter "From GPT-2 to today's LLMs": rotary positions, RMSNorm, SwiGLU,
grouped-query attention, QK-norm, an untied head, no biases; each alone and all together.

Every check compares the model with a reference written independently here (formulas, an
explicit repeat of the key/value heads, a full recomputation instead of the cache).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from buildllm.attention import CausalSelfAttention
from buildllm.embeddings import RotaryEmbedding
from buildllm.layers import RMSNorm, SwiGLU, rms_norm
from buildllm.model import GPT, PRESETS, GPTConfig, preset
from model_options import OPTIONS

SMALL = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32)



def make(name: str, seed: int = 0, **extra) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**SMALL, **OPTIONS[name], **extra}))
    return model.eval()


def expected_parameters(cfg: GPTConfig) -> int:
    """The parameter count from the shapes in the papers, written independently of the model."""
    C, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
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
    emb = V * C + (cfg.block_size * C if cfg.pos_encoding == "learned" else 0)
    head = 0 if cfg.tie_weights else V * C
    return emb + L * (attn + mlp + 2 * norm + qk) + norm + head


# ---- every option: shapes, parameter counts, cache -----------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_forward_shapes_and_loss(name):
    model = make(name)
    idx = torch.randint(0, SMALL["vocab_size"], (3, 11))
    targets = torch.randint(0, SMALL["vocab_size"], (3, 11))
    logits, loss = model(idx, targets=targets)
    assert logits.shape == (3, 11, SMALL["vocab_size"])
    assert torch.isfinite(logits).all()
    # At initialization every token is about equally likely: loss near ln(vocab_size).
    assert abs(loss.item() - math.log(SMALL["vocab_size"])) < 0.5


@pytest.mark.parametrize("name", OPTIONS)
def test_parameter_count_matches_the_formula(name):
    model = make(name)
    counts = model.parameter_counts()
    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a tied one once
    assert counts["total"] == unique == expected_parameters(model.config)


@pytest.mark.parametrize("name", OPTIONS)
def test_cached_generation_equals_uncached(name):
    model = make(name)
    prompt = torch.randint(0, SMALL["vocab_size"], (2, 5))
    steps = SMALL["block_size"] - prompt.size(1)

    # Uncached: recompute the whole sequence for every new token.
    seq = prompt
    full_logits = []
    with torch.no_grad():
        for _ in range(steps):
            last = model(seq)[0][:, -1]
            full_logits.append(last)
            seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)

    # Cached: the prompt once, then one token at a time.
    cache = model.new_cache(batch_size=2)
    cached_logits = []
    with torch.no_grad():
        last = model(prompt, cache=cache)[0][:, -1]
        tokens = [prompt]
        for i in range(steps):
            cached_logits.append(last)
            nxt = last.argmax(-1, keepdim=True)
            tokens.append(nxt)
            if i + 1 < steps:
                last = model(nxt, cache=cache)[0][:, -1]
    assert torch.equal(torch.cat(tokens, dim=1), seq)
    torch.testing.assert_close(torch.stack(cached_logits), torch.stack(full_logits),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", OPTIONS)
def test_cache_fed_in_uneven_chunks_equals_one_pass(name):
    model = make(name)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 16))
    with torch.no_grad():
        full = model(idx)[0]
        cache = model.new_cache(batch_size=2)
        parts, start = [], 0
        for size in (4, 1, 6, 2, 3):  # chunks longer than one token after a prefix use a mask
            parts.append(model(idx[:, start:start + size], cache=cache)[0])
            start += size
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_kv_head", [None, 4, 2, 1])
def test_cache_holds_one_entry_per_key_value_head(n_kv_head):
    model = make("gpt2", n_kv_head=n_kv_head)
    cache = model.new_cache(batch_size=3)
    hd = SMALL["n_embd"] // SMALL["n_head"]
    assert len(cache) == SMALL["n_layer"]
    assert cache[0].k.shape == (3, n_kv_head or SMALL["n_head"], SMALL["block_size"], hd)
    assert cache[0].v.shape == cache[0].k.shape


def test_defaults_are_gpt2():
    cfg = GPTConfig()
    assert (cfg.pos_encoding, cfg.norm, cfg.mlp) == ("learned", "layernorm", "gelu")
    assert cfg.n_kv_head is None and not cfg.qk_norm and cfg.tie_weights and cfg.bias
    assert cfg.hidden_dim == 4 * cfg.n_embd
    # GPT-2 small's published size, from the independent formula.
    assert expected_parameters(cfg) == 124_439_808


def test_llama_preset_turns_every_option_on():
    cfg = preset("llama")
    assert cfg.pos_encoding == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu"
    assert cfg.n_kv_head is not None and cfg.n_kv_head < cfg.n_head
    assert not cfg.bias and not cfg.tie_weights
    assert preset("gpt2").pos_encoding == "learned"  # the GPT-2 preset is untouched
    for name in PRESETS:
        preset(name)  # every preset builds a valid config


def test_no_bias_means_no_bias_parameters():
    names = [n for n, _ in make("no_bias").named_parameters()]
    assert not any(n.endswith(".bias") for n in names)
    assert any(n.endswith(".bias") for n, _ in make("gpt2").named_parameters())


def test_untied_head_has_its_own_matrix():
    tied, untied = make("gpt2"), make("untied")
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    extra = SMALL["vocab_size"] * SMALL["n_embd"]
    assert untied.parameter_counts()["total"] == tied.parameter_counts()["total"] + extra


def test_bad_n_kv_head_is_rejected():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPT(GPTConfig(**{**SMALL, "n_kv_head": 3}))


@pytest.mark.parametrize("field,value", [("norm", "batchnorm"), ("mlp", "swish"),
                                         ("pos_encoding", "alibi")])
def test_unknown_choices_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{**SMALL, field: value})


def test_every_option_together_learns():
    """A few optimizer steps on one batch lower the loss: gradients reach every parameter."""
    model = make("all").train()
    idx = torch.randint(0, SMALL["vocab_size"], (4, SMALL["block_size"]))
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


# ---- RMSNorm ---------------------------------------------------------------------------------


def test_rmsnorm_matches_the_formula():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 3 + 1
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16) + 0.5)
    # Zhang & Sennrich: a_i / RMS(a) * g_i with RMS(a) = sqrt(mean(a^2) + eps), in float64.
    x64, g64 = x.double(), norm.weight.detach().double()
    ref = torch.stack([torch.stack([row / math.sqrt(sum(v * v for v in row.tolist()) / 16 + 1e-6)
                                    for row in batch]) for batch in x64]) * g64
    torch.testing.assert_close(norm(x), ref.float())
    torch.testing.assert_close(rms_norm(x, norm.weight, eps=1e-6), ref.float())


def test_rmsnorm_of_centred_input_is_layernorm():
    """LayerNorm = centre, then RMSNorm: on a zero-mean vector the two agree."""
    torch.manual_seed(1)
    x = torch.randn(4, 32)
    centred = x - x.mean(-1, keepdim=True)
    ones = torch.ones(32)
    torch.testing.assert_close(rms_norm(centred, ones, eps=1e-5),
                               F.layer_norm(x, (32,), eps=1e-5))


def test_rmsnorm_is_scale_invariant_and_unit_rms():
    torch.manual_seed(2)
    x = torch.randn(6, 64)
    norm = RMSNorm(64, eps=0.0)
    torch.testing.assert_close(norm(x * 7.5), norm(x))
    rms = norm(x).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(6))


# ---- SwiGLU ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_swiglu_matches_the_formula(bias):
    torch.manual_seed(3)
    cfg = GPTConfig(**{**SMALL, "mlp": "swiglu", "bias": bias})
    ffn = SwiGLU(cfg).eval()
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
    cfg = GPTConfig(**{**SMALL, "mlp": "swiglu", "bias": True})
    ffn = SwiGLU(cfg).eval()
    with torch.no_grad():
        ffn.gate.weight.zero_()
        ffn.gate.bias.fill_(-40.0)
        ffn.c_proj.bias.zero_()
    out = ffn(torch.randn(3, SMALL["n_embd"]))
    torch.testing.assert_close(out, torch.zeros_like(out))


@pytest.mark.parametrize("n_embd", [32, 128, 384, 768, 4096])
def test_swiglu_hidden_size_keeps_the_parameter_count(n_embd):
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=n_embd,
                    mlp="swiglu", bias=False)
    hidden = cfg.hidden_dim
    assert hidden % 64 == 0
    assert 8 * n_embd / 3 <= hidden < 8 * n_embd / 3 + 64  # 2/3 of 4 C, rounded up to 64
    swiglu, gelu = 3 * n_embd * hidden, 2 * n_embd * 4 * n_embd
    assert abs(swiglu / gelu - 1) <= 3 * 64 / (8 * n_embd)  # only the rounding differs


# ---- RoPE ------------------------------------------------------------------------------------


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(4)
    rope = RotaryEmbedding(16, max_positions=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        qs = torch.zeros(1, 1, 64, 16)
        ks = torch.zeros(1, 1, 64, 16)
        qs[0, 0, m], ks[0, 0, n] = q, k
        return (rope(qs)[0, 0, m] @ rope(ks)[0, 0, n]).item()

    for m, n, shift in [(5, 2, 40), (9, 9, 17), (0, 30, 33)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rope_preserves_length_and_position_zero():
    torch.manual_seed(5)
    rope = RotaryEmbedding(8, max_positions=10)
    x = torch.randn(2, 3, 10, 8)
    y = rope(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # angle 0 at position 0
    torch.testing.assert_close(rope(x[:, :, 4:], offset=4), y[:, :, 4:])


def test_rope_model_has_no_position_table():
    model = make("rope")
    assert model.wpe is None
    assert not any(n.startswith("wpe.") for n, _ in model.named_parameters())


# ---- grouped-query attention -----------------------------------------------------------------


def _repeat_kv_reference(attn: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """GQA written out: each key/value head copied for the query heads it serves."""
    B, T, C = x.shape
    H, KV, hd = attn.n_head, attn.n_kv_head, attn.head_dim
    q, k, v = attn.c_attn(x).split([H * hd, KV * hd, KV * hd], dim=2)
    q = q.view(B, T, H, hd).transpose(1, 2)
    k = k.view(B, T, KV, hd).transpose(1, 2).repeat_interleave(H // KV, dim=1)
    v = v.view(B, T, KV, hd).transpose(1, 2).repeat_interleave(H // KV, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, hd)
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_gqa_matches_explicit_repeat_of_key_value_heads(n_kv_head):
    torch.manual_seed(6)
    attn = CausalSelfAttention(GPTConfig(**{**SMALL, "n_kv_head": n_kv_head})).eval()
    x = torch.randn(2, 9, SMALL["n_embd"])
    torch.testing.assert_close(attn(x), _repeat_kv_reference(attn, x))


def test_gqa_with_as_many_kv_heads_as_query_heads_is_multi_head_attention():
    torch.manual_seed(7)
    mha = make("gpt2")
    gqa = make("gpt2", seed=99, n_kv_head=SMALL["n_head"])
    gqa.load_state_dict(mha.state_dict())  # same fused layout, same shapes
    idx = torch.randint(0, SMALL["vocab_size"], (2, 12))
    torch.testing.assert_close(gqa(idx)[0], mha(idx)[0])


def test_gqa_is_multi_head_attention_with_shared_key_value_heads():
    """A GQA model equals the MHA model whose key/value weights repeat each group's head."""
    torch.manual_seed(8)
    gqa = make("gpt2", n_kv_head=2)
    mha = make("gpt2", seed=3)
    H, KV, hd, C = SMALL["n_head"], 2, SMALL["n_embd"] // SMALL["n_head"], SMALL["n_embd"]
    state = gqa.state_dict()
    for key in list(state):
        if key.endswith("attn.c_attn.weight") or key.endswith("attn.c_attn.bias"):
            w = state[key]
            q, k, v = w.split([H * hd, KV * hd, KV * hd], dim=0)
            k = k.reshape(KV, hd, *k.shape[1:]).repeat_interleave(H // KV, dim=0)
            v = v.reshape(KV, hd, *v.shape[1:]).repeat_interleave(H // KV, dim=0)
            state[key] = torch.cat([q, k.reshape(H * hd, *w.shape[1:]),
                                    v.reshape(H * hd, *w.shape[1:])], dim=0)
    mha.load_state_dict(state)
    assert mha.h[0].attn.c_attn.weight.shape == (3 * C, C)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 12))
    torch.testing.assert_close(gqa(idx)[0], mha(idx)[0])
    assert gqa.parameter_counts()["attention"] < mha.parameter_counts()["attention"]


# ---- QK-norm ---------------------------------------------------------------------------------


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    torch.manual_seed(9)
    cfg = GPTConfig(**{**SMALL, "qk_norm": True, "bias": False, "pos_encoding": "rope"})
    attn = CausalSelfAttention(cfg).eval()
    x = torch.randn(2, 8, SMALL["n_embd"])
    before = attn(x)
    qk_rows = 2 * SMALL["n_embd"]  # queries and keys; values untouched
    with torch.no_grad():
        attn.c_attn.weight[:qk_rows] *= 25.0
    torch.testing.assert_close(attn(x), before, atol=1e-4, rtol=1e-3)  # up to eps
    plain = CausalSelfAttention(GPTConfig(**{**SMALL, "bias": False})).eval()
    with torch.no_grad():
        plain.c_attn.weight.copy_(attn.c_attn.weight)
        plain.c_proj.weight.copy_(attn.c_proj.weight)
    assert not torch.allclose(plain(x), before, atol=1e-3)

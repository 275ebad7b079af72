"""Tests of attention: the formula and the layer of buildllm.attention, the cache of
buildllm.kvcache, and the options of chapter "From GPT-2 to today's LLMs" that live in attention
(buildllm.gqa: rotary positions, grouped-query attention, QK-norm), against three references.
The layers are made as the model makes them (buildllm.layers.make_attention).

References: our own formula (:func:`scaled_dot_product_attention`), PyTorch's fused
``torch.nn.functional.scaled_dot_product_attention`` and ``torch.nn.MultiheadAttention`` with
our weights copied into it, and an explicit repeat of the key/value heads. The layer checks no
sizes: GPTConfig does (test_config).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from buildllm.attention import CausalSelfAttention, causal_mask, scaled_dot_product_attention
from buildllm.config import GPTConfig
from buildllm.gqa import GroupedQueryAttention
from buildllm.kvcache import CachedSelfAttention, KVCache
from buildllm.layers import make_attention
from buildllm.norms import rms_norm
from shared import SMALL, small

# Tolerances per dtype: the layer and the references add up the same numbers in different orders.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def make_layer(n_embd=32, n_head=4, dtype=torch.float32, seed=0, **kw) -> CachedSelfAttention:
    torch.manual_seed(seed)
    config = GPTConfig(n_embd=n_embd, n_head=n_head, block_size=kw.pop("block_size", 64), **kw)
    layer = make_attention(config).to(dtype).eval()
    if config.bias:  # non-zero biases, so that a bias mixed up would show
        with torch.no_grad():
            layer.c_attn.bias.normal_(0, 0.5)
            layer.c_proj.bias.normal_(0, 0.5)
    return layer


def by_hand(layer: CausalSelfAttention, x: torch.Tensor, positions_from: int = 0,
            k_extra=None) -> torch.Tensor:
    """The layer's forward pass written with the reference formula and explicit GQA copies."""
    B, T, C = x.shape
    H, Hkv, D = layer.n_head, getattr(layer, "n_kv_head", layer.n_head), layer.head_dim
    q, k, v = layer.c_attn(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
    q = q.view(B, T, H, D).transpose(1, 2)
    k = k.view(B, T, Hkv, D).transpose(1, 2)
    v = v.view(B, T, Hkv, D).transpose(1, 2)
    if getattr(layer, "q_norm", None) is not None:
        q = rms_norm(q, layer.q_norm.weight, layer.q_norm.eps)
        k = rms_norm(k, layer.k_norm.weight, layer.k_norm.eps)
    if getattr(layer, "rope", None) is not None:
        q, k = layer.rope(q), layer.rope(k)
    k = k.repeat_interleave(H // Hkv, dim=1)  # query head h reads key/value head h // (H/Hkv)
    v = v.repeat_interleave(H // Hkv, dim=1)
    y = scaled_dot_product_attention(q, k, v, causal_mask(T, dtype=x.dtype))
    return layer.c_proj(y.transpose(1, 2).reshape(B, T, C))


def to_mha(layer: CausalSelfAttention) -> nn.MultiheadAttention:
    C = layer.c_proj.in_features
    bias = layer.c_attn.bias is not None
    mha = nn.MultiheadAttention(C, layer.n_head, bias=bias, batch_first=True)
    mha = mha.to(layer.c_attn.weight.dtype).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.c_attn.weight)
        mha.out_proj.weight.copy_(layer.c_proj.weight)
        if bias:
            mha.in_proj_bias.copy_(layer.c_attn.bias)
            mha.out_proj.bias.copy_(layer.c_proj.bias)
    return mha


# ---- the mask and the formula --------------------------------------------------------------


def test_causal_mask_is_zero_on_and_below_the_diagonal():
    for T in (1, 2, 5):
        m = causal_mask(T)
        assert m.shape == (T, T)
        for i in range(T):
            for j in range(T):
                assert (m[i, j] == 0) if j <= i else (m[i, j] == float("-inf"))


def test_the_last_rows_of_a_mask_put_queries_at_the_end():
    m = causal_mask(5)[3:]  # queries at positions 3 and 4 of 5, as the cache's attention uses
    torch.testing.assert_close(m[:, :4], torch.zeros(2, 4))
    assert m[0, 4] == float("-inf") and m[1, 4] == 0
    torch.testing.assert_close(causal_mask(3, dtype=torch.float64), causal_mask(3).double())


def test_chapter_3s_layer_is_the_models_layer_without_a_cache():
    config = GPTConfig(n_embd=32, n_head=4, block_size=16)
    torch.manual_seed(0)
    plain = CausalSelfAttention(config).double().eval()
    cached = make_attention(config).double().eval()
    assert type(cached) is CachedSelfAttention
    cached.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(cached(x), plain(x), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(cached(x[:, :1]), plain(x[:, :1]), atol=1e-12, rtol=1e-12)


def test_formula_by_hand_on_two_tokens():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    v = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    y = scaled_dot_product_attention(q, k, v, causal_mask(2))
    # row 0 sees only key 0; row 1 scores (2, 2)/sqrt(2): equal weights
    torch.testing.assert_close(y, torch.tensor([[10.0, 0.0], [5.0, 5.0]]))
    y_open = scaled_dot_product_attention(q, k, v)  # no mask: row 0 scores (1, 0)/sqrt(2)
    w0 = torch.softmax(torch.tensor([1.0, 0.0]) / math.sqrt(2), dim=0)
    torch.testing.assert_close(y_open[0], w0 @ v)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 4), T_q=st.integers(1, 9), extra=st.integers(0, 4),
       D=st.integers(1, 16), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_formula_equals_torch_sdpa(B, H, T_q, extra, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    T_k = T_q + extra
    q = torch.randn(B, H, T_q, D, generator=g).to(dtype)
    k = torch.randn(B, H, T_k, D, generator=g).to(dtype)
    v = torch.randn(B, H, T_k, D + 1, generator=g).to(dtype)
    mask = causal_mask(T_k, dtype=dtype)[extra:]  # the queries are the last T_q positions
    ours = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               **TOL[dtype])
    if T_q == T_k:
        torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                   **TOL[dtype])
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v),
                               F.scaled_dot_product_attention(q, k, v), **TOL[dtype])


def test_attention_weights_rows_sum_to_one_and_ignore_the_future():
    q, k = torch.randn(6, 8), torch.randn(6, 8)
    eye = torch.eye(6)  # with V = I the output *is* the weight matrix
    w = scaled_dot_product_attention(q, k, eye, causal_mask(6))
    torch.testing.assert_close(w.sum(-1), torch.ones(6))
    assert torch.all(w.triu(1) == 0)


# ---- the layer against the three references ------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 12), head_dim=st.sampled_from([2, 4, 8]),
       n_head=st.integers(1, 4), bias=st.booleans(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_layer_equals_formula_and_multihead_attention(B, T, head_dim, n_head, bias, dtype, seed):
    layer = make_layer(n_head * head_dim, n_head, dtype=dtype, seed=seed, bias=bias)
    x = torch.randn(B, T, n_head * head_dim, generator=torch.Generator().manual_seed(seed))
    x = x.to(dtype)
    with torch.no_grad():
        y = layer(x)
        assert y.shape == x.shape and y.dtype == dtype
        torch.testing.assert_close(y, by_hand(layer, x), **TOL[dtype])
        mha = to_mha(layer)
        y_mha, _ = mha(x, x, x, attn_mask=causal_mask(T, dtype=dtype), need_weights=False)
        torch.testing.assert_close(y, y_mha, **TOL[dtype])
        # MultiheadAttention's slow path (need_weights=True) builds the weights explicitly
        y_slow, w = mha(x, x, x, attn_mask=causal_mask(T, dtype=dtype),
                        average_attn_weights=False)
        torch.testing.assert_close(y, y_slow, **TOL[dtype])
        assert w.shape == (B, n_head, T, T) and torch.all(w.triu(1) == 0)


def test_layer_gradients_equal_multihead_attention():
    layer = make_layer(24, 3, dtype=torch.float64)
    mha = to_mha(layer)
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    y, _ = mha(x, x, x, attn_mask=causal_mask(7, dtype=torch.float64), is_causal=True,
               need_weights=False)
    y.pow(2).sum().backward()
    torch.testing.assert_close(layer.c_attn.weight.grad, mha.in_proj_weight.grad)
    torch.testing.assert_close(layer.c_attn.bias.grad, mha.in_proj_bias.grad)
    torch.testing.assert_close(layer.c_proj.weight.grad, mha.out_proj.weight.grad)


@pytest.mark.parametrize("n_head,n_kv_head", [(4, 1), (4, 2), (6, 3), (6, 2), (4, 4)])
def test_grouped_query_attention_equals_repeated_keys(n_head, n_kv_head):
    layer = make_layer(8 * n_head, n_head, dtype=torch.float64, n_kv_head=n_kv_head)
    assert layer.n_kv_head == n_kv_head
    assert layer.c_attn.out_features == (n_head + 2 * n_kv_head) * 8
    x = torch.randn(2, 9, 8 * n_head, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), by_hand(layer, x))


@pytest.mark.parametrize("options", [dict(pos_encoding="rope"), dict(qk_norm=True),
                                     dict(pos_encoding="rope", qk_norm=True, n_kv_head=2,
                                          bias=False)])
def test_rope_and_qk_norm_paths_equal_the_formula(options):
    layer = make_layer(32, 4, dtype=torch.float64, **options)
    assert (layer.rope is not None) == (options.get("pos_encoding") == "rope")
    assert (layer.q_norm is not None) == options.get("qk_norm", False)
    if layer.q_norm is not None:  # non-trivial norm weights
        with torch.no_grad():
            layer.q_norm.weight.uniform_(0.5, 1.5)
            layer.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), by_hand(layer, x))


# ---- causality -----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(), dict(pos_encoding="rope", n_kv_head=2),
                                     dict(qk_norm=True)])
def test_changing_a_future_token_leaves_earlier_outputs_unchanged(options):
    layer = make_layer(32, 4, dtype=torch.float64, **options)
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    for j in (0, 5, 11):
        x2 = x.clone()
        x2[:, j] += torch.randn(2, 32, dtype=torch.float64)
        with torch.no_grad():
            y, y2 = layer(x), layer(x2)
        assert torch.equal(y[:, :j], y2[:, :j])  # bit for bit: the future is masked out
        assert (y[:, j:] - y2[:, j:]).abs().amax(dim=-1).min() > 0  # position j onwards moved


def test_gradient_of_an_early_output_does_not_reach_later_inputs():
    layer = make_layer(16, 2, dtype=torch.float64)
    x = torch.randn(1, 8, 16, dtype=torch.float64, requires_grad=True)
    layer(x)[0, 3].sum().backward()
    assert torch.all(x.grad[0, 4:] == 0)
    assert torch.all(x.grad[0, :4].abs().sum(-1) > 0)


# ---- dropout, train and eval ---------------------------------------------------------------


def test_dropout_acts_in_train_mode_only():
    layer = make_layer(32, 4, dropout=0.5)
    x = torch.randn(2, 10, 32)
    no_dropout = make_layer(32, 4, dropout=0.0)  # same seed: same weights
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), no_dropout(x))
        torch.testing.assert_close(layer(x), layer(x))
        layer.train()
        torch.manual_seed(1)
        a = layer(x)
        torch.manual_seed(1)
        b = layer(x)
        c = layer(x)
    torch.testing.assert_close(a, b)  # the same random numbers give the same output
    assert not torch.allclose(a, c)  # new random numbers, a different output
    assert not torch.allclose(a, no_dropout(x))


def test_causality_holds_in_train_mode_with_dropout():
    layer = make_layer(32, 4, dtype=torch.float64, dropout=0.3).train()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 6] += 1.0
    with torch.no_grad():
        torch.manual_seed(7)
        y = layer(x)
        torch.manual_seed(7)
        y2 = layer(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])


def test_train_mode_without_dropout_equals_eval():
    layer = make_layer(32, 4, dropout=0.0)
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        y_eval = layer(x)
        y_train = layer.train()(x)
    torch.testing.assert_close(y_eval, y_train)


# ---- the key/value cache -------------------------------------------------------------------


def chunked(layer: CachedSelfAttention, x: torch.Tensor, sizes: list[int],
            max_len: int | None = None) -> torch.Tensor:
    B, T, _ = x.shape
    cache = KVCache(B, max_len or T)
    outs, start = [], 0
    for n in sizes:
        outs.append(layer(x[:, start:start + n], cache))
        start += n
        assert len(cache) == start
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("options", [dict(), dict(pos_encoding="rope"), dict(n_kv_head=1),
                                     dict(qk_norm=True, n_kv_head=2, pos_encoding="rope")])
@pytest.mark.parametrize("sizes", [[1] * 10, [3, 3, 4], [10], [4, 1, 1, 4], [1, 9]])
def test_cache_fed_in_pieces_equals_the_full_sequence(options, sizes):
    layer = make_layer(32, 4, dtype=torch.float64, **options)
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(chunked(layer, x, sizes, max_len=16), layer(x))


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_cache_any_chunking_float32(sizes, seed):
    layer = make_layer(16, 2, seed=seed, pos_encoding="rope", block_size=32)
    x = torch.randn(1, sum(sizes), 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(chunked(layer, x, sizes), layer(x), **TOL[torch.float32])


def test_cache_memory_is_allocated_once_and_filled_in_place():
    cache = KVCache(2, 8)
    assert cache.k is None and len(cache) == 0 and cache.max_len == 8  # allocated when used
    k0, v0 = torch.randn(2, 3, 5, 4, dtype=torch.float64), torch.randn(2, 3, 5, 4)
    k, v = cache.update(k0, v0)
    assert cache.k.shape == cache.v.shape == (2, 3, 8, 4) and cache.k.dtype == torch.float64
    assert cache.length == 5 and k.shape == (2, 3, 5, 4)
    assert k.data_ptr() == cache.k.data_ptr()  # a view of the preallocated memory
    k1 = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    k, v = cache.update(k1, k1.float())
    torch.testing.assert_close(k, torch.cat([k0, k1], dim=2))
    torch.testing.assert_close(v, torch.cat([v0, k1.float()], dim=2))


def test_cache_overflow_is_refused():
    cache = KVCache(1, 4)
    cache.update(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    with pytest.raises(AssertionError, match="holds 4 positions, 5 needed"):
        cache.update(torch.ones(1, 2, 2, 8), torch.ones(1, 2, 2, 8))
    assert cache.length == 3 and not cache.k.any() and not cache.v.any()  # nothing changed
    k, v = cache.update(torch.ones(1, 2, 1, 8), torch.ones(1, 2, 1, 8))  # the last one fits
    assert cache.length == 4 and k.shape == v.shape == (1, 2, 4, 8)


# ---- grouped-query attention and QK-norm, against multi-head attention ---------------------


def test_as_many_kv_heads_as_query_heads_is_multi_head_attention():
    mha = make_layer(n_kv_head=None)
    gqa = make_layer(seed=99, n_kv_head=4)
    gqa.load_state_dict(mha.state_dict())  # same fused layout, same shapes
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(gqa(x), mha(x))


def test_gqa_is_multi_head_attention_with_shared_key_value_heads():
    """A GQA layer equals the MHA layer whose key/value weights repeat each group's head."""
    gqa = make_layer(n_kv_head=2)
    mha = make_layer(seed=3)
    H, KV, hd, C = 4, 2, 8, 32
    state = gqa.state_dict()
    for key in ("c_attn.weight", "c_attn.bias"):
        w = state[key]
        q, k, v = w.split([H * hd, KV * hd, KV * hd], dim=0)
        k = k.reshape(KV, hd, *k.shape[1:]).repeat_interleave(H // KV, dim=0)
        v = v.reshape(KV, hd, *v.shape[1:]).repeat_interleave(H // KV, dim=0)
        state[key] = torch.cat([q, k.reshape(H * hd, *w.shape[1:]),
                                v.reshape(H * hd, *w.shape[1:])], dim=0)
    mha.load_state_dict(state)
    assert mha.c_attn.weight.shape == (3 * C, C)
    x = torch.randn(2, 12, C)
    with torch.no_grad():
        torch.testing.assert_close(gqa(x), mha(x))
    size = lambda layer: sum(p.numel() for p in layer.parameters())  # noqa: E731
    assert size(gqa) == size(mha) - 2 * (H - KV) * hd * (C + 1)  # fewer key/value rows


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    torch.manual_seed(9)
    attn = GroupedQueryAttention(small(qk_norm=True, bias=False, pos_encoding="rope")).eval()
    x = torch.randn(2, 8, SMALL["n_embd"])
    before = attn(x)
    qk_rows = 2 * SMALL["n_embd"]  # queries and keys; values untouched
    with torch.no_grad():
        attn.c_attn.weight[:qk_rows] *= 25.0
    torch.testing.assert_close(attn(x), before, atol=1e-4, rtol=1e-3)  # up to eps
    plain = make_attention(small(bias=False)).eval()
    with torch.no_grad():
        plain.c_attn.weight.copy_(attn.c_attn.weight)
        plain.c_proj.weight.copy_(attn.c_proj.weight)
    assert not torch.allclose(plain(x), before, atol=1e-3)


def test_options_make_their_parts():
    plain = make_layer()
    assert type(plain) is CachedSelfAttention and plain.n_head == 4 and plain.head_dim == 8
    assert type(make_layer(n_kv_head=4)) is GroupedQueryAttention
    gqa = make_layer(n_kv_head=2)
    assert gqa.rope is None and gqa.q_norm is None and gqa.k_norm is None and gqa.n_kv_head == 2
    rope = make_layer(pos_encoding="rope", block_size=16)
    assert rope.rope is not None and rope.rope.cos.shape == (16, 4)  # a table for block_size
    qk = make_layer(qk_norm=True, norm_eps=1e-3)
    assert qk.q_norm.weight.shape == qk.k_norm.weight.shape == (8,)  # one gain per head dim
    assert qk.q_norm.eps == qk.k_norm.eps == 1e-3
    assert make_layer(bias=False).c_attn.bias is None

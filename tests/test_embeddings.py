"""Tests for buildllm.embeddings: the formulas against plain numpy, the properties the chapter
"Embeddings and positional encoding" claims, RoPE against a complex-number version, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from buildllm.embeddings import (
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    inverse_frequencies,
    one_hot_embedding,
    rotate_pairs,
    sinusoidal_encoding,
    sinusoidal_shift_matrix,
)

even_dims = st.integers(1, 64).map(lambda n: 2 * n)


def reference_pe(n_positions: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """The paper's formula, written the obvious way, one cell at a time, in float64."""
    pe = np.zeros((n_positions, d_model))
    for pos in range(n_positions):
        for i in range(d_model // 2):
            angle = pos / base ** (2 * i / d_model)
            pe[pos, 2 * i] = np.sin(angle)
            pe[pos, 2 * i + 1] = np.cos(angle)
    return pe


# ---- token embeddings -----------------------------------------------------------------------

def test_one_hot_times_matrix_is_the_lookup():
    torch.manual_seed(0)
    table = nn.Embedding(11, 6)
    ids = torch.randint(0, 11, (3, 5))
    out = one_hot_embedding(ids, table.weight)
    assert out.shape == (3, 5, 6)
    torch.testing.assert_close(out, table(ids))
    torch.testing.assert_close(out[1, 2], table.weight[ids[1, 2]])


def test_one_hot_embedding_takes_integer_ids_only():
    w = torch.randn(4, 3)
    with pytest.raises(AssertionError, match="ids are token ids, integers, not torch.float32"):
        one_hot_embedding(torch.tensor([0.0, 1.0]), w)
    ids32 = torch.tensor([[3, 0, 2]], dtype=torch.int32)  # as buildllm.train's splits hold them
    torch.testing.assert_close(one_hot_embedding(ids32, w), w[ids32])
    for bad in ([0, 4], [-1, 2]):  # out of the table: F.one_hot says so
        with pytest.raises(RuntimeError, match="Class values must be"):
            one_hot_embedding(torch.tensor(bad), w)


# ---- the sinusoidal formula -----------------------------------------------------------------

@pytest.mark.parametrize("n_positions, d_model", [(1, 2), (8, 4), (50, 16), (300, 64), (64, 512)])
def test_sinusoidal_matches_independent_float64_formula(n_positions, d_model):
    expected = reference_pe(n_positions, d_model)
    got64 = sinusoidal_encoding(n_positions, d_model, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got64, expected, rtol=0, atol=1e-12)
    got32 = sinusoidal_encoding(n_positions, d_model)
    assert got32.dtype == torch.float32 and got32.shape == (n_positions, d_model)
    np.testing.assert_allclose(got32.numpy(), expected, rtol=0, atol=1e-6)


def test_other_base_and_inverse_frequencies():
    np.testing.assert_allclose(
        sinusoidal_encoding(20, 8, base=100.0, dtype=torch.float64).numpy(),
        reference_pe(20, 8, base=100.0), rtol=0, atol=1e-12)
    d = 10
    expected = np.array([1 / 10000.0 ** (2 * i / d) for i in range(d // 2)])
    np.testing.assert_allclose(inverse_frequencies(d).numpy(), expected, rtol=1e-14)


def test_float32_result_stays_accurate_at_large_positions():
    # Angles are formed in float64; forming them in float32 loses ~1e-3 at pos 10^4.
    pos = 20000
    got = sinusoidal_encoding(pos + 1, 8)[pos].double().numpy()
    np.testing.assert_allclose(got, reference_pe(pos + 1, 8)[pos], rtol=0, atol=1e-6)


def test_module_returns_rows_of_the_table():
    module = SinusoidalPositionalEncoding(32, 16)
    positions = torch.tensor([0, 5, 31, 5])
    torch.testing.assert_close(module(positions), sinusoidal_encoding(32, 16)[positions])
    assert not list(module.parameters()), "the sinusoidal table must not be trained"
    assert "pe" not in module.state_dict(), "a fixed table need not be saved"


# ---- the three properties -------------------------------------------------------------------

@pytest.mark.parametrize("d_model", [16, 64, 128])
def test_every_position_is_distinct(d_model):
    n = 512
    pe = sinusoidal_encoding(n, d_model, dtype=torch.float64)
    dist = torch.cdist(pe, pe)
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 1e-2


@settings(max_examples=40, deadline=None)
@given(d=even_dims, k=st.integers(0, 300))
def test_dot_product_depends_only_on_offset(d, k):
    pe = sinusoidal_encoding(400 + k, d, dtype=torch.float64)
    dots = (pe[: 400] * pe[k : 400 + k]).sum(-1)  # PE(pos) . PE(pos + k) for pos = 0..399
    # sin a sin b + cos a cos b = cos(a - b), summed over the pairs:
    expected = torch.cos(k * inverse_frequencies(d)).sum()
    torch.testing.assert_close(dots, expected.expand_as(dots), rtol=0, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(d=even_dims, k=st.integers(-50, 300))
def test_shift_is_a_fixed_rotation(d, k):
    n = 100
    pe = sinusoidal_encoding(n + abs(k) + 1, d, dtype=torch.float64)
    M = sinusoidal_shift_matrix(k, d)
    start = max(0, -k)
    torch.testing.assert_close(pe[start + k : start + k + n], pe[start : start + n] @ M.T,
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(M @ M.T, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-12)
    # Shifting by k then by 3 is shifting by k + 3.
    torch.testing.assert_close(sinusoidal_shift_matrix(3, d) @ M,
                               sinusoidal_shift_matrix(k + 3, d), rtol=0, atol=1e-10)


# ---- RoPE -----------------------------------------------------------------------------------

def rope_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoFormer's view: pair (x_2i, x_2i+1) is the complex x_2i + j x_2i+1, times e^(j m w_i)."""
    d = x.size(-1)
    freqs = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    z = z * torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64),
                        positions.double()[:, None] * freqs)
    return torch.view_as_real(z).flatten(-2)


def test_rope_matches_complex_multiplication():
    torch.manual_seed(0)
    rope = RotaryEmbedding(16, 64)
    x = torch.randn(2, 3, 10, 16)
    torch.testing.assert_close(rope(x, offset=7).double(), rope_complex(x, torch.arange(7, 17)),
                               rtol=0, atol=1e-5)


def test_rope_offset_equals_slice_of_full_sequence_and_keeps_norms():
    torch.manual_seed(1)
    rope = RotaryEmbedding(8, 32)
    x = torch.randn(1, 2, 20, 8)
    full = rope(x)
    torch.testing.assert_close(rope(x[:, :, 12:], offset=12), full[:, :, 12:])
    torch.testing.assert_close(full.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(full[:, :, 0], x[:, :, 0])  # position 0: no rotation


def test_rope_scores_depend_only_on_relative_offset():
    torch.manual_seed(2)
    d, n = 32, 64
    rope = RotaryEmbedding(d, n)
    q, k = torch.randn(d), torch.randn(d)
    # The same q and k placed at every position: rq[m] is q at position m.
    rq = rope(q.expand(1, 1, n, d))[0, 0]
    rk = rope(k.expand(1, 1, n, d))[0, 0]
    scores = rq @ rk.T  # scores[m, n] = <q at m, k at n>
    for offset in (-20, -3, 0, 1, 5, 40):
        diag = torch.diagonal(scores, offset=-offset)  # every (m, n) with m - n = offset
        torch.testing.assert_close(diag, diag[0].expand_as(diag), rtol=0, atol=1e-4)
    assert not torch.allclose(scores[10, 5], scores[10, 6]), "scores must depend on the offset"


def test_rotate_pairs_by_quarter_turn():
    x = torch.tensor([1.0, 0.0, 0.0, 2.0])
    out = rotate_pairs(x[None], torch.zeros(1, 2), torch.ones(1, 2))[0]
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, -2.0, 0.0]))


# ---- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 7, 63])
def test_an_odd_dimension_is_a_clear_error(d):
    """Sin and cos (and RoPE's rotations) come in pairs; every user gets the message from
    inverse_frequencies."""
    for make in (inverse_frequencies, lambda d: sinusoidal_encoding(4, d),
                 lambda d: sinusoidal_shift_matrix(1, d), lambda d: RotaryEmbedding(d, 10)):
        with pytest.raises(AssertionError, match=f"dimension must be even .*got {d}"):
            make(d)


def test_rope_past_its_table_is_refused():
    rope = RotaryEmbedding(8, 10)
    assert rope(torch.randn(1, 1, 3, 8), offset=7).shape == (1, 1, 3, 8)  # positions 7..9: fine
    with pytest.raises(AssertionError, match="max_positions"):
        rope(torch.randn(1, 1, 3, 8), offset=8)
    with pytest.raises(AssertionError, match="max_positions"):
        rope(torch.randn(1, 1, 11, 8))


def test_an_empty_table():
    assert sinusoidal_encoding(0, 8).shape == (0, 8)

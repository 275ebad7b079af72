"""buildllm.linear: the few-rows product equals F.linear, and Linear is nn.Linear but faster
for the few rows of generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from buildllm import linear
from buildllm.linear import FEW_ROWS, Linear, few_rows_linear


@settings(max_examples=200, deadline=None)
@given(lead=st.lists(st.integers(1, 5), min_size=0, max_size=3), n_in=st.integers(1, 40),
       n_out=st.integers(1, 40), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_few_rows_linear_equals_f_linear(lead, n_in, n_out, bias, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n_in, generator=g)
    w = torch.randn(n_out, n_in, generator=g)
    b = torch.randn(n_out, generator=g) if bias else None
    y = few_rows_linear(x, w, b)
    assert y.shape == F.linear(x, w, b).shape and y.is_contiguous()
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_few_rows_path():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, requires_grad=True)
    w = torch.randn(5, 8, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    few_rows_linear(x, w, b).square().sum().backward()
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    F.linear(x, w, b).square().sum().backward()
    for got, t in zip(grads, (x, w, b)):
        torch.testing.assert_close(got, t.grad)


def test_linear_is_nn_linear_with_the_same_parameters():
    torch.manual_seed(0)
    ours = Linear(6, 4)
    ref = nn.Linear(6, 4)
    ref.load_state_dict(ours.state_dict())
    assert isinstance(ours, nn.Linear) and repr(ours) == repr(ref)
    assert list(ours.state_dict()) == ["weight", "bias"]
    for rows in (1, 2, FEW_ROWS, FEW_ROWS + 1, 100):
        x = torch.randn(rows, 6)
        torch.testing.assert_close(ours(x), ref(x))
    one = torch.randn(6)  # a single vector, no batch dimension
    assert ours(one).shape == (4,)
    torch.testing.assert_close(ours(one), ref(one))
    assert ours(torch.randn(0, 6)).shape == (0, 4)


@pytest.mark.parametrize("rows, fast", [(1, True), (7, True), (FEW_ROWS, True),
                                        (FEW_ROWS + 1, False), (512, False)])
def test_linear_takes_the_few_rows_path_only_for_few_rows(monkeypatch, rows, fast):
    calls = []
    real = linear.few_rows_linear
    monkeypatch.setattr(linear, "few_rows_linear", lambda *a: calls.append(1) or real(*a))
    layer = Linear(8, 3)
    layer(torch.randn(rows, 8))
    assert bool(calls) == fast

"""buildllm.config: GPTConfig's defaults (GPT-2 small), its derived sizes, every size check (the
layers no longer check their sizes themselves), the JSON round trip, and the presets."""

from __future__ import annotations

import pytest

from buildllm.config import PRESETS, GPTConfig, preset
from shared import SMALL, small

# ---- defaults and derived sizes ----------------------------------------------------------------


def test_defaults_are_gpt2_small():
    cfg = GPTConfig()
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (
        50257, 1024, 12, 12, 768)
    assert (cfg.pos_encoding, cfg.norm, cfg.mlp) == ("learned", "layernorm", "gelu")
    assert cfg.n_kv_head is None and not cfg.qk_norm and cfg.tie_weights and cfg.bias
    assert cfg.hidden_dim == 4 * cfg.n_embd
    assert preset("gpt2") == cfg


def test_head_sizes():
    cfg = small()
    assert cfg.head_dim == SMALL["n_embd"] // SMALL["n_head"] == 8
    assert cfg.kv_heads == SMALL["n_head"]  # None: one key/value head per query head
    assert small(n_kv_head=2).kv_heads == 2
    assert small(n_kv_head=1).kv_heads == 1


def test_hidden_dim():
    assert small().hidden_dim == 4 * 32
    assert small(mlp="relu").hidden_dim == 4 * 32
    assert small(mlp_hidden=50).hidden_dim == 50
    assert small(mlp="swiglu", mlp_hidden=50).hidden_dim == 50  # an explicit width wins


@pytest.mark.parametrize("n_embd", [32, 128, 384, 768, 4096])
def test_swiglu_hidden_size_keeps_the_parameter_count(n_embd):
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=n_embd,
                    mlp="swiglu", bias=False)
    hidden = cfg.hidden_dim
    assert hidden % 64 == 0
    assert 8 * n_embd / 3 <= hidden < 8 * n_embd / 3 + 64  # 2/3 of 4 C, rounded up to 64
    swiglu, gelu = 3 * n_embd * hidden, 2 * n_embd * 4 * n_embd
    assert abs(swiglu / gelu - 1) <= 3 * 64 / (8 * n_embd)  # only the rounding differs


# ---- checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("norm", "batchnorm"), ("mlp", "swish"),
                                         ("mlp", "tanh"), ("pos_encoding", "alibi")])
def test_unknown_choices_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"{field} must be one of .*'{value}'"):
        small(**{field: value})


@pytest.mark.parametrize("field", ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"])
@pytest.mark.parametrize("value", [0, -1, 2.0, "4", True, None])
def test_sizes_must_be_positive_ints(field, value):
    """A bool is an int to Python, but ``n_layer=True`` is a mistake, not one layer."""
    with pytest.raises(ValueError, match=f"{field} must be a positive integer, got {value!r}"):
        small(**{field: value})


@pytest.mark.parametrize("value", [1.0, -0.1, "0.1", True])
def test_dropout_must_be_in_zero_one(value):
    with pytest.raises(ValueError, match="dropout must be in"):
        small(dropout=value)
    assert small(dropout=0.5).dropout == 0.5 and small(dropout=0).dropout == 0


def test_n_embd_not_divisible_by_n_head_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPTConfig(n_embd=30, n_head=4)


@pytest.mark.parametrize("n_head,n_kv_head", [(6, 4), (4, 3), (4, 8), (4, 0), (4, -2), (4, True),
                                              (4, 2.0)])
def test_n_head_not_a_multiple_of_n_kv_head_is_a_clear_error(n_head, n_kv_head):
    with pytest.raises(ValueError, match=rf"n_head \({n_head}\) must be a multiple of "
                                         rf"n_kv_head \({n_kv_head}\)"):
        GPTConfig(n_embd=8 * n_head, n_head=n_head, n_kv_head=n_kv_head)


@pytest.mark.parametrize("n_kv_head", [None, 1, 2, 4])
def test_every_divisor_of_n_head_is_a_valid_n_kv_head(n_kv_head):
    assert small(n_kv_head=n_kv_head).n_kv_head == n_kv_head


def test_rope_needs_an_even_head_dim_and_sinusoidal_an_even_width():
    with pytest.raises(ValueError, match="rope positions pair .* head_dim must be even, got 3"):
        GPTConfig(n_embd=12, n_head=4, pos_encoding="rope")
    assert GPTConfig(n_embd=12, n_head=4, pos_encoding="sinusoidal").head_dim == 3
    with pytest.raises(ValueError, match="sinusoidal positions pair .* n_embd must be even"):
        GPTConfig(n_embd=9, n_head=3, pos_encoding="sinusoidal")
    assert GPTConfig(n_embd=12, n_head=4).head_dim == 3  # learned positions: any head_dim


# ---- the JSON round trip -----------------------------------------------------------------------


def test_config_round_trip():
    for c in (small(mlp="relu", dropout=0.1), small(**{"pos_encoding": "rope", "n_kv_head": 2,
                                                       "qk_norm": True, "mlp_hidden": 40})):
        assert GPTConfig.from_dict(c.to_dict()) == c


def test_from_dict_names_unknown_fields_and_refuses_what_is_not_a_dict():
    c = small()
    with pytest.raises(ValueError, match=r"unknown GPTConfig field\(s\) \['bogus'\]; known: "):
        GPTConfig.from_dict({**c.to_dict(), "bogus": 1})
    for not_a_dict in ([1, 2], "book", None, 3):
        with pytest.raises(ValueError, match=f"JSON object of fields, got "
                                             f"{type(not_a_dict).__name__}"):
            GPTConfig.from_dict(not_a_dict)
    with pytest.raises(ValueError, match="n_layer"):  # the checks run on loaded configs too
        GPTConfig.from_dict({**c.to_dict(), "n_layer": 0})


# ---- presets -----------------------------------------------------------------------------------


def test_presets():
    assert set(PRESETS) >= {"gpt2", "book", "llama"}
    for name in PRESETS:
        assert isinstance(preset(name), GPTConfig)  # every preset builds a valid config
    book = preset("book")
    assert (book.vocab_size, book.block_size, book.n_layer, book.n_head, book.n_embd) == (
        1024, 128, 4, 4, 128)
    assert preset("book", n_layer=2).n_layer == 2
    assert PRESETS["book"].n_layer == 4  # an override does not change the table
    assert not book.bias  # the book's model, as its recipe trains it
    with pytest.raises(ValueError, match=r"unknown preset 'gpt3'; choose one of \["):
        preset("gpt3")
    with pytest.raises(ValueError, match="n_embd"):  # overrides are checked too
        preset("book", n_embd=130)


def test_llama_preset_turns_every_option_on():
    cfg = preset("llama")
    assert cfg.pos_encoding == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu"
    assert cfg.n_kv_head is not None and cfg.n_kv_head < cfg.n_head
    assert not cfg.bias and not cfg.tie_weights
    assert preset("gpt2").pos_encoding == "learned"  # the GPT-2 preset is untouched


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), "30", True])
def test_logit_softcap_must_be_a_positive_number(value):
    with pytest.raises(ValueError, match=f"logit_softcap must be a positive number, got {value!r}"):
        small(logit_softcap=value)


def test_the_options_of_the_best_recipe_round_trip():
    c = small(mlp="relu2", value_embed=True, logit_softcap=15.0)
    assert GPTConfig.from_dict(c.to_dict()) == c
    assert small(logit_softcap=30).logit_softcap == 30  # an integer cap is a number too

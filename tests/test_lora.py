"""Tests of buildllm.lora: exact start, merging, frozen base, adapter files, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from buildllm import lora
from buildllm.finetune import check_finetune_settings
from buildllm.lora import (
    AdapterError,
    LoRALinear,
    apply_lora,
    load_adapters,
    lora_layers,
    merge_lora,
    save_adapters,
    trainable_parameters,
)
from buildllm.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)


def model(config: GPTConfig = CONFIG, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def ids(batch: int = 2, T: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, CONFIG.vocab_size, (batch, T), generator=g)


def trained_adapters(m: nn.Module, seed: int = 2) -> nn.Module:
    """Give every adapter random values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(m).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)
    return m


@pytest.mark.parametrize("bias", [True, False])
def test_at_initialisation_the_model_is_exactly_the_base(bias):
    config = GPTConfig(**{**CONFIG.to_dict(), "bias": bias})
    base = model(config)
    before = base(ids())[0]
    apply_lora(base, r=4, alpha=8)
    assert len(lora_layers(base)) == 4 * config.n_layer  # c_attn, attn c_proj, c_fc, mlp c_proj
    assert torch.equal(base(ids())[0], before)


def test_lora_linear_computes_w_plus_b_a_scaled():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(5, 3), r=2, alpha=6)
    nn.init.normal_(layer.lora_B)
    assert layer.lora_A.shape == (2, 5) and layer.lora_B.shape == (3, 2)
    assert layer.scaling == 3
    x = torch.randn(4, 7, 5)
    w = layer.base.weight + layer.lora_B @ layer.lora_A * 3
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias)


def test_merged_equals_unmerged():
    m = trained_adapters(apply_lora(model(), r=4, alpha=8))
    unmerged = m(ids())[0]
    merge_lora(m)
    assert not lora_layers(m)
    assert all(type(mod) is nn.Linear for name, mod in m.named_modules() if name.endswith("c_fc"))
    torch.testing.assert_close(m(ids())[0], unmerged, atol=1e-5, rtol=1e-5)


def test_only_adapter_parameters_get_gradients():
    m = apply_lora(model(), r=4, alpha=8, targets=["c_attn"])
    _, loss = m(ids(), ids())
    loss.backward()
    with_grad = {n for n, p in m.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in m.named_parameters() if ".lora_" in n}
    assert with_grad == {f"h.{i}.attn.c_attn.lora_{x}" for i in range(2) for x in "AB"}
    assert trainable_parameters(m) == 2 * 4 * (16 + 48)  # r (in + out) per layer


def test_targets_by_short_or_full_name():
    m = apply_lora(model(), r=2, alpha=2, targets=["h.1.mlp.c_fc", "c_attn"])
    assert sorted(lora_layers(m)) == ["h.0.attn.c_attn", "h.1.attn.c_attn", "h.1.mlp.c_fc"]


@pytest.mark.parametrize("r, alpha, fix", [(0, 16, "r=8"), (-1, 16, "r=8"), (1.5, 16, "r=8"),
                                           (4, 0, "alpha=2*r"), (4, -2.0, "alpha=2*r")])
def test_bad_rank_or_alpha_is_a_value_error_naming_the_fix(r, alpha, fix):
    """Checked where they come in: the settings of a fine-tuning run."""
    with pytest.raises(ValueError, match="LoRA") as e:
        check_finetune_settings("lora", 200, 1e-3, r, alpha)
    assert fix in str(e.value) and repr(r if "rank" in str(e.value) else alpha) in str(e.value)


@pytest.mark.parametrize("r", [0, -1, 17])
def test_a_rank_outside_the_matrices_is_refused(r):
    with pytest.raises(ValueError, match=r"needs 1 <= r <= 16; try r=8"):
        apply_lora(model(), r=r)


def test_a_target_that_matches_nothing_names_the_choices():
    with pytest.raises(ValueError, match="'q_proj' matches no linear layer") as e:
        apply_lora(model(), targets=["q_proj"])
    assert "c_attn" in str(e.value)


def test_a_tied_head_is_refused():
    with pytest.raises(ValueError, match="lm_head"):
        apply_lora(model(), targets=["lm_head"])


def test_save_load_round_trip_writes_only_adapters(tmp_path):
    m = trained_adapters(apply_lora(model(), r=4, alpha=8))
    expected = m(ids())[0]
    folder = save_adapters(m, tmp_path / "adapters")
    assert {p.name for p in folder.iterdir()} == {lora.ADAPTERS, lora.CONFIG}
    config = json.loads((folder / lora.CONFIG).read_text())
    assert config["r"] == 4 and config["alpha"] == 8 and len(config["targets"]) == 8
    from safetensors.torch import load_file

    assert all(".lora_" in k for k in load_file(folder / lora.ADAPTERS))
    fresh = load_adapters(model(), folder)  # the same base, LoRA applied from the config
    assert torch.equal(fresh(ids())[0], expected)


def test_save_without_lora_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="apply_lora"):
        save_adapters(model(), tmp_path / "a")


def test_a_damaged_adapter_file_names_the_file(tmp_path):
    folder = save_adapters(trained_adapters(apply_lora(model(), r=2, alpha=4)), tmp_path / "a")
    data = bytearray((folder / lora.ADAPTERS).read_bytes())
    data[-3] ^= 0xFF
    (folder / lora.ADAPTERS).write_bytes(bytes(data))
    with pytest.raises(AdapterError, match=str(folder / lora.ADAPTERS)):
        load_adapters(model(), folder)


def test_a_damaged_or_missing_config_names_the_file(tmp_path):
    folder = save_adapters(trained_adapters(apply_lora(model(), r=2, alpha=4)), tmp_path / "a")
    (folder / lora.CONFIG).write_text("{not json")
    with pytest.raises(AdapterError, match=f"{folder / lora.CONFIG} is not valid JSON"):
        load_adapters(model(), folder)
    with pytest.raises(AdapterError, match=str(tmp_path / "none" / lora.CONFIG)):
        load_adapters(model(), tmp_path / "none")


def test_adapters_of_another_model_name_the_file(tmp_path):
    folder = save_adapters(trained_adapters(apply_lora(model(), r=2, alpha=4)), tmp_path / "a")
    wider = GPTConfig(**{**CONFIG.to_dict(), "n_embd": 32})
    with pytest.raises(AdapterError, match=f"{folder} were saved from another base model"):
        load_adapters(model(wider), folder)
    other_rank = apply_lora(model(), r=3, alpha=4)
    with pytest.raises(AdapterError, match="belong to another model"):
        load_adapters(other_rank, folder)

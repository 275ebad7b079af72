"""buildllm.convert: our GPT and Hugging Face's GPT-2 give the same logits from the same weights,
in both directions and through a saved folder; bad folders and configurations fail clearly."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from buildllm import convert
from buildllm.config import GPTConfig
from buildllm.model import GPT
from shared import SMALL

V, T, C = SMALL["vocab_size"], SMALL["block_size"], SMALL["n_embd"]


def hf_small(**kw) -> GPT2LMHeadModel:
    """Hugging Face's GPT-2 in the shape of SMALL, written with its own names."""
    torch.manual_seed(1)
    cfg = dict(vocab_size=V, n_positions=T, n_layer=SMALL["n_layer"], n_head=SMALL["n_head"],
               n_embd=C, bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(GPT2Config(**{**cfg, **kw})).eval()


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial norms and biases too (fresh ones are all 1 or 0 and would hide mistakes)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def ids(B: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))


def assert_same_logits(ours: GPT, hf: GPT2LMHeadModel) -> None:
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x)[0], hf.eval()(x).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, dict(activation_function="relu"),
                                dict(tie_word_embeddings=False), dict(n_inner=3 * C)], ids=str)
def test_from_hf_gives_the_same_logits(kw):
    hf = randomized(hf_small(**kw))
    ours = convert.from_hf(hf)
    assert_same_logits(ours, hf)
    assert ours.config.tie_weights == hf.config.tie_word_embeddings


@pytest.mark.parametrize("kw", [{}, dict(mlp="relu"), dict(tie_weights=False),
                                dict(mlp_hidden=3 * C)], ids=str)
def test_to_hf_gives_the_same_logits(kw):
    torch.manual_seed(3)
    ours = randomized(GPT(GPTConfig(**SMALL, **kw)))
    hf = convert.to_hf(ours)
    assert_same_logits(ours, hf)
    assert sum(p.numel() for p in hf.parameters()) == ours.parameter_counts()["total"]


def test_loss_agrees_with_hf():
    hf = randomized(hf_small())
    ours = convert.from_hf(hf).eval()
    x = ids()
    with torch.no_grad():
        # Hugging Face shifts labels inside; ours takes the shifted targets explicitly
        ref = hf(x, labels=x).loss
        _, loss = ours(x[:, :-1], x[:, 1:])
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)


def test_round_trip_keeps_every_weight():
    torch.manual_seed(4)
    ours = randomized(GPT(GPTConfig(**SMALL)))
    back = convert.from_hf(convert.to_hf(ours))
    assert back.config == ours.config
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_save_hf_folder_loads_in_transformers(tmp_path):
    torch.manual_seed(5)
    ours = randomized(GPT(GPTConfig(**SMALL)))
    convert.save_hf(ours, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "m")
    assert_same_logits(ours, hf)
    assert_same_logits(convert.load_hf(tmp_path / "m"), hf)


def test_load_hf_reads_a_save_pretrained_folder(tmp_path):
    for kw in ({}, dict(tie_word_embeddings=False)):
        hf = randomized(hf_small(**kw))
        hf.save_pretrained(tmp_path / str(kw))
        ours = convert.load_hf(tmp_path / str(kw))
        assert not ours.training
        assert_same_logits(ours, hf)


def test_load_hf_accepts_names_without_prefix_and_mask_buffers(tmp_path):
    """The original GPT-2 files name tensors `h.0...` and carry `h.0.attn.bias` mask buffers."""
    hf = randomized(hf_small())
    hf.save_pretrained(tmp_path)
    tensors = {k.removeprefix("transformer."): v for k, v in
               load_file(tmp_path / "model.safetensors").items()}
    tensors["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, T, T))
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert_same_logits(convert.load_hf(tmp_path), hf)


@pytest.fixture
def saved(tmp_path):
    convert.save_hf(GPT(GPTConfig(**SMALL)), tmp_path)
    return tmp_path, load_file(tmp_path / "model.safetensors")


def test_missing_tensor_is_named(saved):
    folder, tensors = saved
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"'transformer\.h\.1\.mlp\.c_fc\.bias' is missing"):
        convert.load_hf(folder)


def test_wrong_shape_is_named(saved):
    folder, tensors = saved
    tensors["transformer.h.0.attn.c_attn.weight"] = torch.zeros(C, 3 * C - 1)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=rf"'transformer\.h\.0\.attn\.c_attn\.weight'.*"
                                         rf"\({C}, {3 * C - 1}\).*\({C}, {3 * C}\)"):
        convert.load_hf(folder)


def test_config_that_does_not_match_weights_is_caught(saved):
    folder, _ = saved
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": V + 1}))
    with pytest.raises(ValueError, match=rf"'transformer\.wte\.weight'.*\({V}, {C}\).*"
                                         rf"\({V + 1}, {C}\)"):
        convert.load_hf(folder)


def test_unexpected_tensor_is_named(saved):
    folder, tensors = saved
    tensors["transformer.h.2.ln_1.weight"] = torch.ones(C)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected tensor 'transformer\.h\.2\.ln_1\.weight'"):
        convert.load_hf(folder)


def test_missing_files(tmp_path):
    with pytest.raises(ValueError, match="config.json does not exist"):
        convert.load_hf(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    (tmp_path / "config.json").write_text(json.dumps(convert.to_hf_config(GPTConfig(**SMALL))))
    with pytest.raises(ValueError, match="model.safetensors does not exist"):
        convert.load_hf(tmp_path)


@pytest.mark.parametrize("kw, name", [
    (dict(pos_encoding="rope"), "pos_encoding"), (dict(pos_encoding="sinusoidal"), "pos_encoding"),
    (dict(norm="rmsnorm"), "norm"), (dict(mlp="swiglu"), "mlp"), (dict(bias=False), "bias"),
    (dict(n_kv_head=2), "n_kv_head"), (dict(qk_norm=True), "qk_norm"),
    (dict(mlp="relu2"), "mlp"), (dict(value_embed=True), "value_embed"),
    (dict(logit_softcap=30.0), "logit_softcap"),
])
def test_non_gpt2_configs_are_refused(kw, name, tmp_path):
    model = GPT(GPTConfig(**SMALL, **kw))
    for f in (convert.to_hf, lambda m: convert.save_hf(m, tmp_path / "x")):
        with pytest.raises(ValueError, match=name):
            f(model)
    assert not (tmp_path / "x").exists()


def test_one_kv_head_per_query_head_is_gpt2():
    model = GPT(GPTConfig(**SMALL, n_kv_head=SMALL["n_head"]))
    assert_same_logits(model, convert.to_hf(model))


@pytest.mark.parametrize("kw, name", [
    (dict(activation_function="gelu"), "activation_function"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(model_type="llama"), "model_type"),
])
def test_non_gpt2_hf_configs_are_refused(kw, name):
    with pytest.raises(ValueError, match=name):
        convert.from_hf_config({**convert.to_hf_config(GPTConfig(**SMALL)), **kw})


def test_config_round_trip():
    for c in (GPTConfig(**SMALL), GPTConfig(**SMALL, mlp="relu", tie_weights=False, dropout=0.1,
                                           mlp_hidden=3 * C, norm_eps=1e-6)):
        assert convert.from_hf_config(convert.to_hf_config(c)) == c
        hf_cfg = GPT2Config(**convert.to_hf_config(c)).to_dict()
        assert convert.from_hf_config(hf_cfg) == c


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Written through a temporary name and a rename, but readable by others: an exported model
    is meant to be shared (safetensors alone would write it 0600)."""
    previous = os.umask(0o022)
    try:
        convert.save_hf(GPT(GPTConfig(**SMALL)), tmp_path / "hf")
    finally:
        os.umask(previous)
    for path in (tmp_path / "hf").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# -- exact copies in the source's dtype ---------------------------------------------------------


def assert_same_weights(ours: GPT, expected: dict[str, torch.Tensor]) -> None:
    """Our model's weights under Hugging Face's names equal ``expected`` bit for bit, dtype
    included."""
    got = convert.to_hf_state_dict(ours)
    assert got.keys() == expected.keys()
    for name, tensor in got.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("kw", [{}, dict(tie_weights=False), dict(mlp="relu", mlp_hidden=3 * C)],
                         ids=str)
def test_conversions_copy_every_weight_exactly_in_its_dtype(kw, dtype, tmp_path):
    """float64 weights are not rounded to float32 on the way (to_hf, from_hf, save_hf, load_hf,
    save_pretrained): every tensor comes back bit for bit, in its own dtype."""
    torch.manual_seed(6)
    ours = randomized(GPT(GPTConfig(**SMALL, **kw)).to(dtype))  # noise below float32's step
    expected = convert.to_hf_state_dict(ours)
    hf = convert.to_hf(ours)
    hf_state = hf.state_dict()
    for name, tensor in expected.items():
        assert hf_state[name].dtype == dtype and torch.equal(hf_state[name], tensor), name
    assert_same_weights(convert.from_hf(hf), expected)
    convert.save_hf(ours, tmp_path / "ours")
    assert_same_weights(convert.load_hf(tmp_path / "ours"), expected)
    hf.save_pretrained(tmp_path / "hf")
    assert_same_weights(convert.load_hf(tmp_path / "hf"), expected)


def test_float64_logits_agree_to_float64_precision():
    """Exact weights: the two models differ only by the order of float64 sums, not by a
    float32 rounding of the weights (about 1e-6 before)."""
    hf = randomized(hf_small().double())
    ours = convert.from_hf(hf)
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits, atol=1e-12, rtol=1e-12)
        back = convert.from_hf(convert.to_hf(ours))
        assert torch.equal(back(x)[0], ours(x)[0])


def test_a_file_of_mixed_dtypes_loads_in_the_dtype_that_holds_each(tmp_path):
    """A half-precision file that keeps its LayerNorms in float32 loads as float32: every
    value exactly as stored."""
    torch.manual_seed(7)
    ours = randomized(GPT(GPTConfig(**SMALL)))
    tensors = {k: (v if ".ln_" in k else v.half())
               for k, v in convert.to_hf_state_dict(ours).items()}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(convert.to_hf_config(ours.config)))
    loaded = convert.load_hf(tmp_path)
    assert_same_weights(loaded, {k: v.float() for k, v in tensors.items()})


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe{}", "config.json is not UTF-8 text"), (b"[1]", "a GPT-2 config is a JSON object"),
    (b'{"n_embd": "32"}', 'n_embd must be an integer, got "32"'),
    (b'{"n_inner": 1.5}', "n_inner must be an integer or null"), (b"{", "is not valid JSON"),
])
def test_a_bad_hf_config_names_the_file(content, words, tmp_path):
    convert.save_hf(GPT(GPTConfig(**SMALL)), tmp_path)
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match=words) as e:
        convert.load_hf(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)


def test_damaged_hf_weights_name_the_file(tmp_path):
    convert.save_hf(GPT(GPTConfig(**SMALL)), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors"):
        convert.load_hf(tmp_path)
    weights.unlink()
    weights.mkdir()
    with pytest.raises(ValueError, match="model.safetensors is a folder, not a file"):
        convert.load_hf(tmp_path)

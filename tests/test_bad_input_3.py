"""Bad input, round three: non-finite weights in every quantizable layer, adapter folders from
bases of other shapes and config fields of every wrong type, fine-tuning numbers at their
bounds, positions outside a sinusoidal table, and the second numeric environment of `make test`.
Each case ends in one clear error (one line and exit status 2 from the command line) with
nothing written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bad_input import KINDS, assert_one_error_line, run_cli, snapshot
from torch import nn

from buildllm import finetune as ft
from buildllm.checkpoint import load_model, save_checkpoint
from buildllm.config import GPTConfig, preset
from buildllm.embeddings import SinusoidalPositionalEncoding
from buildllm.lora import (
    AdapterError,
    apply_lora,
    load_adapters,
    lora_layers,
    read_adapter_config,
    save_adapters,
)
from buildllm.model import GPT
from buildllm.quantize import Int8Linear, quantize_int8, quantize_model
from buildllm.tokenizer import CharTokenizer
from shared import SMALL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from other_cpu_env import other_environment  # noqa: E402

LINEARS = sorted(n for n, m in GPT(GPTConfig(**SMALL, mlp="swiglu", tie_weights=False)
                                   ).named_modules() if isinstance(m, nn.Linear))
BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}

# -- int8: a NaN is refused, never erased -----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(layer=st.sampled_from(LINEARS), bad=st.sampled_from(sorted(BAD)),
       where=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)))
def test_a_non_finite_weight_in_any_layer_is_refused_naming_it(layer, bad, where):
    model = GPT(GPTConfig(**SMALL, mlp="swiglu", tie_weights=False))
    weight = model.get_submodule(layer).weight
    with torch.no_grad():
        weight[where[0] % weight.size(0), where[1] % weight.size(1)] = BAD[bad]
    with pytest.raises(ValueError, match=rf"{layer}\.weight holds NaN or infinite"):
        quantize_model(model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Int8Linear.from_linear(model.get_submodule(layer))
    with pytest.raises(AssertionError, match="NaN or infinity"):
        quantize_int8(weight)


def test_float64_beyond_float32_is_refused():
    w = torch.ones(3, 4, dtype=torch.float64)
    w[1, 2] = 1e300  # infinite once float32
    with pytest.raises(AssertionError, match="beyond float32"):
        quantize_int8(w)
    assert quantize_int8(torch.ones(3, 4, dtype=torch.float64))[0].eq(127).all()


def test_a_non_finite_embedding_or_bias_is_refused_too():
    model = GPT(GPTConfig(**SMALL))
    with torch.no_grad():
        model.h[1].mlp.c_fc.bias[3] = float("nan")
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.bias"):
        quantize_model(model)

# -- LoRA on the model's own parts; adapters and the base they fit ----------------------------


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_default_targets_follow_the_models_parts(name):
    model = GPT(preset(name, **SMALL))
    apply_lora(model)
    adapted = {n.rsplit(".", 1)[-1] for n in lora_layers(model)}
    parts = {"gpt2": {"c_attn", "c_proj", "c_fc"}, "llama": {"c_attn", "c_proj", "gate", "up"}}
    assert adapted == parts[name]
    assert len(lora_layers(model)) == SMALL["n_layer"] * len(parts[name]) + SMALL["n_layer"]


def test_a_classifier_on_the_llama_model_fine_tunes_with_lora():
    clf = ft.prepare(ft.GPTClassifier(GPT(preset("llama", **SMALL)), 3), "lora")
    assert "head" not in " ".join(lora_layers(clf)) and clf.head.weight.requires_grad
    ids = [[1, 2, 3], [4, 5], [6]]
    log = ft.train_classifier(clf, ids, torch.tensor([0, 1, 2]), steps=2, batch_size=2)
    assert log["steps"] == 2


def adapters_of(config: GPTConfig, folder: Path) -> Path:
    model = GPT(config)
    apply_lora(model, r=2)
    return save_adapters(model, folder)


@pytest.mark.parametrize("other", [dict(n_layer=3), dict(n_embd=64), dict(vocab_size=70),
                                   dict(mlp="swiglu"), dict(bias=False)])
def test_adapters_refuse_a_base_of_another_shape(tmp_path, other):
    folder = adapters_of(GPTConfig(**SMALL), tmp_path / "a")
    before = snapshot(tmp_path)
    base = GPT(GPTConfig(**{**SMALL, **other}))
    with pytest.raises(AdapterError, match="saved from another base model"):
        load_adapters(base, folder)
    assert not lora_layers(base) and snapshot(tmp_path) == before


def test_adapters_load_onto_their_own_base(tmp_path):
    folder = adapters_of(GPTConfig(**SMALL), tmp_path / "a")
    model = load_adapters(GPT(GPTConfig(**SMALL)), folder)
    assert len(lora_layers(model)) == 4 * SMALL["n_layer"]
    assert len(read_adapter_config(folder)["base"]) == len(dict(GPT(GPTConfig(**SMALL))
                                                               .named_parameters()))


FIELDS = {"r": {"int"}, "alpha": {"int", "float"}, "targets": {"list"}, "base": {"dict"},
          "sha256": {"str"}}


@settings(max_examples=40, deadline=None)
@given(field=st.sampled_from(sorted(FIELDS)), data=st.data())
def test_an_adapter_config_field_of_the_wrong_type_is_named(tmp_path_factory, field, data):
    folder = adapters_of(GPTConfig(**SMALL), tmp_path_factory.mktemp("a"))
    kind = data.draw(st.sampled_from(sorted(set(KINDS) - FIELDS[field])))
    doc = json.loads((folder / "adapter_config.json").read_text())
    doc[field] = data.draw(KINDS[kind])
    (folder / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(AdapterError, match=rf"adapter_config.json: {field} must be"):
        load_adapters(GPT(GPTConfig(**SMALL)), folder)


def test_a_missing_or_null_field_and_an_old_version_are_named(tmp_path):
    folder = adapters_of(GPTConfig(**SMALL), tmp_path / "a")
    doc = json.loads((folder / "adapter_config.json").read_text())
    for edit, message in [({"targets": None}, "targets must be a list"),
                          ({"targets": [1, 2]}, "targets must be a list of layer names"),
                          ({"version": 1}, "version 1"), ({"base": "x"}, "base must be")]:
        (folder / "adapter_config.json").write_text(json.dumps({**doc, **edit}))
        with pytest.raises(AdapterError, match=message):
            load_adapters(GPT(GPTConfig(**SMALL)), folder)
    (folder / "adapter_config.json").write_text(json.dumps(
        {k: v for k, v in doc.items() if k != "base"}))
    with pytest.raises(AdapterError, match="'base' is missing"):
        load_adapters(GPT(GPTConfig(**SMALL)), folder)


def test_a_rank_beyond_the_narrowest_matrix_is_refused():
    with pytest.raises(ValueError, match="r <= 32"):
        apply_lora(GPT(GPTConfig(**SMALL)), r=33)

# -- the command line at its bounds -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory, tok) -> Path:
    """A checkpoint of a small GPT (16-token context) with a BPE tokenizer."""
    folder = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save_checkpoint(folder, GPT(GPTConfig(**{**SMALL, "vocab_size": tok.vocab_size})), tok)
    return folder


# -- numbers at their bounds, for every command that takes them ------------------------------

OUT = {"finetune": "adapters", "eval": "card.json", "align": "aligned"}
BOUNDS = [("finetune", ("--steps=0",), "steps must be a positive integer"),
          ("finetune", ("--steps=-5",), "steps must be a positive integer"),
          ("finetune", ("--lr=0",), "learning rate must be a positive number"),
          ("finetune", ("--lr=-1e-3",), "learning rate must be a positive number"),
          ("finetune", ("--lr=nan",), "learning rate must be a positive number"),
          ("finetune", ("--lr=inf",), "learning rate must be a positive number"),
          ("finetune", ("--rank=0",), "rank r must be a positive int"),
          ("finetune", ("--rank=-3",), "rank r must be a positive int"),
          ("finetune", ("--alpha=0",), "alpha must be a positive number"),
          ("finetune", ("--alpha=inf",), "alpha must be a positive number"),
          ("finetune", ("--max-tokens=0",), "--max-tokens must be a positive integer"),
          ("eval", ("--prompts=0",), "Settings.prompts must be a positive integer"),
          ("eval", ("--questions=-2",), "Settings.questions must be a positive integer"),
          ("eval", ("--top-k=0",), "Settings.top_k must be a positive integer"),
          ("eval", ("--temperature=-1",), "Settings.temperature must be a number >= 0"),
          ("eval", ("--temperature=nan",), "Settings.temperature must be a number >= 0"),
          ("eval", ("--seed=-1",), "Settings.seed must be an integer >= 0"),
          ("eval", ("--threads=0",), "--threads must be a positive integer"),
          ("align", ("--method", "grpo", "--steps=0"),
           "GRPOSettings.steps must be an integer >= 1"),
          ("align", ("--method", "dpo", "--steps=-3"), "DPOSettings.steps must be an integer >= 1"),
          ("align", ("--method", "dpo", "--lr=0"), "DPOSettings.lr must be a positive number"),
          ("align", ("--method", "grpo", "--lr=nan"), "GRPOSettings.lr must be a positive number"),
          ("align", ("--method", "grpo", "--lr=inf"), "GRPOSettings.lr must be a positive number"),
          ("align", ("--method", "grpo", "--seed=-1"), "GRPOSettings.seed must be an integer >= 0"),
          ("align", ("--method", "best-of-n", "--steps=5"), "use them with --method dpo or grpo"),
          ("align", ("--method", "dpo", "--threads=0"), "--threads must be a positive integer")]


@pytest.mark.parametrize("command, options, message", BOUNDS)
def test_numbers_at_their_bounds_are_one_line(tmp_path, command, options, message):
    out = tmp_path / OUT[command]
    status, _, err = run_cli(command, "--checkpoint", tmp_path / "missing", "--out", out,
                             *options)
    assert message in assert_one_error_line(status, err, command)
    assert not out.exists()  # refused before the checkpoint is even looked for


def test_a_huge_rank_or_context_is_one_line(trained_tiny, tmp_path):
    out = tmp_path / "adapters"
    for option, value, message in [("--rank", "1000000", "r <= 32"),
                                   ("--max-tokens", "100000", "context of 16")]:
        status, _, err = run_cli("finetune", "--checkpoint", trained_tiny, "--steps", "1",
                                 "--out", out, option, value)
        assert message in assert_one_error_line(status, err, "finetune")
        assert not out.exists()


def test_a_task_longer_than_the_context_names_the_option(trained_tiny):
    model, _ = load_model(trained_tiny)
    task = ft.GenreTask([[1] * 20], torch.tensor([0]), [[1] * 3], torch.tensor([0]), 0)
    with pytest.raises(ValueError, match=r"--max-tokens"):
        ft.finetune_classifier(model, task, "head", steps=1)


def test_a_learning_rate_that_blows_up_is_refused(tmp_path):
    clf = ft.prepare(ft.GPTClassifier(GPT(GPTConfig(**SMALL)), 3), "full")
    ids = [[1, 2, 3], [4, 5], [6]]
    with pytest.raises(FloatingPointError, match="lower it"):
        ft.train_classifier(clf, ids, torch.tensor([0, 1, 2]), steps=20, batch_size=2, lr=1e30)

# -- a sinusoidal table says which positions it has -------------------------------------------


@given(position=st.one_of(st.integers(-10**6, -1), st.integers(300, 10**6)))
@settings(max_examples=30, deadline=None)
def test_positions_outside_the_table_are_refused(position):
    table = SinusoidalPositionalEncoding(300, 10)
    with pytest.raises(AssertionError, match=r"0 \.\. 299"):
        table(torch.tensor([0, position]))
    assert table(torch.tensor([0, 299])).shape == (2, 10)

# -- the second numeric environment differs from the first on every CPU -----------------------


@pytest.mark.parametrize("best", ["AVX512", "AVX2"])
def test_the_second_environment_is_never_the_first(best):
    settings_ = dict(w.split("=") for w in other_environment(best).split())
    assert settings_["ATEN_CPU_CAPABILITY"].upper() != best
    assert set(settings_) == {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                              "ONEDNN_MAX_CPU_ISA"}

# -- buildllm eval: its output path and its checkpoint ----------------------------------------



def test_eval_refuses_a_folder_for_its_card_before_any_work(tmp_path):
    (tmp_path / "card").mkdir()
    status, _, err = run_cli("eval", "--checkpoint", tmp_path / "missing", "--out",
                             tmp_path / "card")
    assert "is a folder" in assert_one_error_line(status, err, "eval", tmp_path / "card")


def test_eval_of_a_damaged_checkpoint_is_one_line(trained_tiny, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(trained_tiny, folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    before = snapshot(tmp_path)
    status, _, err = run_cli("eval", "--checkpoint", folder, "--out", tmp_path / "card.json")
    assert_one_error_line(status, err, "eval", "model.safetensors")
    assert snapshot(tmp_path) == before


def test_eval_prints_the_card_and_writes_it(tmp_path, corpus):
    """The card of a character model (any tokenizer works), printed and written as JSON."""
    tokenizer = CharTokenizer(corpus)
    folder = tmp_path / "char"
    save_checkpoint(folder, GPT(GPTConfig(**{**SMALL, "vocab_size": tokenizer.vocab_size})),
                    tokenizer)
    status, out, err = run_cli("eval", "--checkpoint", folder, "--prompts", "6",
                               "--questions", "5", "--out", tmp_path / "card.json")
    assert status == 0, err
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["model"]["tokenizer"] == "char" and card["choice"]["by_total"]["n"] == 5
    assert card["words"]["sampled"]["english_words"]["n"] > 0
    assert "| Bits per character, Tiny Shakespeare validation |" in out

# -- buildllm align: its output folder ---------------------------------------------------------



def test_align_refuses_a_file_for_its_folder_before_any_work(tmp_path):
    (tmp_path / "aligned").write_text("keep me")
    status, _, err = run_cli("align", "--method", "grpo", "--checkpoint", tmp_path / "missing",
                             "--out", tmp_path / "aligned")
    assert_one_error_line(status, err, "align", tmp_path / "aligned")
    assert (tmp_path / "aligned").read_text() == "keep me"

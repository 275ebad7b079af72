"""Conversion between our :class:`~buildllm.model.GPT` and Hugging Face's GPT-2.

Explained in the chapter "The GPT model", where it proves that our model *is* GPT-2: with the
same weights, both give the same logits. With its defaults our model names every parameter as
Hugging Face's ``GPT2LMHeadModel`` does, less the ``transformer.`` prefix, so conversion is a
renaming plus one twist: GPT-2 keeps its linear layers in a ``Conv1D`` module that stores the
weight as ``(in, out)``, the transpose of ``torch.nn.Linear``'s ``(out, in)``.

Four functions, two in memory and two on disk:

- :func:`to_hf` and :func:`from_hf` convert a model object to a ``transformers`` model and back;
- :func:`save_hf` writes a folder in the layout of ``save_pretrained`` (``config.json`` and
  ``model.safetensors``) that ``GPT2LMHeadModel.from_pretrained`` loads, and :func:`load_hf`
  reads such a folder, ours or one written by ``transformers``. Loading never unpickles
  anything: the weights are safetensors.

This module needs ``transformers``, one of the library's reference packages
(``pip install buildllm[reference]``).

Only a GPT-2-shaped configuration converts: learned positions, LayerNorm, a GELU (tanh) or ReLU
feed-forward network, biases, and one key/value head per query head, without QK-norm. Any other
raises a ``ValueError`` that names the option.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from buildllm.checkpoint import common_dtype
from buildllm.config import GPTConfig
from buildllm.files import check_output_folder, check_types, read_file, read_json, write_atomically
from buildllm.model import GPT

PREFIX = "transformer."  # Hugging Face keeps the body under `transformer`, the head beside it
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
IGNORED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older GPT-2 checkpoints
ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu"}  # our `mlp` -> Hugging Face's activation
HF_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
HF_FIELDS = {"model_type": str, "vocab_size": int, "n_positions": int, "n_layer": int,
             "n_head": int, "n_embd": int, "n_inner": int | None, "activation_function": str,
             "resid_pdrop": float, "layer_norm_epsilon": float, "tie_word_embeddings": bool}
FOLDER_FIX = ("a GPT-2 folder holds config.json and model.safetensors (save one with save_hf "
              "or save_pretrained)")


def check_convertible(config: GPTConfig) -> None:
    """Raise ``ValueError`` naming every option of ``config`` that GPT-2 does not have."""
    problems = []
    if config.pos_encoding != "learned":
        problems.append(f"pos_encoding={config.pos_encoding!r} (GPT-2 has 'learned')")
    if config.norm != "layernorm":
        problems.append(f"norm={config.norm!r} (GPT-2 has 'layernorm')")
    if config.mlp not in ACTIVATIONS:
        problems.append(f"mlp={config.mlp!r} (GPT-2 has 'gelu' or 'relu')")
    if not config.bias:
        problems.append("bias=False (GPT-2 has biases)")
    if config.n_kv_head not in (None, config.n_head):
        problems.append(f"n_kv_head={config.n_kv_head} (GPT-2 has one per query head)")
    if config.qk_norm:
        problems.append("qk_norm=True (GPT-2 has no QK-norm)")
    if config.logit_softcap is not None:
        problems.append(f"logit_softcap={config.logit_softcap} (GPT-2 has no soft-capping)")
    if config.value_embed:
        problems.append("value_embed=True (GPT-2 has no value embeddings)")
    if problems:
        raise ValueError(
            "this configuration does not convert to GPT-2: " + "; ".join(problems)
            + ". Use the defaults of GPTConfig for these options."
        )


def to_hf_config(config: GPTConfig) -> dict:
    """The ``config.json`` of Hugging Face's GPT-2 for our ``config``."""
    check_convertible(config)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_inner": config.mlp_hidden,  # None: 4 * n_embd
        "activation_function": ACTIVATIONS[config.mlp],
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": None,  # our tokenizers have no GPT-2 special token ids
        "eos_token_id": None,
    }


def from_hf_config(hf: dict) -> GPTConfig:
    """Our :class:`GPTConfig` for a Hugging Face GPT-2 ``config.json`` (as a dict); a field of
    the wrong type or value is a ``ValueError`` that names it."""
    if not isinstance(hf, dict):
        raise ValueError(f"a GPT-2 config is a JSON object, got {type(hf).__name__}")
    check_types(hf, HF_FIELDS)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"model_type {hf.get('model_type')!r} is not 'gpt2'; only GPT-2 loads")
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ValueError(
            f"activation_function {act!r} has no equal here; use one of {sorted(HF_ACTIVATIONS)}"
        )
    for key, gpt2_value in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx",
                            False), ("add_cross_attention", False)):
        if hf.get(key, gpt2_value) != gpt2_value:
            raise ValueError(f"{key}={hf[key]!r} is not supported; GPT-2 has {gpt2_value!r}")
    n_embd = hf.get("n_embd", 768)
    return GPTConfig(
        vocab_size=hf.get("vocab_size", 50257),
        block_size=hf.get("n_positions", 1024),
        n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12),
        n_embd=n_embd,
        dropout=hf.get("resid_pdrop", 0.1),
        mlp=HF_ACTIVATIONS[act],
        mlp_hidden=None if hf.get("n_inner") in (None, 4 * n_embd) else hf["n_inner"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_weights=hf.get("tie_word_embeddings", True),
    )


def _hf_name(name: str) -> str:
    """Our parameter name -> Hugging Face's: ``h.0.ln_1.weight`` -> ``transformer.h.0...``."""
    return name if name.startswith("lm_head.") else PREFIX + name


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face's names and layouts (``Conv1D`` weights transposed).

    A tied head is left out, as ``save_pretrained`` leaves it out: it *is* the token
    embedding.
    """
    check_convertible(model.config)
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_weights:
            continue
        t = tensor.detach()
        out[_hf_name(name)] = t.t() if name.endswith(CONV1D) else t
    return {k: v.contiguous() for k, v in out.items()}


def load_hf_state_dict(model: GPT, tensors: dict[str, torch.Tensor],
                       source: str = "") -> GPT:
    """Copy Hugging Face GPT-2 ``tensors`` into ``model``, checking every name and shape.

    Names may carry the ``transformer.`` prefix or not (the original GPT-2 files do not). A
    missing, unexpected or wrongly shaped tensor raises ``ValueError`` naming it.
    """
    where = f" in {source}" if source else ""
    tensors = {k.removeprefix(PREFIX): v for k, v in tensors.items()
               if not k.endswith(IGNORED)}
    ours = model.state_dict()
    missing = [n for n in ours if n not in tensors
               and not (n == "lm_head.weight" and model.config.tie_weights)]
    if missing:
        raise ValueError(f"tensor {_hf_name(missing[0])!r} is missing{where} "
                         f"({len(missing)} missing in all); the file is not a complete "
                         f"GPT-2")
    unexpected = sorted(set(tensors) - set(ours))
    if unexpected:
        raise ValueError(f"unexpected tensor {_hf_name(unexpected[0])!r}{where}; "
                         f"it does not belong to a GPT-2 with this configuration")
    state = {}
    for name, target in ours.items():
        if name not in tensors:  # the tied head: it is the token embedding
            continue
        conv1d = name.endswith(CONV1D)
        want = tuple(reversed(target.shape)) if conv1d else tuple(target.shape)
        t = tensors[name]
        if tuple(t.shape) != want:
            raise ValueError(f"tensor {_hf_name(name)!r}{where} has shape "
                             f"{tuple(t.shape)}, but the configuration needs {want}; "
                             f"config and weights do not match")
        state[name] = t.t() if conv1d else t
    # strict=False: the tied head is not in `state`
    model.load_state_dict(state, strict=False)
    return model


def to_hf(model: GPT) -> GPT2LMHeadModel:
    """A ``transformers.GPT2LMHeadModel`` with our model's weights, copied exactly in their own
    dtype (the model is made in that dtype before the weights are copied in, not cast after)."""
    state = to_hf_state_dict(model)
    hf = GPT2LMHeadModel(GPT2Config(**to_hf_config(model.config)))
    hf.to(common_dtype(t.dtype for t in state.values()))
    if model.config.tie_weights:
        state["lm_head.weight"] = state[PREFIX + "wte.weight"]
    hf.load_state_dict(state, strict=True)
    return hf.train(model.training)


def from_hf(hf_model: GPT2LMHeadModel) -> GPT:
    """Our :class:`GPT` with the weights of a ``transformers.GPT2LMHeadModel``, copied exactly
    in their own dtype."""
    state = hf_model.state_dict()
    model = GPT(from_hf_config(hf_model.config.to_dict())).to(
        common_dtype(t.dtype for t in state.values()))
    load_hf_state_dict(model, state, "the Hugging Face model")
    return model.train(hf_model.training)


def save_hf(model: GPT, folder: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``from_pretrained`` can load."""
    config = to_hf_config(model.config)  # checks the configuration before anything is written
    folder = check_output_folder(folder)  # and the folder: not a file, not under one, writable
    folder.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_state_dict(model)
    write_atomically(folder / "model.safetensors",
                     lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    write_atomically(folder / "config.json", lambda p: p.write_text(text))
    return folder


def load_hf(folder: str | os.PathLike) -> GPT:
    """Our :class:`GPT` from a Hugging Face GPT-2 folder (``config.json`` + ``model.safetensors``).

    Reads safetensors only (never a pickled ``pytorch_model.bin``). The model is in eval mode,
    in the dtype of the file's weights, which it holds exactly. A missing or unreadable file, or
    a config field of the wrong type, is a ``ValueError`` that names the file.
    """
    config_path, weights_path = Path(folder) / "config.json", Path(folder) / "model.safetensors"
    hf = read_json(config_path, FOLDER_FIX)
    try:
        config = from_hf_config(hf)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{config_path}: {e}") from None
    tensors = read_file(weights_path, load_file, FOLDER_FIX)
    weights = [t for name, t in tensors.items() if not name.endswith(IGNORED)]
    model = GPT(config).to(common_dtype(t.dtype for t in weights))
    load_hf_state_dict(model, tensors, str(weights_path))
    return model.eval()

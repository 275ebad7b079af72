"""Tests of buildllm.checkpoint: round trips, atomic replacement, clear errors on damage."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from buildllm import checkpoint
from buildllm.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from buildllm.config import GPTConfig
from buildllm.model import GPT
from buildllm.tokenizer import BPETokenizer, CharTokenizer, train_bpe

CONFIG = GPTConfig(vocab_size=261, block_size=8, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe("to be or not to be, that is the question " * 10, 261)


def trained(config=CONFIG):
    torch.manual_seed(0)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        _, loss = model(torch.randint(0, config.vocab_size, (2, 8)),
                        torch.randint(0, config.vocab_size, (2, 8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_round_trip_everything(tmp_path, bpe):
    model, opt = trained()
    rng = {"torch": torch.get_rng_state()}
    save_checkpoint(tmp_path / "c", model, bpe, optimizer=opt, train_state={"step": 2},
                    rng_state=rng)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json"]
    ckpt = load_checkpoint(tmp_path / "c")
    assert ckpt.train_state == {"step": 2} and not ckpt.model.training
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ckpt.model.state_dict()[name], value)
    assert ckpt.model.lm_head.weight is ckpt.model.wte.weight  # still tied
    torch.testing.assert_close(ckpt.rng_state["torch"], rng["torch"])
    restored = torch.optim.AdamW(ckpt.model.parameters(), lr=1e-2)
    restored.load_state_dict(ckpt.optimizer_state)
    saved_state = opt.state_dict()
    assert len(restored.state_dict()["state"]) == len(saved_state["state"]) > 0
    as_json = lambda groups: json.loads(json.dumps(groups))  # noqa: E731  (tuples -> lists)
    assert as_json(restored.state_dict()["param_groups"]) == as_json(saved_state["param_groups"])
    for a, b in zip(opt.state_dict()["state"].values(), restored.state_dict()["state"].values()):
        for key in a:
            torch.testing.assert_close(a[key], b[key])
    assert ckpt.tokenizer.encode("to be") == bpe.encode("to be")
    x = torch.tensor([bpe.encode("to be or")])
    torch.testing.assert_close(ckpt.model(x)[0], model.eval()(x)[0])


def test_char_tokenizer_and_run_folder(tmp_path):
    tok = CharTokenizer("abc\n")
    model = GPT(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=4))
    save_checkpoint(tmp_path / "run" / "checkpoint", model, tok)
    loaded, tok2 = load_model(tmp_path / "run")  # a run folder: its checkpoint/ is found
    assert isinstance(tok2, CharTokenizer) and tok2.chars == tok.chars
    assert loaded.config == model.config
    doc = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert doc["tokenizer"] == {"kind": "char", "file": "tokenizer.json", "vocab_size": 4}


def test_config_json_records_the_model_the_tokenizer_and_the_files(tmp_path, bpe):
    model, _ = trained()
    save_checkpoint(tmp_path / "c", model, bpe, train_state={"step": 7})
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    assert doc["format"] == "buildllm-checkpoint" and doc["version"] == 1
    assert GPTConfig.from_dict(doc["model"]) == CONFIG and doc["train"] == {"step": 7}
    assert doc["tokenizer"] == {"kind": "bpe", "file": "tokenizer.json", "vocab_size": 261}
    assert sorted(doc["sha256"]) == ["model.safetensors", "tokenizer.json"]  # no optimizer
    assert isinstance(load_model(tmp_path / "c")[1], BPETokenizer)


def test_replacing_is_atomic_and_leaves_no_temporaries(tmp_path, bpe):
    model, _ = trained()
    save_checkpoint(tmp_path / "c", model, bpe, train_state={"step": 1})
    save_checkpoint(tmp_path / "c", model, bpe, train_state={"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["c"]
    assert load_checkpoint(tmp_path / "c").train_state["step"] == 2
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "c", model, bpe, train_state={"step": 3}, replace=False)
    assert load_checkpoint(tmp_path / "c").train_state["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_files_get_the_usual_permissions(tmp_path, bpe):
    """Written through a temporary name and a rename, but not private to the writer (as
    tempfile's would be): a shared cache stays readable by others."""
    model, opt = trained()
    previous = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c", model, bpe, optimizer=opt)
    finally:
        os.umask(previous)
    assert len(list((tmp_path / "c").iterdir())) == 4
    for path in [tmp_path / "c", *(tmp_path / "c").iterdir()]:
        expected = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_replace_false_refuses_even_an_empty_folder(tmp_path, bpe):
    model, _ = trained()
    (tmp_path / "c").mkdir()
    with pytest.raises(FileExistsError, match="replace=True"):
        save_checkpoint(tmp_path / "c", model, bpe, replace=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_a_save_stopped_between_its_renames_leaves_the_old_one_readable(tmp_path, bpe,
                                                                          monkeypatch):
    model, _ = trained()
    dest = tmp_path / "run" / "checkpoint"
    save_checkpoint(dest, model, bpe, train_state={"step": 1})
    real_replace = checkpoint.os.replace

    def killed_before_the_new_one_is_in(src, dst):
        if Path(dst) == dest:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", killed_before_the_new_one_is_in)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(dest, model, bpe, train_state={"step": 2})
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    assert not dest.exists()  # the old folder is aside, under a hidden name
    assert load_checkpoint(tmp_path / "run").train_state["step"] == 1  # ... and still found
    save_checkpoint(dest, model, bpe, train_state={"step": 3})  # the next save cleans up
    assert [p.name for p in dest.parent.iterdir()] == ["checkpoint"]
    assert load_checkpoint(tmp_path / "run").train_state["step"] == 3


class DiskFullTokenizer(BPETokenizer):
    """A tokenizer whose file cannot be written."""

    def save(self, path):
        raise OSError("disk full")


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, bpe):
    model, _ = trained()
    save_checkpoint(tmp_path / "c", model, bpe, train_state={"step": 1})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c", model, DiskFullTokenizer(bpe.merges, bpe.special_tokens),
                        train_state={"step": 2})
    assert load_checkpoint(tmp_path / "c").train_state["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # the half-written folder is gone


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "nothing")


@pytest.fixture
def saved(tmp_path, bpe) -> Path:
    """A checkpoint of a briefly trained model, for the tests that damage it."""
    model, _ = trained()
    save_checkpoint(tmp_path / "c", model, bpe)
    return tmp_path / "c"


def test_damaged_weights(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="model.safetensors does not match the sha256"):
        load_model(saved)


def test_damaged_config(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(saved)
    (saved / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="'other'"):
        load_model(saved)


def test_weights_of_another_model(saved):
    config_path = saved / "config.json"
    doc = json.loads(config_path.read_text())
    doc["model"]["n_embd"] = 32  # the config now describes a wider model
    config_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(saved)


def test_tokenizer_of_another_model(tmp_path):
    model = GPT(GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4))
    save_checkpoint(tmp_path / "c", model, CharTokenizer("abcdef"))
    with pytest.raises(CheckpointError, match="6 tokens but the model only 3"):
        load_model(tmp_path / "c")


def _rewrite_tokenizer(folder: Path, text: str) -> None:
    """Replace the checkpoint's tokenizer file, and its sha256 in config.json to match."""
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    doc = json.loads((folder / "config.json").read_text())
    doc["sha256"]["tokenizer.json"] = hashlib.sha256(text.encode()).hexdigest()
    (folder / "config.json").write_text(json.dumps(doc))


def test_damaged_tokenizer(saved):
    tokenizer = saved / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:200])  # truncated: the sha256 catches it
    with pytest.raises(CheckpointError, match="tokenizer.json does not match the sha256"):
        load_model(saved)
    _rewrite_tokenizer(saved, '{"format": "buildllm-bpe", "merges": "none"}')  # sha256 agrees
    with pytest.raises(CheckpointError, match="tokenizer.json is not a readable tokenizer file"):
        load_model(saved)


def test_a_character_tokenizer_file_of_buildllm_0_1_loads(tmp_path):
    """buildllm 0.1 wrote a character tokenizer without a format version."""
    tok = CharTokenizer("abcd")
    save_checkpoint(tmp_path / "c", GPT(GPTConfig(vocab_size=4, block_size=4, n_layer=1,
                                                  n_head=1, n_embd=4)), tok)
    _rewrite_tokenizer(tmp_path / "c", json.dumps({"format": "buildllm-char", "chars": tok.chars}))
    assert load_model(tmp_path / "c")[1].encode("dcba") == tok.encode("dcba")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_weights_load_exactly_in_the_dtype_they_were_saved_in(tmp_path, bpe, dtype):
    """No float32 detour: float64 weights keep the bits that float32 would round away."""
    torch.manual_seed(0)
    model = GPT(CONFIG).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    save_checkpoint(tmp_path / "c", model, bpe)
    loaded = load_checkpoint(tmp_path / "c").model
    for name, tensor in model.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name
    assert loaded.lm_head.weight is loaded.wte.weight


def _files(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("failing_call", range(1, 7))
def test_a_save_that_fails_anywhere_keeps_the_old_checkpoint_byte_for_byte(
        tmp_path, bpe, monkeypatch, failing_call):
    """The renames of a save, in order: weights, tokenizer, optimizer, config.json (each file
    is renamed into the temporary folder), the old folder aside, the new one into place. A
    disk error at any of them leaves the old checkpoint exactly as it was, and nothing else."""
    model, opt = trained()
    save_checkpoint(tmp_path / "c", model, bpe, optimizer=opt, train_state={"step": 1})
    before = _files(tmp_path)
    real_replace, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError(28, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "c", model, bpe, optimizer=opt, train_state={"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert _files(tmp_path) == before


def test_a_file_where_the_checkpoint_goes_is_kept(tmp_path, bpe):
    model, _ = trained()
    (tmp_path / "c").write_text("precious")
    for dest in (tmp_path / "c", tmp_path / "c" / "sub"):
        with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
            save_checkpoint(dest, model, bpe)
        assert [p.name for p in tmp_path.iterdir()] == ["c"]
        assert (tmp_path / "c").read_text() == "precious"


def test_replace_false_refuses_before_writing_anything(tmp_path, bpe, monkeypatch):
    model, _ = trained()
    save_checkpoint(tmp_path / "c", model, bpe)
    before = _files(tmp_path)
    monkeypatch.setattr(checkpoint, "write_atomically", lambda *a: pytest.fail("wrote"))
    with pytest.raises(FileExistsError, match="replace=True"):
        save_checkpoint(tmp_path / "c", model, bpe, replace=False)
    assert _files(tmp_path) == before

"""What is tried on bad input: Hypothesis hands the library what a user or a failing disk can
hand it, and every case must end in one clear error that names the file (one line from the
command line, never a traceback), with nothing written and nothing lost.

- JSON fields of every wrong type (null, bool, int, float, str, list, object) in each field of a
  checkpoint's config.json and of a training config file;
- truncated and bit-flipped files of a checkpoint (config.json, model.safetensors,
  optimizer.safetensors, tokenizer.json), with their sha256 recorded or removed;
- input paths that are folders, missing, not UTF-8 or not JSON; output paths that are files,
  lie under a file, or cannot be written (as root, where chmod stops no write, the test puts
  the path under a regular file and also pretends the folder is read-only);
- a save that fails at any of its writes or renames: the old checkpoint stays byte-identical.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from buildllm import convert, data, files
from buildllm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from buildllm.cli import main
from buildllm.config import GPTConfig
from buildllm.tokenizer import CharTokenizer
from buildllm.train import TrainConfig
from shared import TINY, small_model

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
CHECKPOINT_FILES = ("config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json")

# -- JSON values of each kind, and the kinds that a type annotation accepts --------------------

KINDS = {
    "null": st.none(),
    "bool": st.booleans(),
    "int": st.integers(-10**6, 10**6),
    "float": st.floats(-1e6, 1e6, allow_nan=False),
    "str": st.text(max_size=8),
    "list": st.lists(st.integers(0, 9), max_size=3),
    "dict": st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2),
}
ACCEPTED = {int: {"int"}, float: {"int", "float"}, bool: {"bool"}, str: {"str"}, dict: {"dict"},
            list: {"list"}, tuple: {"list"}, type(None): {"null"}}


def accepted_kinds(hint) -> set[str] | None:
    """The JSON kinds a field annotated ``hint`` takes (None: an annotation not known here)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [accepted_kinds(h) for h in typing.get_args(hint)]
        return None if None in kinds else set().union(*kinds)
    return ACCEPTED.get(typing.get_origin(hint) or hint)


def wrong_value(data_strategy, hint):
    """A JSON value of a kind that ``hint`` does not accept (drawn with ``st.data()``)."""
    accepted = accepted_kinds(hint)
    kind = data_strategy.draw(st.sampled_from(sorted(set(KINDS) - accepted)), label="kind")
    return data_strategy.draw(KINDS[kind], label="value")


MODEL_HINTS = typing.get_type_hints(GPTConfig)
CHECKPOINT_FIELDS = {  # every field that a checkpoint's config.json holds, and its type
    ("format",): str, ("version",): int, ("model",): dict, ("tokenizer",): dict,
    ("train",): dict, ("sha256",): dict, ("tokenizer", "kind"): str,
    ("tokenizer", "file"): str, ("tokenizer", "vocab_size"): int, ("train", "step"): int,
    ("train", "train_seconds"): float, ("train", "config"): dict,
    **{("sha256", name): str for name in ("model.safetensors", "tokenizer.json",
                                          "optimizer.safetensors")},
    **{("model", name): hint for name, hint in MODEL_HINTS.items()},
}
TRAIN_FIELDS = {  # every field of a training config file (known types only) and its type
    **{(name,): hint for name, hint in typing.get_type_hints(TrainConfig).items()
       if accepted_kinds(hint) is not None},
    **{("model", name): hint for name, hint in MODEL_HINTS.items()},
    ("model", "preset"): str | None,
}

# -- helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder for one Hypothesis example (``tmp_path`` is one per test)."""
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``: equal snapshots, nothing
    written, nothing lost."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def run_cli(*argv) -> tuple[int, str, str]:
    """``buildllm argv...`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def assert_one_error_line(status: int, err: str, command: str, *names: object) -> str:
    """Exit status 2 and one error line, the last on stderr, that names each of ``names``."""
    assert status == 2 and "Traceback" not in err, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(f"buildllm {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def set_field(doc: dict, path: tuple[str, ...], value) -> None:
    """``doc[path[0]][path[1]]... = value``, making the objects on the way if needed."""
    for key in path[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    doc[path[-1]] = value


def chmod_stops_writes() -> bool:
    """Whether a folder without write permission refuses a new file here (not as root)."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "ro"
        folder.mkdir(mode=0o555)
        try:
            (folder / "x").write_text("x")
        except PermissionError:
            return True
        finally:
            folder.chmod(0o755)
        return False


CHMOD_STOPS_WRITES = chmod_stops_writes()


@contextlib.contextmanager
def unwritable(root: Path, how: str) -> Iterator[Path]:
    """A folder that cannot receive files: ``"under-file"``, a path below a regular file;
    ``"read-only"``, a folder without write permission (when chmod stops writes here, as it
    does not for root: then the check is shown a folder that ``os.access`` calls read-only)."""
    if how == "under-file":
        (root / "a-file").write_text("not a folder")
        yield root / "a-file" / "sub"
        return
    folder = root / "read-only"
    folder.mkdir()
    real_access = os.access
    fake = mock.patch.object(files.os, "access", lambda p, mode: (
        Path(p) != folder and real_access(p, mode)))
    folder.chmod(0o555)
    try:
        with contextlib.nullcontext() if CHMOD_STOPS_WRITES else fake:
            yield folder
    finally:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A checkpoint with weights, tokenizer, optimizer moments and random states."""
    model = small_model(vocab_size=12).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, loss = model(torch.randint(0, 12, (2, 8)), torch.randint(0, 12, (2, 8)))
    loss.backward()
    opt.step()
    folder = tmp_path_factory.mktemp("pristine") / "ckpt"
    save_checkpoint(folder, model, CharTokenizer("abcdefghij\n "), optimizer=opt,
                    train_state={"step": 1, "train_seconds": 0.5, "config": {}},
                    rng_state={"torch": torch.get_rng_state()})
    return folder


def copy_of(pristine: Path, root: Path) -> Path:
    """A copy of the pristine checkpoint to damage."""
    return Path(shutil.copytree(pristine, root / "ckpt"))


def edit_config(folder: Path, edit) -> None:
    """Change the checkpoint's config.json in place with ``edit(doc)``."""
    doc = json.loads((folder / "config.json").read_text())
    edit(doc)
    (folder / "config.json").write_text(json.dumps(doc))


# -- checkpoints: config.json fields of every wrong type -----------------------------------------


@SETTINGS
@given(field=st.sampled_from(sorted(CHECKPOINT_FIELDS)), data_strategy=st.data())
def test_a_config_json_field_of_the_wrong_type_is_named(pristine, field, data_strategy):
    value = wrong_value(data_strategy, CHECKPOINT_FIELDS[field])
    with scratch() as root:
        folder = copy_of(pristine, root)
        edit_config(folder, lambda doc: set_field(doc, field, value))
        before = snapshot(root)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(folder)
        assert str(folder / "config.json") in str(e.value) and field[-1] in str(e.value)
        assert snapshot(root) == before  # reading changes nothing


@settings(max_examples=10, deadline=None)
@given(field=st.sampled_from([("tokenizer",), ("sha256",), ("train",), ("model", "n_embd"),
                              ("tokenizer", "file"), ("version",)]),
       data_strategy=st.data())
def test_generate_names_the_bad_field(pristine, field, data_strategy):
    value = wrong_value(data_strategy, CHECKPOINT_FIELDS[field])
    with scratch() as root:
        folder = copy_of(pristine, root)
        edit_config(folder, lambda doc: set_field(doc, field, value))
        status, out, err = run_cli("generate", "--checkpoint", folder, "--prompt", "ab")
        assert_one_error_line(status, err, "generate", folder / "config.json", field[-1])
        assert out == ""


def test_files_named_in_config_json_stay_in_its_folder(pristine, tmp_path):
    folder = copy_of(pristine, tmp_path)
    for edit in (lambda doc: set_field(doc, ("tokenizer", "file"), "../tokenizer.json"),
                 lambda doc: doc["sha256"].update({"/etc/hostname": "0" * 64})):
        edit_config(folder, edit)
        with pytest.raises(CheckpointError, match="not the name of a file in the checkpoint"):
            load_checkpoint(folder)
        shutil.rmtree(folder)
        folder = copy_of(pristine, tmp_path)


# -- checkpoints: truncated and bit-flipped files ------------------------------------------------


def damage(path: Path, how: str, where: float, bit: int) -> None:
    """Truncate ``path`` (strictly before its last non-blank byte) or flip one of its bits."""
    content = path.read_bytes()
    at = int(where * len(content.rstrip(b" \n")))
    if how == "truncate":
        path.write_bytes(content[:at])
    else:
        path.write_bytes(content[:at] + bytes([content[at] ^ (1 << bit)]) + content[at + 1:])


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(CHECKPOINT_FILES), how=st.sampled_from(["truncate", "flip"]),
       keep_hash=st.booleans(), where=st.floats(0, 1, exclude_max=True),
       bit=st.integers(0, 7))
def test_a_damaged_file_is_a_checkpoint_error_that_names_it(pristine, name, how, keep_hash,
                                                             where, bit):
    """With its sha256 recorded, any damage to a file is found and the file named; without, a
    truncated file is still found by its reader, and a flipped bit may go unseen (a changed
    weight), but nothing other than a CheckpointError ever comes out."""
    with scratch() as root:
        folder = copy_of(pristine, root)
        if not keep_hash and name != "config.json":
            edit_config(folder, lambda doc: doc["sha256"].pop(name))
        damage(folder / name, how, where, bit)
        try:
            load_checkpoint(folder)
        except CheckpointError as e:
            assert str(folder) in str(e)
            if how == "truncate" or (keep_hash and name != "config.json"):
                assert str(folder / name) in str(e)
        else:
            assert how == "flip" and (name == "config.json" or not keep_hash)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(CHECKPOINT_FILES), how=st.sampled_from(["truncate", "flip"]),
       keep_hash=st.booleans(), where=st.floats(0, 1, exclude_max=True),
       bit=st.integers(0, 7))
def test_generate_from_a_damaged_checkpoint_is_one_line(pristine, name, how, keep_hash, where,
                                                        bit):
    with scratch() as root:
        folder = copy_of(pristine, root)
        if not keep_hash and name != "config.json":
            edit_config(folder, lambda doc: doc["sha256"].pop(name))
        damage(folder / name, how, where, bit)
        status, out, err = run_cli("generate", "--checkpoint", folder, "--prompt", "ab",
                                   "--max-new-tokens", "2", "--temperature", "0")
        if status != 0:
            assert_one_error_line(status, err, "generate", folder)
            assert out == ""


def test_a_truncated_optimizer_file_without_its_hash_is_named(pristine, tmp_path):
    """The case the independent suite found: a raw SafetensorError without a file name."""
    folder = copy_of(pristine, tmp_path)
    edit_config(folder, lambda doc: doc["sha256"].pop("optimizer.safetensors"))
    damage(folder / "optimizer.safetensors", "truncate", 0.5, 0)
    with pytest.raises(CheckpointError, match="optimizer.safetensors is not a readable "
                                              "safetensors file.*restore it from a copy"):
        load_checkpoint(folder)


def test_an_optimizer_file_with_bad_names_or_groups_is_named(pristine, tmp_path):
    folder = copy_of(pristine, tmp_path)
    edit_config(folder, lambda doc: doc["sha256"].pop("optimizer.safetensors"))
    for tensors, groups in [({"state.x.exp_avg": torch.zeros(1)}, "[]"),
                            ({"state.0": torch.zeros(1)}, "[]"), ({}, "{not json"),
                            ({}, json.dumps({"lr": 1})), ({}, "[1, 2]")]:
        save_file(tensors, str(folder / "optimizer.safetensors"),
                             metadata={"param_groups": groups})
        with pytest.raises(CheckpointError, match="optimizer.safetensors holds a damaged"):
            load_checkpoint(folder)


# -- input paths: folders, missing, not UTF-8, not JSON --------------------------------------

NOT_UTF8 = st.binary(min_size=1, max_size=40).filter(
    lambda b: not _decodes(b))


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def bad_input(root: Path, kind: str, content: bytes) -> Path:
    """A path where a file is expected that is a folder, missing, or holds ``content``."""
    path = root / "input.json"
    if kind == "folder":
        path.mkdir()
    elif kind == "bytes":
        path.write_bytes(content)
    return path


COMMANDS = {  # a command line with {} where a file path goes
    "train --config": ["train", "--config", "{}", "--out", "run"],
    "tokenizer encode": ["tokenizer", "encode", "{}", "hello"],
    "tokenizer decode": ["tokenizer", "decode", "{}", "1", "2"],
    "tokenizer train --text": ["tokenizer", "train", "tok.json", "--text", "{}"],
}


@SETTINGS
@given(command=st.sampled_from(sorted(COMMANDS)),
       kind=st.sampled_from(["folder", "missing", "bytes"]),
       content=st.one_of(NOT_UTF8, st.sampled_from([b"[1, 2]", b"{", b'{"a": ', b"", b"null"])))
def test_a_bad_input_file_is_one_line_that_names_it(command, kind, content):
    with scratch() as root:
        path = bad_input(root, kind, content)
        argv = [str(path) if a == "{}" else a for a in COMMANDS[command]]
        argv = [str(root / a) if a in ("run", "tok.json") else a for a in argv]
        if command == "tokenizer train --text" and kind == "bytes" and _decodes(content):
            return  # any UTF-8 text is something to learn from
        before = snapshot(root)
        with mock.patch.object(data, "load_text", side_effect=AssertionError("work started")):
            status, out, err = run_cli(*argv)
        line = assert_one_error_line(status, err, COMMANDS[command][0], path)
        if kind == "bytes" and not _decodes(content):
            assert "is not UTF-8 text" in line
        assert snapshot(root) == before and out == ""


def test_a_config_file_holding_a_list_or_not_utf8(tmp_path):
    for content, words in [(b"[1, 2]", "a training config is a JSON object, got list"),
                           (b'{"lr": "caf\xe9"}', "is not UTF-8 text (byte 11 is 0xe9)")]:
        (tmp_path / "c.json").write_bytes(content)
        status, _, err = run_cli("train", "--config", tmp_path / "c.json")
        assert words in assert_one_error_line(status, err, "train", tmp_path / "c.json")


# -- training config files: fields of every wrong type ---------------------------------------


@SETTINGS
@given(field=st.sampled_from(sorted(TRAIN_FIELDS, key=str)), data_strategy=st.data())
def test_a_training_config_field_of_the_wrong_type_is_one_line(field, data_strategy):
    value = wrong_value(data_strategy, TRAIN_FIELDS[field])
    with scratch() as root:
        doc = json.loads(json.dumps(TINY))
        set_field(doc, field, value)
        (root / "config.json").write_text(json.dumps(doc))
        before = snapshot(root)
        with mock.patch.object(data, "load_text", side_effect=AssertionError("work started")):
            status, out, err = run_cli("train", "--config", root / "config.json",
                                       "--out", root / "run")
        assert_one_error_line(status, err, "train", root / "config.json", field[-1])
        assert snapshot(root) == before  # no run folder, no log


def test_model_sizes_that_do_not_fit_are_refused_before_any_work(tmp_path):
    doc = {**TINY, "model": {**TINY["model"], "n_embd": 30, "n_head": 4}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with mock.patch.object(data, "load_text", side_effect=AssertionError("work started")):
        status, _, err = run_cli("train", "--config", tmp_path / "c.json", "--out",
                                 tmp_path / "run")
    assert "must be divisible by n_head" in assert_one_error_line(status, err, "train")
    assert not (tmp_path / "run").exists()


# -- output paths: a file, under a file, not writable ------------------------------------------


def output_path(root: Path, kind: str, stack: contextlib.ExitStack) -> Path:
    """An output path that cannot be used: an existing ``"file"``, a ``"folder"`` (where a
    file goes), or a path in an ``"under-file"`` or ``"read-only"`` folder."""
    if kind in ("file", "folder"):
        path = root / "existing"
        path.mkdir() if kind == "folder" else path.write_text("precious")
        return path
    return stack.enter_context(unwritable(root, kind)) / "out"


OUTPUTS = {  # what writes an output, and the kinds of path it must refuse
    "train --out": ("file", "under-file", "read-only"),
    "tokenizer train": ("folder", "under-file", "read-only"),
    "finetune --out": ("file", "under-file", "read-only"),
    "save_checkpoint": ("file", "under-file", "read-only"),
    "save_hf": ("file", "under-file", "read-only"),
}


def write_output(what: str, path: Path, root: Path) -> tuple[int, str, str] | None:
    """Write ``what`` to ``path``: the command's (status, out, err), or None for a function."""
    if what == "train --out":
        return run_cli("train", "--config", root / "tiny.json", "--out", path)
    if what == "tokenizer train":
        return run_cli("tokenizer", "train", path, "--vocab-size", "300")
    if what == "finetune --out":  # refused before the (missing) checkpoint is even looked for
        return run_cli("finetune", "--checkpoint", root / "missing", "--out", path)
    model = small_model(vocab_size=12)
    if what == "save_checkpoint":
        save_checkpoint(path, model, CharTokenizer("abc"))
    else:
        convert.save_hf(model, path)
    return None


@SETTINGS
@given(what_kind=st.sampled_from([(w, k) for w, kinds in OUTPUTS.items() for k in kinds]))
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(what_kind):
    what, kind = what_kind
    with scratch() as root, contextlib.ExitStack() as stack:
        (root / "tiny.json").write_text(json.dumps(TINY))
        path = output_path(root, kind, stack)
        before = snapshot(root)
        with mock.patch.object(data, "load_text", side_effect=AssertionError("work started")):
            try:
                status, _, err = write_output(what, path, root)
            except OSError as e:  # save_checkpoint and save_hf raise; the commands print
                assert what.startswith("save_"), e
                message = str(e)
            else:
                message = assert_one_error_line(status, err, what.split()[0])
        assert str(path) in message
        assert snapshot(root) == before  # the precious file kept; nothing written beside it


# -- resuming: what cannot be resumed is refused before any work --------------------------------


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(CHECKPOINT_FILES), how=st.sampled_from(["truncate", "flip"]),
       where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_resuming_a_damaged_run_loses_nothing(pristine, name, how, where, bit):
    """A damaged checkpoint is refused before the corpus is read and before the run's log is
    rewritten: the run folder stays byte-identical."""
    with scratch() as root:
        run = root / "run"
        shutil.copytree(pristine, run / "checkpoint")
        (run / "log.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
        (root / "tiny.json").write_text(json.dumps(TINY))
        damage(run / "checkpoint" / name, how, where, bit)
        before = snapshot(root)
        with mock.patch.object(data, "load_text", side_effect=AssertionError("work started")):
            try:
                status, _, err = run_cli("train", "--config", root / "tiny.json", "--out", run,
                                         "--resume")
            except AssertionError:  # the damage went unseen (a flipped bit of config.json)
                assert how == "flip" and name == "config.json"
            else:
                assert_one_error_line(status, err, "train", run)
        assert snapshot(root) == before


def test_a_checkpoint_without_a_training_state_cannot_be_resumed(tmp_path):
    save_checkpoint(tmp_path / "run" / "checkpoint", small_model(vocab_size=12),
                    CharTokenizer("abc"))
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    with mock.patch.object(data, "load_text", side_effect=AssertionError("work started")):
        status, _, err = run_cli("train", "--config", tmp_path / "tiny.json", "--out",
                                 tmp_path / "run", "--resume")
        assert "no train.step: it was not saved by a training run" in assert_one_error_line(
            status, err, "train", tmp_path / "run")
        status, _, err = run_cli("train", "--config", tmp_path / "tiny.json", "--out",
                                 tmp_path / "nothing", "--resume")
        assert "no checkpoint at" in assert_one_error_line(status, err, "train")
    assert not (tmp_path / "nothing").exists()

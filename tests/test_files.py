"""buildllm.files: a file is written under a temporary name beside its destination and renamed
over it, with the usual permissions; a failed write leaves the old file and no temporary."""

from __future__ import annotations

import os
import stat

import pytest

from buildllm.files import write_atomically


def test_writes_the_file_and_returns_its_path(tmp_path):
    path = write_atomically(tmp_path / "a.txt", lambda tmp: tmp.write_text("hello"))
    assert path == tmp_path / "a.txt" and path.read_text() == "hello"
    write_atomically(str(path), lambda tmp: tmp.write_text("again"))  # a str path too, replaced
    assert path.read_text() == "again" and os.listdir(tmp_path) == ["a.txt"]


def test_the_file_gets_the_usual_permissions(tmp_path):
    """Not the owner-only 0600 of tempfile or safetensors: a shared cache stays readable."""
    def private(tmp):
        tmp.write_text("x")
        tmp.chmod(0o600)

    previous = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "a", private)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(write_atomically(tmp_path / "b", private).stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "a").write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "a", half_then_fail)
    assert (tmp_path / "a").read_text() == "old" and os.listdir(tmp_path) == ["a"]
    with pytest.raises(KeyboardInterrupt):  # an interrupt cleans up too
        write_atomically(tmp_path / "a", lambda tmp: (tmp.write_text("x"), _interrupt()))
    assert os.listdir(tmp_path) == ["a"]


def _interrupt():
    raise KeyboardInterrupt


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot write .*the folder .*nodir does not exist"):
        write_atomically(tmp_path / "nodir" / "a", lambda tmp: tmp.write_text("x"))
    assert not (tmp_path / "nodir").exists()

"""Files: written safely, read with errors that say which file and what to do, and output paths
checked before any work starts. Explained in the chapter "Tokens", where the tokenizer is first
saved; the token cache, checkpoints, the Hugging Face export and the command line use the same
functions.

- Writing (:func:`write_atomically`): the file is written under a temporary name beside its
  destination, then renamed over it. A rename within one folder is atomic, so a crash leaves
  the old file or the new one, never half of one, and a failed write removes the temporary file.
- Reading (:func:`read_file`, :func:`read_text`, :func:`read_json`): a missing file, a folder
  where a file belongs, a file that is not UTF-8 or not valid JSON or not safetensors, each
  becomes one error whose message names the file, says what is wrong and what to do. A config
  that the library wrote is read with its format and version checked
  (:func:`read_versioned_json`), and the files it records with their hashes
  (:func:`check_sha256`).
- Output paths (:func:`check_output_file`, :func:`check_output_folder`): refused *before* the
  work whose result they would receive (a file where a folder belongs, a folder under a file,
  a folder that cannot be written), so that no minutes of work end in an error.
- Values read from JSON (:func:`check_types`, :func:`is_number`): a JSON file may hold a
  string where a number belongs, or ``null`` where an object does; each field is checked
  against the type that a dataclass annotates for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from safetensors import SafetensorError

T = TypeVar("T")
READ_ERRORS = (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary path beside it, then renaming.

    The file gets the usual permissions (``0o666`` less the umask), whatever ``write`` created
    it with (safetensors, like ``tempfile``, makes files only their owner may read).
    """
    path = check_output_file(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        umask = os.umask(0)  # reading the umask means setting it: set it back at once
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# -- reading -----------------------------------------------------------------------------------


def read_problem(error: BaseException) -> str:
    """What ``error``, raised while reading a file, says about that file, in words that follow
    its name: "does not exist", "is a folder, not a file", "is not UTF-8 text (byte 3 is 0xe9)"."""
    if isinstance(error, UnicodeDecodeError):
        return f"is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x})"
    if isinstance(error, json.JSONDecodeError):
        return f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    if isinstance(error, SafetensorError):
        return f"is not a readable safetensors file ({error})"
    words = {FileNotFoundError: "does not exist", IsADirectoryError: "is a folder, not a file",
             NotADirectoryError: "cannot be reached: a part of its path is a file, not a folder",
             PermissionError: "cannot be read: permission denied"}
    for kind, text in words.items():
        if isinstance(error, kind):
            return text
    return f"cannot be read ({getattr(error, 'strerror', None) or error})"


def read_file(path: str | os.PathLike, read: Callable[[Path], T], fix: str,
              error: Callable[[str], Exception] = ValueError) -> T:
    """``read(path)``. A file that cannot be read (missing, a folder, not UTF-8, not JSON, not
    safetensors: :data:`READ_ERRORS`) raises ``error`` with the message
    ``"{path} {what is wrong}; {fix}"``."""
    try:
        return read(Path(path))
    except READ_ERRORS as e:  # (safetensors reports a folder as "no such device")
        problem = "is a folder, not a file" if Path(path).is_dir() else read_problem(e)
        raise error(f"{path} {problem}; {fix}") from None


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_versioned_json(path: str | os.PathLike, format: str, version: int, fix: str,
                        error: Callable[[str], Exception] = ValueError) -> dict:
    """A JSON object that this library wrote (a checkpoint's or an adapter folder's config):
    its ``"format"`` must be ``format`` and its ``"version"`` ``version``. Anything else, or a
    file that cannot be read, raises ``error`` naming the file, what is wrong, and ``fix``."""
    doc = read_file(path, lambda p: json.loads(p.read_text(encoding="utf-8")), fix, error)
    found = doc.get("format") if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
    if found != format:
        raise error(f"{path} is not a {format} file (its 'format' is {found!r}); {fix}")
    if type(doc.get("version")) is not int or doc["version"] != version:
        raise error(f"{path} has version {json_text(doc.get('version'))}; this buildllm reads "
                    f"version {version}: {fix}")
    return doc


def check_sha256(path: str | os.PathLike, expected: str, record: str, fix: str,
                 error: Callable[[str], Exception] = ValueError) -> None:
    """Raise ``error`` unless the file at ``path`` has the sha256 ``expected``, which
    ``record`` (a file's name) holds for it."""
    if read_file(path, sha256_of, fix, error) != expected:
        raise error(f"{path} does not match the sha256 recorded in {record}: the file is "
                    f"damaged or comes from another save; {fix}")


def read_text(path: str | os.PathLike, fix: str) -> str:
    """A UTF-8 text file's contents; any problem is a ``ValueError`` naming the file and ``fix``."""
    return read_file(path, lambda p: p.read_text(encoding="utf-8"), fix)


def read_json(path: str | os.PathLike, fix: str) -> object:
    """A UTF-8 JSON file's contents; any problem is a ``ValueError`` naming the file and ``fix``."""
    return read_file(path, lambda p: json.loads(p.read_text(encoding="utf-8")), fix)


# -- output paths ------------------------------------------------------------------------------


def _check_writable(folder: Path, target: Path) -> None:
    """Refuse ``folder`` (where ``target`` goes) if it is a file or cannot be written."""
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {target}: {folder} is a file, not a folder; "
                                 f"choose another place, or move the file away")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {target}: the folder {folder} is not writable; "
                              f"choose another place, or change its permissions")


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path`, checked writable before any work: not a folder, in
    a folder that exists and may be written. Raises ``OSError`` (a subclass that fits) naming
    the path and what to do."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; pass a file name")
    folder = _nearest_existing(path.parent)
    if folder.is_dir() and folder != path.parent:
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist; "
                                f"create it first, or choose another place")
    _check_writable(folder, path)
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path`, checked before any work as a folder that can be
    written: an existing folder that may be written, or a missing one whose nearest existing
    parent is a folder that may be written (it is made when needed). A file at ``path`` or
    above it raises ``NotADirectoryError``; a folder that cannot be written, ``PermissionError``."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file, not a folder; pass a folder (it is "
                                     f"made if it does not exist), or move the file away")
        _check_writable(path, path)
        return path
    _check_writable(_nearest_existing(path.parent), path)
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or the nearest of its parents that exists (as a file or a folder)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# -- values read from JSON ---------------------------------------------------------------------

TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              dict: "an object", list: "a list", tuple: "a list", type(None): "null"}


def has_type(value: object, hint: object) -> bool:
    """Whether ``value`` (read from JSON) has the annotated type ``hint``: ``int`` takes no
    bool, ``float`` takes an int too, ``tuple`` a list, ``X | None`` also ``None``. An
    annotation this check does not know takes anything."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(has_type(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    hint = origin or hint
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if hint is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, hint) if isinstance(hint, type) else True


def is_number(value: object, kind: type = float) -> bool:
    """Whether ``value`` is a finite number (an integer, for ``kind=int``); a bool is neither:
    ``n_layer=True`` is a mistake, not one layer. The library's one check of a number's type."""
    return has_type(value, kind) and math.isfinite(value)


def type_name(hint: object) -> str:
    """``hint`` in words: "an integer", "a number or null", ..."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return TYPE_NAMES.get(typing.get_origin(hint) or hint, str(hint))


def check_types(values: Mapping[str, object], schema: type | Mapping[str, object],
                where: str = "") -> None:
    """Raise ``ValueError`` naming the first field of ``values`` whose value does not have the
    type that ``schema`` gives it: a dataclass (its annotations) or a dict of name -> type.
    Names the schema lacks are left to the caller; ``where`` prefixes each field's name."""
    hints = typing.get_type_hints(schema) if isinstance(schema, type) else schema
    for name, value in values.items():
        if name in hints and not has_type(value, hints[name]):
            raise ValueError(f"{where}{name} must be {type_name(hints[name])}, got "
                             f"{json_text(value)}")


def json_text(value: object) -> str:
    """``value`` as JSON writes it (``null``, ``true``, ``"text"``), shortened to 60 characters;
    its ``repr`` when it is no JSON value."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

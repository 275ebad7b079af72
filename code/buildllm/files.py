"""Writing a file safely. Explained in the chapter "Tokens", where the tokenizer is first saved;
the token cache, checkpoints and the Hugging Face export write their files the same way.

The file is written under a temporary name beside its destination, then renamed over it. A
rename within one folder is atomic, so a crash leaves the old file or the new one, never half of
one, and a failed write removes the temporary file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary path beside it, then renaming.

    The file gets the usual permissions (``0o666`` less the umask), whatever ``write`` created
    it with (safetensors, like ``tempfile``, makes files only their owner may read).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
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

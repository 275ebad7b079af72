"""Execute notebooks in place, top to bottom in a fresh kernel, as `pytest --nbval` will.

Used by authors after editing a chapter (`make execute NB=book/01_tokens.ipynb`, or every
notebook in _toc.yml with `make execute`). The kernel is this virtual environment's Python.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from book_checks import toc_notebooks  # noqa: E402


def execute(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    # The kernel starts in the notebook's folder (book/ or book/solutions/): a relative
    # PYTHONPATH (PYTHONPATH=code) would not reach it, and the installed copy would be
    # imported instead of this checkout's.
    if os.environ.get("PYTHONPATH"):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)
    paths = [Path(a) for a in argv] or toc_notebooks(root)
    for p in paths:
        print(f"executing {p} ...", flush=True)
        print(f"  done in {execute(p):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The command line: ``buildllm <subcommand> ...``; ``buildllm <subcommand> --help`` for each.

Each subcommand lives in the module it belongs to, which provides ``add_cli(subparsers)``:
``buildllm train`` in :mod:`buildllm.train`, ``buildllm generate`` (alias ``sample``) in
:mod:`buildllm.generate`, ``buildllm tokenizer`` in :mod:`buildllm.tokenizer` if it has one.
Each ``add_cli`` adds a parser and sets ``func`` on it: ``func(args) -> int`` (exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = ("buildllm.tokenizer", "buildllm.train", "buildllm.generate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildllm",
        description="Train and sample the GPT of 'Build a Large Language Model from Scratch'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "add_cli"):
            module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from buildllm.data import CorpusError

    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, CorpusError) as e:  # a clear message, no traceback
        print(f"buildllm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

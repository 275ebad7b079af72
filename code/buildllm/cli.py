"""The command line: ``buildllm <command> ...``; ``buildllm <command> --help`` for each.

The commands, each a parser below and a function that runs it:

- ``buildllm tokenizer train|encode|decode``: learn a BPE tokenizer, use one;
- ``buildllm train``: train a model as a recipe says, log and checkpoint (resumable);
- ``buildllm generate`` (alias ``sample``): continue a prompt with a trained checkpoint;
- ``buildllm eval``: a trained model's report card (held-out plays, words, copying, multiple
  choice, metre), printed as a table and written as JSON;
- ``buildllm finetune``: turn a trained model into a genre classifier (head, full or LoRA);
- ``buildllm align``: raise the verse reward of a model's lines (best-of-N, DPO or GRPO).

A user's mistake (a missing file, a folder where a file belongs, a file that is not UTF-8, a
bad setting, a damaged checkpoint, an output path that cannot be written) ends in one line on
standard error and exit status 2, never in a traceback; output paths are checked before any
work starts. Described in the chapter "How this book is built and tested".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from buildllm import data
from buildllm.align import METHODS as ALIGN_METHODS
from buildllm.align import SETTINGS as ALIGN_SETTINGS
from buildllm.align import align
from buildllm.checkpoint import load_model, save_checkpoint
from buildllm.config import RECIPES, recipe
from buildllm.config import check_sampling as check_settings
from buildllm.device import resolve_device
from buildllm.evaluate import Settings, format_cards, report_card
from buildllm.files import check_output_file, check_output_folder, read_text, write_atomically
from buildllm.finetune import (
    LEARNING_RATES,
    METHODS,
    check_finetune_settings,
    finetune_classifier,
    genre_task,
)
from buildllm.generate import stream_text
from buildllm.lora import save_adapters
from buildllm.pretrained import pretrained_dir
from buildllm.quantize import quantize_model
from buildllm.tokenizer import load_tokenizer, train_bpe
from buildllm.train import NonFiniteLossError, TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    """The ``buildllm`` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="buildllm",
        description="Train and sample the GPT of 'Build a Large Language Model from Scratch'.")
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    add_tokenizer_commands(commands)
    add_train_command(commands)
    add_generate_command(commands)
    add_eval_command(commands)
    add_finetune_command(commands)
    add_align_command(commands)
    return parser


# Each command's one-line help and its description.
ABOUT = {
    "train": ("train a model on Tiny Shakespeare",
              "Train a GPT as a recipe says; log and checkpoint into --out. Under "
              "`torchrun --nproc_per_node N -m buildllm.cli train ...` the N processes "
              "share each batch (DistributedDataParallel)."),
    "generate": ("generate text from a trained checkpoint",
              "Continue a prompt with a trained model, printing tokens as they come."),
    "eval": ("measure a trained model beyond its loss: its report card",
              "Measure a trained model (chapter 'Measuring a language model'): bits per "
              "character on Tiny Shakespeare's validation text and on plays it never "
              "saw, English words, copying and metre of lines sampled after held-out "
              "speech openings, and multiple choice of the next line. Prints the card "
              "as a table (95%% intervals beside every share) and writes it as JSON."),
    "finetune": ("fine-tune a trained model to tell a passage's genre",
              "Fine-tune a trained model to tell comedy, history and tragedy apart, "
              "on plays of Shakespeare split by play (chapter 'Fine-tuning'); print the "
              "accuracy on the held-out plays."),
    "align": ("raise the verse reward of a model's lines (best-of-n, dpo, grpo)",
              "Teach a trained model to write lines that scan (chapter 'Learning from a "
              "reward'), on speech openings of the training plays: best-of-n samples "
              "and keeps the best line (nothing trains); dpo and grpo train a copy and "
              "save it to --out as a checkpoint."),
}


def command(commands, name: str, func, **options) -> argparse.ArgumentParser:
    """A command's parser, with its words from :data:`ABOUT`, which runs ``func(args)``."""
    help, description = ABOUT[name]
    p = commands.add_parser(name, help=help, description=description, **options)
    p.set_defaults(func=func)
    return p


def add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, for the commands that default to the book's model."""
    p.add_argument("--checkpoint", help="a trained model (default: the book's model, trained "
                                        "once and cached)")


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user's mistake is one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ModuleNotFoundError, FloatingPointError,
            data.CorpusError) as e:  # no traceback
        print(f"buildllm {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2


def error_line(error: BaseException) -> str:
    """An error as one line of text; an ``OSError`` of the system (``[Errno 13] ...``) as its
    reason and the file it concerns."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror.lower()}"
        if error.filename2 is not None:
            text += f" (-> {error.filename2})"
    return " ".join(text.split())


# ---- buildllm tokenizer ----------------------------------------------------------------------


def add_tokenizer_commands(commands) -> None:
    """``buildllm tokenizer train|encode|decode``."""
    parser = commands.add_parser("tokenizer", help="train a tokenizer, encode, decode",
                                 description="Train a byte-level BPE tokenizer, or use one.")
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    p = actions.add_parser("train", help="learn merges from a text, write the tokenizer")
    p.add_argument("out", help="the JSON file to write")
    p.add_argument("--vocab-size", type=int, default=4096, help="tokens in all (4096)")
    p.add_argument("--text", help="a UTF-8 text file to learn from (default: Tiny "
                                  "Shakespeare's training text, its first 90%%)")
    p.set_defaults(func=tokenizer_train)
    p = actions.add_parser("encode", help="print the ids of a text")
    p.add_argument("tokenizer", help="a file written by 'buildllm tokenizer train'")
    p.add_argument("text")
    p.add_argument("--allow-special", action="store_true",
                   help="encode special tokens such as <|endoftext|> as their ids")
    p.set_defaults(func=tokenizer_encode)
    p = actions.add_parser("decode", help="print the text of ids")
    p.add_argument("tokenizer", help="a file written by 'buildllm tokenizer train'")
    p.add_argument("ids", type=int, nargs="+")
    p.set_defaults(func=tokenizer_decode)


def tokenizer_train(args: argparse.Namespace) -> int:
    """Learn from a file, or from the book's training text (the validation text stays unseen,
    as in chapter "Training on a CPU"). The output path is checked before the slow part."""
    check_output_file(args.out)
    if args.text:
        text = read_text(args.text, "pass a UTF-8 text file to learn from (convert one with "
                                    "`iconv -f latin1 -t utf-8 FILE > NEW`)")
    else:
        text = data.train_val_split(data.load_text())[0]
    tok = train_bpe(text, args.vocab_size)
    tok.save(args.out)
    print(f"wrote {args.out}: {tok.vocab_size} tokens, {len(tok.merges)} merges")
    return 0


def tokenizer_encode(args: argparse.Namespace) -> int:
    """The ids, separated by spaces."""
    tok = load_tokenizer(args.tokenizer)
    if not args.allow_special and any(s in args.text for s in tok.special_tokens):
        raise ValueError("the text contains a special token: add --allow-special to encode it "
                         "as its id, or remove it")
    print(*tok.encode(args.text, allowed_special="all" if args.allow_special else ()))
    return 0


def tokenizer_decode(args: argparse.Namespace) -> int:
    """The text, exactly (no newline added)."""
    print(load_tokenizer(args.tokenizer).decode(args.ids), end="")
    return 0


# ---- buildllm train --------------------------------------------------------------------------


def add_train_command(commands) -> None:
    """``buildllm train``: its options override the recipe's."""
    p = command(commands, "train", train_command)
    p.add_argument("--config", default="book",
                   help=f"a recipe ({', '.join(RECIPES)}) or a JSON file (default: book)")
    p.add_argument("--out", default="runs/book", help="output folder (default: runs/book)")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, mps ...")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="bfloat16: autocast")
    p.add_argument("--max-steps", type=int, help="override the config's max_steps")
    p.add_argument("--max-seconds", type=float, help="a time budget for the training steps")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what --max-seconds counts: wall-clock seconds (the default) or this "
                        "process's CPU seconds, as make bench does")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")


def train_command(args: argparse.Namespace) -> int:
    """Train as the recipe and the options say; print the final scores and where they are."""
    config = recipe(args.config)
    overrides = {"device": args.device, "dtype": args.dtype, "max_steps": args.max_steps,
                 "max_seconds": args.max_seconds}
    config = TrainConfig.from_dict({**config.to_dict(),
                                    **{k: v for k, v in overrides.items() if v is not None}})
    if args.device is None and torch.cuda.is_available():
        print("note: a GPU is available; add --device cuda --dtype bfloat16 to use it",
              file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    try:
        result = train(config, args.out, resume=args.resume, progress=True, clock=clock)
    except NonFiniteLossError as e:
        print(f"buildllm train: error: {e}", file=sys.stderr)
        return 1
    if result.final:
        f = result.final
        print(f"step {f['step']}: validation loss {f['loss']:.4f} nats/token, "
              f"{f['nats_per_char']:.4f} nats/char, {f['bits_per_char']:.4f} bits/char")
        print(f"checkpoint: {Path(args.out) / 'checkpoint'}   log: {Path(args.out) / 'log.jsonl'}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


# ---- buildllm generate -----------------------------------------------------------------------


def add_generate_command(commands) -> None:
    """``buildllm generate`` (alias ``sample``)."""
    p = command(commands, "generate", generate_command, aliases=["sample"])
    p.add_argument("--checkpoint", required=True, help="folder written by `buildllm train`")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add (200)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (1.0)")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="keep the nucleus of mass p")
    p.add_argument("--seed", type=int, default=None, help="seed, for a reproducible sample")
    p.add_argument("--no-cache", action="store_true", help="recompute everything each step")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps ...")
    p.add_argument("--quantize", choices=("int8",),
                   help="int8: weights as 8-bit integers, a quarter of the bytes to read per "
                        "token (CPU only)")


def generate_command(args: argparse.Namespace) -> int:
    """Print the prompt, then each piece of text as it is generated."""
    check_settings(args.temperature, args.top_k, args.top_p)  # before the slow load
    device = resolve_device(args.device)
    if args.quantize and device.type != "cpu":
        raise ValueError(f"--quantize int8 runs on the CPU (PyTorch's int8 kernel); drop "
                         f"--device {args.device} or --quantize")
    model, tokenizer = load_model(args.checkpoint, device)
    if args.quantize == "int8":
        model = quantize_model(model.float())
    pieces = stream_text(model, tokenizer, args.prompt, args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         seed=args.seed, use_cache=not args.no_cache)
    try:  # the prompt is encoded and checked before anything is printed
        first = next(pieces, "")
    except ValueError as e:  # a character its tokenizer does not know; too long a prompt
        raise ValueError(f"the prompt does not suit the checkpoint {args.checkpoint}: {e}") from e
    sys.stdout.write(args.prompt + first)
    sys.stdout.flush()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


# ---- buildllm eval ---------------------------------------------------------------------------


def add_eval_command(commands) -> None:
    """``buildllm eval``: the report card of a trained model."""
    p = command(commands, "eval", eval_command)
    add_checkpoint_option(p)
    p.add_argument("--out", help="a JSON file for the card (default: print only)")
    defaults = Settings()
    p.add_argument("--prompts", type=int, default=defaults.prompts,
                   help=f"speech openings, one sampled line each ({defaults.prompts})")
    p.add_argument("--questions", type=int, default=defaults.questions,
                   help=f"multiple-choice questions ({defaults.questions})")
    p.add_argument("--temperature", type=float, default=defaults.temperature,
                   help=f"sampling temperature ({defaults.temperature})")
    p.add_argument("--top-k", type=int, default=defaults.top_k,
                   help=f"keep the k most likely tokens ({defaults.top_k})")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed (0)")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")


def eval_command(args: argparse.Namespace) -> int:
    """Measure, print the card, write it when asked."""
    settings = Settings(seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                        prompts=args.prompts, questions=args.questions)  # checked first
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    out = check_output_file(args.out) if args.out else None
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.checkpoint or pretrained_dir("book")
    model, tokenizer = load_model(folder)
    card = report_card(model, tokenizer, settings, data.load_text())
    print(format_cards({Path(folder).name: card}), end="")
    if out is not None:
        write_atomically(out, lambda tmp: tmp.write_text(json.dumps(card, indent=1), "utf-8"))
        print(f"card: {out}")
    return 0


# ---- buildllm finetune ----------------------------------------------------------------------


def add_finetune_command(commands) -> None:
    """``buildllm finetune``: a genre classifier on Shakespeare's plays."""
    p = command(commands, "finetune", finetune_command)
    add_checkpoint_option(p)
    p.add_argument("--method", choices=METHODS, default="lora",
                   help="what trains: the head only, everything, or LoRA adapters (default)")
    p.add_argument("--steps", type=int, default=200, help="training steps (200)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the method's, "
                   + ", ".join(f"{k} {v:g}" for k, v in LEARNING_RATES.items()) + ")")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (8)")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (16)")
    p.add_argument("--max-tokens", type=int,
                   help="passages cut to this many tokens (64, or the model's context if less)")
    p.add_argument("--out", help="with --method lora: a folder for the adapters and the head")


def finetune_command(args: argparse.Namespace) -> int:
    """Train, print the held-out accuracy, save the adapters when asked."""
    if args.out and args.method != "lora":
        raise ValueError("--out saves LoRA adapters: use it with --method lora")
    lr = LEARNING_RATES[args.method] if args.lr is None else args.lr
    check_finetune_settings(args.method, args.steps, lr, args.rank, args.alpha)  # before loading
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be a positive integer, got {args.max_tokens}")
    if args.out:
        check_output_folder(args.out)  # before the training, not after it
    model, tokenizer = load_model(args.checkpoint or pretrained_dir("book"))
    task = genre_task(tokenizer, max_tokens=args.max_tokens or min(64, model.config.block_size))
    classifier, r = finetune_classifier(model, task, args.method, args.steps, lr, args.rank,
                                        args.alpha)
    print(f"{args.method}: held-out accuracy {r['acc']:.3f} (95% interval {r['lo']:.3f} to "
          f"{r['hi']:.3f}, {r['n']} passages); {r['trainable']:,} trainable parameters; "
          f"{r['cpu_seconds']:.0f} CPU seconds")
    if args.out:
        print(f"adapters: {save_adapters(classifier, args.out)}")
    return 0


# ---- buildllm align -------------------------------------------------------------------------


def add_align_command(commands) -> None:
    """``buildllm align``: learning from the verse reward."""
    p = command(commands, "align", align_command)
    p.add_argument("--method", choices=ALIGN_METHODS, required=True)
    add_checkpoint_option(p)
    p.add_argument("--out", required=True, help="a folder: the trained checkpoint (dpo, "
                                                "grpo) or the report (best-of-n) and the log")
    p.add_argument("--steps", type=int, help="training steps (dpo, grpo)")
    p.add_argument("--lr", type=float, help="learning rate (dpo, grpo)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")


def align_settings(args: argparse.Namespace):
    """The method's settings with the options given; checked by the settings class."""
    given = {"steps": args.steps, "lr": args.lr}
    if args.method == "best-of-n" and any(v is not None for v in given.values()):
        raise ValueError("--steps and --lr train a model: use them with --method dpo or grpo")
    overrides = {k: v for k, v in given.items() if v is not None}
    return ALIGN_SETTINGS[args.method](seed=args.seed, **overrides)


def align_command(args: argparse.Namespace) -> int:
    """Run the method with a progress bar; save the model (or the report) and the log."""
    settings = align_settings(args)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    out = check_output_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.checkpoint or pretrained_dir("book"))
    total = getattr(settings, "steps", 1)
    with tqdm(total=total, desc=args.method, unit="step", file=sys.stderr) as bar:
        def progress(record: dict) -> None:
            bar.set_postfix(reward=f"{record['reward']:.3f}")
            bar.update(1)
        aligned, log = align(model, tokenizer, args.method, settings, progress)
    lines = "".join(json.dumps(r) + "\n" for r in log)
    if args.method == "best-of-n":
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(out / "log.jsonl", lambda tmp: tmp.write_text(lines, "utf-8"))
    else:
        save_checkpoint(out, aligned, tokenizer, extra_files={"log.jsonl": lines},
                        train_state={"step": len(log), "align": {"method": args.method}})
    last = log[-1]
    print(f"{args.method}: mean reward {last['reward']:.3f} on the last step's lines; "
          f"{out}: {'the log' if args.method == 'best-of-n' else 'the checkpoint and its log'}"
          f"; measure it with `buildllm eval --checkpoint {out}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

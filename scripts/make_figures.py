"""Draw the book's static figures (those that no chapter computes) into book/figures/.

Run with `make figures`; the PNGs are committed.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "book" / "figures"


def pipeline() -> None:
    steps = [
        ("raw text", "“To be, or not\nto be”", None),
        ("tokenizer", "byte-pair\nencoding", "Ch. 1"),
        ("embeddings", "token + position\nvectors", "Ch. 2"),
        ("N × block", "attention (Ch. 3)\n+ feed-forward", "Ch. 3–4"),
        ("logits", "a score for every\nnext token", "Ch. 4"),
        ("sampling", "pick one, append,\nrepeat", "Ch. 6"),
        ("new text", "“that is the\nquestion”", None),
    ]
    fig, ax = plt.subplots(figsize=(11, 2.4), dpi=200)
    w, h, gap = 1.3, 1.1, 0.32
    for k, (title, body, chap) in enumerate(steps):
        x = k * (w + gap)
        shaded = chap is not None
        ax.add_patch(FancyBboxPatch((x, 0), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc="0.90" if shaded else "white", ec="black", lw=1.2))
        ax.text(x + w / 2, h - 0.22, title, ha="center", va="center", fontsize=10.5,
                fontweight="bold")
        ax.text(x + w / 2, 0.42, body, ha="center", va="center", fontsize=8.5)
        if chap:
            ax.text(x + w / 2, -0.2, chap, ha="center", va="center", fontsize=8.5, style="italic")
        if k:
            ax.add_patch(FancyArrowPatch((x - gap + 0.03, h / 2), (x - 0.03, h / 2),
                                         arrowstyle="-|>", mutation_scale=12, lw=1.2,
                                         color="black"))
    total = len(steps) * (w + gap) - gap
    ax.annotate("", xy=(total * 0.5, 1.45), xytext=(total * 0.83, 1.45),
                arrowprops=dict(arrowstyle="-|>", lw=1.0, ls="--", color="0.3"))
    ax.text(total * 0.66, 1.6, "training (Ch. 5) adjusts every weight to predict the next token",
            ha="center", fontsize=8.5, color="0.2")
    ax.set_xlim(-0.1, total + 0.1)
    ax.set_ylim(-0.4, 1.8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "pipeline.png", bbox_inches="tight")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    pipeline()

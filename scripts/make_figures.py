"""Draw the book's static figures (those that no chapter computes) into book/figures/.

Run with `make figures`; the PNGs are committed.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "book" / "figures"


def box(ax, x: float, y: float, title: str, body: str, chapter: str | None) -> None:
    """One stage: a rounded box with a bold title, a line of text, the chapter under it."""
    w, h = BOX
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc="0.90" if chapter else "white", ec="black", lw=1.2))
    ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="center", fontsize=10.5,
            fontweight="bold")
    ax.text(x + w / 2, y + 0.38, body, ha="center", va="center", fontsize=8.5)
    if chapter:
        ax.text(x + w / 2, y - 0.17, chapter, ha="center", va="center", fontsize=9,
                style="italic")


def arrow(ax, start: tuple[float, float], end: tuple[float, float], **style) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2,
                                 color=style.pop("color", "black"), **style))


BOX = (1.6, 1.0)  # width, height of a stage, in inches of the figure


def pipeline() -> None:
    """Text to text in two rows, read as a snake: the first row left to right, the second
    right to left. Printed at the text width (about 6.3 in), so no label is under 8 pt."""
    top = [("raw text", "\u201cTo be, or not\nto be\u201d", None),
           ("tokenizer", "byte-pair\nencoding", "Ch. 1"),
           ("embeddings", "token + position\nvectors", "Ch. 2"),
           ("N \u00d7 block", "attention (Ch. 3)\n+ feed-forward", "Ch. 3\u20134")]
    bottom = [("logits", "a score for every\nnext token", "Ch. 4"),
              ("sampling", "pick one, append,\nrepeat", "Ch. 6"),
              ("new text", "\u201cthat is the\nquestion\u201d", None)]
    fig, ax = plt.subplots(figsize=(6.6, 3.3), dpi=220)
    (w, h), gap, y_top, y_bottom = BOX, 0.25, 1.75, 0.0
    xs = [k * (w + gap) for k in range(4)]
    for k, stage in enumerate(top):
        box(ax, xs[k], y_top, *stage)
        if k:
            arrow(ax, (xs[k] - gap + 0.03, y_top + h / 2), (xs[k] - 0.03, y_top + h / 2))
    for k, stage in enumerate(bottom):  # under the last three boxes, right to left
        x = xs[3 - k]
        box(ax, x, y_bottom, *stage)
        if k:
            arrow(ax, (x + w + gap - 0.03, h / 2), (x + w + 0.03, h / 2))
    arrow(ax, (xs[3] + w / 2, y_top - 0.3), (xs[3] + w / 2, y_bottom + h + 0.03))
    ax.text(xs[0] + w / 2, h / 2, "training (Ch. 5)\nadjusts every\nweight to predict\n"
            "the next token", ha="center", va="center", fontsize=9, color="0.2", style="italic")
    ax.set_xlim(-0.1, xs[3] + w + 0.1)
    ax.set_ylim(-0.35, y_top + h + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(OUT / "pipeline.png", bbox_inches="tight")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    pipeline()

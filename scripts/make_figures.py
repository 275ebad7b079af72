"""Draw the book's static figures (those that no chapter computes) into book/figures/.

Run with `make figures`; the PNGs are committed.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["hatch.color"] = "0.55"  # hatching in mid grey: labels on it stay legible
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import (  # noqa: E402
    Arc,
    Circle,
    FancyArrowPatch,
    FancyBboxPatch,
    Rectangle,
)

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
    style = {"arrowstyle": "-|>", "mutation_scale": 12, "lw": 1.2, "color": "black", **style}
    ax.add_patch(FancyArrowPatch(start, end, **style))


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


# ---- the chapters' diagrams -------------------------------------------------------------------
# Each is drawn on a canvas measured in inches at the printed width (the text block is 128 mm,
# about 5 in), so a font size here is the size on paper: nothing under 7.5 pt. Black and white
# only: grey levels, hatching and labels tell things apart, never colour.

WIDTH = 5.0  # inches: the printed text width, less a little
DPI = 300
GREYS = ("white", "0.85", "0.62")  # three things side by side (heads, say), light to dark


def canvas(height: float, width: float = WIDTH) -> tuple[plt.Figure, plt.Axes]:
    """A figure whose data coordinates are inches from its lower left corner."""
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def save(fig: plt.Figure, name: str) -> None:
    fig.savefig(OUT / f"{name}.png", dpi=DPI)
    plt.close(fig)


def cell(ax, x: float, y: float, w: float, h: float, text: str = "", fc="white",
         hatch: str | None = None, fs: float = 8, lw: float = 0.8, ls="-", **text_style) -> None:
    """A rectangle with its lower left corner at (x, y) and a label in its middle."""
    ax.add_patch(Rectangle((x, y), w, h, fc=fc, ec="black", lw=lw, ls=ls, hatch=hatch))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs,
                **text_style)


def label(ax, x: float, y: float, text: str, fs: float = 8, **style) -> None:
    ax.text(x, y, text, fontsize=fs, **{"ha": "center", "va": "center", **style})


def grid(ax, x: float, y: float, rows: int, cols: int, s: float, fills) -> None:
    """A matrix of rows x cols cells of side s; column j filled with fills[j]."""
    for j in range(cols):
        ax.add_patch(Rectangle((x + j * s, y), s, rows * s, fc=fills[j], lw=0))
    for i in range(rows + 1):
        ax.plot([x, x + cols * s], [y + i * s] * 2, color="0.45", lw=0.3)
    for j in range(cols + 1):
        ax.plot([x + j * s] * 2, [y, y + rows * s], color="0.45", lw=0.3)
    ax.add_patch(Rectangle((x, y), cols * s, rows * s, fill=False, ec="black", lw=1))


def heads_split_merge() -> None:
    """Chapter "Attention": q (and k, v) of one sequence, (T, C), cut into H slices of hs
    columns, one per head; each head attends on its own; the outputs side by side again. The
    chapter's sizes: T = 5, C = 12, H = 3, hs = 4."""
    T, C, H = 5, 12, 3
    hs, s = C // H, 0.09
    fig, ax = canvas(2.75)
    by_column = [GREYS[j // hs] for j in range(C)]
    mid, gap = 1.3, 0.22  # the heads' stack: its centre and the space between heads
    x_in, x_heads, x_out, x_merged = 0.05, 1.7, 2.95, 3.9
    for x in (x_in, x_merged):
        grid(ax, x, mid - T * s / 2, T, C, s, by_column)
        for h in range(H):
            label(ax, x + (h + 0.5) * hs * s, mid + T * s / 2 + 0.1, str(h), fs=8)
    for h in range(H):
        y = mid + (1 - h) * (T * s + gap)  # the middle of head h's rows
        for x in (x_heads, x_out):
            grid(ax, x, y - T * s / 2, T, hs, s, [GREYS[h]] * hs)
        arrow(ax, (x_in + C * s + 0.05, mid), (x_heads - 0.05, y), lw=0.8)
        arrow(ax, (x_heads + hs * s + 0.05, y), (x_out - 0.05, y), lw=0.8)
        label(ax, (x_heads + hs * s + x_out) / 2, y + 0.1, f"head {h} attends", fs=7.5)
        arrow(ax, (x_out + hs * s + 0.05, y), (x_merged - 0.05, mid), lw=0.8)
    top, centre = 2.6, (x_heads + x_out + hs * s) / 2
    label(ax, x_in + C * s / 2, top, "q, k, v  (B, T, C)", fs=8.5, fontweight="bold")
    label(ax, centre, top, "H = 3 heads  (B, H, T, hs)", fs=8.5, fontweight="bold")
    label(ax, x_merged + C * s / 2, top, "merged  (B, T, C)", fs=8.5, fontweight="bold")
    label(ax, x_in + C * s / 2, mid - 0.55, "split:\n.view(B, T, H, hs)\n.transpose(1, 2)",
          fs=7.5)
    label(ax, x_merged + C * s / 2, mid - 0.55, "merge:\n.transpose(1, 2)\n.view(B, T, C)",
          fs=7.5)
    label(ax, centre, 0.1, "B = 2, T = 5, C = 12, H = 3, hs = C / H = 4", fs=8)
    save(fig, "heads_split_merge")


def kv_cache() -> None:
    """Chapter "Generating text": prefill computes q, k, v for the whole prompt; each decode
    step computes them for the newest token only and reads the older keys and values from the
    cache, which grows by one position a step."""
    tokens = ["To", "\u2423be", ",", "\u2423or", "\u2423not", "\u2423to", "\u2423be"]
    P, w, h, x0 = 3, 0.44, 0.17, 1.15
    steps = [("prefill", "input (B, P)", range(P)), ("decode step 1", "input (B, 1)", [P]),
             ("decode step 2", "input (B, 1)", [P + 1])]
    fig, ax = canvas(3.05)
    for i, t in enumerate(tokens):
        label(ax, x0 + (i + 0.5) * w, 2.9, str(i), fs=7.5, color="0.3")
        label(ax, x0 + (i + 0.5) * w, 2.72, t, fs=8)
    label(ax, 0.55, 2.9, "position", fs=7.5, color="0.3")
    label(ax, 0.55, 2.72, "token", fs=8)
    for r, (name, shape, new) in enumerate(steps):
        y = 2.3 - r * 0.78  # the row's q cells; k and v below them
        label(ax, 0.55, y - 0.05, f"{name}\n{shape}", fs=8)
        length = max(new) + 1
        for i in range(len(tokens)):
            x = x0 + i * w + 0.04
            if i in new:
                cell(ax, x, y, w - 0.08, h, "q", fs=7.5)
            for k, name_kv in enumerate("kv"):
                yk = y - (k + 1) * h
                if i in new:
                    cell(ax, x, yk, w - 0.08, h, name_kv, fs=7.5, lw=1.1)
                elif i < length:
                    cell(ax, x, yk, w - 0.08, h, name_kv, fc="0.72", fs=7.5)
                else:
                    cell(ax, x, yk, w - 0.08, h, fc="white", lw=0.5, ls=":")
        label(ax, x0 + len(tokens) * w + 0.1, y - 0.05, f"cache\nlength {length}", fs=8,
              ha="left")
    for k, (fc, ls, text) in enumerate([("white", "-", "computed in this step"),
                                        ("0.72", "-", "read from the cache"),
                                        ("white", ":", "allocated, still empty")]):
        cell(ax, 0.25 + k * 1.6, 0.06, 0.3, h, fc=fc, ls=ls, lw=0.8 if ls == "-" else 0.5)
        label(ax, 0.62 + k * 1.6, 0.06 + h / 2, text, fs=7.5, ha="left")
    save(fig, "kv_cache")


def batch_windows() -> None:
    """Chapter "Training on a CPU": the chapter's toy stream of twenty ids (100 to 119) and its
    batch of B = 3 windows of T = 5 ids, at the offsets its generator drew (14, 9, 8). Each
    target y is the id that follows the x above-left of it."""
    ids, starts, T = list(range(100, 120)), [14, 9, 8], 5
    w, h, x0 = 0.22, 0.2, 0.55
    fig, ax = canvas(2.7)
    top = 2.25
    for i, v in enumerate(ids):
        label(ax, x0 + (i + 0.5) * w, top + h + 0.12, str(i), fs=7, color="0.3")
        cell(ax, x0 + i * w, top, w, h, str(v), fs=7, fc="0.92")
    label(ax, x0 - 0.08, top + h + 0.12, "index", fs=7, color="0.3", ha="right")
    label(ax, x0 - 0.08, top + h / 2, "ids", fs=8, ha="right")
    for b, start in enumerate(starts):
        y = top - 0.45 - b * 0.68
        for i in range(T):
            cell(ax, x0 + (start + i) * w, y, w, h, str(ids[start + i]), fs=7, fc="0.72")
            cell(ax, x0 + (start + 1 + i) * w, y - h - 0.14, w, h, str(ids[start + 1 + i]),
                 fs=7, lw=1.1)
            if b == 0:
                arrow(ax, (x0 + (start + i + 0.5) * w, y - 0.01),
                      (x0 + (start + i + 1.5) * w, y - 0.13), lw=0.7, mutation_scale=7)
        label(ax, x0 - 0.08, y + h / 2, f"x[{b}]", fs=8, ha="right")
        label(ax, x0 - 0.08, y - h / 2 - 0.14, f"y[{b}]", fs=8, ha="right")
        label(ax, x0 + (start - 0.3) * w, y + h / 2, f"start {start}", fs=7.5, ha="right")
    label(ax, x0 + 0.05, top - 0.5, "grey: x, a window of T = 5 ids\n"
          "framed: y, the next ids (targets)", fs=8, ha="left", linespacing=1.4)
    save(fig, "batch_windows")


def _polar(ax, title: str) -> None:
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-0.15, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.plot([-1.2, 1.2], [0, 0], color="0.6", lw=0.6)
    ax.plot([0, 0], [-0.1, 1.2], color="0.6", lw=0.6)
    ax.set_title(title, fontsize=8, pad=2)


def _vector(ax, angle: float, text: str, ls: str = "-", r: float = 1.0) -> None:
    end = (r * math.cos(angle), r * math.sin(angle))
    arrow(ax, (0, 0), end, lw=1.1, ls=ls, mutation_scale=9, shrinkA=0, shrinkB=0)
    right = end[0] > 0.25  # the label beside the tip, away from the vertical axis
    ax.text(end[0] + (0.06 if right else -0.06), end[1] + 0.04, text, fontsize=7.5,
            ha="left" if right else "right", va="bottom")


def _angle(ax, a: float, b: float, text: str, r: float) -> None:
    ax.add_patch(Arc((0, 0), 2 * r, 2 * r, theta1=math.degrees(a), theta2=math.degrees(b),
                     lw=0.8))
    mid = (a + b) / 2
    ax.text(1.35 * r * math.cos(mid), 1.35 * r * math.sin(mid), text, fontsize=7.5,
            ha="center", va="center")


def rope_rotation() -> None:
    """Chapter "From GPT-2 to today's LLMs": one pair of a head's dimensions as a 2-D vector,
    turned by m theta at position m; a query at m and a key at n meet at an angle that only
    m - n sets (here the query's and the key's vectors are the same, as in the chapter's
    check, and theta = 30 degrees)."""
    theta, phi = math.radians(30), math.radians(8)
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 1.6), dpi=DPI)
    _polar(axes[0], "q at positions m = 0, 1, 2, 3")
    for m in range(4):
        _vector(axes[0], phi + m * theta, f"m={m}")
    _angle(axes[0], phi, phi + theta, "\u03b8", 0.45)
    for ax, (m, n) in zip(axes[1:], [(2, 0), (3, 1)]):
        _polar(ax, f"q at m = {m}, k at n = {n}")
        _vector(ax, phi + m * theta, f"q, m={m}")
        _vector(ax, phi + n * theta, f"k, n={n}", ls="--", r=0.8)
        _angle(ax, phi + n * theta, phi + m * theta, "2\u03b8", 0.4)
    fig.text(0.67, 0.03, "the same angle (m \u2212 n)\u03b8 = 2\u03b8, so the same score q\u00b7k",
             fontsize=8, ha="center")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.12, wspace=0.08)
    save(fig, "rope_rotation")


def gqa() -> None:
    """Chapter "From GPT-2 to today's LLMs": four query heads and 4, 2 or 1 key/value heads;
    query head h reads key/value head h // g, g = n_head / n_kv_head."""
    fig, ax = canvas(1.75)
    panels = [("multi-head", 4, ""), ("grouped-query", 2, " (the llama preset)"),
              ("multi-query", 1, "")]
    w, h, pitch = 0.3, 0.22, 0.38
    for p, (name, n_kv, note) in enumerate(panels):
        x0 = 0.2 + p * 1.65
        label(ax, x0 + 1.5 * pitch + w / 2, 1.6, name, fs=8.5, fontweight="bold")
        label(ax, x0 + 1.5 * pitch + w / 2, 1.42, f"n_kv_head = {n_kv}{note}", fs=7.5)
        g = 4 // n_kv
        kv_x = [x0 + (j * g + (g - 1) / 2) * pitch for j in range(n_kv)]
        for q in range(4):
            cell(ax, x0 + q * pitch, 0.95, w, h, f"q{q}", fs=7.5)
            ax.plot([x0 + q * pitch + w / 2, kv_x[q // g] + w / 2], [0.95, 0.5 + h],
                    color="black", lw=0.8)
        for j, x in enumerate(kv_x):
            cell(ax, x, 0.5, w, h, f"kv{j}", fs=7.5, fc="0.72")
        label(ax, x0 + 1.5 * pitch + w / 2, 0.25,
              f"cache: {n_kv} key/value head{'s' if n_kv > 1 else ''}", fs=7.5)
    save(fig, "gqa")


def _block(ax, cx: float, parts: list[tuple[str, bool]], bottom: float) -> tuple[float, float]:
    """A pre-norm transformer block, read bottom to top: the input, [norm, attention, +,
    norm, MLP, +], what follows the blocks. Parts that differ from GPT-2 are hatched. Returns
    where the repeated block starts and ends."""
    w, h, gap, r = 1.9, 0.36, 0.17, 0.09
    y = bottom
    names = iter(parts)

    def part(height: float) -> None:
        nonlocal y
        text, differs = next(names)
        cell(ax, cx - w / 2, y, w, height, text, fs=8, fc="0.9" if differs else "white",
             hatch="//" if differs else None, bbox=dict(fc="white", ec="none", pad=2))
        y += height

    part(h)  # the input
    start = y + gap / 4
    for _ in range(2):  # attention, then the MLP, each with its residual connection
        split = y + gap / 2
        ax.plot([cx, cx], [y, split], color="black", lw=1)
        y += gap
        part(0.28)  # the norm
        arrow(ax, (cx, y), (cx, y + gap), lw=1, mutation_scale=8)
        y += gap
        part(h)  # attention or the MLP
        arrow(ax, (cx, y), (cx, y + gap - 0.005), lw=1, mutation_scale=8)
        y += gap + r
        ax.add_patch(Circle((cx, y), r, fc="white", ec="black", lw=1))
        label(ax, cx, y, "+", fs=10)
        ax.plot([cx, cx - w / 2 - 0.12, cx - w / 2 - 0.12], [split, split, y], color="black",
                lw=1)
        arrow(ax, (cx - w / 2 - 0.12, y), (cx - r, y), lw=1, mutation_scale=8)
        y += r
    end = y + gap / 2
    ax.plot([cx, cx], [y, y + gap], color="black", lw=1)
    y += gap
    part(h)  # what follows the blocks
    return start, end


def blocks_side_by_side() -> None:
    """Chapter "From GPT-2 to today's LLMs": the GPT-2 block beside the Llama block (the book's
    `book` and `llama` presets), the parts that differ hatched."""
    fig, ax = canvas(3.95)
    gpt2 = [("tokens + learned positions", False), ("LayerNorm", False),
            ("causal self-attention,\nK and V for every head", False), ("LayerNorm", False),
            ("MLP: GELU, 4d wide", False), ("final LayerNorm,\nhead tied to wte", False)]
    llama = [("tokens, no position table", True), ("RMSNorm", True),
             ("attention, RoPE on q and k,\n2 key/value heads (GQA)", True), ("RMSNorm", True),
             ("SwiGLU, about 8/3 d wide", True), ("final RMSNorm,\nhead of its own", True)]
    for cx, title, parts in [(1.3, "GPT-2 (book)", gpt2), (3.75, "Llama (llama)", llama)]:
        label(ax, cx, 3.83, title, fs=9, fontweight="bold")
        start, end = _block(ax, cx, parts, 0.05)
        left, right = cx - 1.2, cx + 1.05
        ax.add_patch(Rectangle((left, start), right - left, end - start, fill=False, ls="--",
                               lw=0.7))
        label(ax, right - 0.05, end - 0.12, "\u00d7 n_layer", fs=7.5, ha="right")
    save(fig, "blocks_side_by_side")


def lora() -> None:
    """Chapter "Fine-tuning": the frozen W and the two thin matrices that LoRA trains, at the
    shapes of the book model's c_attn (in 192, out 576) with r = 8 (drawn wider than to
    scale)."""
    fig, ax = canvas(2.45)
    s, r, x, y = 1.6 / 576, 0.1, 0.25, 0.55  # inches per row or column; r as drawn
    W = (192 * s, 576 * s)
    cell(ax, x, y, *W, "W", fs=10, fc="0.85", hatch="////",
         bbox=dict(fc="white", ec="none", pad=1))
    label(ax, x + W[0] / 2, y - 0.17, "(out, in)\nfrozen", fs=7.5, va="top")
    label(ax, x + W[0] + 0.3, y + W[1] / 2, "+  \u03b1/r \u00b7", fs=10)
    xb = x + W[0] + 0.62
    cell(ax, xb, y, r, W[1], lw=1.1)
    label(ax, xb + r / 2, y + W[1] + 0.1, "B", fs=10)
    label(ax, xb + r / 2, y - 0.17, "(out, r)\nstarts at 0", fs=7.5, va="top")
    xa = xb + r + 0.15
    cell(ax, xa, y + W[1] - r, W[0], r, lw=1.1)
    label(ax, xa + W[0] / 2, y + W[1] + 0.1, "A", fs=10)
    label(ax, xa + W[0] / 2, y + W[1] - r - 0.08, "(r, in)\nrandom start", fs=7.5, va="top")
    T = "^{\\mathsf{T}}"
    text = (f"$y = x\\,W{T} + (\\alpha/r)\\; x\\,A{T} B{T}$\n\n"
            "$\\Delta W = (\\alpha/r)\\, B A$, never formed in training\n\n"
            "the book model's c_attn: in = 192, out = 576\n"
            "W: 110,592 numbers, frozen\n"
            "A and B at r = 8: 6,144 numbers, trained")
    label(ax, 2.45, y + W[1] / 2 - 0.1, text, fs=8, ha="left", linespacing=1.3)
    save(fig, "lora")


def _token_row(ax, tokens: list[str], x0: float, y: float, h: float, widths: list[float],
               fills: list[str], fs: float = 8) -> list[float]:
    """Cells side by side; returns the centre of each."""
    centres, x = [], x0
    for t, w, fc in zip(tokens, widths, fills):
        cell(ax, x, y, w, h, t, fs=fs, fc=fc)
        centres.append(x + w / 2)
        x += w
    return centres


def classifier_last_token() -> None:
    """Chapter "Fine-tuning": the classifier reads the hidden state of the last real token (the
    <|endoftext|> that ends every passage; ft.pad pads on the right, with the same id) and maps
    it to three scores."""
    tokens = ["Now", "\u2423is", "\u2423the", "\u2423w", "in", "ter", "<|endoftext|>", "pad",
              "pad"]
    widths = [0.36] * 6 + [0.88, 0.36, 0.36]
    fills = ["white"] * 7 + ["0.72"] * 2
    fig, ax = canvas(2.6)
    x0, last = 0.1, 6
    centres = _token_row(ax, tokens, x0, 0.25, 0.24, widths, fills)
    label(ax, centres[last], 0.1, f"last = {last}", fs=7.5)
    label(ax, (centres[7] + centres[8]) / 2, 0.1, "padding", fs=7.5)
    cell(ax, x0, 0.7, sum(widths), 0.38, "the GPT's body (features): causal, every block",
         fs=8, fc="0.9")
    for i, c in enumerate(centres):
        arrow(ax, (c, 0.49), (c, 0.7), lw=0.7, mutation_scale=6)
        used = i == last
        cell(ax, c - 0.07, 1.3, 0.14, 0.4, fc="0.35" if used else "white",
             ls="-" if i < 7 else ":", lw=1.2 if used else 0.6)
        ax.plot([c, c], [1.08, 1.3], color="black", lw=0.6)
    hx, hy, hw = centres[last] - 0.65, 2.0, 1.3
    arrow(ax, (centres[last], 1.71), (centres[last], hy - 0.01), lw=1, mutation_scale=8)
    cell(ax, hx, hy, hw, 0.32, "head: Linear(192 \u2192 3)", fs=8)
    for k, name in enumerate(["comedy", "history", "tragedy"]):
        y = hy + 0.16 + (1 - k) * 0.28
        arrow(ax, (hx + hw + 0.02, hy + 0.16), (hx + hw + 0.3, y), lw=0.8, mutation_scale=7)
        cell(ax, hx + hw + 0.32, y - 0.11, 0.72, 0.22, name, fs=8)
    label(ax, x0, 2.15, "one hidden vector of 192 numbers\n"
          "per position; the head reads the\nlast real token's, which has seen\n"
          "the whole passage", fs=8, ha="left", linespacing=1.3)
    save(fig, "classifier_last_token")


def loss_mask() -> None:
    """Chapter "Fine-tuning": one instruction example, its prompt shortened in the middle (the
    chapter's first example is 56 tokens of prompt and 5 of answer, in the book's BPE). The
    target at each position is the next token; where that is still the prompt's, it is -1, and
    the loss skips it."""
    inputs = ["Is", "\u2423this", "\u2026", "\u2423to", "\u21b5", "A", "n", "sw", "er", ":",
              "\u2423his", "t", "or", "y"]
    n_prompt, n = 10, len(inputs)  # prompt tokens shown; positions
    targets = ["\u22121"] * (n_prompt - 1) + inputs[n_prompt:] + ["\u21b5"]
    w, h, x0 = 0.27, 0.24, 0.8
    fig, ax = canvas(1.95)
    rows = [("input ids", 1.3), ("targets", 0.75), ("in the loss", 0.3)]
    grey = ["0.72"] * (n_prompt - 1) + ["white"] * (n - n_prompt + 1)
    _token_row(ax, inputs, x0, rows[0][1], h, [w] * n, ["white"] * n, fs=7.5)
    _token_row(ax, targets, x0, rows[1][1], h, [w] * n, grey, fs=7.5)
    _token_row(ax, [str(int(g == "white")) for g in grey], x0, rows[2][1], h, [w] * n, grey)
    for name, y in rows:
        label(ax, x0 - 0.08, y + h / 2, name, fs=8, ha="right")
    for i in range(n_prompt - 1, n - 1):  # target i is input i + 1
        arrow(ax, (x0 + (i + 1.5) * w, rows[0][1] - 0.01), (x0 + (i + 0.5) * w, rows[1][1] + h),
              lw=0.7, mutation_scale=7)
    for a, b, text in [(0, n_prompt, "prompt (56 tokens)"),
                       (n_prompt, n, "answer")]:
        xa, xb, y = x0 + a * w + 0.03, x0 + b * w - 0.03, rows[0][1] + h + 0.12
        ax.plot([xa, xa, xb, xb], [y - 0.05, y, y, y - 0.05], color="black", lw=0.8)
        label(ax, (xa + xb) / 2, y + 0.13, text, fs=8)
    label(ax, x0 + n * w + 0.08, rows[1][1] + h / 2, "\u2190 next\ntoken", fs=7.5,
          ha="left")
    save(fig, "loss_mask")


def build_pipeline() -> None:
    """How this book is built and tested: what `make test` runs on the repository."""
    fig, ax = canvas(3.05)
    w, h = 1.45, 0.5

    def stage(x: float, y: float, title: str, body: str, fc: str = "white") -> None:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.05",
                                    fc=fc, ec="black", lw=0.9))
        label(ax, x + w / 2, y + h - 0.13, title, fs=8, fontweight="bold")
        label(ax, x + w / 2, y + 0.17, body, fs=7.5)

    rows = [2.25, 1.6, 0.95, 0.3]
    sources = [(2.25, "library", "code/buildllm/"), (1.6, "tests", "tests/"),
               (0.62, "chapters", "book/*.ipynb, executed,\nwith their outputs")]
    for y, title, body in sources:
        stage(0.05, y, title, body, fc="0.88")
    checks = [("ruff", "lint", "pytest", "unit, property and\nreference tests"),
              ("nbval", "each chapter re-run,\ntext compared", "nbval again",
               "in a second numeric\nenvironment"),
              ("HTML", "Sphinx, warnings\nare errors", "headless Chromium",
               "pages at 1280 and\n390 pixels"),
              ("PDF", "XeLaTeX, warnings\nare errors", "check_pdf.py",
               "reads the PDF back")]
    for y, (t1, b1, t2, b2) in zip(rows, checks):
        stage(1.8, y, t1, b1)
        stage(3.45, y, t2, b2)
        arrow(ax, (1.8 + w + 0.02, y + h / 2), (3.45 - 0.02, y + h / 2), lw=0.9,
              mutation_scale=8)
    for y0, y1 in [(2.5, 2.5), (1.85, 2.45), (1.1, 1.85), (0.87, 1.2), (0.87, 0.55)]:
        arrow(ax, (0.05 + w + 0.02, y0), (1.8 - 0.02, y1), lw=0.9, mutation_scale=8)
    ax.add_patch(Rectangle((1.72, 0.2), 3.25, 2.77, fill=False, ls="--", lw=0.7))
    label(ax, 4.93, 2.88, "make test", fs=8, ha="right", style="italic")
    save(fig, "build_pipeline")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    pipeline()
    for draw in (heads_split_merge, kv_cache, batch_windows, rope_rotation, gqa,
                 blocks_side_by_side, lora, classifier_last_token, loss_mask, build_pipeline):
        draw()

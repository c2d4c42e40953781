"""The figures of a report, each rendered to PNG bytes (matplotlib with the Agg backend; the
retrieval grid is composed pixel by pixel with Pillow, so its layout is exact)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np

from hashlab.report.analysis import Examples, PairScores, Projection

__all__ = [
    "GridLayout",
    "HIT_COLOUR",
    "QUERY_COLOUR",
    "WRONG_COLOUR",
    "comparison_plot",
    "confusion_plot",
    "pair_histogram",
    "pr_plot",
    "projection_plot",
    "retrieval_grid",
    "training_plot",
]

DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes (no software or date metadata: the bytes are reproducible)."""
    plt = _pyplot()
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _class_name(label: int, names: Sequence[str]) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


# ------------------------------------------------------------------------------ plots
def training_plot(history: list[dict[str, Any]]) -> bytes:
    """Training loss per epoch and, when recorded, training accuracy per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    with_acc = all(h.get("accuracy") is not None for h in history)
    fig, axes = plt.subplots(1, 2 if with_acc else 1, figsize=(9 if with_acc else 5, 3.4),
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue")
    ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    if with_acc:
        ax = axes[0, 1]
        ax.plot(epochs, [h["accuracy"] for h in history], "s-", color="tab:orange")
        ax.set(xlabel="epoch", ylabel="training accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _png(fig)


def pr_plot(curves: dict[str, dict[str, list[float]]]) -> bytes:
    """Precision against recall; ``curves``: label → a protocol's ``pr_curve`` dict."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    styles = iter([("tab:blue", "o-"), ("tab:red", "s-"), ("tab:green", "^-"),
                   ("tab:purple", "v-")] * 8)
    for label, curve in curves.items():
        colour, style = next(styles)
        marker = style if len(curve["recall"]) <= 70 else "-"
        ax.plot(curve["recall"], curve["precision"], marker, color=colour, label=label,
                markersize=3)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="precision–recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _png(fig)


def comparison_plot(series: dict[str, list[tuple[int, float]]]) -> bytes:
    """mAP@all against code length; ``series``: label → [(code length, mAP), ...]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    lengths: set[int] = set()
    markers = iter("osv^D<>ph*" * 4)
    for label, points in series.items():
        points = sorted(points)
        lengths.update(x for x, _ in points)
        ax.plot([x for x, _ in points], [y for _, y in points], marker=next(markers),
                label=label)
    if lengths and max(lengths) / max(min(lengths), 1) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(lengths), [str(x) for x in sorted(lengths)])
    ax.minorticks_off()
    ax.set(xlabel="code length (bits; dimensions for float codes)", ylabel="mAP@all",
           title="mAP@all vs code length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def projection_plot(proj: Projection, names: Sequence[str]) -> bytes:
    """The 2-D projection, one colour per class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    classes = np.unique(proj.labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        pts = proj.points[proj.labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=7, alpha=0.7, color=cmap(i % cmap.N),
                   label=_class_name(int(c), names), linewidths=0)
    ax.set(xlabel=f"PC 1 ({100 * proj.explained[0]:.1f}% of the variance)",
           ylabel=f"PC 2 ({100 * proj.explained[1]:.1f}%)", title="codes, first two PCs")
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _png(fig)


def confusion_plot(classes: np.ndarray, counts: np.ndarray, names: Sequence[str]) -> bytes:
    """Counts [true, predicted] as a heat map, the counts written in the cells (≤ 20 classes)."""
    plt = _pyplot()
    n = len(classes)
    size = min(3.0 + 0.35 * n, 11)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    labels = [_class_name(int(c), names) for c in classes]
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 20:
        top = counts.max() if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > top / 2 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix")
    fig.tight_layout()
    return _png(fig)


def pair_histogram(pairs: PairScores) -> bytes:
    """Histograms (densities) of the scores of relevant and irrelevant pairs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if pairs.binary:
        bins = np.arange(pairs.nbits + 2) - 0.5
        xlabel = "Hamming distance"
    else:
        bins = np.linspace(-1, 1, 61)
        xlabel = "cosine similarity"
    for values, label, colour in ((pairs.relevant, "relevant (same class)", "tab:green"),
                                  (pairs.irrelevant, "irrelevant (other class)", "tab:red")):
        if len(values):
            ax.hist(values, bins=bins, density=True, alpha=0.5, color=colour,
                    label=f"{label}, n={len(values)}")
    ax.set(xlabel=xlabel, ylabel="density", title=f"{xlabel} of sampled pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------ the grid
QUERY_COLOUR = (40, 90, 220)
HIT_COLOUR = (40, 160, 60)
WRONG_COLOUR = (230, 20, 20)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of the retrieval grid: row ``r`` is a query (column 0) and its hits
    (columns 1..k); each tile is an image of ``tile`` px inside a ``border`` px frame, with a
    ``label`` px strip of two text lines under it."""

    rows: int
    cols: int
    tile: int = 56
    border: int = 3
    gap: int = 4
    query_gap: int = 14
    label: int = 24
    header: int = 14

    @property
    def cell(self) -> int:
        return self.tile + 2 * self.border

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive ends, of the framed tile at ``row``, ``col``."""
        x0 = self.gap + col * (self.cell + self.gap) + (self.query_gap if col else 0)
        y0 = self.header + self.gap + row * (self.cell + self.label + self.gap)
        return x0, y0, x0 + self.cell, y0 + self.cell

    @property
    def size(self) -> tuple[int, int]:
        x1, y1 = self.box(self.rows - 1, self.cols - 1)[2:]
        return x1 + self.gap, y1 + self.label + self.gap


def _tile(image: np.ndarray, size: int) -> Any:
    """An RGB Pillow image of ``size`` × ``size``: ``image`` (uint8 [H, W] or [H, W, C])
    scaled to fit (nearest neighbour when enlarged), centred on white."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    img = Image.fromarray(a).convert("RGB")
    h, w = a.shape[:2]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    img = img.resize(new, resample)
    out = Image.new("RGB", (size, size), _BACKGROUND)
    out.paste(img, ((size - new[0]) // 2, (size - new[1]) // 2))
    return out


def retrieval_grid(examples: Examples, query_images: Sequence[np.ndarray],
                   hit_images: Sequence[Sequence[np.ndarray]], query_labels: np.ndarray,
                   hit_labels: np.ndarray, names: Sequence[str]) -> bytes:
    """One row per query: the query (blue frame) and its ranked hits, framed green when of the
    query's class and red when not, each with its class and score written under it."""
    from PIL import Image, ImageDraw

    rows, k = examples.ids.shape
    layout = GridLayout(rows, k + 1)
    canvas = Image.new("RGB", layout.size, _BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    def put(row: int, col: int, image: np.ndarray, colour: tuple[int, int, int],
            *lines: str) -> None:
        x0, y0, x1, y1 = layout.box(row, col)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
        canvas.paste(_tile(image, layout.tile), (x0 + layout.border, y0 + layout.border))
        for i, line in enumerate(lines):
            draw.text((x0, y1 + 1 + 11 * i), line[:10], fill=_TEXT)

    draw.text((layout.box(0, 0)[0], 2), "query", fill=_TEXT)
    for col in range(1, k + 1):
        draw.text((layout.box(0, col)[0], 2), f"#{col}", fill=_TEXT)
    for r in range(rows):
        put(r, 0, query_images[r], QUERY_COLOUR, _class_name(int(query_labels[r]), names))
        for c in range(k):
            score = examples.scores[r, c]
            shown = f"d={int(score)}" if examples.binary else f"{score:.2f}"
            colour = WRONG_COLOUR if examples.wrong[r, c] else HIT_COLOUR
            put(r, c + 1, hit_images[r][c], colour, _class_name(int(hit_labels[r, c]), names),
                shown)
    buf = BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()

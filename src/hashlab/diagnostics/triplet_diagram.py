"""The "triplet diagram" recorder (Xuan et al. 2020): where the triplets of the training batches
lie in the (S_an, S_ap) plane of cosine similarities, drawn as a PNG by the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashlab.losses.distances import cosine_similarity_matrix
from hashlab.losses.miners import pair_masks, similarity_triplets
from hashlab.validation import check_batch, check_choice

__all__ = ["TripletDiagram"]


class TripletDiagram:
    """Records ``(S_an, S_ap)`` cosine similarities of triplets over training, to draw the
    "triplet diagram" of Xuan et al. (points above the diagonal ``S_ap = S_an`` are already
    correctly ordered; points below it are hard triplets, whose negative is closer than the
    positive).

    ``mode="hardest"``: per anchor, its least similar positive and most similar negative;
    ``mode="random"``: a random positive and a random negative per anchor (seeded by ``seed``).
    Anchors without a positive or a negative in the batch are skipped.
    """

    MODES = ("hardest", "random")

    def __init__(self, mode: str = "hardest", seed: int = 0) -> None:
        check_choice("mode", mode, self.MODES)
        self.mode = mode
        self._generator = torch.Generator().manual_seed(seed)
        self._s_ap: list[np.ndarray] = []
        self._s_an: list[np.ndarray] = []

    def reset(self) -> None:
        self._s_ap, self._s_an = [], []

    @torch.no_grad()
    def record(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add one batch; returns this batch's ``(s_ap, s_an)`` (one entry per used anchor)."""
        check_batch(embeddings, labels)
        emb = embeddings.detach().cpu().double()
        labels = labels.detach().cpu()
        if self.mode == "hardest":
            s_ap, s_an, _ = similarity_triplets(emb, labels, "batch-hard")
        else:
            sim = cosine_similarity_matrix(emb)
            pos, neg = pair_masks(labels)
            anchors = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
            p = torch.multinomial(pos[anchors].double(), 1, generator=self._generator)[:, 0]
            n = torch.multinomial(neg[anchors].double(), 1, generator=self._generator)[:, 0]
            s_ap, s_an = sim[anchors, p], sim[anchors, n]
        s_ap, s_an = s_ap.numpy().copy(), s_an.numpy().copy()
        self._s_ap.append(s_ap)
        self._s_an.append(s_an)
        return s_ap, s_an

    @property
    def s_ap(self) -> np.ndarray:
        return np.concatenate(self._s_ap) if self._s_ap else np.zeros(0)

    @property
    def s_an(self) -> np.ndarray:
        return np.concatenate(self._s_an) if self._s_an else np.zeros(0)

    @property
    def num_batches(self) -> int:
        return len(self._s_ap)

    def to_dict(self) -> dict[str, Any]:
        """Summary: counts, the fraction of hard triplets (``S_an > S_ap``), mean similarities."""
        s_ap, s_an = self.s_ap, self.s_an
        n = len(s_ap)

        def mean(x: np.ndarray) -> float | None:
            return float(x.mean()) if n else None

        return {
            "mode": self.mode,
            "num_batches": self.num_batches,
            "num_triplets": n,
            "fraction_hard": mean((s_an > s_ap).astype(float)),
            "fraction_within_0.1": mean((s_an > s_ap - 0.1).astype(float)),
            "mean_s_ap": mean(s_ap),
            "mean_s_an": mean(s_an),
            "mean_gap": mean(s_ap - s_an),
        }

    def plot(self, path: str | Path, title: str | None = None, hexbin_above: int = 2000) -> Path:
        """Draw ``S_an`` (x) against ``S_ap`` (y) with the diagonal; a hexbin when there are more
        than ``hexbin_above`` points, else a scatter. Written atomically as a PNG."""
        from io import BytesIO

        from matplotlib.figure import Figure

        from hashlab.io import atomic_write

        s_ap, s_an = self.s_ap, self.s_an
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        if len(s_ap) > hexbin_above:
            hb = ax.hexbin(s_an, s_ap, gridsize=50, extent=(-1, 1, -1, 1), mincnt=1, bins="log",
                           cmap="viridis")
            fig.colorbar(hb, ax=ax, label="triplets (log)")
        elif len(s_ap):
            ax.scatter(s_an, s_ap, s=6, alpha=0.5, color="tab:blue", linewidths=0)
        ax.plot([-1, 1], [-1, 1], "--", color="tab:red", lw=1, label="$S_{ap} = S_{an}$")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("$S_{an}$ (anchor–negative cosine similarity)")
        ax.set_ylabel("$S_{ap}$ (anchor–positive cosine similarity)")
        summary = self.to_dict()
        if summary["num_triplets"]:
            ax.text(0.02, 0.98, f"n = {summary['num_triplets']}\n"
                    f"hard (S_an > S_ap): {summary['fraction_hard']:.1%}",
                    transform=ax.transAxes, va="top", fontsize=8)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title or f"triplet diagram ({self.mode})")
        fig.tight_layout()
        buf = BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return atomic_write(path, lambda f: f.write(buf.getvalue()))

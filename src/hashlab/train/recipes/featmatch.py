"""FeatMatch as a recipe (Kuo, Ma, Huang, Kira, ECCV 2020, "FeatMatch: Feature-Based
Augmentation for Semi-Supervised Learning").

The trunk (the config's backbone + code head) gives every image a feature ``f`` (its codes);
one shared classifier reads it. Every ``stage_iterations`` iterations the recipe condenses the
labelled features and a memory bank of recent unlabelled features into a few **prototypes** per
class (the class mean plus k-means centroids), and an attention module
(:class:`AttentionRefiner`) refines each feature with the prototypes (``f → f'``): a learned,
feature-space augmentation. Training is MixMatch-like (sharpened pseudo-labels from the weak
view, image mixup of labelled and unlabelled weak + strong views) with a consistency term on
both the refined and the plain features; test predictions use the refined features with the
stored prototypes, which ``RUN/model.pt`` carries (:func:`load_featmatch`).

``hashlab train CONFIG`` runs it with ``recipe: {name: featmatch, args: {...}}`` and
``data.semi`` set; the defaults are the CPU-sized "lite" recipe and
``configs/fmnist/semi/featmatch-full.yaml`` holds the paper's settings. Like every
semi-supervised recipe (:mod:`hashlab.train.recipes.semi`) it checkpoints after every stage and
resumes exactly. The recipe, its settings and how it differs from the paper:
``docs/recipes.md#featmatch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hashlab.errors import CheckpointError, ConfigError
from hashlab.train.recipes.registry import RECIPES
from hashlab.train.recipes.semi import (
    ClassifierHeads,
    SemiRecipe,
    load_heads,
    one_hot,
    soft_cross_entropy,
)
from hashlab.validation import check_int

__all__ = [
    "AttentionRefiner",
    "FeatMatch",
    "FeatMatchClassifier",
    "Mixed",
    "Prototypes",
    "class_prototypes",
    "confident_bank",
    "cyclic_lr",
    "kmeans_means",
    "load_featmatch",
    "mixup",
    "sharpen",
    "strong_augment",
]

#: the learning-rate schedules: ``constant`` (``optim.lr`` throughout) or the paper's ``cyclic``
SCHEDULES = ("constant", "cyclic")


# ---------------------------------------------------------------- pseudo-labels and mixup
def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch's sharpening of the rows of ``p``: ``p^(1/T) / Σ_c p_c^(1/T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    q = p.pow(1.0 / temperature)
    return q / q.sum(dim=1, keepdim=True)


class Mixed(NamedTuple):
    """:func:`mixup`'s result: ``inputs = lam·x + (1 − lam)·x[perm]`` (targets likewise)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lam: float
    perm: torch.Tensor


def beta_sample(alpha: float, gen: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), seeded from ``gen`` (torch has no seeded Beta)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float, gen: torch.Generator) -> Mixed:
    """MixMatch's mixup of a batch with a shuffled copy of itself: one ``λ ~ Beta(α, α)`` per
    batch, taken as ``max(λ, 1 − λ)`` so every mixed item stays closest to its own input, and
    one permutation, both drawn from ``gen``; the mixed targets are renormalised rows."""
    if not alpha > 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    lam = beta_sample(alpha, gen)
    lam = max(lam, 1.0 - lam)
    mixed = lam * x + (1.0 - lam) * x[perm]
    t = lam * targets + (1.0 - lam) * targets[perm]
    return Mixed(mixed, t / t.sum(dim=1, keepdim=True), lam, perm)


# ---------------------------------------------------------------- the strong view
def strong_augment(x: torch.Tensor, gen: torch.Generator, *, shift: float = 0.2,
                   rotation: float = 15.0, brightness: float = 0.3, contrast: float = 0.3,
                   cutout: float = 0.5, hflip: bool = False) -> torch.Tensor:
    """A "strong" view of the (normalised) images ``x [B, C, H, W]``, every parameter drawn per
    image from ``gen``, in one batched pass: an optional horizontal flip; a random rotation by
    up to ``rotation`` degrees and translation by up to ``shift`` of the image size (bilinear,
    zero = the dataset mean outside); contrast scaled by ``U(1 − contrast, 1 + contrast)``
    about the image's mean and brightness shifted by ``U(−brightness, brightness)`` (in
    normalised units); then a square of side ``cutout · min(H, W)`` around a random centre
    erased to 0. Shape, dtype and device are kept. The torch stand-in for the paper's
    RandAugment."""
    if x.ndim != 4:
        raise ValueError(f"strong_augment expects images [B, C, H, W], got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if hflip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotation)
    move = (torch.rand(b, 2, generator=gen) * 2 - 1) * (2 * shift)  # grid coordinates span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1),
                         torch.stack([sin, cos, move[:, 1]], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * contrast
    offset = (torch.rand(b, generator=gen) * 2 - 1) * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * scale.to(x)[:, None, None, None] + mean + offset.to(x)[:, None, None, None]
    side = int(round(cutout * min(h, w)))
    if side > 0:
        cy = torch.randint(0, h, (b,), generator=gen).to(x.device)
        cx = torch.randint(0, w, (b,), generator=gen).to(x.device)
        top, left = cy - side // 2, cx - side // 2
        rows = torch.arange(h, device=x.device)[None, :]
        cols = torch.arange(w, device=x.device)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)  # [B, H]
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)  # [B, W]
        hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        x = x.masked_fill(hole, 0.0)
    return x.contiguous()


# ---------------------------------------------------------------- prototypes
@dataclass
class Prototypes:
    """Class prototypes: ``features [P, dim]``, their class ``labels [P]``, whether each came
    from the labelled features (``labelled [P]``, else from the memory bank), and the
    confidence threshold the bank was filtered with (None: the bank was not used)."""

    features: torch.Tensor
    labels: torch.Tensor
    labelled: torch.Tensor
    threshold: float | None = None

    def __len__(self) -> int:
        return len(self.features)

    def to_state(self) -> dict[str, Any]:
        return {"features": self.features, "labels": self.labels, "labelled": self.labelled,
                "threshold": self.threshold}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Prototypes:
        return cls(state["features"], state["labels"], state["labelled"], state["threshold"])


def kmeans_means(x: torch.Tensor, k: int, seed: int = 0, iterations: int = 20) -> torch.Tensor:
    """FAISS k-means (``faiss.Kmeans(dim, k, niter=iterations, seed=seed mod (2³¹ − 1))``,
    every point used) of the L2-normalised rows of ``x``; each point goes to its nearest
    centroid, and the result is, per non-empty cluster in cluster order, the mean of its
    members' **un-normalised** rows ``[≤ k, dim]``."""
    import faiss

    if not 1 <= k <= len(x):
        raise ValueError(f"k-means of {len(x)} points into {k} clusters")
    xf = x.detach().float().cpu()
    xn = (xf / xf.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
    km = faiss.Kmeans(xn.shape[1], k, niter=iterations, seed=seed % (2**31 - 1), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(len(xn), 1))
    km.train(np.ascontiguousarray(xn, dtype=np.float32))
    _, assign = km.index.search(np.ascontiguousarray(xn, dtype=np.float32), 1)
    assign = torch.from_numpy(assign[:, 0].astype(np.int64))
    return torch.stack([xf[assign == c].mean(dim=0) for c in torch.unique(assign)])


def class_centres(x: torch.Tensor, n: int, seed: int = 0, iterations: int = 20) -> torch.Tensor:
    """Up to ``n`` prototypes of one class's features ``x``: the mean, plus ``n − 1``
    :func:`kmeans_means` centroids (every member itself when there are no more than ``n − 1``
    members); none for an empty ``x``."""
    if len(x) == 0:
        return x.new_zeros(0, x.shape[1])
    mean = x.mean(dim=0, keepdim=True)
    if n == 1:
        return mean
    rest = x if n - 1 >= len(x) else kmeans_means(x, n - 1, seed, iterations).to(x)
    return torch.cat([mean, rest])


def confident_bank(probs: torch.Tensor, per_class: int, num_classes: int,
                   threshold: float = 0.5, halvings: int = 5
                   ) -> tuple[torch.Tensor | None, float | None]:
    """Which memory-bank rows to build prototypes from: those whose top predicted probability
    is above ``threshold``, the threshold halved (at most ``halvings`` times) until every class
    is the top prediction of more than ``per_class`` kept rows. Returns (the mask, the threshold
    used), or (None, None) when even the last threshold leaves a class short (the official
    code's rule: the bank is then not used)."""
    if len(probs) == 0:
        return None, None
    conf, pred = probs.max(dim=1)
    t = float(threshold)
    for attempt in range(halvings + 1):
        keep = conf > t
        counts = torch.bincount(pred[keep], minlength=num_classes)[:num_classes]
        if bool((counts > per_class).all()):
            return keep, t
        if attempt < halvings:
            t /= 2
    return None, None


def class_prototypes(features: torch.Tensor, labels: torch.Tensor,
                     bank: tuple[torch.Tensor, torch.Tensor] | None, per_class: int, *,
                     num_classes: int | None = None, labelled_ratio: float = 0.5,
                     threshold: float = 0.5, halvings: int = 5, seed: int = 0,
                     iterations: int = 20) -> Prototypes:
    """FeatMatch's class prototypes from the labelled ``features`` / ``labels`` and the memory
    ``bank`` (unlabelled features, their predicted probabilities; or None).

    The bank rows kept are those of :func:`confident_bank`, labelled with their argmax class.
    Per class (ascending) :func:`class_centres` gives ``round(per_class · labelled_ratio)``
    (at least 1) prototypes from the labelled features and ``per_class`` minus those (at least
    1) from the kept bank rows; with ``per_class`` 1 the mean of both; with no usable bank all
    ``per_class`` from the labelled features. A class with few features gets fewer prototypes
    (one with none gets none); k-means seeds are ``seed + 2·class`` (labelled) and
    ``seed + 2·class + 1`` (bank)."""
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features [N, dim] and labels [N] expected, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    features, labels = features.detach().float().cpu(), labels.detach().long().cpu()
    c_total = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    kept, used = None, None
    if bank is not None:
        bank_f, bank_p = bank[0].detach().float().cpu(), bank[1].detach().float().cpu()
        mask, used = confident_bank(bank_p, per_class, c_total, threshold, halvings)
        if mask is not None:
            kept = (bank_f[mask], bank_p[mask].argmax(dim=1))
    n_l = max(1, round(per_class * labelled_ratio))
    n_u = max(1, per_class - n_l)
    out: list[tuple[torch.Tensor, int, bool]] = []
    for c in range(c_total):
        fl = features[labels == c]
        if kept is None:
            out.append((class_centres(fl, per_class, seed + 2 * c, iterations), c, True))
        elif per_class == 1:
            both = torch.cat([fl, kept[0][kept[1] == c]])
            out.append((class_centres(both, 1), c, True))
        else:
            out.append((class_centres(fl, n_l, seed + 2 * c, iterations), c, True))
            fu = kept[0][kept[1] == c]
            out.append((class_centres(fu, n_u, seed + 2 * c + 1, iterations), c, False))
    dim = features.shape[1]
    feats = torch.cat([f for f, _, _ in out]) if out else torch.zeros(0, dim)
    labs = torch.cat([torch.full((len(f),), c, dtype=torch.long) for f, c, _ in out]) \
        if out else torch.zeros(0, dtype=torch.long)
    from_l = torch.cat([torch.full((len(f),), lab, dtype=torch.bool) for f, _, lab in out]) \
        if out else torch.zeros(0, dtype=torch.bool)
    return Prototypes(feats, labs, from_l, used)


# ---------------------------------------------------------------- feature refinement
class AttentionRefiner(nn.Module):
    """The paper's attention head: with ``num_heads`` heads of width ``d = dim // num_heads``,
    per head ``e_x = W_h f``, ``e_p = W_h f_p`` (prototypes),
    ``A = dropout(softmax(e_x e_pᵀ / √d))``, ``g_h = ReLU(FC_h([A e_p ; e_x]))``; the refined
    feature is ``f' = ReLU(f + FC([g_1 … g_H]))``. ``forward(f, prototypes)`` returns ``f'``
    ``[N, dim]`` and the attention ``[N, heads, P]``."""

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if not 1 <= num_heads <= dim:
            raise ValueError(f"num_heads must be in [1, dim={dim}], got {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        d = self.head_dim
        self.embed = nn.ModuleList(nn.Linear(dim, d) for _ in range(num_heads))
        self.combine = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(num_heads))
        self.out = nn.Linear(d * num_heads, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, f: torch.Tensor, prototypes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ex = torch.stack([e(f) for e in self.embed])  # [H, N, d]
        ep = torch.stack([e(prototypes) for e in self.embed])  # [H, P, d]
        att = self.dropout(torch.softmax(ex @ ep.transpose(1, 2) / math.sqrt(self.head_dim),
                                         dim=2))  # [H, N, P]
        g = torch.stack([F.relu(fc(torch.cat([att[h] @ ep[h], ex[h]], dim=1)))
                         for h, fc in enumerate(self.combine)])  # [H, N, d]
        g = g.transpose(0, 1).reshape(len(f), -1)
        return F.relu(f + self.out(g)), att.transpose(0, 1)


class FeatMatchClassifier(nn.Module):
    """A finished FeatMatch run's classifier on codes: the heads, and (when the run used
    attention) the refiner with its stored prototypes (:func:`load_featmatch`)."""

    def __init__(self, heads: ClassifierHeads, refiner: AttentionRefiner | None,
                 prototypes: Prototypes | None) -> None:
        super().__init__()
        self.heads, self.refiner, self.prototypes = heads, refiner, prototypes

    @torch.no_grad()
    def probabilities(self, codes: torch.Tensor) -> torch.Tensor:
        """The heads' averaged softmax ``[N, C]`` of the (refined, when stored) codes."""
        self.eval()
        if self.refiner is not None and self.prototypes is not None:
            codes = self.refiner(codes, self.prototypes.features.to(codes))[0]
        return torch.softmax(self.heads(codes), dim=2).mean(dim=0)


def load_featmatch(run_dir: str | Path) -> FeatMatchClassifier:
    """The classifier a FeatMatch run stored in ``RUN/model.pt`` (heads, refiner,
    prototypes), in eval mode: ``load_featmatch(run).probabilities(codes)``."""
    from hashlab.artifacts import load_torch_file
    from hashlab.train.engine import FINAL_MODEL

    path = Path(run_dir) / FINAL_MODEL
    state, _ = load_torch_file(path, what="finished model")
    saved = state.get("featmatch")
    if saved is None:
        raise CheckpointError(f"{path}: not a FeatMatch run's model (no featmatch entry)")
    heads = load_heads(run_dir)
    refiner = prototypes = None
    if saved["refiner"] is not None and saved["prototypes"] is not None:
        r = saved["refiner"]
        refiner = AttentionRefiner(state["config"]["model"]["dim"], r["heads"], r["dropout"])
        refiner.load_state_dict(r["state"])
        prototypes = Prototypes.from_state(saved["prototypes"])
    return FeatMatchClassifier(heads, refiner, prototypes).eval()


# ---------------------------------------------------------------- schedules
def cyclic_lr(iteration: int, max_lr: float, pretrain: int, cycle: int, end: int) -> float:
    """The official code's schedule (``SupConvScheduler``): from ``max_lr/100`` up to
    ``max_lr/10`` over the ``pretrain`` iterations, linearly up to ``max_lr`` over ``cycle``,
    back down to ``max_lr/10`` over ``cycle``, then down to ``max_lr/10⁴`` over ``end``."""
    start, base, last = max_lr / 100, max_lr / 10, max_lr / 1e4
    t = iteration
    if t < pretrain:
        return start + t * (base - start) / pretrain
    t -= pretrain
    if t < cycle:
        return base + t * (max_lr - base) / cycle
    t -= cycle
    if t < cycle:
        return max_lr - t * (max_lr - base) / cycle
    t -= cycle
    return max(last, base - t * (base - last) / max(end, 1))


# ---------------------------------------------------------------- the recipe
@RECIPES.register("featmatch")
class FeatMatch(SemiRecipe):
    """FeatMatch: MixMatch-style training with prototype attention (feature augmentation).

    Stages of ``stage_iterations`` iterations (one more boundary at ``pretrain_iterations``):
    ``pretrain-k`` stages train without refinement; every ``main-k`` stage first rebuilds the
    class prototypes (:func:`class_prototypes` of the labelled codes and the memory bank, then
    empties the bank) and trains with the refined features. One iteration draws
    ``labelled_batch`` labelled and ``unlabelled_batch`` unlabelled images, each as a weak view
    (the config's augment) and ``strong_views`` :func:`strong_augment` views; the pseudo-label
    is ``sharpen(softmax(clf(f'(weak u))), temperature)``; all views are mixed up (``mixup``,
    ``mixup_alpha``) and the loss is
    ``CE(y, clf(f'_l)) + w(t)·[refined_weight·CE(p̂, clf(f'_u)) + plain_weight·CE(p̂, clf(f_u))]``
    plus the codes' quantization, with ``w(t) = min(1, t / rampup_iterations)``. In the
    pretrain stages ``f' = f`` and the unlabelled term is ``refined_weight·CE(p̂, clf(f_u))``;
    ``attention: false`` (the ablation without prototype attention) keeps ``f' = f`` throughout
    and gives the main stages ``(refined_weight + plain_weight)·CE(p̂, clf(f_u))``.

    Defaults: the CPU "lite" recipe. The paper's settings: ``docs/recipes.md#featmatch`` and
    ``configs/fmnist/semi/featmatch-full.yaml`` (``iterations`` 183000, ``stage_iterations``
    500, ``pretrain_iterations`` 3000, ``strong_views`` 8, ``prototypes_per_class`` 20,
    ``labelled_batch`` 64, ``unlabelled_batch`` 128, ``rampup_iterations`` 75000,
    ``schedule: cyclic`` with ``cycle_iterations`` 75000, SGD lr 0.04 momentum 0.95 wd 2e-4).
    """

    recipe_name = "featmatch"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *,
                 progress: bool = True, callbacks: Any = (),
                 iterations: int = 2000, stage_iterations: int = 250,
                 pretrain_iterations: int = 500, labelled_batch: int = 32,
                 unlabelled_batch: int = 64, strong_views: int = 1,
                 prototypes_per_class: int = 5, labelled_ratio: float = 0.5,
                 memory_bank: int = 10000, threshold: float = 0.5,
                 threshold_halvings: int = 5, kmeans_iterations: int = 20,
                 temperature: float = 0.75, mixup: bool = True, mixup_alpha: float = 0.75,
                 refined_weight: float = 0.5, plain_weight: float = 2.0,
                 rampup_iterations: int = 1000, attention: bool = True,
                 attention_heads: int = 4, attention_dropout: float = 0.1,
                 schedule: str = "constant", cycle_iterations: int | None = None,
                 strong_shift: float = 0.2, strong_rotation: float = 15.0,
                 strong_brightness: float = 0.3, strong_contrast: float = 0.3,
                 strong_cutout: float = 0.5, strong_hflip: bool = False,
                 heads: int = 1, hidden: int = 256, dropout: float = 0.0,
                 batch_size: int | None = None, quantization_weight: float = 0.1) -> None:
        def integer(value: Any, name: str, minimum: int) -> int:
            try:
                return check_int(value, f"recipe.args.{name}", minimum=minimum)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

        def real(value: Any, name: str, low: float, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and (value > low if low_open else value >= low) \
                and (high is None or (value < high if high_open else value <= high))
            if not ok:
                lo = f"{'(' if low_open else '['}{low:g}"
                hi = "∞)" if high is None else f"{high:g}{')' if high_open else ']'}"
                raise ConfigError(f"recipe.args.{name} must be a number in {lo}, {hi}, got "
                                  f"{value!r}")
            return float(value)

        # the recipe's own arguments first: a bad value fails before any data is loaded
        self.iterations = integer(iterations, "iterations", 1)
        self.stage_iterations = integer(stage_iterations, "stage_iterations", 1)
        self.pretrain_iterations = integer(pretrain_iterations, "pretrain_iterations", 0)
        if self.pretrain_iterations > self.iterations:
            raise ConfigError(f"recipe.args.pretrain_iterations ({pretrain_iterations}) must "
                              f"be at most recipe.args.iterations ({iterations})")
        self.labelled_batch = integer(labelled_batch, "labelled_batch", 1)
        self.unlabelled_batch = integer(unlabelled_batch, "unlabelled_batch", 2)
        self.strong_views = integer(strong_views, "strong_views", 0)
        self.prototypes_per_class = integer(prototypes_per_class, "prototypes_per_class", 1)
        self.labelled_ratio = real(labelled_ratio, "labelled_ratio", 0, 1, low_open=True)
        self.memory_bank = integer(memory_bank, "memory_bank", 1)
        self.threshold = real(threshold, "threshold", 0, 1, low_open=True)
        self.threshold_halvings = integer(threshold_halvings, "threshold_halvings", 0)
        self.kmeans_iterations = integer(kmeans_iterations, "kmeans_iterations", 1)
        self.temperature = real(temperature, "temperature", 0, low_open=True)
        if not isinstance(mixup, bool):
            raise ConfigError(f"recipe.args.mixup must be true or false, got {mixup!r}")
        self.use_mixup = mixup
        self.mixup_alpha = real(mixup_alpha, "mixup_alpha", 0, low_open=True)
        self.refined_weight = real(refined_weight, "refined_weight", 0)
        self.plain_weight = real(plain_weight, "plain_weight", 0)
        self.rampup_iterations = integer(rampup_iterations, "rampup_iterations", 0)
        if not isinstance(attention, bool):
            raise ConfigError(f"recipe.args.attention must be true or false, got {attention!r}")
        self.attention = attention
        self.attention_heads = integer(attention_heads, "attention_heads", 1)
        if self.attention_heads > config.model.dim:
            raise ConfigError(f"recipe.args.attention_heads ({attention_heads}) must be at most "
                              f"model.dim ({config.model.dim}): each head is dim // heads wide")
        self.attention_dropout = real(attention_dropout, "attention_dropout", 0, 1,
                                      high_open=True)
        if schedule not in SCHEDULES:
            raise ConfigError(f"recipe.args.schedule: {schedule!r} is not one of "
                              f"{', '.join(SCHEDULES)}")
        self.schedule = schedule
        main = self.iterations - self.pretrain_iterations
        self.cycle_iterations = (integer(cycle_iterations, "cycle_iterations", 1)
                                 if cycle_iterations is not None else max(1, main * 5 // 12))
        if schedule == "cyclic" and 2 * self.cycle_iterations > main:
            raise ConfigError(f"recipe.args.cycle_iterations: the cyclic schedule goes up and "
                              f"down over 2 × {self.cycle_iterations} iterations after the "
                              f"{self.pretrain_iterations} pretraining ones, more than the "
                              f"{main} left of recipe.args.iterations ({self.iterations})")
        self.strong = {
            "shift": real(strong_shift, "strong_shift", 0, 1),
            "rotation": real(strong_rotation, "strong_rotation", 0, 180),
            "brightness": real(strong_brightness, "strong_brightness", 0),
            "contrast": real(strong_contrast, "strong_contrast", 0, 1),
            "cutout": real(strong_cutout, "strong_cutout", 0, 1),
        }
        if not isinstance(strong_hflip, bool):
            raise ConfigError(f"recipe.args.strong_hflip must be true or false, got "
                              f"{strong_hflip!r}")
        self.strong_hflip = strong_hflip
        if integer(heads, "heads", 1) != 1:
            raise ConfigError(f"recipe.args.heads: FeatMatch trains one shared classifier on "
                              f"the plain and the refined features; use heads: 1, got {heads}")
        super().__init__(config, run_dir, progress=progress, callbacks=callbacks, heads=1,
                         hidden=hidden, dropout=dropout, batch_size=batch_size,
                         quantization_weight=quantization_weight)
        from hashlab.train.engine import build_optimizer

        if len(self.unlabelled) == 0:
            raise ConfigError("recipe featmatch needs unlabelled images: data.semi leaves none "
                              "(lower data.semi.labels_per_class or data.semi.validation)")
        self.refiner: AttentionRefiner | None = None
        params = [*self.model.parameters(), *self.heads.parameters()]
        if self.attention:
            self.refiner = AttentionRefiner(config.model.dim, self.attention_heads,
                                            self.attention_dropout).to(self.device)
            params += list(self.refiner.parameters())
        self.optimizer = build_optimizer(config, params)
        self.prototypes: Prototypes | None = None
        self._bank_f: list[torch.Tensor] = []
        self._bank_p: list[torch.Tensor] = []
        # stage boundaries: every stage_iterations, and where pretraining ends
        marks = set(range(0, self.iterations, self.stage_iterations))
        if self.pretrain_iterations < self.iterations:
            marks.add(self.pretrain_iterations)
        starts = sorted(marks)
        self.bounds = list(zip(starts, [*starts[1:], self.iterations], strict=True))
        names, counts = [], {"pretrain": 0, "main": 0}
        for start, _ in self.bounds:
            phase = "pretrain" if start < self.pretrain_iterations else "main"
            counts[phase] += 1
            names.append(f"{phase}-{counts[phase]}")
        self.names = names

    # ------------------------------------------------------------ state
    def stage_names(self) -> list[str]:
        return list(self.names)

    def bank(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The memory bank: the last ``memory_bank`` weak-view codes of unlabelled images and
        their predicted probabilities since the last prototype refresh (None when empty)."""
        if not self._bank_f:
            return None
        feats = torch.cat(self._bank_f)[-self.memory_bank:]
        probs = torch.cat(self._bank_p)[-self.memory_bank:]
        self._bank_f, self._bank_p = [feats], [probs]
        return feats, probs

    def _remember(self, feats: torch.Tensor, probs: torch.Tensor) -> None:
        self._bank_f.append(feats.detach().float().cpu())
        self._bank_p.append(probs.detach().float().cpu())
        if sum(len(f) for f in self._bank_f) > 2 * self.memory_bank:
            self.bank()  # keep memory bounded (the last memory_bank rows are what counts)

    def extra_state(self) -> dict[str, Any]:
        bank = self.bank()
        return {
            "bank": None if bank is None else {"features": bank[0], "probs": bank[1]},
            "prototypes": None if self.prototypes is None else self.prototypes.to_state(),
            "refiner": None if self.refiner is None else self.refiner.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if (state.get("refiner") is None) != (self.refiner is None):
            raise ValueError("the checkpoint's recipe.args.attention differs from this config")
        if self.refiner is not None:
            self.refiner.load_state_dict(state["refiner"])
        bank = state.get("bank")
        self._bank_f = [] if bank is None else [bank["features"].float().cpu()]
        self._bank_p = [] if bank is None else [bank["probs"].float().cpu()]
        saved = state.get("prototypes")
        self.prototypes = None if saved is None else Prototypes.from_state(saved)

    # ------------------------------------------------------------ prediction
    def refined(self) -> bool:
        """Whether predictions use the refined codes (attention on and prototypes built)."""
        return self.refiner is not None and self.prototypes is not None

    def classify(self, codes: torch.Tensor, refine: bool) -> torch.Tensor:
        """The classifier's logits ``[B, C]`` of ``codes`` (refined with the prototypes when
        ``refine``)."""
        if refine:
            assert self.refiner is not None and self.prototypes is not None
            codes = self.refiner(codes, self.prototypes.features.to(codes))[0]
        return self.heads.heads[0](codes)

    @torch.no_grad()
    def head_probabilities(self, codes: torch.Tensor, dropout: bool = False) -> torch.Tensor:
        """The classifier's softmax ``[1, N, C]`` of the codes, refined with the stored
        prototypes once there are some (the prediction FeatMatch evaluates)."""
        self.heads.train(dropout)
        if self.refiner is not None:
            self.refiner.train(dropout)
        refine = self.refined()
        out = [torch.softmax(self.classify(chunk.to(self.device), refine), dim=1).cpu()
               for chunk in codes.split(self.config.eval.batch_size)]
        self.heads.eval()
        if self.refiner is not None:
            self.refiner.eval()
        return (torch.cat(out) if out else torch.zeros(0, self.num_classes))[None]

    # ------------------------------------------------------------ training
    def rampup(self, iteration: int) -> float:
        """The consistency weight ``w(t) = min(1, t / rampup_iterations)``."""
        if self.rampup_iterations == 0:
            return 1.0
        return min(1.0, iteration / self.rampup_iterations)

    def learning_rate(self, iteration: int) -> float:
        lr = self.config.optim.lr
        if self.schedule == "constant":
            return lr
        end = self.iterations - self.pretrain_iterations - 2 * self.cycle_iterations
        return cyclic_lr(iteration, lr, self.pretrain_iterations, self.cycle_iterations, end)

    def refresh_prototypes(self) -> Prototypes:
        """Rebuild the prototypes from the labelled codes (eval mode, no augmentation) and the
        memory bank, then empty the bank."""
        codes = self.codes_of(self.labelled)
        labels = torch.as_tensor(np.asarray(self.labelled.labels), dtype=torch.long)
        self.prototypes = class_prototypes(
            codes, labels, self.bank(), self.prototypes_per_class,
            num_classes=self.num_classes, labelled_ratio=self.labelled_ratio,
            threshold=self.threshold, halvings=self.threshold_halvings,
            seed=self.config.seed * 1_000_003 + 1009 * self.stage,
            iterations=self.kmeans_iterations)
        self._bank_f, self._bank_p = [], []
        return self.prototypes

    @staticmethod
    def draw(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
        """``size`` indices into ``n`` items: a shuffled pass, repeated when ``size > n``."""
        passes = [torch.randperm(n, generator=gen) for _ in range(-(-size // n))]
        return torch.cat(passes)[:size]

    def views(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The weak view, then ``strong_views`` strong ones, stacked view-major ``[V·B, ...]``."""
        weak = self.augment(images, gen) if self.augment.active else images
        strong = [strong_augment(images, gen, hflip=self.strong_hflip, **self.strong)
                  for _ in range(self.strong_views)]
        return torch.cat([weak, *strong]).to(self.device)

    def run_stage(self, name: str, gen: torch.Generator) -> dict[str, Any]:
        start, end = self.bounds[self.stage]
        phase = name.split("-")[0]
        refine = self.attention and phase == "main"
        log: dict[str, Any] = {"iterations": end - start}
        if refine:
            protos = self.refresh_prototypes()
            log["prototypes"] = len(protos)
            log["bank_prototypes"] = int((~protos.labelled).sum())
            log["bank_threshold"] = protos.threshold
        assert self.refiner is not None or not refine
        modules = [m for m in (self.model, self.heads, self.refiner) if m is not None]
        for m in modules:
            m.train()
        n_views = 1 + self.strong_views
        totals = dict.fromkeys(("loss", "labelled", "refined", "plain"), 0.0)
        confidence, correct, seen = 0.0, 0, 0
        bar = tqdm(range(start, end), desc=name, leave=False, disable=not self.progress,
                   unit="it", dynamic_ncols=True)
        for t in bar:
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(t)
            li = self.draw(len(self.labelled), self.labelled_batch, gen)
            ui = self.draw(len(self.unlabelled), self.unlabelled_batch, gen)
            xl, yl = self.labelled.get_batch(li)
            xu, truth = self.unlabelled.get_batch(ui)  # truth: for the log only
            xl, xu = self.views(xl, gen), self.views(xu, gen)
            bu = len(ui)
            with torch.no_grad():  # the pseudo-label, from the weak unlabelled view
                fu = self.model(xu[:bu])
                probs = torch.softmax(self.classify(fu, refine), dim=1)
            if refine:
                self._remember(fu, probs)
            conf, pred = probs.max(dim=1)
            confidence += float(conf.sum())
            correct += int((pred.cpu() == truth).sum())
            seen += bu
            target_u = sharpen(probs, self.temperature).repeat(n_views, 1)
            target_l = one_hot(yl.numpy(), self.num_classes).to(self.device).repeat(n_views, 1)
            x = torch.cat([xl, xu])
            target = torch.cat([target_l, target_u])
            if self.use_mixup:
                x, target = mixup(x, target, self.mixup_alpha, gen)[:2]
            nl = len(xl)
            codes = self.model(x)
            w = self.rampup(t)
            plain = self.heads.heads[0](codes)
            if refine:
                logits = self.classify(codes, True)
                loss_l = soft_cross_entropy(logits[:nl], target[:nl])
                loss_r = soft_cross_entropy(logits[nl:], target[nl:])
                loss_p = soft_cross_entropy(plain[nl:], target[nl:])
                loss = loss_l + w * (self.refined_weight * loss_r + self.plain_weight * loss_p)
            else:
                loss_l = soft_cross_entropy(plain[:nl], target[:nl])
                loss_p = soft_cross_entropy(plain[nl:], target[nl:])
                loss_r = loss_p.new_zeros(())
                weight = self.refined_weight + (self.plain_weight if phase == "main" else 0.0)
                loss = loss_l + w * weight * loss_p
            loss = loss + self.quantization(codes)
            self.step(loss)
            for key, value in (("loss", loss), ("labelled", loss_l), ("refined", loss_r),
                               ("plain", loss_p)):
                totals[key] += float(value.detach())
            bar.set_postfix(loss=f"{totals['loss'] / (t - start + 1):.4f}")
        bar.close()
        n = max(end - start, 1)
        log.update({
            "loss": totals["loss"] / n, "loss_labelled": totals["labelled"] / n,
            "loss_refined": totals["refined"] / n, "loss_plain": totals["plain"] / n,
            "pseudo_labels": seen,
            "pseudo_confidence": confidence / max(seen, 1),
            "pseudo_accuracy": correct / max(seen, 1),
            "consistency_weight": self.rampup(end - 1),
            "lr": self.learning_rate(end - 1),
        })
        if not refine:
            log["prototypes"] = 0 if self.prototypes is None else len(self.prototypes)
        return log

    # ------------------------------------------------------------ outputs
    def final_extras(self) -> dict[str, Any]:
        """``featmatch`` in ``RUN/model.pt``: whether attention was on, the refiner (weights,
        heads, dropout) and the prototypes predictions use."""
        refine = self.refined()
        return {"featmatch": {
            "attention": self.attention,
            "refiner": None if not refine or self.refiner is None else {
                "state": self.refiner.state_dict(), "heads": self.attention_heads,
                "dropout": self.attention_dropout},
            "prototypes": None if not refine or self.prototypes is None
            else self.prototypes.to_state(),
        }}

    @staticmethod
    def summary_table(summary: dict[str, Any]) -> str:
        """The text table ``hashlab train`` prints: a row per stage (validation accuracy, the
        pseudo-labels' mean confidence and accuracy against the hidden labels, the number of
        prototypes, the mean loss), then the test accuracy and mAP."""
        def fmt(value: Any, spec: str) -> str:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return format(value, spec) if ok else "–".rjust(int(spec.split(".")[0]))

        lines = ["stage          val acc  pseudo conf  pseudo acc  prototypes     loss  steps"]
        for log in summary["stages"]:
            lines.append(f"{log['stage']:<13}  {fmt(log.get('val_accuracy'), '7.4f')}  "
                         f"{fmt(log.get('pseudo_confidence'), '11.4f')}  "
                         f"{fmt(log.get('pseudo_accuracy'), '10.4f')}  "
                         f"{fmt(log.get('prototypes'), '10d')}  {fmt(log.get('loss'), '7.4f')}  "
                         f"{log['steps']:>5}")
        refined = "refined" if summary.get("refined_predictions") else "plain"
        lines.append(f"{summary['recipe']}: test accuracy {summary['test_accuracy']:.4f} "
                     f"({refined} features), {summary['protocol']} mAP@all "
                     f"{summary['mAP@all']:.4f}")
        return "\n".join(lines)

    def summarise(self) -> dict[str, Any]:
        summary = super().summarise()
        summary["attention"] = self.attention
        summary["refined_predictions"] = self.refined()
        summary["prototypes"] = 0 if self.prototypes is None else len(self.prototypes)
        return summary

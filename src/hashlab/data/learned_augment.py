"""Learned, sample-aware data augmentation, and the fixed random warps it is compared with.

The learned augmentor follows Meng et al., "Sample-aware Data Augmentor for Scene Text
Recognition" (ICPR 2020): a gate chooses, per image, one of a few transformations (a learned
affine warp, a learned thin-plate-spline warp, optionally the identity) with a straight-through
Gumbel-softmax sample, and the augmentor is trained against the model with the *adversarial
control loss* ``l_AC``, which asks the augmented images to be harder than the originals, but only
by a factor set by how well the model already knows them.

Everything here is plain PyTorch (``F.affine_grid`` / ``F.grid_sample``; the thin-plate-spline
system is solved with ``torch.linalg.solve``) and works on batches ``[B, C, H, W]`` with no
per-image Python loop. The method, the reading of the paper's formulas, the config keys
(``data.augment.learned``, ``data.augment.affine``, ``data.augment.elastic``) and what differs
from the paper are in docs/data-and-models.md, section "Learned augmentation".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.config import AugmentConfig, LearnedAugmentConfig
from hashlab.data.augment import BatchAugment

#: the transformations a gate can choose from
TRANSFORMS = ("identity", "affine", "tps")
#: how warps fill pixels sampled from outside the image: the nearest border pixel (the
#: background of centred objects; zeros would be the dataset mean after normalisation)
PADDING_MODE = "border"


# ---------------------------------------------------------------------------------- the gate
def gumbel_noise(shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel samples ``G = −log(−log U)``, ``U ~ Uniform(0, 1)`` drawn (on the CPU)
    from ``generator``; float32."""
    u = torch.rand(tuple(shape), generator=generator)
    tiny = torch.finfo(u.dtype).tiny
    return -torch.log(-torch.log(u.clamp_min(tiny)))


def gumbel_gate(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, hard: bool = True) -> torch.Tensor:
    """A Gumbel-softmax sample over the last dimension of ``logits`` ``[..., K]``.

    ``soft = softmax((logits + G) / tau)``; with ``hard`` the value is the one-hot vector of
    ``argmax(logits + G)`` and the gradient is that of ``soft`` (straight-through). ``G`` is
    ``noise`` when given (tests fix it), else drawn from ``generator``.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if noise is None:
        noise = gumbel_noise(logits.shape, generator)
    perturbed = logits + noise.to(device=logits.device, dtype=logits.dtype)
    soft = torch.softmax(perturbed / tau, dim=-1)
    if not hard:
        return soft
    onehot = F.one_hot(perturbed.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return onehot - soft.detach() + soft


def temperature(step: int, total_steps: int, tau0: float, tau_min: float) -> float:
    """The gate's temperature at training batch ``step`` (0-based) of ``total_steps``:
    geometric annealing ``tau0 · (tau_min / tau0) ** (step / (total_steps − 1))``, from ``tau0``
    at the first batch to ``tau_min`` at the last."""
    if total_steps <= 1:
        return tau_min
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return tau0 * (tau_min / tau0) ** frac


# ---------------------------------------------------------------------------------- the warps
class LocalisationNet(nn.Module):
    """A small CNN ``image → out_features`` (two stride-2 convolutions, 2×2 average pooling, two
    linear layers). The last layer starts at zero, so that the output is 0 for every image:
    the warps built on it start at the identity and the gate at uniform logits."""

    def __init__(self, in_channels: int, out_features: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * width, 4 * width), nn.ReLU())
        self.out = nn.Linear(4 * width, out_features)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def warp_affine(x: torch.Tensor, theta: torch.Tensor,
                padding_mode: str = PADDING_MODE) -> torch.Tensor:
    """Warp ``x`` ``[B, C, H, W]`` by affine matrices ``theta`` ``[B, 2, 3]`` (output pixel
    ``p`` reads the input at ``theta · [p, 1]``, normalised coordinates, bilinear)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


class AffineWarp(nn.Module):
    """A learned affine warp: a localisation network predicts the 6 parameters of
    ``theta = I + scale · tanh(raw)`` for each image, so every parameter stays within
    ``±scale`` of the identity; zero-initialised, so the warp starts as the identity."""

    def __init__(self, in_channels: int, scale: float = 0.2, width: int = 8) -> None:
        super().__init__()
        self.scale = float(scale)
        self.loc = LocalisationNet(in_channels, 6, width)
        self.register_buffer("identity", torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The affine matrices ``[B, 2, 3]`` for ``x``."""
        raw = self.loc(x)
        return (self.identity + self.scale * torch.tanh(raw)).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return warp_affine(x, self.theta(x))


def control_points(points: int, layout: str = "grid") -> torch.Tensor:
    """Fixed thin-plate-spline control points ``[N, 2]`` (x, y) in normalised coordinates:
    ``grid``, a ``points × points`` grid over ``[−1, 1]²`` (row by row); ``edges``, ``points``
    evenly spaced on the top edge then ``points`` on the bottom edge (the scene-text layout)."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    t = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    if layout == "grid":
        ys, xs = torch.meshgrid(t, t, indexing="ij")
        return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    if layout == "edges":
        ones = torch.ones(points, dtype=torch.float64)
        return torch.cat([torch.stack([t, -ones], 1), torch.stack([t, ones], 1)])
    raise ValueError(f"layout must be 'grid' or 'edges', got {layout!r}")


def _tps_radial(d2: torch.Tensor) -> torch.Tensor:
    """The thin-plate radial basis ``U(r) = r² log r²`` from squared distances (U(0) = 0)."""
    return d2 * torch.log(d2.clamp_min(1e-300))


def pixel_centres(height: int, width: int) -> torch.Tensor:
    """The normalised (x, y) centres of the pixels ``[H·W, 2]``, row by row, in the convention
    of ``grid_sample(align_corners=False)``; float64."""
    ys = (2 * torch.arange(height, dtype=torch.float64) + 1) / height - 1
    xs = (2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def tps_sampling_matrix(control: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``M`` ``[H·W, N]`` such that ``M @ targets`` is the thin-plate-spline map, evaluated at
    the pixel centres, that sends control point ``control[i]`` to ``targets[i]``.

    The map is ``T(p) = a₀ + a₁ x + a₂ y + Σᵢ wᵢ U(‖p − cᵢ‖)``; its coefficients solve
    ``[[K, P], [Pᵀ, 0]] [w; a] = [targets; 0]`` with ``K_ij = U(‖cᵢ − c_j‖)`` and
    ``P = [1, x, y]`` of the control points. The system depends on the control points only, so
    it is solved once (float64, ``torch.linalg.solve``) for every batch.
    """
    c = control.to(torch.float64)
    n = c.shape[0]
    system = torch.zeros(n + 3, n + 3, dtype=torch.float64)
    system[:n, :n] = _tps_radial(torch.cdist(c, c) ** 2)
    ones = torch.ones(n, 1, dtype=torch.float64)
    system[:n, n:] = torch.cat([ones, c], 1)
    system[n:, :n] = system[:n, n:].T
    rhs = torch.zeros(n + 3, n, dtype=torch.float64)
    rhs[:n] = torch.eye(n, dtype=torch.float64)
    coefficients = torch.linalg.solve(system, rhs)  # [w; a] per unit target, [N + 3, N]
    p = pixel_centres(height, width)
    basis = torch.cat([_tps_radial(torch.cdist(p, c) ** 2),
                       torch.ones(p.shape[0], 1, dtype=torch.float64), p], 1)
    return basis @ coefficients


def tps_grid(matrix: torch.Tensor, targets: torch.Tensor, height: int, width: int
             ) -> torch.Tensor:
    """The sampling grid ``[B, H, W, 2]`` of the thin-plate splines given by ``matrix``
    (:func:`tps_sampling_matrix`) and the displaced control points ``targets`` ``[B, N, 2]``."""
    grid = torch.einsum("pn,bnc->bpc", matrix.to(targets.dtype), targets)
    return grid.reshape(targets.shape[0], height, width, 2)


class _TPSMatrices:
    """:func:`tps_sampling_matrix` per image size, device and dtype, computed once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], torch.Tensor] = {}

    def get(self, control: torch.Tensor, height: int, width: int, like: torch.Tensor
            ) -> torch.Tensor:
        key = (tuple(control.flatten().tolist()), height, width, like.device, like.dtype)
        matrix = self._cache.get(key)
        if matrix is None:
            matrix = tps_sampling_matrix(control.cpu(), height, width).to(like.device, like.dtype)
            self._cache[key] = matrix
        return matrix


def warp_tps(x: torch.Tensor, control: torch.Tensor, displacement: torch.Tensor,
             matrix: torch.Tensor | None = None, padding_mode: str = PADDING_MODE
             ) -> torch.Tensor:
    """Warp ``x`` ``[B, C, H, W]`` by the thin-plate spline moving ``control`` ``[N, 2]`` by
    ``displacement`` ``[B, N, 2]``: the output pixel at control point ``cᵢ`` reads the input at
    ``cᵢ + displacementᵢ`` (normalised coordinates, bilinear)."""
    b, _, h, w = x.shape
    if matrix is None:
        matrix = tps_sampling_matrix(control, h, w)
    targets = control.to(displacement) + displacement
    grid = tps_grid(matrix.to(displacement), targets, h, w).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


class TPSWarp(nn.Module):
    """A learned elastic warp: a localisation network predicts the displacement of each fixed
    control point (:func:`control_points`), bounded to ``scale · tanh(raw)`` per coordinate, and
    the image is resampled through the thin-plate spline through the displaced points.
    Zero-initialised, so the warp starts as the identity."""

    def __init__(self, in_channels: int, points: int = 4, layout: str = "grid",
                 scale: float = 0.1, width: int = 8) -> None:
        super().__init__()
        self.scale = float(scale)
        control = control_points(points, layout)
        self.register_buffer("control", control.float())
        self.loc = LocalisationNet(in_channels, 2 * control.shape[0], width)
        self._matrices = _TPSMatrices()

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        """The control points' displacements ``[B, N, 2]`` for ``x``."""
        return (self.scale * torch.tanh(self.loc(x))).view(x.shape[0], -1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        matrix = self._matrices.get(self.control, x.shape[2], x.shape[3], x)
        return warp_tps(x, self.control, self.displacement(x), matrix)


class LearnedAugmentor(nn.Module):
    """The gate and the warps. ``forward(x, generator, tau)`` returns the augmented images and
    the index (in ``transforms``) of the transformation the gate chose for each image.

    The gate is a :class:`LocalisationNet` giving one logit per transformation; a hard
    Gumbel-softmax sample (:func:`gumbel_gate`) picks one transformation per image, and the
    output is ``Σ_k g_k · warp_k(x)`` (so the gate's logits get the straight-through gradient).
    """

    def __init__(self, in_channels: int, transforms: Sequence[str] = ("affine", "tps"), *,
                 affine_scale: float = 0.2, tps_scale: float = 0.1, tps_points: int = 4,
                 tps_layout: str = "grid", width: int = 8) -> None:
        super().__init__()
        unknown = sorted(set(transforms) - set(TRANSFORMS))
        if unknown or not transforms or len(set(transforms)) != len(transforms):
            raise ValueError(f"transforms must be distinct names of {TRANSFORMS}, got "
                             f"{list(transforms)}")
        self.transforms = tuple(transforms)
        self.gate = LocalisationNet(in_channels, len(self.transforms), width)
        self.warps = nn.ModuleDict()
        if "affine" in self.transforms:
            self.warps["affine"] = AffineWarp(in_channels, affine_scale, width)
        if "tps" in self.transforms:
            self.warps["tps"] = TPSWarp(in_channels, tps_points, tps_layout, tps_scale, width)

    @classmethod
    def from_config(cls, config: LearnedAugmentConfig, in_channels: int) -> LearnedAugmentor:
        return cls(in_channels, config.transforms, affine_scale=config.affine_scale,
                   tps_scale=config.tps_scale, tps_points=config.tps_points,
                   tps_layout=config.tps_layout, width=config.width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                tau: float = 1.0, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        gate = gumbel_gate(self.gate(x), tau, generator, noise, hard=True)  # [B, K]
        outputs = torch.stack([x if name == "identity" else self.warps[name](x)
                               for name in self.transforms])  # [K, B, C, H, W]
        augmented = torch.einsum("bk,kbchw->bchw", gate, outputs)
        return augmented, gate.detach().argmax(-1)


# ------------------------------------------------------------------- adversarial control loss
def control_alpha(loss_orig: torch.Tensor, probs_orig: torch.Tensor,
                  onehot: torch.Tensor) -> torch.Tensor:
    """``α = max(1, exp(Σ_k ŷ_k · y_k^G))``: per sample when ``loss_orig`` is per sample
    (``[B]``); for a batch-mean (scalar) loss, from the batch mean of ``Σ_k ŷ_k · y_k^G``."""
    agreement = (probs_orig * onehot).sum(-1)
    if loss_orig.dim() == 0:
        agreement = agreement.mean()
    return torch.exp(agreement).clamp_min(1.0)


def adversarial_control_loss(loss_aug: torch.Tensor, loss_orig: torch.Tensor,
                             probs_orig: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """``l_AC = |1 − exp(L(P′) − α · L(P))|``, averaged over the batch.

    ``loss_aug`` = L(P′), the model's loss on the augmented images; ``loss_orig`` = L(P), on the
    originals; both per sample ``[B]`` or batch means (scalars). ``probs_orig`` ``[B, K]`` = ŷ, the
    model's class probabilities on the originals, and ``onehot`` ``[B, K]`` = y^G, the true
    labels, give ``α`` (:func:`control_alpha`). ``l_AC`` is 0 when the augmented loss is exactly
    ``α`` times the original one: harder images, but by at most a factor ``e`` and only as far
    as the model is right on the originals. Gradients flow through every argument; callers
    detach what should be constant (the augmentor is trained through ``loss_aug`` only).
    """
    alpha = control_alpha(loss_orig, probs_orig, onehot)
    return (1 - torch.exp(loss_aug - alpha * loss_orig)).abs().mean()


def true_class_agreement(loss_fn: nn.Module, codes: torch.Tensor, labels: torch.Tensor,
                         loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ŷ, y^G)`` for :func:`adversarial_control_loss`, from a model's ``codes`` of the
    original images: the softmax of ``loss_fn.logits(codes)`` and the one-hot category labels
    (the first column of ``[B, 1 + p]`` attribute targets; images with a hidden category, −1,
    are left out). A loss without ``logits`` (or no labelled image) falls back to ``ŷ_true =
    exp(−max(L(P), 0))``, the true-class probability a cross-entropy of ``L(P)`` would mean,
    returned as ``[1, 1]`` tensors."""
    logits_of = getattr(loss_fn, "logits", None)
    category = labels[:, 0] if labels.dim() == 2 else labels
    if callable(logits_of) and category.dim() == 1 and not category.is_floating_point():
        probs = torch.softmax(logits_of(codes).float(), dim=-1)
        keep = (category >= 0) & (category < probs.shape[1])
        if bool(keep.any()):
            onehot = F.one_hot(category[keep].long(), probs.shape[1]).to(probs.dtype)
            return probs[keep], onehot
    confidence = torch.exp(-loss.detach().float().clamp_min(0.0))
    return confidence.reshape(1, 1), torch.ones(1, 1, device=confidence.device)


# --------------------------------------------------------------- training the augmentor
@dataclass
class _EpochTotals:
    batches: int = 0
    skipped: int = 0
    control_loss: float = 0.0
    loss_original: float = 0.0
    loss_augmented: float = 0.0
    alpha: float = 0.0
    chosen: list[int] = field(default_factory=list)
    augmented: int = 0


class LearnedAugmentTraining:
    """What a trainer owns with ``data.augment.learned``: the :class:`LearnedAugmentor`, its
    Adam optimiser, the temperature schedule and a per-epoch log.

    Per batch: :meth:`augment` gives the images the model trains on (a ``probability`` share of
    the batch augmented, no gradient to the augmentor) and the augmented batch with its graph;
    after the model's step, :meth:`step` updates the augmentor on ``l_AC`` computed from the
    model's losses on the original and the augmented batch. The augmentor is initialised from
    its own seed, so the model's random numbers are the same with or without it.
    """

    def __init__(self, config: LearnedAugmentConfig, in_channels: int, total_steps: int,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.config = config
        self.total_steps = total_steps
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.augmentor = LearnedAugmentor.from_config(config, in_channels)
        self.augmentor.to(device)
        self.optimizer = torch.optim.Adam(self.augmentor.parameters(), lr=config.lr)
        self.log: list[dict[str, Any]] = []
        self._totals = _EpochTotals(chosen=[0] * len(self.augmentor.transforms))
        self._tau = config.tau0

    def tau(self, global_step: int) -> float:
        return temperature(global_step, self.total_steps, self.config.tau0, self.config.tau_min)

    def start_epoch(self) -> None:
        self._totals = _EpochTotals(chosen=[0] * len(self.augmentor.transforms))

    def augment(self, images: torch.Tensor, generator: torch.Generator, global_step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(training images, augmented images with the augmentor's graph)``. The random
        numbers (which images are augmented, the Gumbel noise) come from ``generator``."""
        b = images.shape[0]
        self.augmentor.train()
        mask = None
        if self.config.probability < 1:
            mask = (torch.rand(b, generator=generator) < self.config.probability)
            mask = mask.to(images.device)
        noise = gumbel_noise((b, len(self.augmentor.transforms)), generator)
        self._tau = self.tau(global_step)
        augmented, choice = self.augmentor(images, tau=self._tau, noise=noise)
        train = augmented.detach()
        if mask is not None:
            train = torch.where(mask[:, None, None, None], train, images)
            choice = choice[mask]
        counts = torch.bincount(choice.cpu(), minlength=len(self.augmentor.transforms))
        t = self._totals
        t.chosen = [a + int(c) for a, c in zip(t.chosen, counts.tolist(), strict=True)]
        t.augmented += int(choice.numel())
        return train, augmented

    def step(self, loss_aug: torch.Tensor, loss_orig: torch.Tensor, probs_orig: torch.Tensor,
             onehot: torch.Tensor) -> float:
        """One Adam step of the augmentor on ``l_AC`` (:func:`adversarial_control_loss`; the
        original-image terms are detached). A non-finite ``l_AC`` or gradient skips the step
        (counted in the log). Returns ``l_AC``."""
        loss_orig, probs_orig = loss_orig.detach(), probs_orig.detach()
        control = adversarial_control_loss(loss_aug, loss_orig, probs_orig, onehot)
        params = [p for p in self.augmentor.parameters() if p.requires_grad]
        grads = torch.autograd.grad(control, params, allow_unused=True)
        t = self._totals
        t.batches += 1
        finite = bool(torch.isfinite(control)) and all(
            g is None or bool(torch.isfinite(g).all()) for g in grads)
        if finite:
            self.optimizer.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
        else:
            t.skipped += 1
        value = float(control.detach())
        if finite:
            t.control_loss += value
            t.loss_original += float(loss_orig.float().mean())
            t.loss_augmented += float(loss_aug.detach().float().mean())
            t.alpha += float(control_alpha(loss_orig, probs_orig, onehot).float().mean())
        return value

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Close epoch ``epoch`` (0-based) in the log; returns its entry."""
        t = self._totals
        used = max(t.batches - t.skipped, 1)
        entry = {
            "epoch": epoch + 1, "tau": self._tau,
            "control_loss": t.control_loss / used, "loss_original": t.loss_original / used,
            "loss_augmented": t.loss_augmented / used, "alpha": t.alpha / used,
            "skipped_steps": t.skipped,
            "chosen": {name: c / max(t.augmented, 1)
                       for name, c in zip(self.augmentor.transforms, t.chosen, strict=True)},
        }
        self.log.append(entry)
        return entry

    def state_dict(self) -> dict[str, Any]:
        return {"augmentor": self.augmentor.state_dict(),
                "optimizer": self.optimizer.state_dict(), "log": list(self.log)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.augmentor.load_state_dict(state["augmentor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.log = list(state["log"])


# ---------------------------------------------------------------- fixed random baselines
class _RandomWarp:
    """A seeded random warp of ``strength`` (0: the images unchanged)."""

    def __init__(self, strength: float) -> None:
        self.strength = float(strength)

    @property
    def active(self) -> bool:
        return self.strength > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.warp(x, generator) if self.active else x

    def warp(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class RandomAffine(_RandomWarp):
    """A random affine warp per image: ``theta = I + strength · U(−1, 1)`` on each of the 6
    parameters (the box the learned affine warp is bounded to with ``affine_scale =
    strength``), drawn from the generator. ``strength`` 0 returns the images unchanged."""

    def warp(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        offset = self.strength * (2 * torch.rand(b, 6, generator=generator) - 1)
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        theta = (identity + offset).view(b, 2, 3).to(x.device)
        return warp_affine(x, theta)


class RandomElastic(_RandomWarp):
    """A random thin-plate-spline (elastic) warp per image: every control point of a
    ``points × points`` grid (or the ``edges`` layout) moves by ``strength · U(−1, 1)`` per
    coordinate (normalised units), drawn from the generator. ``strength`` 0 returns the images
    unchanged."""

    def __init__(self, strength: float, points: int = 4, layout: str = "grid") -> None:
        super().__init__(strength)
        self.control = control_points(points, layout).float()
        self._matrices = _TPSMatrices()

    def warp(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        n = self.control.shape[0]
        displacement = self.strength * (2 * torch.rand(b, n, 2, generator=generator) - 1)
        control = self.control.to(x.device)
        matrix = self._matrices.get(control, h, w, x)
        return warp_tps(x, control, displacement.to(x.device, x.dtype), matrix)


class _BatchTransform(Protocol):
    @property
    def active(self) -> bool: ...

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class ComposedAugment:
    """Batch transforms applied in turn, each drawing from the same generator."""

    def __init__(self, parts: Sequence[_BatchTransform]) -> None:
        self.parts = [p for p in parts if p.active]

    @property
    def active(self) -> bool:
        return bool(self.parts)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for part in self.parts:
            x = part(x, generator)
        return x


def build_batch_augment(config: AugmentConfig) -> BatchAugment | ComposedAugment:
    """The fixed augmentations of ``data.augment``: flips and shifts
    (:class:`~hashlab.data.augment.BatchAugment`), then :class:`RandomAffine` (``affine``),
    then :class:`RandomElastic` (``elastic``). With ``affine`` and ``elastic`` at 0 this is
    the plain :class:`BatchAugment`, drawing exactly the same random numbers as before."""
    base = BatchAugment(config)
    extra = [RandomAffine(config.affine), RandomElastic(config.elastic)]
    if not any(t.active for t in extra):
        return base
    return ComposedAugment([base, *extra])


# ---------------------------------------------------------------------------------- figure
def _display(image: torch.Tensor, lo: float, hi: float) -> Any:
    img = ((image.detach().float().cpu() - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img[:3].permute(1, 2, 0).numpy()


def plot_augmentations(augmentor: LearnedAugmentor, images: torch.Tensor, path: str | Path, *,
                       generator: torch.Generator | None = None, tau: float = 1.0,
                       **write: Any) -> Path:
    """A PNG grid: the ``images`` ``[N, C, H, W]`` in the top row, the augmentor's output below,
    each titled with the transformation the gate chose. Each column is shown on its original's
    value range. The Gumbel noise comes from ``generator`` (default seeded with 0); ``write``
    goes to :func:`hashlab.io.atomic_write`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashlab.io import atomic_write

    device = next(augmentor.parameters()).device
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        augmented, choice = augmentor(images.to(device), generator=gen, tau=tau)
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n + 0.4, 3.4), squeeze=False)
    for i in range(n):
        lo, hi = float(images[i].min()), float(images[i].max())
        cmap = "gray" if images.shape[1] == 1 else None
        axes[0, i].imshow(_display(images[i], lo, hi), cmap=cmap, vmin=0, vmax=1)
        axes[1, i].imshow(_display(augmented[i], lo, hi), cmap=cmap, vmin=0, vmax=1)
        axes[0, i].set_title("original", fontsize=8)
        axes[1, i].set_title(augmentor.transforms[int(choice[i])], fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("learned augmentation: originals (top), gate's choice (bottom)", fontsize=9)
    fig.tight_layout()
    from io import BytesIO

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()), **write)


__all__ = ["TRANSFORMS", "AffineWarp", "ComposedAugment", "LearnedAugmentTraining",
           "LearnedAugmentor", "LocalisationNet", "RandomAffine", "RandomElastic", "TPSWarp",
           "adversarial_control_loss", "build_batch_augment", "control_alpha", "control_points",
           "gumbel_gate", "gumbel_noise", "plot_augmentations", "temperature",
           "tps_grid", "tps_sampling_matrix", "true_class_agreement", "warp_affine", "warp_tps"]

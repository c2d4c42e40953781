"""Margin- and mining-based softmax losses as one module: ``MarginSoftmax``.

The target logit gets a **margin** (none | sphere | cos | arc | combined) and the batch gets a
**mining** rule (none | hard | focal | sv). SV-Softmax (Wang et al. 2019) is the ``sv`` mining: it
re-weights the non-target logits a sample is mis-classified against (its support vectors), and
with a margin it becomes SV-X-Softmax (SV-AM, SV-Arc). See ``shared/reference/formulas.md``.

All computations run in float32 or float64 (fp16/bf16 inputs are cast up); cos θ is clamped to
[−1, 1] and the angle-based margins avoid the infinite gradient of ``acos`` at ±1, so no preset
yields NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import _check_inputs

Margin = Literal["none", "sphere", "cos", "arc", "combined"]
Mining = Literal["none", "hard", "focal", "sv"]
MARGINS = ("none", "sphere", "cos", "arc", "combined")
MININGS = ("none", "hard", "focal", "sv")
_EPS = 1e-7


def _sin_from_cos(cos: torch.Tensor) -> torch.Tensor:
    # sqrt(1 - cos²) with a zero gradient (not an infinite one) at cos = ±1
    return torch.sqrt(torch.clamp(1.0 - cos * cos, min=1e-12))


def _chebyshev_cos(m: int, cos: torch.Tensor) -> torch.Tensor:
    """cos(mθ) as a polynomial of cos θ (no acos on the gradient path)."""
    prev, cur = torch.ones_like(cos), cos
    if m == 0:
        return prev
    for _ in range(m - 1):
        prev, cur = cur, 2 * cos * cur - prev
    return cur


class MarginSoftmax(nn.Module):
    """``loss(embeddings, labels)``: cross-entropy over ``s · cos θ`` with a margin on the target
    logit and an optional mining rule. Holds the class weights ``weight`` [C, d] (normalised in
    the forward pass).

    Margins, f(m, θ_y): ``none`` cos θ_y; ``cos`` (AM/CosFace) cos θ_y − m; ``arc`` (ArcFace)
    cos(θ_y + m), with cos θ_y − m·sin m where θ_y > π − m (the same monotone fallback as
    pytorch-metric-learning); ``combined`` cos(m1·θ_y + m2) − m3 (same fallback); ``sphere``
    (A-Softmax) ψ(θ) = (−1)^k cos(mθ) − 2k, k = ⌊mθ/π⌋, integer m, blended as
    (λ cos θ + ψ)/(1 + λ) with λ = max(λ_min, λ_base (1 + γ·iteration)^(−power)) decaying over
    training iterations (counted in a buffer, so it checkpoints).

    Mining: ``hard`` (HM-Softmax) averages only the ``hard_ratio`` fraction of the batch with the
    largest loss; ``focal`` (F-Softmax) weights each sample by (1 − p_y)^γ; ``sv`` (SV-Softmax):
    every non-target cos θ_k with f(m, θ_y) − cos θ_k < 0 (a support vector; the mask is a
    constant) is replaced by t·cos θ_k + t − 1 (``sv_form="adaptive"``, the paper's h) or
    cos θ_k + t − 1 (``"fixed"``, the authors' code) before scaling; t = 1 is the plain loss.
    """

    def __init__(self, num_classes: int, dim: int, margin: Margin = "none", mining: Mining = "none",
                 s: float = 30.0, m: float = 0.35, m1: float = 1.0, m2: float = 0.0,
                 m3: float = 0.0, t: float = 1.2,
                 sv_form: Literal["adaptive", "fixed"] = "adaptive", gamma: float = 2.0,
                 hard_ratio: float = 0.5, sphere_lambda_base: float = 1000.0,
                 sphere_lambda_gamma: float = 0.12, sphere_lambda_power: float = 1.0,
                 sphere_lambda_min: float = 5.0) -> None:
        super().__init__()
        if margin not in MARGINS:
            raise ValueError(f"margin must be one of {MARGINS}, got {margin!r}")
        if mining not in MININGS:
            raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
        if sv_form not in ("adaptive", "fixed"):
            raise ValueError(f"sv_form must be 'adaptive' or 'fixed', got {sv_form!r}")
        if s <= 0:
            raise ValueError(f"s must be > 0, got {s}")
        if t < 1:
            raise ValueError(f"t must be >= 1, got {t}")
        if not 0 < hard_ratio <= 1:
            raise ValueError(f"hard_ratio must be in (0, 1], got {hard_ratio}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if margin == "sphere" and (m != int(m) or m < 1):
            raise ValueError(f"the sphere margin m must be a positive integer, got {m}")
        self.num_classes, self.dim = num_classes, dim
        self.margin, self.mining, self.sv_form = margin, mining, sv_form
        self.s, self.m, self.m1, self.m2, self.m3, self.t = s, m, m1, m2, m3, t
        self.gamma, self.hard_ratio = gamma, hard_ratio
        self.sphere = (sphere_lambda_base, sphere_lambda_gamma, sphere_lambda_power,
                       sphere_lambda_min)
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, margin={self.margin}, "
                f"mining={self.mining}, s={self.s}, m={self.m}, t={self.t}")

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos θ between each (normalised) embedding and each class weight, in float32 (float64
        inputs stay float64)."""
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        x = F.normalize(embeddings.to(dtype), dim=1)
        w = F.normalize(self.weight.to(dtype), dim=1)
        return (x @ w.t()).clamp(-1.0, 1.0)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class scores for prediction: ``s · cos θ`` (no margin)."""
        return self.s * self.cosine(embeddings)

    def sphere_lambda(self) -> float:
        base, gamma, power, lam_min = self.sphere
        return max(lam_min, base * (1 + gamma * float(self.iteration)) ** (-power))

    def target_logit(self, cos_y: torch.Tensor) -> torch.Tensor:
        """f(m, θ_y) for the configured margin (unscaled)."""
        if self.margin == "none":
            return cos_y
        if self.margin == "cos":
            return cos_y - self.m
        if self.margin == "sphere":
            m = int(self.m)
            with torch.no_grad():
                k = torch.floor(m * torch.acos(cos_y.clamp(-1, 1)) / math.pi)
            sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (−1)^k
            psi = sign * _chebyshev_cos(m, cos_y) - 2.0 * k
            lam = self.sphere_lambda()
            return (lam * cos_y + psi) / (1.0 + lam)
        m1, m2, m3 = (1.0, self.m, 0.0) if self.margin == "arc" else (self.m1, self.m2, self.m3)
        if m1 == 1.0:  # cos(θ + m2) by the addition formula: no acos on the gradient path
            shifted = cos_y * math.cos(m2) - _sin_from_cos(cos_y) * math.sin(m2)
            with torch.no_grad():
                inside = torch.acos(cos_y.clamp(-1, 1)) <= math.pi - m2
        else:
            theta = torch.acos(cos_y.clamp(-1 + _EPS, 1 - _EPS))
            shifted = torch.cos(m1 * theta + m2)
            inside = (m1 * theta + m2 <= math.pi).detach()
        fallback = cos_y - m2 * math.sin(m2)  # keeps f monotone in θ beyond π − m
        return torch.where(inside, shifted, fallback) - m3

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_inputs(embeddings, labels, self.dim, self.num_classes)
        cos = self.cosine(embeddings)
        target = labels[:, None]
        f = self.target_logit(cos.gather(1, target))  # [B, 1]
        if self.mining == "sv" and self.t != 1.0:
            with torch.no_grad():
                support = cos > f  # I_k = 1 where f(m, θ_y) − cos θ_k < 0
                support.scatter_(1, target, False)  # the ground truth is never re-weighted
            t = self.t
            boosted = t * cos + (t - 1) if self.sv_form == "adaptive" else cos + (t - 1)
            cos = torch.where(support, boosted, cos)
        logits = self.s * cos.scatter(1, target, f)
        log_p = F.log_softmax(logits, dim=1).gather(1, target).squeeze(1)
        loss = -log_p
        if self.mining == "focal":
            loss = (1 - log_p.exp()).clamp(min=0).pow(self.gamma) * loss
        elif self.mining == "hard":
            keep = max(1, math.ceil(self.hard_ratio * loss.shape[0]))
            loss = loss.topk(keep).values
        if self.training and self.margin == "sphere":
            self.iteration += 1
        return loss.mean()


PRESETS: dict[str, dict] = {
    "normface": {"margin": "none", "mining": "none", "s": 16.0},
    "hm_softmax": {"margin": "none", "mining": "hard", "s": 16.0, "hard_ratio": 0.5},
    "focal_softmax": {"margin": "none", "mining": "focal", "s": 16.0, "gamma": 2.0},
    "sphereface": {"margin": "sphere", "mining": "none", "s": 30.0, "m": 4},
    "cosface": {"margin": "cos", "mining": "none", "s": 30.0, "m": 0.35},
    "arcface": {"margin": "arc", "mining": "none", "s": 64.0, "m": 0.5},
    "mining_margin": {"margin": "cos", "mining": "focal", "s": 30.0, "m": 0.35, "gamma": 2.0},
    "sv_softmax": {"margin": "none", "mining": "sv", "s": 32.0, "t": 1.2},
    "sv_am_softmax": {"margin": "cos", "mining": "sv", "s": 32.0, "m": 0.35, "t": 1.2},
    "sv_arc_softmax": {"margin": "arc", "mining": "sv", "s": 32.0, "m": 0.5, "t": 1.2},
}
"""Named presets (paper defaults) — each also registered in LOSSES under its name."""


@LOSSES.register("margin_softmax")
def margin_softmax(num_classes: int, dim: int, margin: Margin = "none", mining: Mining = "none",
                   s: float = 30.0, m: float = 0.35, m1: float = 1.0, m2: float = 0.0,
                   m3: float = 0.0, t: float = 1.2, sv_form: str = "adaptive", gamma: float = 2.0,
                   hard_ratio: float = 0.5) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, margin=margin, mining=mining, s=s, m=m, m1=m1, m2=m2,
                         m3=m3, t=t, sv_form=sv_form, gamma=gamma,  # type: ignore[arg-type]
                         hard_ratio=hard_ratio)


@LOSSES.register("normface")
def normface(num_classes: int, dim: int, s: float = 16.0) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["normface"], "s": s})


@LOSSES.register("hm_softmax")
def hm_softmax(num_classes: int, dim: int, s: float = 16.0, hard_ratio: float = 0.5
               ) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["hm_softmax"], "s": s,
                                               "hard_ratio": hard_ratio})


@LOSSES.register("focal_softmax")
def focal_softmax(num_classes: int, dim: int, s: float = 16.0, gamma: float = 2.0
                  ) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["focal_softmax"], "s": s, "gamma": gamma})


@LOSSES.register("sphereface")
def sphereface(num_classes: int, dim: int, s: float = 30.0, m: int = 4) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["sphereface"], "s": s, "m": m})


@LOSSES.register("cosface")
def cosface(num_classes: int, dim: int, s: float = 30.0, m: float = 0.35) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["cosface"], "s": s, "m": m})


LOSSES.register("am_softmax")(cosface)


@LOSSES.register("arcface")
def arcface(num_classes: int, dim: int, s: float = 64.0, m: float = 0.5) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["arcface"], "s": s, "m": m})


@LOSSES.register("mining_margin")
def mining_margin(num_classes: int, dim: int, s: float = 30.0, m: float = 0.35,
                  gamma: float = 2.0) -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["mining_margin"], "s": s, "m": m,
                                               "gamma": gamma})


@LOSSES.register("sv_softmax")
def sv_softmax(num_classes: int, dim: int, s: float = 32.0, t: float = 1.2,
               sv_form: str = "adaptive") -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["sv_softmax"], "s": s, "t": t,
                                               "sv_form": sv_form})


@LOSSES.register("sv_am_softmax")
def sv_am_softmax(num_classes: int, dim: int, s: float = 32.0, m: float = 0.35, t: float = 1.2,
                  sv_form: str = "adaptive") -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["sv_am_softmax"], "s": s, "m": m, "t": t,
                                               "sv_form": sv_form})


@LOSSES.register("sv_arc_softmax")
def sv_arc_softmax(num_classes: int, dim: int, s: float = 32.0, m: float = 0.5, t: float = 1.2,
                   sv_form: str = "adaptive") -> MarginSoftmax:
    return MarginSoftmax(num_classes, dim, **{**PRESETS["sv_arc_softmax"], "s": s, "m": m, "t": t,
                                               "sv_form": sv_form})

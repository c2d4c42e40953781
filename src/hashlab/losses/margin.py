"""Margin- and mining-based softmax losses in one module: :class:`MarginSoftmax`.

Every loss of the family (formulas in ``docs/losses.md``, "Margin- and mining-based softmax") is
one choice of a *margin* on the target logit and one of a *mining* rule on top:

    cos θ_k = normalize(x) · normalize(W_k)
    target  f(m, θ_y):  none      cos θ_y
                        sphere    (λ cos θ_y + ψ(θ_y)) / (1 + λ),  ψ = (−1)^k cos(m θ_y) − 2k
                        cos       cos θ_y − m                     (AM-Softmax / CosFace)
                        arc       cos(θ_y + m)                    (ArcFace)
                        combined  cos(m1 θ_y + m2) − m3
              (arc and combined switch to cos θ_y − m2 sin m2 − m3 where m1 θ_y + m2 > π, as
              pytorch-metric-learning's ArcFace does: for m1 = 1 and m2 ≤ 2.3 rad the switch
              is a jump down, so the target still decreases with θ; not guaranteed otherwise)
    logits  z_y = s f,  z_k = s cos θ_k  (k ≠ y)

    mining  none   mean CE(z, y)
            hard   HM-Softmax: mean CE over the ``hard_ratio`` fraction of the batch with the
                   largest CE (the others contribute nothing)
            focal  F-Softmax: mean −(1 − p_y)^γ log p_y, p_y = softmax(z)_y; with a margin this is
                   the "naive mining-margin" loss
            sv     SV-Softmax / SV-X-Softmax: I_k = [f − cos θ_k < 0] for k ≠ y (a constant mask, as
                   in the authors' code); mis-classified non-target cosines are replaced, before
                   scaling, by t cos θ_k + t − 1 ("adaptive") or cos θ_k + t − 1 ("fixed");
                   the ground-truth column is never re-weighted; t = 1 is the plain margin loss.
                   (f is the full target, so with sphere it includes the λ blend.)

Everything is computed in (at least) float32, outside autocast; on the angle path (arc,
combined) acos takes its gradient at the cosine clamped to [−1 + 1e-7, 1 − 1e-7], so it stays
finite at cos θ = ±1 while the value is exact; sphere uses the Chebyshev polynomial cos(mθ) =
T_m(cos θ), with no acos on the gradient path. Zero features give zero cosines and a zero
gradient instead of NaN or 1/eps.

The named methods are presets of it, all generated from one table, :data:`PRESET_TABLE`: one row
per paper (key, class, one-line description, arguments), one class per row (:class:`ArcFace`,
:class:`CosFace`, ...) registered in ``LOSSES`` under the row's key, plus the generic
``margin-softmax`` that takes every argument. A row's ``margin`` and ``mining`` fix the method;
its other arguments are the ones its class accepts, with the row's values as defaults.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import check_class_batch
from hashlab.registry import canonical_key
from hashlab.validation import check_nonnegative

MARGINS = ("none", "sphere", "cos", "arc", "combined")
MININGS = ("none", "hard", "focal", "sv")
SV_FORMS = ("adaptive", "fixed")

_DEFAULT_M = {"none": 0.0, "sphere": 4, "cos": 0.35, "arc": 0.5, "combined": 0.0}
_ACOS_EPS = 1e-7  # acos takes its gradient at cos clamped to [−1 + eps, 1 − eps]: finite at ±1


@LOSSES.register("margin-softmax")
class MarginSoftmax(nn.Module):
    """Normalised-softmax cross-entropy with a target margin and an optional mining rule.

    Args:
        num_classes, dim: size of the class-weight matrix ``weight`` [num_classes, dim].
        margin: ``"none" | "sphere" | "cos" | "arc" | "combined"`` (see the module docstring).
        mining: ``"none" | "hard" | "focal" | "sv"``.
        s: the scale applied to the (modified) cosines.
        m: the margin of ``sphere`` (an integer, default 4), ``cos`` (default 0.35) and ``arc``
            (radians, default 0.5); ignored by ``none`` and ``combined``.
        m1, m2, m3: the ``combined`` margin ``cos(m1 θ + m2) − m3``.
        t: SV re-weighting (t ≥ 1; 1 disables it). sv_form: ``"adaptive"`` or ``"fixed"``.
        gamma: the focal exponent γ ≥ 0 (0 is plain cross-entropy).
        hard_ratio: the fraction of each batch HM-Softmax keeps, ``ceil(hard_ratio · B)`` samples
            (at least one) with the largest cross-entropy.
        sphere_lambda_base, sphere_lambda_gamma, sphere_lambda_power, sphere_lambda_min:
            SphereFace's annealing of the blend weight,
            ``λ = max(λ_min, λ_base · (1 + λ_gamma · it)^(−λ_power))``, where ``it`` (the buffer
            ``iteration``, saved in checkpoints) counts training-mode forward calls.
            ``sphere_lambda_base = sphere_lambda_min = 0`` gives the pure ψ.
        normalize_features: if False (the original A-Softmax), the logits keep the feature
            norm, ``z = s ‖x‖ · (modified cos)``; the weights are always normalised.

    Called as ``loss(embeddings, labels)`` → a scalar mean loss (float32, or float64 when the
    embeddings or the module are float64). ``logits(embeddings)`` = ``s cos θ`` (no margin, times
    ``‖x‖`` without feature normalisation) for prediction.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        margin: str = "none",
        mining: str = "none",
        s: float = 30.0,
        m: float | None = None,
        m1: float = 1.0,
        m2: float = 0.0,
        m3: float = 0.0,
        t: float = 1.2,
        sv_form: str = "adaptive",
        gamma: float = 2.0,
        hard_ratio: float = 0.5,
        sphere_lambda_base: float = 1000.0,
        sphere_lambda_gamma: float = 0.12,
        sphere_lambda_power: float = 1.0,
        sphere_lambda_min: float = 5.0,
        normalize_features: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        if margin not in MARGINS:
            raise ValueError(f"margin must be one of {MARGINS}, got {margin!r}")
        if mining not in MININGS:
            raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
        if sv_form not in SV_FORMS:
            raise ValueError(f"sv_form must be one of {SV_FORMS}, got {sv_form!r}")
        m = _DEFAULT_M[margin] if m is None else m
        if not s > 0:
            raise ValueError(f"s must be > 0, got {s}")
        if margin == "sphere" and (int(m) != m or m < 1):
            raise ValueError(f"the sphere margin m must be an integer >= 1, got {m}")
        if margin in ("cos", "arc") and m < 0:
            raise ValueError(f"m must be >= 0, got {m}")
        if margin == "arc" and m >= math.pi:
            raise ValueError(f"the arc margin m must be < pi (radians), got {m}")
        if margin == "combined" and (m1 <= 0 or m2 < 0 or m2 >= math.pi or m3 < 0):
            raise ValueError(f"combined margin needs m1 > 0, 0 <= m2 < pi, m3 >= 0, "
                             f"got {m1}, {m2}, {m3}")
        if t < 1:
            raise ValueError(f"t must be >= 1, got {t}")
        check_nonnegative(gamma, "gamma")
        if not 0 < hard_ratio <= 1:
            raise ValueError(f"hard_ratio must be in (0, 1], got {hard_ratio}")
        annealing = (sphere_lambda_base, sphere_lambda_gamma, sphere_lambda_power,
                     sphere_lambda_min)
        if min(annealing) < 0:
            raise ValueError(f"the sphere_lambda_* parameters must be >= 0, got {annealing}")
        self.num_classes, self.dim = num_classes, dim
        self.margin, self.mining, self.sv_form = margin, mining, sv_form
        self.s, self.m = float(s), (int(m) if margin == "sphere" else float(m))
        if margin == "arc":  # ArcFace is the combined margin (1, m, 0)
            m1, m2, m3 = 1.0, self.m, 0.0
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.t, self.gamma, self.hard_ratio = float(t), float(gamma), float(hard_ratio)
        self.sphere_lambda_base, self.sphere_lambda_gamma, self.sphere_lambda_power, \
            self.sphere_lambda_min = (float(a) for a in annealing)
        self.normalize_features = normalize_features
        self.weight = nn.Parameter(self.initial_weight(num_classes, dim))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def initial_weight(self, num_classes: int, dim: int) -> torch.Tensor:
        """The initial class weights (Xavier-uniform ``[num_classes, dim]``); a subclass that
        holds part of the classes (the sharded Partial FC) returns its part."""
        weight = torch.empty(num_classes, dim)
        nn.init.xavier_uniform_(weight)
        return weight

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, margin={self.margin!r}, "
                f"mining={self.mining!r}, s={self.s}, m={self.m}")

    # ----------------------------------------------------------------------------- cosines
    def _compute_dtype(self, embeddings: torch.Tensor) -> torch.dtype:
        dtype = torch.promote_types(embeddings.dtype, self.weight.dtype)
        return torch.promote_types(dtype, torch.float32)

    def _cosine(self, embeddings: torch.Tensor, weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``cos θ`` [B, K] against the rows of ``weight`` (default: all of ``self.weight``,
        K = C) and, without feature normalisation, ``‖x‖`` [B, 1] (else None)."""
        dtype = self._compute_dtype(embeddings)
        x = embeddings.to(dtype)
        w = F.normalize((self.weight if weight is None else weight).to(dtype), dim=1)
        cos = _normalize_rows(x) @ w.t()
        norms = None if self.normalize_features else x.norm(dim=1, keepdim=True)
        return cos, norms

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``cos θ`` [B, C] between the embeddings and the class weights (float32 or float64)."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self._cosine(embeddings)[0]

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class scores ``s cos θ`` (no margin), for prediction and accuracy."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must have shape [batch, {self.dim}], got {tuple(embeddings.shape)}"
            )
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos, norms = self._cosine(embeddings)
            return cos * self.s if norms is None else cos * (self.s * norms)

    # ------------------------------------------------------------------------ target margin
    def sphere_lambda(self) -> torch.Tensor:
        """SphereFace's current blend weight λ (a 0-d float tensor, no host sync)."""
        it = self.iteration.to(torch.float64)
        decay = (1 + self.sphere_lambda_gamma * it).pow(-self.sphere_lambda_power)
        lam = self.sphere_lambda_base * decay
        return lam.clamp(min=self.sphere_lambda_min)

    def target_logit(self, cos_y: torch.Tensor) -> torch.Tensor:
        """``f(m, θ_y)`` (unscaled) for the target cosines ``cos_y`` [B]."""
        if self.margin == "none":
            return cos_y
        if self.margin == "cos":
            return cos_y - self.m
        if self.margin == "sphere":
            c = cos_y.clamp(-1.0, 1.0)
            psi = _chebyshev(c, self.m)  # cos(m θ) as a polynomial in cos θ: smooth at ±1
            with torch.no_grad():
                k = torch.floor(torch.acos(c) * (self.m / math.pi)).clamp_(0, self.m - 1)
                sign = 1 - 2 * torch.remainder(k, 2)
            psi = sign * psi - 2 * k
            lam = self.sphere_lambda().to(c.dtype)
            return (lam * c + psi) / (1 + lam)
        # arc and combined: cos(m1 θ + m2) − m3 while m1 θ + m2 <= π, then (like
        # pytorch-metric-learning's and InsightFace's ArcFace) the linear fallback
        # cos θ − m2 sin m2 − m3, which keeps the target decreasing in θ.
        theta = _safe_acos(cos_y)
        inside = theta <= (math.pi - self.m2) / self.m1
        return torch.where(
            inside,
            torch.cos(theta * self.m1 + self.m2) - self.m3,
            cos_y - (self.m2 * math.sin(self.m2) + self.m3),
        )

    def margin_logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The scaled logits the loss is computed on: margin on the target, SV on the rest."""
        cos, norms = self._cosine(embeddings)
        return self.margin_logits_from_cosine(cos, labels, norms)

    def margin_logits_from_cosine(self, cos: torch.Tensor, labels: torch.Tensor,
                                  norms: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`margin_logits` from given cosines ``cos`` [B, K] against any K classes (all of
        them, or a subset as in Partial FC), ``labels`` the target columns in ``[0, K)`` and
        ``norms`` the feature norms [B, 1] (None with ``normalize_features``)."""
        index = labels.long().unsqueeze(1)
        cos_y = cos.gather(1, index).squeeze(1)
        f = self.target_logit(cos_y)
        scale: float | torch.Tensor = self.s if norms is None else self.s * norms
        logits = self.sv_cosines(cos, f) * scale
        return logits.scatter(1, index, f.unsqueeze(1) * scale)

    def sv_cosines(self, cos: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """SV mining's re-weighting of the cosines ``cos`` [B, K] given the targets ``f`` [B]
        (``cos`` itself unless ``mining="sv"`` and ``t != 1``). The target columns are not
        excluded: the caller overwrites them."""
        if self.mining != "sv" or self.t == 1.0:
            return cos
        # I_k = [cos θ_k > f]: a constant mask; the ground-truth column is overwritten later.
        mask = cos > f.detach().unsqueeze(1)
        t = self.t
        if self.sv_form == "adaptive":  # t cos + t − 1
            return torch.where(mask, cos * t + (t - 1), cos)
        return torch.where(mask, cos + (t - 1), cos)  # cos + t − 1

    # --------------------------------------------------------------------------------- loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_class_batch(embeddings, labels, self.dim, self.num_classes)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            logits = self.margin_logits(embeddings, labels)
            if self.training and self.margin == "sphere":
                self.iteration.add_(1)
            if labels.numel() == 0:
                return logits.sum() * 0.0
            ce = F.cross_entropy(logits, labels.long(), reduction="none")
            return self.mining_loss(ce)

    def mining_loss(self, ce: torch.Tensor) -> torch.Tensor:
        """The batch loss from the per-sample cross-entropies ``ce`` [B] (of the margin logits):
        their mean, the focal-weighted mean (``focal``) or the mean over the hardest part
        (``hard``)."""
        if self.mining == "focal":
            if self.gamma == 0:
                return ce.mean()
            one_minus_p = -torch.expm1(-ce)  # 1 − p_y, accurate when p_y ≈ 1
            weight = one_minus_p.clamp(min=torch.finfo(ce.dtype).tiny).pow(self.gamma)
            return (weight * ce).mean()
        if self.mining == "hard":
            keep = hard_count(ce.shape[0], self.hard_ratio)
            hard = torch.topk(ce.detach(), keep, sorted=False).indices
            return ce[hard].mean()
        return ce.mean()


def _safe_acos(c: torch.Tensor) -> torch.Tensor:
    """``acos(clamp(c, −1, 1))`` whose gradient is taken at ``clamp(c, −1 + eps, 1 − eps)``:
    exact values, and a finite gradient at cos θ = ±1 (zero beyond ±(1 − eps))."""
    inner = torch.acos(c.clamp(-1 + _ACOS_EPS, 1 - _ACOS_EPS))
    return inner + (torch.acos(c.detach().clamp(-1.0, 1.0)) - inner.detach())


def _normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1)``, but a zero row (norm < eps) gets a zero gradient instead of one
    of size 1/eps, which would overflow when cast back to a float16 input."""
    norm = x.norm(dim=1, keepdim=True)
    tiny = norm < eps
    return torch.where(tiny, 0.0, x / norm.clamp(min=eps))


def hard_count(batch: int, ratio: float) -> int:
    """How many samples HM-Softmax keeps: ``ceil(ratio · batch)``, at least 1."""
    return min(batch, max(1, math.ceil(round(ratio * batch, 9))))


def _chebyshev(c: torch.Tensor, n: int) -> torch.Tensor:
    """``T_n(c) = cos(n arccos c)`` by the recurrence T_{k+1} = 2c T_k − T_{k−1}."""
    prev, cur = torch.ones_like(c), c
    if n == 0:
        return prev
    for _ in range(n - 1):
        prev, cur = cur, 2 * c * cur - prev
    return cur


# ------------------------------------------------------------------------------------ presets


class Preset(NamedTuple):
    """One named method: its registry key, its class, the one line ``hashlab list`` shows and its
    :class:`MarginSoftmax` arguments (``margin`` and ``mining`` fix the method; the others are
    the arguments its class accepts, with these values as defaults)."""

    key: str
    cls: str
    description: str
    args: Mapping[str, Any]


#: the arguments of a row that define the method (not settable on the preset's class)
METHOD_ARGS = ("margin", "mining")

#: The single source of the presets and their defaults.
PRESET_TABLE: tuple[Preset, ...] = (
    # NormFace learns the scale and reports values around 16 for ~10^4 classes; fixed here.
    Preset("normface", "NormFace", "NormFace: normalised softmax, no margin (Wang et al. 2017)",
           {"margin": "none", "mining": "none", "s": 16.0}),
    # The mining baselines are NormFace + a mining rule (same s, so only the mining differs).
    Preset("hm-softmax", "HMSoftmax", "HM-Softmax: NormFace on the hardest part of each batch",
           {"margin": "none", "mining": "hard", "s": 16.0, "hard_ratio": 0.5}),
    Preset("focal-softmax", "FocalSoftmax", "F-Softmax: NormFace with the focal weight "
           "(Lin et al. 2017)", {"margin": "none", "mining": "focal", "s": 16.0, "gamma": 2.0}),
    # SphereFace's λ annealing. Features are normalised and scaled by s like the other margins
    # (hashlab's codes are bounded tanh outputs, so ‖x‖ is a poor scale); normalize_features=False,
    # s=1 gives the paper's original z = ‖x‖ ψ(θ).
    Preset("sphereface", "SphereFace", "SphereFace (A-Softmax): multiplicative angular margin "
           "(Liu et al. 2017)",
           {"margin": "sphere", "mining": "none", "s": 30.0, "m": 4, "normalize_features": True,
            "sphere_lambda_base": 1000.0, "sphere_lambda_gamma": 0.12,
            "sphere_lambda_power": 1.0, "sphere_lambda_min": 5.0}),
    # CosFace and AM-Softmax: the AM-Softmax scale (CosFace used s = 64).
    Preset("cosface", "CosFace", "CosFace: additive cosine margin (H. Wang et al. 2018)",
           {"margin": "cos", "mining": "none", "s": 30.0, "m": 0.35}),
    Preset("am-softmax", "AMSoftmax", "AM-Softmax: additive cosine margin (F. Wang et al. 2018)",
           {"margin": "cos", "mining": "none", "s": 30.0, "m": 0.35}),
    Preset("arcface", "ArcFace", "ArcFace: additive angular margin (Deng et al. 2019)",
           {"margin": "arc", "mining": "none", "s": 64.0, "m": 0.5}),
    Preset("mining-margin", "MiningMarginSoftmax", "Naive mining-margin softmax: focal weight "
           "with the CosFace margin",
           {"margin": "cos", "mining": "focal", "s": 30.0, "m": 0.35, "gamma": 2.0}),
    # SV-Softmax and SV-X-Softmax: the authors' defaults.
    Preset("sv-softmax", "SVSoftmax", "SV-Softmax: support vector guided softmax "
           "(X. Wang et al.)", {"margin": "none", "mining": "sv", "s": 32.0, "t": 1.2,
                                "sv_form": "adaptive"}),
    Preset("sv-am-softmax", "SVAMSoftmax", "SV-AM-Softmax: SV-Softmax with the CosFace margin",
           {"margin": "cos", "mining": "sv", "s": 32.0, "m": 0.35, "t": 1.2,
            "sv_form": "adaptive"}),
    Preset("sv-arc-softmax", "SVArcSoftmax", "SV-Arc-Softmax: SV-Softmax with the ArcFace margin",
           {"margin": "arc", "mining": "sv", "s": 32.0, "m": 0.5, "t": 1.2,
            "sv_form": "adaptive"}),
)

_ROWS = {row.cls: row for row in PRESET_TABLE}

#: key -> that preset's MarginSoftmax arguments (a read-only view of :data:`PRESET_TABLE`)
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {row.key: MappingProxyType(dict(row.args)) for row in PRESET_TABLE})


def from_preset(name: str, num_classes: int, dim: int, **overrides: Any) -> MarginSoftmax:
    """``MarginSoftmax`` with the arguments of preset ``name`` updated by ``overrides`` (any
    argument, the method's too)."""
    return MarginSoftmax(num_classes, dim, **{**PRESETS[canonical_key(name)], **overrides})


class MarginPreset(MarginSoftmax):
    """Base of the named presets: a subclass named in :data:`PRESET_TABLE` gets a constructor
    ``(num_classes, dim, <the row's tunable arguments, its values as defaults>)`` that fixes the
    row's ``margin`` and ``mining``, a docstring, and its ``LOSSES`` entry (the row's key,
    description and arguments)."""

    preset: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = _ROWS.get(cls.__name__)
        if row is None or cls.__module__ != __name__:
            return  # a user's subclass of a preset: inherits everything
        fixed = {k: row.args[k] for k in METHOD_ARGS}
        base = inspect.signature(MarginSoftmax).parameters
        signature = inspect.Signature([
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            base["num_classes"], base["dim"],
            *(base[k].replace(default=v) for k, v in row.args.items() if k not in fixed),
        ])

        def __init__(self: MarginSoftmax, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)  # TypeError naming an unknown argument
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments["self"]
            super(cls, self).__init__(**fixed, **arguments)

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.preset = row.key
        method = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
        cls.__doc__ = (f"{row.description}.\n\n:class:`MarginSoftmax` with ``{method}``; its "
                       f"arguments and defaults: row ``{row.key}`` of :data:`PRESET_TABLE`. "
                       "Formulas: ``docs/losses.md``.")
        LOSSES.register(row.key, description=row.description, defaults=row.args)(cls)


# One class per row of PRESET_TABLE, so that a paper's name finds its class.
class NormFace(MarginPreset): ...
class HMSoftmax(MarginPreset): ...
class FocalSoftmax(MarginPreset): ...
class SphereFace(MarginPreset): ...
class CosFace(MarginPreset): ...
class AMSoftmax(MarginPreset): ...
class ArcFace(MarginPreset): ...
class MiningMarginSoftmax(MarginPreset): ...
class SVSoftmax(MarginPreset): ...
class SVAMSoftmax(MarginPreset): ...
class SVArcSoftmax(MarginPreset): ...


#: key -> preset class (a KeyError here at import names a row of PRESET_TABLE without its class)
PRESET_CLASSES: Mapping[str, type[MarginPreset]] = MappingProxyType(
    {row.key: globals()[row.cls] for row in PRESET_TABLE})

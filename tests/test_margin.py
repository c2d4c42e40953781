"""MarginSoftmax: oracles (pytorch-metric-learning, loop transcriptions of the formulas),
identities between the margin × mining combinations, gradcheck, numerical safety, registry."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss, LargeMarginSoftmaxLoss

from hashlab.errors import ConfigError
from hashlab.losses import LOSSES
from hashlab.losses.margin import MARGINS, PRESETS, MarginSoftmax, hard_count
from hashlab.registry import check_kwargs

B, D, C = 24, 12, 7
F64 = torch.float64
PURE_PSI = {"sphere_lambda_base": 0.0, "sphere_lambda_min": 0.0}  # sphere without the λ blend
MARGIN_KW = {
    "none": {},
    "cos": {"m": 0.35},
    "arc": {"m": 0.5},
    "sphere": {"m": 4, **PURE_PSI},
    "combined": {"m1": 1.2, "m2": 0.3, "m3": 0.1},
}


def _batch(seed=0, n=B, dim=D, classes=C, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=dtype), torch.randint(0, classes, (n,),
                                                                       generator=g)


def _f_reference(margin: str, c: float) -> float:
    """f(m, θ_y) of MARGIN_KW written out with the math module."""
    theta = math.acos(max(-1.0, min(1.0, c)))
    if margin == "none":
        return c
    if margin == "cos":
        return c - 0.35
    if margin == "arc":
        return math.cos(theta + 0.5) if theta <= math.pi - 0.5 else c - 0.5 * math.sin(0.5)
    if margin == "sphere":
        k = min(math.floor(4 * theta / math.pi), 3)
        return (-1) ** k * math.cos(4 * theta) - 2 * k
    m1, m2, m3 = 1.2, 0.3, 0.1
    if m1 * theta + m2 <= math.pi:
        return math.cos(m1 * theta + m2) - m3
    return c - m2 * math.sin(m2) - m3


# ----------------------------------------------------------------- pytorch-metric-learning oracle
def _compare_with_pml(ours: MarginSoftmax, theirs, x, y):
    ours, theirs = ours.double(), theirs.double()
    with torch.no_grad():
        theirs.W.copy_(ours.weight.t())
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    l1, l2 = ours(x1, y), theirs(x2, y)
    l1.backward()
    l2.backward()
    assert l1.dtype == F64
    torch.testing.assert_close(l1, l2, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(ours.weight.grad, theirs.W.grad.t(), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["cosface", "am_softmax"])
@pytest.mark.parametrize("s, m", [(64.0, 0.35), (30.0, 0.2)])
def test_cosface_equals_pytorch_metric_learning(name, s, m):
    x, y = _batch()
    _compare_with_pml(LOSSES.build(name, num_classes=C, dim=D, s=s, m=m),
                      CosFaceLoss(num_classes=C, embedding_size=D, margin=m, scale=s), x, y)


@pytest.mark.parametrize("m", [0.5, 0.3, 1.0])
def test_arcface_equals_pytorch_metric_learning_including_the_fallback(m):
    x, y = _batch(1)
    ours = LOSSES.build("arcface", num_classes=C, dim=D, s=64.0, m=m).double()
    with torch.no_grad():  # a third of the batch beyond θ_y > π − m, where the fallback applies
        w = F.normalize(ours.weight, dim=1)
        x[:8] = -w[y[:8]] + 0.05 * x[:8]
        theta = torch.acos(ours.cosine(x).gather(1, y[:, None]))
    assert (theta > math.pi - m).sum() >= 4 and (theta < math.pi - m).sum() >= 4
    theirs = ArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(m), scale=64.0)
    _compare_with_pml(ours, theirs, x, y)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PML's scipy.special.binom call
def test_sphere_psi_equals_pytorch_metric_learning():
    """ψ(θ) = (−1)^k cos(4θ) − 2k against PML's A-Softmax target (multiple-angle formula)."""
    ours = MarginSoftmax(C, D, margin="sphere", m=4, **PURE_PSI).double()
    pml = LargeMarginSoftmaxLoss(num_classes=C, embedding_size=D, margin=4)
    pml.cast_types(F64, torch.device("cpu"))
    c = torch.cos(torch.linspace(0.001, math.pi - 0.001, 997, dtype=F64))
    torch.testing.assert_close(ours.target_logit(c), pml.modify_cosine_of_target_classes(c))


# ------------------------------------------------------------------------- SV-Softmax oracle
def _loop_sv(cos, y, s, t, form, f_of):
    """L = −log(e^{s f} / (e^{s f} + Σ_{k≠y} h e^{s cos θ_k})), one sample and class at a time."""
    total = 0.0
    for i in range(len(cos)):
        f = f_of(cos[i][y[i]])
        denom = math.exp(s * f)
        for k in range(len(cos[i])):
            if k == y[i]:
                continue
            ik = 1.0 if f - cos[i][k] < 0 else 0.0
            if form == "adaptive":
                h = math.exp(s * (t - 1) * (cos[i][k] + 1) * ik)
            else:
                h = math.exp(s * (t - 1) * ik)
            denom += h * math.exp(s * cos[i][k])
        total += -math.log(math.exp(s * f) / denom)
    return total / len(cos)


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("form", ["adaptive", "fixed"])
def test_sv_equals_loop_transcription(margin, form):
    x, y = _batch(2)
    loss = MarginSoftmax(C, D, margin=margin, mining="sv", s=16.0, t=1.3, sv_form=form,
                         **MARGIN_KW[margin]).double()
    with torch.no_grad():  # a third of the batch close to its class: few support vectors there
        x[:8] = F.normalize(loss.weight[y[:8]], dim=1) + 0.2 * F.normalize(x[:8], dim=1)
    cos = loss.cosine(x).tolist()
    expected = _loop_sv(cos, y.tolist(), 16.0, 1.3, form, lambda c: _f_reference(margin, c))
    value = loss(x, y)
    assert value.item() == pytest.approx(expected, rel=1e-10)
    # the mask is active (some support vectors) and not everything (some non-support vectors)
    f = torch.tensor([_f_reference(margin, row[label])
                      for row, label in zip(cos, y.tolist(), strict=True)])
    support = (torch.tensor(cos) > f[:, None]).scatter(1, y[:, None], False)
    assert 0 < support.sum() < B * (C - 1)


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("form", ["adaptive", "fixed"])
@pytest.mark.parametrize("normalize_features", [True, False])
def test_sv_with_t_one_is_exactly_the_plain_margin_loss(margin, form, normalize_features):
    x, y = _batch(3)
    kw = {**MARGIN_KW[margin], "s": 32.0, "normalize_features": normalize_features}
    plain = MarginSoftmax(C, D, margin=margin, **kw).double()
    sv = MarginSoftmax(C, D, margin=margin, mining="sv", t=1.0, sv_form=form, **kw).double()
    sv.load_state_dict(plain.state_dict())
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    l1, l2 = plain(x1, y), sv(x2, y)
    l1.backward()
    l2.backward()
    assert l1.item() == l2.item()
    assert torch.equal(x1.grad, x2.grad) and torch.equal(plain.weight.grad, sv.weight.grad)
    sv.t = 1.2  # and t > 1 does change it (guards the identity above against a no-op)
    assert sv(x, y).item() > l1.item()


def test_sv_ground_truth_column_is_never_reweighted():
    """With the cos margin the target column always satisfies cos θ_y > cos θ_y − m; it must
    still get s·f, not the SV transform."""
    x, y = _batch(4)
    loss = MarginSoftmax(C, D, margin="cos", mining="sv", s=10.0, m=0.35, t=1.5).double()
    z = loss.margin_logits(x, y)
    cos = loss.cosine(x)
    torch.testing.assert_close(z.gather(1, y[:, None]), 10.0 * (cos.gather(1, y[:, None]) - 0.35))
    f = cos.gather(1, y[:, None]) - 0.35
    support = (cos > f).scatter(1, y[:, None], False)
    expected = torch.where(support, 10.0 * (1.5 * cos + 0.5), 10.0 * cos)
    expected = expected.scatter(1, y[:, None], 10.0 * f)
    torch.testing.assert_close(z, expected)


# -------------------------------------------------------------------------------- other mining
def _per_sample_ce_loop(cos, y, s, margin):
    out = []
    for row, label in zip(cos, y, strict=True):
        z = [s * c for c in row]
        z[label] = s * _f_reference(margin, row[label])
        top = max(z)
        out.append(top + math.log(sum(math.exp(v - top) for v in z)) - z[label])
    return out


@pytest.mark.parametrize("margin", ["none", "cos", "arc"])
def test_focal_matches_formula_and_gamma_zero_is_plain(margin):
    x, y = _batch(5)
    kw = {**MARGIN_KW[margin], "s": 20.0}
    plain = MarginSoftmax(C, D, margin=margin, **kw).double()
    focal = MarginSoftmax(C, D, margin=margin, mining="focal", gamma=0.0, **kw).double()
    focal.load_state_dict(plain.state_dict())
    assert focal(x, y).item() == pytest.approx(plain(x, y).item(), rel=1e-12)
    ce = _per_sample_ce_loop(plain.cosine(x).tolist(), y.tolist(), 20.0, margin)
    assert plain(x, y).item() == pytest.approx(sum(ce) / B, rel=1e-10)
    for gamma in (0.5, 2.0):
        focal.gamma = gamma
        expected = sum((1 - math.exp(-v)) ** gamma * v for v in ce) / B
        assert focal(x, y).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5, 0.7, 1.0])
def test_hard_mining_keeps_the_hardest_samples(ratio):
    x, y = _batch(6)
    loss = MarginSoftmax(C, D, margin="cos", mining="hard", hard_ratio=ratio, s=16.0).double()
    ce = _per_sample_ce_loop(loss.cosine(x).tolist(), y.tolist(), 16.0, "cos")
    keep = max(1, math.ceil(ratio * B - 1e-9))
    assert hard_count(B, ratio) == keep
    hardest = sorted(range(B), key=lambda i: -ce[i])[:keep]  # brute force: sort them all
    e = x.clone().requires_grad_()
    value = loss(e, y)
    assert value.item() == pytest.approx(sum(ce[i] for i in hardest) / keep, rel=1e-10)
    value.backward()  # only the kept samples get a gradient
    has_grad = (e.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert sorted(has_grad) == sorted(hardest)


# ------------------------------------------------------------------------------ margin details
def test_combined_margin_reduces_to_arc_and_cos():
    x, y = _batch(7)
    x[:6] = -x[:6]  # some large angles, so the arc fallback is exercised too
    arc = MarginSoftmax(C, D, margin="arc", m=0.5, s=20.0).double()
    comb = MarginSoftmax(C, D, margin="combined", m1=1.0, m2=0.5, m3=0.0, s=20.0).double()
    comb.load_state_dict(arc.state_dict())
    assert comb(x, y).item() == arc(x, y).item()
    cos = MarginSoftmax(C, D, margin="cos", m=0.35, s=20.0).double()
    comb = MarginSoftmax(C, D, margin="combined", m1=1.0, m2=0.0, m3=0.35, s=20.0).double()
    comb.load_state_dict(arc.state_dict())
    cos.load_state_dict(arc.state_dict())
    assert comb(x, y).item() == pytest.approx(cos(x, y).item(), rel=1e-12)
    c = torch.linspace(-1, 1, 301, dtype=F64)
    comb = MarginSoftmax(C, D, margin="combined", **MARGIN_KW["combined"]).double()
    expected = torch.tensor([_f_reference("combined", v) for v in c.tolist()], dtype=F64)
    torch.testing.assert_close(comb.target_logit(c), expected, atol=1e-6, rtol=0)


def test_sphere_margin_lambda_annealing_and_checkpointing():
    loss = MarginSoftmax(C, D, margin="sphere", m=4).double()
    theta = torch.linspace(0.01, math.pi - 0.01, 50, dtype=F64)
    c = torch.cos(theta)
    k = torch.floor(4 * theta / math.pi)
    psi = (-1) ** k * torch.cos(4 * theta) - 2 * k
    for it in (0, 10, 1000, 10**6):
        loss.iteration.fill_(it)
        lam = max(5.0, 1000.0 / (1 + 0.12 * it))
        assert loss.sphere_lambda().item() == pytest.approx(lam)
        torch.testing.assert_close(loss.target_logit(c), (lam * c + psi) / (1 + lam))
        assert torch.all(torch.diff(loss.target_logit(c)) < 0)  # decreasing in θ
    x, y = _batch(8)
    loss.iteration.zero_()
    loss.train()
    for _ in range(3):
        loss(x, y)
    assert int(loss.iteration) == 3
    loss.eval()
    loss(x, y)
    assert int(loss.iteration) == 3  # evaluation does not advance the schedule
    restored = MarginSoftmax(C, D, margin="sphere", m=4).double()
    restored.load_state_dict(loss.state_dict())
    assert int(restored.iteration) == 3
    assert restored(x, y).item() == loss(x, y).item()


def test_feature_norm_path_and_logits():
    x, y = _batch(9)
    loss = MarginSoftmax(C, D, margin="cos", s=2.0, normalize_features=False).double()
    cos = F.normalize(x, dim=1) @ F.normalize(loss.weight, dim=1).t()
    norms = x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(loss.cosine(x), cos)
    torch.testing.assert_close(loss.logits(x), 2.0 * norms * cos)
    z = (2.0 * norms * cos).scatter(1, y[:, None], 2.0 * norms * (cos.gather(1, y[:, None]) - 0.35))
    torch.testing.assert_close(loss(x, y), F.cross_entropy(z, y))
    normed = MarginSoftmax(C, D, margin="arc", s=5.0).double()
    torch.testing.assert_close(normed.logits(x), 5.0 * normed.cosine(x))


def test_dtypes_and_autocast():
    x, y = _batch(10, dtype=torch.float32)
    loss = LOSSES.build("sv_arc_softmax", num_classes=C, dim=D)
    ref = loss(x, y)
    assert ref.dtype == torch.float32
    for dtype in (torch.float16, torch.bfloat16):
        value = loss(x.to(dtype), y)
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(ref.item(), rel=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, y)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(ref.item(), rel=1e-6)
    assert loss.double()(x.double(), y).dtype == F64


def test_empty_batch_is_zero():
    loss = LOSSES.build("arcface", num_classes=C, dim=D)
    e = torch.zeros(0, D, requires_grad=True)
    value = loss(e, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert value.item() == 0.0


# --------------------------------------------------------------------------------- gradcheck
def _gradcheck_inputs(loss: MarginSoftmax, seed: int):
    """A batch whose SV masks and HM ranking are at least 1e-3 away from flipping, so the loss is
    smooth around it (gradcheck's finite differences use steps of 1e-6)."""
    for attempt in range(200):
        x, y = _batch(seed + attempt, n=6, dim=6, classes=5)
        with torch.no_grad():
            cos = loss.cosine(x)
            f = loss.target_logit(cos.gather(1, y[:, None]))
            gap = (cos - f).abs().scatter(1, y[:, None], 1.0).min()
            ce = F.cross_entropy(loss.margin_logits(x, y), y, reduction="none").sort().values
            ce_gap = ce.diff().min()
        if gap > 1e-3 and ce_gap > 1e-3:
            return x.requires_grad_(), y
    raise AssertionError("no smooth batch found")


GRADCHECK = [(name, {}) for name in sorted(PRESETS)] + [
    ("margin_softmax", {"margin": "combined", "mining": "sv", "m1": 1.1, "m2": 0.2, "m3": 0.1,
                        "sv_form": "fixed", "s": 8.0}),
    ("margin_softmax", {"margin": "sphere", "mining": "focal", "normalize_features": False,
                        "s": 1.0}),
    ("margin_softmax", {"margin": "arc", "mining": "hard", "hard_ratio": 0.5, "s": 8.0}),
]


@pytest.mark.parametrize("name, kwargs", GRADCHECK)
def test_gradcheck(name, kwargs):
    loss = LOSSES.build(name, num_classes=5, dim=6, **kwargs).double().eval()  # eval: λ fixed
    if loss.s > 16:
        loss.s = 16.0  # keep the float64 finite differences well conditioned
    x, y = _gradcheck_inputs(loss, seed=100)
    assert torch.autograd.gradcheck(lambda e, w: _with_weight(loss, e, w, y),
                                    (x, loss.weight.detach().clone().requires_grad_()),
                                    eps=1e-6, atol=1e-5)


def _with_weight(loss, e, w, y):
    return torch.func.functional_call(loss, {"weight": w, "iteration": loss.iteration}, (e, y))


# ------------------------------------------------------------------------- numerical safety
def _adversarial(n_batches: int, batch: int, weight: torch.Tensor, seed: int):
    """``n_batches`` batches of ``batch`` rows, cycling through the adversarial kinds."""
    g = torch.Generator().manual_seed(seed)
    classes, dim = weight.shape
    w = F.normalize(weight.detach(), dim=1)
    xs, ys, kinds = [], [], []
    for i in range(n_batches):
        x = torch.randn(batch, dim, generator=g)
        y = torch.randint(0, classes, (batch,), generator=g)
        kind = i % 8
        if kind == 1:
            x = x[:1].repeat(batch, 1) * torch.rand(batch, 1, generator=g)  # collinear
        elif kind == 2:
            x[: batch // 2] = 0  # zero features
        elif kind == 3:
            x = x * 1e6
        elif kind == 4:
            x = x * 1e-6
        elif kind == 5:  # exactly on a class weight (cos = 1) or opposite it (cos = −1)
            x = torch.where((torch.arange(batch) % 2 == 0)[:, None], w[y], -w[y])
        elif kind == 6:  # a class weight, scaled: cos = ±1 with odd norms
            x = w[y] * torch.randn(batch, 1, generator=g) * 100
        xs.append(x)
        ys.append(y)
        kinds.append(kind)
    return xs, ys, kinds


def _finite_step(loss, x, y, dtype):
    e = x.detach().to(dtype).clone().requires_grad_()
    loss.weight.grad = None
    value = loss(e, y)
    value.backward()
    return (torch.isfinite(value).item() and torch.isfinite(e.grad).all().item()
            and torch.isfinite(loss.weight.grad).all().item())


# Norms of 1e±6 are float32/bfloat16 only: in float16 the input itself (1e6 > 65504) or its
# true gradient (∝ 1/‖x‖ ≈ 1e6) is not representable, whatever the loss does.
_DTYPES = {3: (torch.float32, torch.bfloat16), 4: (torch.float32, torch.bfloat16)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_nan_or_inf_on_1000_adversarial_batches(name):
    loss = LOSSES.build(name, num_classes=C, dim=D).train()
    loss.s = 64.0
    xs, ys, kinds = _adversarial(1000, 16, loss.weight, seed=sum(map(ord, name)))
    # every batch on its own, the first 160 of them (20 of each kind) in every dtype ...
    for x, y, kind in zip(xs[:160], ys[:160], kinds[:160], strict=True):
        for dtype in _DTYPES.get(kind, (torch.float32, torch.float16, torch.bfloat16)):
            assert _finite_step(loss, x, y, dtype), (name, kind, dtype)
    # ... and all 1000, grouped by kind into larger batches: a NaN or Inf in any row of a
    # batch shows in the mean and in that row's gradient (a stricter test for the summed
    # weight gradient), and the HM selection cannot create one
    for kind in range(8):
        x = torch.cat([x for x, k in zip(xs, kinds, strict=True) if k == kind])
        y = torch.cat([y for y, k in zip(ys, kinds, strict=True) if k == kind])
        for dtype in _DTYPES.get(kind, (torch.float32, torch.float16, torch.bfloat16)):
            assert _finite_step(loss, x, y, dtype), (name, kind, dtype, "grouped")


def test_cos_exactly_one_gives_finite_angle_gradients():
    for name in ("arcface", "sv_arc_softmax", "sphereface"):
        loss = LOSSES.build(name, num_classes=C, dim=D).double()
        w = F.normalize(loss.weight.detach(), dim=1)
        y = torch.arange(C)
        for sign in (1.0, -1.0):
            e = (sign * w).clone().requires_grad_()
            assert loss.cosine(e).gather(1, y[:, None]).abs().min().item() == pytest.approx(1.0)
            value = loss(e, y)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(e.grad).all(), (name, sign)


# ---------------------------------------------------------------------------------- registry
ALL_NAMES = sorted(PRESETS) + ["margin_softmax"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_registry_builds_every_preset_with_its_defaults(name):
    loss = LOSSES.build(name, num_classes=C, dim=D)
    assert isinstance(loss, MarginSoftmax) and loss.weight.shape == (C, D)
    params = inspect.signature(LOSSES.get(name)).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in PRESETS.get(name, {}).items():
        if key in params:  # the factory default is the preset's value ...
            assert params[key].default == value, (name, key)
        # ... and the built module carries it
        assert getattr(loss, key) == value, (name, key)
    for key in params:
        if key not in ("num_classes", "dim"):
            assert key in inspect.signature(MarginSoftmax).parameters
    with pytest.raises(ConfigError, match="loss.args.nonsense"):
        check_kwargs(LOSSES.get(name), {"nonsense": 1}, "loss.args")


def test_registry_rejects_wrong_arguments():
    with pytest.raises(ConfigError, match="loss.args.margin"):
        check_kwargs(LOSSES.get("cosface"), {"margin": 0.3}, "loss.args")
    with pytest.raises(ConfigError, match="loss.args.t"):
        check_kwargs(LOSSES.get("arcface"), {"t": 1.2}, "loss.args")
    check_kwargs(LOSSES.get("sv_am_softmax"), {"t": 1.12, "m": 0.3}, "loss.args")
    loss = LOSSES.build("sv_am_softmax", num_classes=C, dim=D, t=1.12, sv_form="fixed")
    assert (loss.t, loss.sv_form, loss.margin, loss.mining) == (1.12, "fixed", "cos", "sv")


@pytest.mark.parametrize("kwargs, match", [
    ({"margin": "angular"}, "margin must be one of"),
    ({"mining": "ohem"}, "mining must be one of"),
    ({"mining": "sv", "t": 0.9}, "t must be >= 1"),
    ({"sv_form": "soft"}, "sv_form"),
    ({"margin": "sphere", "m": 1.5}, "integer"),
    ({"margin": "arc", "m": 3.5}, "pi"),
    ({"s": 0.0}, "s must be > 0"),
    ({"mining": "hard", "hard_ratio": 0.0}, "hard_ratio"),
    ({"mining": "focal", "gamma": -1.0}, "gamma"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarginSoftmax(C, D, **kwargs)


def test_bad_inputs_are_rejected():
    loss = MarginSoftmax(C, D)
    with pytest.raises(ValueError, match="embeddings must have shape"):
        loss(torch.randn(4, D + 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        loss(torch.randn(4, D), torch.tensor([0, 1, 2, C]))
    with pytest.raises(ValueError, match="labels must have shape"):
        loss(torch.randn(4, D), torch.zeros(3, dtype=torch.long))


def test_every_preset_is_a_class_generated_from_its_table_row():
    from hashlab.losses import margin as module

    classes = ["NormFace", "HMSoftmax", "FocalSoftmax", "SphereFace", "CosFace", "AMSoftmax",
               "ArcFace", "MiningMarginSoftmax", "SVSoftmax", "SVAMSoftmax", "SVArcSoftmax"]
    assert [row.cls for row in module.PRESET_TABLE] == classes
    assert set(PRESETS) == {row.key for row in module.PRESET_TABLE}
    for row in module.PRESET_TABLE:
        cls = getattr(module, row.cls)
        assert issubclass(cls, MarginSoftmax) and LOSSES.get(row.key) is cls
        assert cls.preset == row.key and module.PRESET_CLASSES[row.key] is cls
        entry = LOSSES.entry(row.key)
        assert entry.description == row.description and dict(entry.defaults) == dict(row.args)
        tunable = [k for k in row.args if k not in module.METHOD_ARGS]
        assert list(inspect.signature(cls).parameters) == ["num_classes", "dim", *tunable]
        loss = cls(C, D)
        assert all(getattr(loss, k) == v for k, v in row.args.items()), row.key
        assert row.description in cls.__doc__
    assert LOSSES.get("sv_arc_softmax") is module.SVArcSoftmax
    assert LOSSES.get("margin_softmax") is MarginSoftmax
    with pytest.raises(TypeError, match="margin"):
        module.CosFace(C, D, margin="arc")  # the method of a preset is fixed
    loss = module.ArcFace(C, D, 8.0, m=0.3)
    assert (loss.s, loss.m, loss.margin) == (8.0, 0.3, "arc")

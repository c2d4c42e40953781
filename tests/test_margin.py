from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss

from hashlab.config import check_kwargs
from hashlab.errors import ConfigError
from hashlab.losses import LOSSES
from hashlab.losses.margin import MARGINS, PRESETS, MarginSoftmax

B, D, C = 24, 12, 7


def _batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=dtype), torch.randint(0, C, (B,), generator=g)


def _compare_with_pml(ours: MarginSoftmax, theirs, x, y):
    ours, theirs = ours.double(), theirs.double()
    with torch.no_grad():
        theirs.W.copy_(ours.weight.t())
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    l1, l2 = ours(x1, y), theirs(x2, y)
    l1.backward()
    l2.backward()
    assert l1.item() == pytest.approx(l2.item(), abs=1e-5, rel=1e-7)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.weight.grad, theirs.W.grad.t(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("s, m", [(64.0, 0.35), (30.0, 0.2)])
def test_cosface_equals_pytorch_metric_learning(s, m):
    x, y = _batch()
    _compare_with_pml(LOSSES.build("cosface", num_classes=C, dim=D, s=s, m=m),
                      CosFaceLoss(num_classes=C, embedding_size=D, margin=m, scale=s), x, y)


@pytest.mark.parametrize("m", [0.5, 0.3])
def test_arcface_equals_pytorch_metric_learning(m):
    x, y = _batch(1)
    ours = LOSSES.build("arcface", num_classes=C, dim=D, s=64.0, m=m)
    # put a third of the samples beyond θ_y > π − m, where the fallback applies
    with torch.no_grad():
        w = F.normalize(ours.weight, dim=1).double()
        x[:8] = -w[y[:8]] + 0.05 * x[:8]
    theirs = ArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(m), scale=64.0)
    _compare_with_pml(ours, theirs, x, y)


def _loop_sv(cos, y, s, t, form, f_of):
    """Direct transcription of L = −log(e^{s f}/(e^{s f} + Σ_{k≠y} h e^{s cos θ_k}))."""
    total = 0.0
    for i in range(cos.shape[0]):
        f = f_of(cos[i, y[i]])
        denom = math.exp(s * f)
        for k in range(cos.shape[1]):
            if k == y[i]:
                continue
            ik = 1.0 if f - cos[i, k] < 0 else 0.0
            h = math.exp(s * (t - 1) * (cos[i, k] + 1) * ik) if form == "adaptive" \
                else math.exp(s * (t - 1) * ik)
            denom += h * math.exp(s * cos[i, k])
        total += -math.log(math.exp(s * f) / denom)
    return total / cos.shape[0]


@pytest.mark.parametrize("margin, f_of", [
    ("none", lambda c: c),
    ("cos", lambda c: c - 0.35),
    ("arc", lambda c: math.cos(math.acos(c) + 0.5) if math.acos(c) <= math.pi - 0.5
     else c - 0.5 * math.sin(0.5)),
])
@pytest.mark.parametrize("form", ["adaptive", "fixed"])
def test_sv_equals_loop_transcription(margin, f_of, form):
    x, y = _batch(2)
    m = 0.5 if margin == "arc" else 0.35
    loss = MarginSoftmax(C, D, margin=margin, mining="sv", s=16.0, m=m, t=1.3, sv_form=form)
    loss.double()
    cos = loss.cosine(x).detach().numpy()
    expected = _loop_sv(cos, y.numpy(), 16.0, 1.3, form, f_of)
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("margin", MARGINS)
def test_sv_with_t_one_is_the_plain_margin_loss(margin):
    x, y = _batch(3)
    kw = {"m": 4} if margin == "sphere" else {"m2": 0.3, "m1": 1.2, "m3": 0.1} \
        if margin == "combined" else {}
    plain = MarginSoftmax(C, D, margin=margin, **kw).double()
    sv = MarginSoftmax(C, D, margin=margin, mining="sv", t=1.0, **kw).double()
    sv.load_state_dict(plain.state_dict())
    assert sv(x, y).item() == plain(x, y).item()
    # and t > 1 really changes it (guards the test above against a no-op)
    sv.t = 1.2
    assert sv(x, y).item() > plain(x, y).item()


def test_focal_gamma_zero_is_plain_and_hard_keeps_the_hardest():
    x, y = _batch(4)
    plain = MarginSoftmax(C, D, margin="cos").double()
    focal = MarginSoftmax(C, D, margin="cos", mining="focal", gamma=0.0).double()
    focal.load_state_dict(plain.state_dict())
    assert focal(x, y).item() == pytest.approx(plain(x, y).item(), rel=1e-12)
    hard = MarginSoftmax(C, D, margin="cos", mining="hard", hard_ratio=0.25).double()
    hard.load_state_dict(plain.state_dict())
    logits = plain.s * plain.cosine(x).scatter(1, y[:, None],
                                               plain.cosine(x).gather(1, y[:, None]) - plain.m)
    per_sample = F.cross_entropy(logits, y, reduction="none").detach().numpy()
    expected = np.sort(per_sample)[::-1][:6].mean()
    assert hard(x, y).item() == pytest.approx(expected, rel=1e-9)
    # focal: −(1 − p)^γ log p per sample
    focal.gamma = 2.0
    p = np.exp(-per_sample)
    assert focal(x, y).item() == pytest.approx(((1 - p) ** 2 * per_sample).mean(), rel=1e-9)


def test_sphere_margin_closed_form():
    loss = MarginSoftmax(C, D, margin="sphere", m=4).double()
    theta = torch.linspace(0.01, math.pi - 0.01, 50, dtype=torch.float64)
    lam = loss.sphere_lambda()
    k = torch.floor(4 * theta / math.pi)
    psi = (-1) ** k * torch.cos(4 * theta) - 2 * k
    torch.testing.assert_close(loss.target_logit(torch.cos(theta)), (lam * torch.cos(theta) + psi)
                               / (1 + lam))
    # ψ is monotonically decreasing in θ, and λ anneals with training iterations
    loss.sphere = (1000.0, 0.12, 1.0, 0.0)
    loss.iteration.fill_(10**6)
    assert torch.all(torch.diff(loss.target_logit(torch.cos(theta))) < 0)
    x, y = _batch(5)
    loss.train()
    before = int(loss.iteration)
    loss(x, y)
    assert int(loss.iteration) == before + 1


@pytest.mark.parametrize("name", sorted(PRESETS) + ["margin_softmax", "am_softmax"])
def test_gradcheck_every_preset(name):
    loss = LOSSES.build(name, num_classes=5, dim=6).double().eval()  # eval: λ stays fixed
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(6) % 5
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-4)


def _adversarial_batches(n: int):
    g = torch.Generator().manual_seed(11)
    for i in range(n):
        x = torch.randn(B, D, generator=g)
        y = torch.randint(0, C, (B,), generator=g)
        kind = i % 6
        if kind == 1:
            x = x[:1].repeat(B, 1)  # collinear
        elif kind == 2:
            x[: B // 2] = 0  # zero features
        elif kind == 3:
            x = x * 1e6
        elif kind == 4:
            x = x * 1e-6
        yield kind, x, y


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_nan_on_adversarial_batches(name):
    loss = LOSSES.build(name, num_classes=C, dim=D)
    if hasattr(loss, "s"):
        loss.s = 64.0
    w = F.normalize(loss.weight.detach(), dim=1)
    for kind, x, y in _adversarial_batches(1000):
        if kind == 5:  # exactly on (cos = 1) or opposite (cos = −1) a class weight
            x = torch.where((torch.arange(B) % 2 == 0)[:, None], w[y], -w[y])
        # norms of 1e±6 are fp32-only: in fp16 the input itself (1e6 > 65504) or its true
        # gradient (∝ 1/‖x‖ = 1e6) is not representable, whatever the loss does; likewise a
        # zero feature's gradient (∝ 1/eps of the normalisation) overflows fp16 but not bf16
        # (AMP's GradScaler skips such steps)
        dtypes = {3: (torch.float32,), 4: (torch.float32,),
                  2: (torch.float32, torch.bfloat16)}.get(
            kind, (torch.float32, torch.float16, torch.bfloat16))
        for dtype in dtypes:
            e = x.detach().to(dtype).requires_grad_()
            value = loss(e, y)
            value.backward()
            assert torch.isfinite(value), (name, kind, dtype)
            assert torch.isfinite(e.grad).all() and torch.isfinite(loss.weight.grad).all()
            loss.weight.grad = None


def test_registry_rejects_unknown_args_and_bad_values():
    with pytest.raises(ConfigError, match="loss.args.margin"):
        check_kwargs(LOSSES.get("cosface"), {"margin": 0.3}, "loss.args")
    with pytest.raises(ValueError, match="margin must be one of"):
        MarginSoftmax(C, D, margin="angular")
    with pytest.raises(ValueError, match="t must be >= 1"):
        MarginSoftmax(C, D, mining="sv", t=0.9)
    with pytest.raises(ValueError, match="positive integer"):
        MarginSoftmax(C, D, margin="sphere", m=1.5)

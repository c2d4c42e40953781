"""Born-Again Networks' losses against loop transcriptions of the paper's formulas (values and
gradients, float64): BAN (and its gradient ``(q − p) / B``), BAN+L, CWTM (batch-normalised
teacher max), DKPP (the argmax kept, the other entries permuted within each sample) and BANE."""

from __future__ import annotations

import math

import pytest
import torch

from hashlab.train.recipes.distill import (
    ban_l_loss,
    ban_loss,
    cwtm_loss,
    dkpp_loss,
    dkpp_targets,
    ensemble_probabilities,
)


def softmax_row(z: torch.Tensor, t: float = 1.0) -> list:
    exps = [math.e ** (float(v) / t) for v in z]
    total = sum(exps)
    return [e / total for e in exps]


def log_softmax_row(z: torch.Tensor, t: float = 1.0) -> list:
    """log q_c = z_c / T − log Σ_j exp(z_j / T), as tensors (differentiable)."""
    lse = torch.log(sum(torch.exp(v / t) for v in z))
    return [v / t - lse for v in z]


def soft_ce_loop(student: torch.Tensor, targets: list[list[float]], t: float = 1.0
                 ) -> torch.Tensor:
    total = 0.0
    for b in range(student.shape[0]):
        log_q = log_softmax_row(student[b], t)
        total = total - sum(targets[b][c] * log_q[c] for c in range(student.shape[1]))
    return total / student.shape[0] * t**2


def ce_loop(student: torch.Tensor, labels: torch.Tensor) -> list:
    return [-log_softmax_row(student[b])[int(labels[b])] for b in range(student.shape[0])]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = 2 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2])
    return student, teacher, labels


def grads(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(value, x, retain_graph=True)[0]


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_ban_matches_the_loop(logits, t):
    student, teacher, _ = logits
    targets = [softmax_row(teacher[b], t) for b in range(5)]
    got, want = ban_loss(student, teacher, t), soft_ce_loop(student, targets, t)
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(grads(got, student), grads(want, student), atol=1e-12)


def test_ban_gradient_is_student_minus_teacher_over_batch(logits):
    student, teacher, _ = logits
    g = grads(ban_loss(student, teacher), student)
    q, p = torch.softmax(student.detach(), 1), torch.softmax(teacher, 1)
    assert torch.allclose(g, (q - p) / 5, atol=1e-12)
    assert torch.allclose(g.sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)


def test_ban_l_and_cwtm_match_the_loop(logits):
    student, teacher, labels = logits
    targets = [softmax_row(teacher[b]) for b in range(5)]
    ce = ce_loop(student, labels)
    want = sum(ce) / 5 + soft_ce_loop(student, targets)
    got = ban_l_loss(student, teacher, labels)
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(grads(got, student), grads(want, student), atol=1e-12)
    top = [max(row) for row in targets]
    want = sum(top[b] / sum(top) * ce[b] for b in range(5))
    got = cwtm_loss(student, teacher, labels)
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(grads(got, student), grads(want, student), atol=1e-12)


def test_teacher_is_never_differentiated(logits):
    student, teacher, labels = logits
    teacher = teacher.clone().requires_grad_(True)
    for value in (ban_loss(student, teacher), cwtm_loss(student, teacher, labels),
                  dkpp_loss(student, teacher, torch.Generator().manual_seed(0))):
        assert torch.autograd.grad(value, teacher, allow_unused=True)[0] is None


def test_dkpp_keeps_the_argmax_and_permutes_the_rest_within_each_sample():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 6, generator=g, dtype=torch.float64), 1)
    out = dkpp_targets(probs, torch.Generator().manual_seed(1))
    top = probs.argmax(1)
    rows = torch.arange(200)
    assert torch.equal(out[rows, top], probs[rows, top])  # the argmax stays in place
    assert torch.equal(out.argmax(1), top)
    for b in range(200):  # each row holds its own values: a permutation within the sample
        assert sorted(out[b].tolist()) == sorted(probs[b].tolist())
    moved = (out != probs).any(1)
    assert 0.8 < moved.double().mean() < 1.0  # with 5 free entries, 1/120 rows stay put
    # a fresh permutation per row: rows with the same values are shuffled differently
    same = dkpp_targets(probs[:1].expand(50, 6).clone(), torch.Generator().manual_seed(2))
    assert len({tuple(r.tolist()) for r in same}) > 10


def test_dkpp_loss_is_ban_against_the_permuted_targets(logits):
    student, teacher, _ = logits
    targets = dkpp_targets(torch.softmax(teacher, 1), torch.Generator().manual_seed(3))
    got = dkpp_loss(student, teacher, torch.Generator().manual_seed(3))
    want = soft_ce_loop(student, targets.tolist())
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(grads(got, student), grads(want, student), atol=1e-12)


def test_bane_is_the_mean_of_the_softmaxes():
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    got = ensemble_probabilities(zs)
    for b in range(3):
        for c in range(4):
            want = sum(softmax_row(z[b])[c] for z in zs) / 3
            assert got[b, c].item() == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError):
        ensemble_probabilities([])
    with pytest.raises(ValueError):
        ensemble_probabilities([zs[0], zs[1][:, :3]])


def test_bad_inputs(logits):
    student, teacher, _ = logits
    with pytest.raises(ValueError, match="temperature"):
        ban_loss(student, teacher, 0.0)
    with pytest.raises(ValueError, match="logits"):
        ban_loss(student, teacher[:, :3])

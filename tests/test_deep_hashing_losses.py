"""GreedyHash, HashNet, DSH and DTSH (and the ``greedy`` head): each loss against a loop-based
float64 transcription of its paper's formula (values and autograd gradients), GreedyHash's
straight-through gradient, HashNet's continuation schedule, input checks, and a short training
run of each through the real engine."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hashlab.config import load_config
from hashlab.losses import LOSSES
from hashlab.losses.dsh import DSHLoss
from hashlab.losses.dtsh import DTSHLoss
from hashlab.losses.greedyhash import GreedyHashLoss, greedy_sign
from hashlab.losses.hashnet import HashNetLoss
from hashlab.models import HEADS, HashHead
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config

TOL = 1e-10


def batch(n: int, bits: int, classes: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    codes = scale * torch.randn(n, bits, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    return codes, labels


def multi_hot(n: int, classes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, classes, generator=g) < 0.3).long()


def similar(labels: torch.Tensor, i: int, j: int) -> float:
    if labels.ndim == 1:
        return float(int(labels[i]) == int(labels[j]))
    return float(any(int(a) and int(b) for a, b in zip(labels[i], labels[j], strict=True)))


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def check_against(module_loss, oracle, codes: torch.Tensor, labels: torch.Tensor) -> None:
    """Values and gradients w.r.t. the codes of the module and of the transcription agree."""
    a, b = leaf(codes), leaf(codes)
    value, expected = module_loss(a, labels), oracle(b, labels)
    value.backward()
    expected.backward()
    assert abs(value.item() - expected.item()) <= TOL * max(1.0, abs(expected.item()))
    torch.testing.assert_close(a.grad, b.grad, rtol=TOL, atol=TOL)


# --------------------------------------------------------------------------- GreedyHash


def greedy_oracle(loss: GreedyHashLoss):
    """CE(W sgn(h) + c, y) + α mean | |h| − 1 |³, element by element; sgn is the greedy sign."""
    w, c = loss.classifier.weight, loss.classifier.bias

    def oracle(h, labels):
        n, k = h.shape
        b = greedy_sign(h)
        ce = 0.0
        for i in range(n):
            z = [c[q] + sum(w[q, m] * b[i, m] for m in range(k)) for q in range(w.shape[0])]
            ce = ce - (z[int(labels[i])] - torch.logsumexp(torch.stack(z), 0))
        pen = sum(abs(abs(h[i, m]) - 1) ** 3 for i in range(n) for m in range(k))
        return ce / n + loss.alpha * pen / (n * k)
    return oracle


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_hash_matches_its_formula(seed):
    torch.manual_seed(seed)
    loss = GreedyHashLoss(num_classes=4, dim=6, alpha=0.3).double()
    codes, labels = batch(7, 6, 4, seed, scale=1.5)
    check_against(loss, greedy_oracle(loss), codes, labels)


def test_greedy_hash_gradient_is_straight_through():
    """∂L/∂h = ∂CE/∂b (at b = sgn h) + 3α sgn(h) (|h| − 1)² sgn(|h| − 1) / N."""
    torch.manual_seed(0)
    alpha = 0.7
    loss = GreedyHashLoss(num_classes=5, dim=8, alpha=alpha).double()
    h, labels = batch(9, 8, 5, 3, scale=1.5)
    h = leaf(h)
    loss(h, labels).backward()
    b = leaf(torch.where(h > 0, 1.0, -1.0).to(torch.float64))
    F.cross_entropy(loss.classifier(b), labels).backward()
    a = h.detach().abs() - 1
    expected = b.grad + 3 * alpha * h.detach().sign() * a.pow(2) * a.sign() / h.numel()
    torch.testing.assert_close(h.grad, expected, rtol=TOL, atol=TOL)


def test_greedy_sign_and_logits():
    h = torch.tensor([[0.5, -0.2, 0.0]], dtype=torch.float64, requires_grad=True)
    b = greedy_sign(h)
    assert b.tolist() == [[1.0, -1.0, -1.0]]  # sgn(0) = −1, like bit = h > 0
    (b * torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64)).sum().backward()
    assert h.grad.tolist() == [[2.0, 3.0, 4.0]]  # identity, unclipped
    loss = GreedyHashLoss(num_classes=3, dim=3).double()
    torch.testing.assert_close(loss.logits(h), loss.classifier(b))


def test_greedy_head():
    head = HEADS.get("greedy")(in_dim=5, dim=12)
    assert isinstance(head, HashHead) and head.binary and head.dim == 12
    x = torch.randn(4, 5)
    torch.testing.assert_close(head(x), head.proj(x))  # raw linear output, no squashing
    torch.testing.assert_close(head.pre_activation(x), head(x))
    with pytest.raises(TypeError):
        HEADS.get("greedy")(in_dim=5, dim=12, activation="tanh")


# --------------------------------------------------------------------------- HashNet


def hashnet_beta(t: int, beta0=1.0, gamma=0.005, power=0.5, step=200) -> float:
    return beta0 * (1 + gamma * (t // step) * step) ** power


def hashnet_oracle(alpha: float, beta: float):
    """Σ_{i≠j} w_ij [log(1 + exp(α⟨h_i,h_j⟩)) − α s_ij ⟨h_i,h_j⟩] / |S|, h = tanh(β z),
    w = |S|/|S_1| (similar) or |S|/|S_0| (dissimilar)."""
    def oracle(z, labels):
        n, k = z.shape
        h = [[torch.tanh(beta * z[i, m]) for m in range(k)] for i in range(n)]
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        s = {p: similar(labels, *p) for p in pairs}
        n1 = sum(s.values())
        n0 = len(pairs) - n1
        total = 0.0
        for i, j in pairs:
            ip = alpha * sum(h[i][m] * h[j][m] for m in range(k))
            w = len(pairs) / n1 if s[i, j] else len(pairs) / n0
            total = total + w * (torch.log(1 + torch.exp(ip)) - s[i, j] * ip)
        return total / len(pairs)
    return oracle


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("iteration", [0, 450])
def test_hashnet_matches_its_formula(multi, iteration):
    bits = 6
    codes, labels = batch(8, bits, 3, iteration + int(multi), scale=1.2)
    if multi:
        labels = multi_hot(8, 4, 5)
    loss = HashNetLoss(dim=bits)
    loss.iteration.fill_(iteration)
    check_against(loss, hashnet_oracle(10.0 / bits, hashnet_beta(iteration)), codes, labels)
    assert int(loss.iteration) == iteration + 1  # training mode: one step


def test_hashnet_explicit_arguments_and_eval_mode():
    codes, labels = batch(7, 5, 2, 9)
    loss = HashNetLoss(alpha=0.8, beta0=2.0, gamma=0.1, power=0.7, step_size=3).eval()
    loss.iteration.fill_(8)
    check_against(loss, hashnet_oracle(0.8, 2.0 * (1 + 0.1 * 6) ** 0.7), codes, labels)
    assert int(loss.iteration) == 8  # eval mode: no step


def test_hashnet_schedule():
    loss = HashNetLoss(gamma=0.01, power=0.5, step_size=1)
    codes, labels = batch(4, 8, 2, 0)
    for _ in range(5):
        loss(codes, labels)
    assert int(loss.iteration) == 5
    assert math.isclose(float(loss.beta()), (1 + 0.01 * 5) ** 0.5, rel_tol=1e-12)
    loss.eval()
    for _ in range(3):
        loss(codes, labels)
    assert int(loss.iteration) == 5
    coarse = HashNetLoss()  # the authors' schedule: refreshed every 200 iterations
    for t in (0, 199, 200, 399, 1000, 12345):
        coarse.iteration.fill_(t)
        assert math.isclose(float(coarse.beta()), hashnet_beta(t), rel_tol=1e-12)
    assert "iteration" in coarse.state_dict()


def test_hashnet_one_sided_batch():
    """A batch of one class has no dissimilar pair: only the similar mean remains."""
    z, _ = batch(5, 4, 1, 2)
    labels = torch.zeros(5, dtype=torch.long)
    loss = HashNetLoss().eval()
    h = torch.tanh(z)
    ip = 2.5 * (h @ h.T)
    off = ~torch.eye(5, dtype=torch.bool)
    expected = (F.softplus(ip) - ip)[off].mean()
    assert math.isclose(float(loss(z, labels)), float(expected), rel_tol=1e-12)


# --------------------------------------------------------------------------- DSH


def dsh_oracle(m: float, alpha: float):
    def oracle(b, labels):
        n, k = b.shape
        total, pairs = 0.0, 0
        for i in range(n):
            for j in range(i + 1, n):
                s = similar(labels, i, j)
                d2 = sum((b[i, q] - b[j, q]) ** 2 for q in range(k))
                hinge = m - d2 if (m - d2).item() > 0 else 0.0
                reg = sum(abs(abs(b[i, q]) - 1) + abs(abs(b[j, q]) - 1) for q in range(k))
                total = total + 0.5 * s * d2 + 0.5 * (1 - s) * hinge + alpha * reg
                pairs += 1
        return total / pairs
    return oracle


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_dsh_matches_its_formula(multi, seed):
    bits = 5
    codes, labels = batch(8, bits, 3, seed, scale=1.3)
    if multi:
        labels = multi_hot(8, 4, seed)
    check_against(DSHLoss(dim=bits), dsh_oracle(2.0 * bits, 0.01), codes, labels)
    # a margin that some dissimilar pairs exceed and others do not
    check_against(DSHLoss(margin=12.0, alpha=0.2), dsh_oracle(12.0, 0.2), codes, labels)


# --------------------------------------------------------------------------- DTSH


def dtsh_oracle(alpha: float, lam: float):
    def oracle(u, labels):
        n, k = u.shape

        def theta(i, j):
            return 0.5 * sum(u[i, q] * u[j, q] for q in range(k))
        total, count = 0.0, 0
        for i in range(n):
            for j in range(n):
                for t in range(n):
                    if j == i or labels[j] != labels[i] or labels[t] == labels[i]:
                        continue
                    x = theta(i, j) - theta(i, t) - alpha
                    total = total - torch.log(torch.sigmoid(x))
                    count += 1
        quant = sum((math.copysign(1.0, u[i, q].item()) - u[i, q]) ** 2
                    for i in range(n) for q in range(k))
        return total / count + lam * quant / (n * k)
    return oracle


@pytest.mark.parametrize("seed", [0, 1])
def test_dtsh_matches_its_formula(seed):
    bits = 6
    codes, labels = batch(7, bits, 3, seed)
    codes = torch.tanh(codes)
    check_against(DTSHLoss(dim=bits), dtsh_oracle(bits / 2, 0.1), codes, labels)
    check_against(DTSHLoss(alpha=0.5, quantization_weight=0.0), dtsh_oracle(0.5, 0.0),
                  codes, labels)


def test_dtsh_code_range_01_and_no_triplet():
    bits = 4
    codes, labels = batch(6, bits, 3, 4)
    u = torch.sigmoid(codes)
    a = DTSHLoss(code_range="01")(u, labels)
    b = DTSHLoss()(2 * u - 1, labels)
    assert math.isclose(float(a), float(b), rel_tol=1e-12)
    one_class = torch.zeros(6, dtype=torch.long)
    x = leaf(torch.tanh(codes))
    value = DTSHLoss(quantization_weight=0.0)(x, one_class)
    value.backward()
    assert value.item() == 0.0 and x.grad is not None


# --------------------------------------------------------------------------- shared


@pytest.mark.parametrize("key", ["greedy-hash", "hashnet", "dsh", "dtsh"])
def test_registered_and_tiny_batches(key):
    loss = LOSSES.get(key)(num_classes=3, dim=4)
    for n in (0, 1):
        x = torch.randn(n, 4, requires_grad=True)
        value = loss(x, torch.zeros(n, dtype=torch.long))
        value.backward()
        assert torch.isfinite(value)


@pytest.mark.parametrize("key", ["greedy-hash", "hashnet", "dsh", "dtsh"])
def test_bad_inputs_name_the_argument(key):
    loss = LOSSES.get(key)(num_classes=3, dim=4)
    with pytest.raises(ValueError, match="codes"):
        loss(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="codes"):
        loss(torch.randn(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(5, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(5, 4), torch.zeros(5))


@pytest.mark.parametrize("key, args, name", [
    ("greedy-hash", {"alpha": -1.0}, "alpha"),
    ("hashnet", {"alpha": 0.0}, "alpha"),
    ("hashnet", {"beta0": -1.0}, "beta0"),
    ("hashnet", {"gamma": -0.1}, "gamma"),
    ("hashnet", {"power": float("nan")}, "power"),
    ("hashnet", {"step_size": 0}, "step_size"),
    ("dsh", {"margin": -1.0}, "margin"),
    ("dsh", {"alpha": -0.5}, "alpha"),
    ("dtsh", {"alpha": -1.0}, "alpha"),
    ("dtsh", {"quantization_weight": -1.0}, "quantization_weight"),
    ("dtsh", {"code_range": "pm2"}, "code_range"),
])
def test_bad_arguments_name_the_argument(key, args, name):
    with pytest.raises(ValueError, match=name):
        LOSSES.get(key)(num_classes=3, dim=4, **args)


def test_greedy_hash_refuses_out_of_range_labels():
    with pytest.raises(ValueError, match="labels"):
        GreedyHashLoss(3, 4)(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels"):  # no multi-hot: it has a classifier
        GreedyHashLoss(3, 4)(torch.randn(2, 4), torch.ones(2, 3, dtype=torch.long))


@pytest.mark.parametrize("loss, head", [
    ("greedy-hash", "greedy"), ("hashnet", "greedy"), ("dsh", "greedy"), ("dtsh", "hash"),
])
def test_trains_through_the_engine(tmp_path, loss, head):
    cfg = tiny_config(tmp_path, loss={"name": loss, "args": {}}, model={"head": head})
    history = Trainer(load_config(cfg), progress=False).fit()
    assert history[-1]["loss"] < history[0]["loss"]

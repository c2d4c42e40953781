"""Hash-centre / codeword losses: CSQ, OrthoHash and DPN against loop transcriptions of their
papers' formulas, CSQ's centres, input checks and a training smoke test through the engine."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hashlab.config import load_config
from hashlab.losses import LOSSES
from hashlab.losses.csq import CSQLoss, hash_centres, min_pairwise_hamming
from hashlab.losses.dpn import DPNLoss
from hashlab.losses.orthohash import OrthoHashLoss
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config

TOL = dict(rtol=1e-10, atol=1e-10)


def batch(n: int, bits: int, classes: int, seed: int, multi: bool = False):
    g = torch.Generator().manual_seed(seed)
    u = torch.tanh(1.5 * torch.randn(n, bits, generator=g, dtype=torch.float64))
    if multi:
        y = (torch.rand(n, classes, generator=g) < 0.35).long()
        y[0] = 0  # no label at all: every bit is a tie
        y[1, :2] = 1  # two labels (ties where their centres differ)
        return u, y
    return u, torch.randint(0, classes, (n,), generator=g)


def compare(loss: torch.nn.Module, oracle, u: torch.Tensor, labels: torch.Tensor) -> None:
    """Values and autograd gradients of the module and of the float64 loop transcription."""
    a, b = u.detach().clone().requires_grad_(True), u.detach().clone().requires_grad_(True)
    ours, expected = loss(a, labels), oracle(b)
    ours.backward()
    expected.backward()
    assert expected.item() > 0  # not vacuous
    torch.testing.assert_close(ours, expected, **TOL)
    torch.testing.assert_close(a.grad, b.grad, **TOL)


def quant_loop(u, lam):
    n, k = u.shape
    return lam * sum((abs(u[i, j]) - 1) ** 2 for i in range(n) for j in range(k)) / (n * k)


# --------------------------------------------------------------------------- CSQ


def csq_centre_loop(centres: np.ndarray, tie: np.ndarray, y) -> list[list[float]]:
    """The centre of an item: per bit, the sign of the mean of its labels' centres; tie → the
    random tie-breaking bit."""
    if np.ndim(y) == 0:
        return [float(b) for b in centres[int(y)]]
    labels = [c for c in range(len(y)) if y[c] != 0]
    out = []
    for j in range(centres.shape[1]):
        mean = sum(centres[c][j] for c in labels) / len(labels) if labels else 0.0
        out.append(1.0 if mean > 0 else -1.0 if mean < 0 else float(tie[j]))
    return out


def csq_oracle(loss: CSQLoss, labels: torch.Tensor, lam: float):
    centres, tie = loss.centres.numpy(), loss.tie_breaker.numpy()

    def oracle(u):
        n, k = u.shape
        total = 0.0
        for i in range(n):
            c = csq_centre_loop(centres, tie, labels[i].numpy())
            for j in range(k):
                h, t = (u[i, j] + 1) / 2, (c[j] + 1) / 2
                total = total - (t * torch.log(h) + (1 - t) * torch.log(1 - h))
        return total / (n * k) + quant_loop(u, lam)
    return oracle


@pytest.mark.parametrize("lam", [0.0, 1e-4, 0.5])
@pytest.mark.parametrize("centres,bits,classes", [("auto", 8, 5), ("random", 12, 7),
                                                  ("hadamard", 16, 30)])
def test_csq_matches_loop(lam, centres, bits, classes):
    u, y = batch(6, bits, classes, seed=bits)
    loss = CSQLoss(classes, bits, quantization_weight=lam, centres=centres, seed=3)
    compare(loss, csq_oracle(loss, y, lam), u, y)


@pytest.mark.parametrize("seed", [0, 1])
def test_csq_multi_label_matches_loop(seed):
    u, y = batch(7, 8, 6, seed=seed, multi=True)
    loss = CSQLoss(6, 8, quantization_weight=0.3, centres="random", seed=seed)
    compare(loss, csq_oracle(loss, y, 0.3), u, y)
    # the centre rule itself, and ties really occur (sample 0 has no label: all ties)
    got = loss.item_centres(y, torch.float64)
    for i in range(len(y)):
        expected = csq_centre_loop(loss.centres.numpy(), loss.tie_breaker.numpy(), y[i].numpy())
        assert got[i].tolist() == expected
    assert got[0].tolist() == loss.tie_breaker.tolist()
    # one-hot rows give the class's centre, and the same loss as class ids
    ids = torch.tensor([0, 3, 5, 1, 2, 4, 0])
    one_hot = torch.nn.functional.one_hot(ids, 6)
    assert loss(u, one_hot).item() == pytest.approx(loss(u, ids).item(), rel=1e-14)


@pytest.mark.parametrize("bits", [4, 8, 16, 32, 64])
def test_csq_hadamard_centres_are_half_the_code_apart(bits):
    c, reported = hash_centres(2 * bits, bits, "hadamard")
    assert c.shape == (2 * bits, bits) and set(np.unique(c)) == {-1, 1}
    for i, j in itertools.combinations(range(2 * bits), 2):
        d = int((c[i] != c[j]).sum())
        assert d == (bits if j == i + bits else bits // 2)
    assert reported == bits // 2
    loss = CSQLoss(bits + 3, bits)  # auto → Hadamard for C <= 2k, k a power of two
    assert loss.min_distance_ == bits // 2
    np.testing.assert_array_equal(loss.centres.numpy(), c[: bits + 3])


@pytest.mark.parametrize("classes,bits,seed", [(10, 12, 0), (40, 16, 1), (100, 32, 2),
                                               (3, 6, 3)])
def test_csq_random_centres_report_the_brute_force_minimum(classes, bits, seed):
    loss = CSQLoss(classes, bits, seed=seed)  # auto → random (k not 2^n, or C > 2k)
    c = loss.centres.numpy()
    assert set(np.unique(c)) == {-1.0, 1.0}
    brute = min(sum(int(a != b) for a, b in zip(c[i], c[j], strict=True))
                for i in range(classes) for j in range(i + 1, classes))
    assert loss.min_distance_ == brute == min_pairwise_hamming(c)
    again = CSQLoss(classes, bits, seed=seed)
    assert torch.equal(again.centres, loss.centres) and torch.equal(again.tie_breaker,
                                                                    loss.tie_breaker)
    assert not torch.equal(CSQLoss(classes, bits, seed=seed + 10).centres, loss.centres)
    # re-drawing reaches the k/4 target when it is easy
    if classes * 4 <= bits * 2:
        assert loss.min_distance_ >= bits / 4


def test_random_centre_redraws_keep_the_best_set():
    one, d1 = hash_centres(30, 16, "random", seed=0, max_draws=1)
    many, d_many = hash_centres(30, 16, "random", seed=0, min_distance=16, max_draws=50)
    assert d1 == min_pairwise_hamming(one) and d_many == min_pairwise_hamming(many)
    assert d_many >= d1


# --------------------------------------------------------------------------- OrthoHash


def cos_loop(u, b, i, c):
    k = u.shape[1]
    dot = sum(u[i, j] * b[c][j] for j in range(k))
    nu = torch.sqrt(sum(u[i, j] ** 2 for j in range(k)))
    nb = math.sqrt(sum(b[c][j] ** 2 for j in range(k)))
    return dot / (nu * nb)


def orthohash_oracle(loss: OrthoHashLoss, labels: torch.Tensor, lam: float):
    b, s, m = loss.centres.tolist(), loss.s, loss.m
    classes = len(b)

    def oracle(u):
        n = u.shape[0]
        total = 0.0
        for i in range(n):
            if labels.ndim == 1:
                y = int(labels[i])
                z = [s * (cos_loop(u, b, i, c) - (m if c == y else 0.0)) for c in range(classes)]
                total = total - (z[y] - torch.log(sum(torch.exp(zc) for zc in z)))
            else:
                y = [float(labels[i, c] != 0) for c in range(classes)]
                z = [s * (cos_loop(u, b, i, c) - m * y[c]) for c in range(classes)]
                if loss.multi_label_loss == "bce":
                    for c in range(classes):
                        p = 1 / (1 + torch.exp(-z[c]))
                        total = total - (y[c] * torch.log(p) + (1 - y[c]) * torch.log(1 - p))
                else:
                    norm = torch.log(sum(torch.exp(zc) for zc in z))
                    count = max(sum(y), 1.0)
                    for c in range(classes):
                        total = total - y[c] / count * (z[c] - norm)
        scale = n * classes if labels.ndim == 2 and loss.multi_label_loss == "bce" else n
        return total / scale + quant_loop(u, lam)
    return oracle


@pytest.mark.parametrize("s,m,lam", [(8.0, 0.2, 0.0), (4.0, 0.5, 0.3), (16.0, 0.0, 0.0)])
@pytest.mark.parametrize("codewords", ["random", "hadamard"])
def test_orthohash_matches_loop(s, m, lam, codewords):
    u, y = batch(6, 8, 5, seed=int(s))
    loss = OrthoHashLoss(5, 8, s=s, m=m, codewords=codewords, quantization_weight=lam)
    compare(loss, orthohash_oracle(loss, y, lam), u, y)


@pytest.mark.parametrize("form", ["bce", "label-smoothing"])
def test_orthohash_multi_label_matches_loop(form):
    u, y = batch(7, 8, 4, seed=5, multi=True)
    loss = OrthoHashLoss(4, 8, multi_label_loss=form, quantization_weight=0.1)
    compare(loss, orthohash_oracle(loss, y, 0.1), u, y)


def test_orthohash_codewords_and_logits():
    hada = OrthoHashLoss(8, 16, codewords="hadamard")
    gram = hada.centres @ hada.centres.T
    assert torch.equal(gram, 16 * torch.eye(8))  # orthogonal for C <= k
    u, _ = batch(5, 16, 8, seed=1)
    cos = hada.logits(u)
    torch.testing.assert_close(cos, (u @ hada.centres.double().T) / (u.norm(dim=1, keepdim=True)
                                                                     * 4), **TOL)
    # the code equal to a codeword is classified as its class
    assert hada.logits(hada.centres[[3, 5]]).argmax(1).tolist() == [3, 5]


# --------------------------------------------------------------------------- DPN


def dpn_oracle(loss: DPNLoss, labels: torch.Tensor, lam: float):
    t, m = loss.centres.tolist(), loss.margin

    def oracle(u):
        n, k = u.shape
        total = sum(torch.clamp(m - u[i, j] * t[int(labels[i])][j], min=0.0)
                    for i in range(n) for j in range(k))
        return total / (n * k) + quant_loop(u, lam)
    return oracle


@pytest.mark.parametrize("margin,lam", [(1.0, 0.0), (0.5, 0.2), (0.9, 0.0)])
@pytest.mark.parametrize("targets", ["random", "auto"])
def test_dpn_matches_loop(margin, lam, targets):
    u, y = batch(8, 16, 6, seed=int(10 * margin))
    loss = DPNLoss(6, 16, margin=margin, targets=targets, quantization_weight=lam)
    compare(loss, dpn_oracle(loss, y, lam), u, y)


def test_dpn_polarized_codes_and_hamming_logits():
    loss = DPNLoss(10, 32, margin=0.5)
    t = loss.centres
    assert loss(t[[2, 7]].double(), torch.tensor([2, 7])).item() == 0.0  # |v t| >= m everywhere
    logits = loss.logits(t.double())
    assert logits.argmax(1).tolist() == list(range(10))
    brute = [[-sum(int(a != b) for a, b in zip(t[i], t[c], strict=True)) for c in range(10)]
             for i in range(10)]
    assert logits.tolist() == brute


# --------------------------------------------------------------------------- shared behaviour


ALL = [("csq", CSQLoss), ("orthohash", OrthoHashLoss), ("dpn", DPNLoss)]


@pytest.mark.parametrize("name,cls", ALL)
def test_registry_gradcheck_code_range_and_buffers(name, cls):
    loss = LOSSES.build(name, num_classes=5, dim=8, quantization_weight=0.2)
    assert isinstance(loss, cls)
    u, y = batch(6, 8, 5, seed=2)
    x = u.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: loss(v, y), (x,))
    # sigmoid codes: code_range="01" is the ±1 loss on 2u − 1
    sig = LOSSES.build(name, num_classes=5, dim=8, quantization_weight=0.2, code_range="01")
    assert sig((u + 1) / 2, y).item() == pytest.approx(loss(u, y).item(), rel=1e-12)
    # centres are buffers (saved in checkpoints), not parameters
    assert "centres" in loss.state_dict() and not list(loss.parameters())
    other = LOSSES.build(name, num_classes=5, dim=8, seed=7, **{
        {"csq": "centres", "orthohash": "codewords", "dpn": "targets"}[name]: "random"})
    assert not torch.equal(other.centres, loss.centres)
    other.load_state_dict(loss.state_dict())  # a checkpoint restores the centres
    assert torch.equal(other.centres, loss.centres)
    # float32 codes work with the float32 buffers, and give class logits
    assert torch.isfinite(loss(u.float(), y)) and loss.logits(u.float()).shape == (6, 5)


@pytest.mark.parametrize("name,cls", ALL)
def test_input_validation(name, cls):
    loss = LOSSES.build(name, num_classes=5, dim=8)
    u, y = batch(6, 8, 5, seed=0)
    with pytest.raises(ValueError, match=r"codes must have shape \[batch, 8\]"):
        loss(u[:, :7], y)
    with pytest.raises(ValueError, match="labels must lie in"):
        loss(u, torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="labels must lie in"):
        loss(u, torch.tensor([0, 1, 2, 3, 4, -1]))
    with pytest.raises(ValueError, match="labels must have 6 rows"):
        loss(u, y[:5])
    with pytest.raises(ValueError, match="labels must be integer"):
        loss(u, y.double())
    with pytest.raises(ValueError, match="unknown code_range"):
        LOSSES.build(name, num_classes=5, dim=8, code_range="sigmoid")
    with pytest.raises(ValueError, match="quantization_weight"):
        LOSSES.build(name, num_classes=5, dim=8, quantization_weight=-1.0)
    kind = {"csq": "centres", "orthohash": "codewords", "dpn": "targets"}[name]
    with pytest.raises(ValueError, match="num_classes"):
        LOSSES.build(name, num_classes=17, dim=8, **{kind: "hadamard"})
    with pytest.raises(ValueError, match="dim"):
        LOSSES.build(name, num_classes=4, dim=12, **{kind: "hadamard"})
    with pytest.raises(ValueError, match="centres"):
        LOSSES.build(name, num_classes=4, dim=8, **{kind: "bernoulli"})
    multi = torch.zeros(6, 5, dtype=torch.long)
    if cls.multi_label:
        with pytest.raises(ValueError, match="labels: multi-hot labels must have 5 columns"):
            loss(u, multi[:, :4])
    else:
        with pytest.raises(ValueError, match=r"labels must have shape \[batch\]"):
            loss(u, multi)


def test_method_specific_argument_checks():
    with pytest.raises(ValueError, match="^s: "):
        OrthoHashLoss(4, 8, s=0.0)
    with pytest.raises(ValueError, match="^m must be >= 0"):
        OrthoHashLoss(4, 8, m=-0.1)
    with pytest.raises(ValueError, match="multi_label_loss"):
        OrthoHashLoss(4, 8, multi_label_loss="softmax")
    with pytest.raises(ValueError, match="^margin must be >= 0"):
        DPNLoss(4, 8, margin=-1.0)
    with pytest.raises(ValueError, match="min_distance"):
        CSQLoss(4, 8, centres="random", min_distance=-1)
    with pytest.raises(ValueError, match="max_draws"):
        CSQLoss(4, 8, max_draws=0)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["csq", "orthohash", "dpn"])
def test_trains_through_the_engine(tmp_path, name):
    cfg = load_config(tiny_config(tmp_path, loss={"name": name, "args": {}}))
    history = Trainer(cfg, progress=False).fit()
    losses = [h["loss"] for h in history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert history[-1]["accuracy"] is not None and history[-1]["accuracy"] > 0.3

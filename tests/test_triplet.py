"""Triplet losses, the selectively contrastive loss, center loss and the triplet diagram."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hashlab.diagnostics.triplet_diagram import TripletDiagram
from hashlab.errors import ConfigError
from hashlab.losses.center import CenterLoss, SoftmaxCenterLoss
from hashlab.losses.distances import pairwise_distance
from hashlab.losses.miners import all_triplets
from hashlab.losses.registry import LOSSES, MINERS
from hashlab.losses.softmax import SoftmaxLoss
from hashlab.losses.triplet import (
    SelectivelyContrastiveLoss,
    TripletLoss,
    TripletRegularizedLoss,
)
from hashlab.registry import check_kwargs

MININGS = ["batch_all", "batch_hard", "semi_hard"]


def pk_batch(p: int, k: int, dim: int, seed: int, dtype=torch.float64, separation: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)
    # a little class structure, so that all kinds of triplets (easy, semi-hard, hard) occur
    centers = torch.randn(p, dim, generator=g, dtype=dtype)
    x = separation * centers[labels] + torch.randn(p * k, dim, generator=g, dtype=dtype)
    perm = torch.randperm(p * k, generator=g)
    return x[perm].clone(), labels[perm].clone()


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# --------------------------------------------------------------------------- oracle


def pml_loss(mining: str, margin: float, distance: str, normalize: bool = True):
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses, miners

    del pml
    dist = (distances.LpDistance(normalize_embeddings=normalize) if distance == "euclidean"
            else distances.CosineSimilarity())
    if mining == "batch_all":
        miner = miners.TripletMarginMiner(margin, type_of_triplets="all", distance=dist)
    elif mining == "batch_hard":
        miner = miners.BatchHardMiner(distance=dist)
    else:
        miner = miners.TripletMarginMiner(margin, type_of_triplets="semihard", distance=dist)
    loss = losses.TripletMarginLoss(margin=margin, distance=dist)
    return lambda emb, labels: loss(emb, labels, miner(emb, labels))


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_matches_pytorch_metric_learning(mining, distance, seed):
    p, k, dim = [(4, 4, 8), (6, 3, 16), (3, 5, 5)][seed]
    margin = [0.2, 0.5, 0.1][seed]
    x, labels = pk_batch(p, k, dim, seed)
    ours_in, theirs_in = leaf(x), leaf(x)
    ours = TripletLoss(margin=margin, mining=mining, distance=distance)(ours_in, labels)
    theirs = pml_loss(mining, margin, distance)(theirs_in, labels)
    assert theirs.item() > 0  # the comparison must not be vacuous
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, atol=1e-10, rtol=1e-8)
    # and the mined triplets are the same set
    if mining != "batch_hard":
        from pytorch_metric_learning import miners

        kind = "all" if mining == "batch_all" else "semihard"
        if distance == "euclidean":
            theirs_t = miners.TripletMarginMiner(margin, type_of_triplets=kind)(x, labels)
            ours_t = TripletLoss(margin, mining).mine(x, labels)
            if mining == "batch_all":  # PML's "all" keeps only margin violators
                d = pairwise_distance(x)
                keep = d[ours_t[0], ours_t[1]] - d[ours_t[0], ours_t[2]] + margin >= 0
                ours_t = tuple(t[keep] for t in ours_t)
            ours_set = set(zip(*[t.tolist() for t in ours_t], strict=True))
            assert ours_set == set(zip(*[t.tolist() for t in theirs_t], strict=True))


@pytest.mark.parametrize("mining", MININGS)
def test_triplet_matches_pml_unnormalised_float32(mining):
    x, labels = pk_batch(5, 4, 12, seed=7, dtype=torch.float32)
    ours_in, theirs_in = leaf(x), leaf(x)
    ours = TripletLoss(0.3, mining, normalize=False)(ours_in, labels)
    theirs = pml_loss(mining, 0.3, "euclidean", normalize=False)(theirs_in, labels)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- brute force


def brute_triplet(x, labels, margin, mining, reduction="avg_nonzero", distance="euclidean"):
    n = len(labels)
    xn = [np.asarray(v) / np.linalg.norm(v) for v in x.tolist()]

    def d(i, j):
        if distance == "cosine":
            return 1 - float(xn[i] @ xn[j])
        return float(np.linalg.norm(xn[i] - xn[j]))

    trip = []
    for a in range(n):
        pos = [q for q in range(n) if q != a and labels[q] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            trip.append((a, max(pos, key=lambda q: d(a, q)), min(neg, key=lambda q: d(a, q))))
            continue
        for q in pos:
            for m in neg:
                if mining == "semi_hard" and not d(a, q) < d(a, m) <= d(a, q) + margin:
                    continue
                trip.append((a, q, m))
    losses = [max(d(a, q) - d(a, m) + margin, 0.0) for a, q, m in trip]
    if reduction == "avg_nonzero":
        losses = [v for v in losses if v > 0]
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("reduction", ["avg_nonzero", "mean"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_matches_brute_force(mining, reduction, distance):
    x, labels = pk_batch(4, 3, 6, seed=11)
    labels[0] = 9  # an anchor with no positive (it is still a negative for the others)
    loss = TripletLoss(0.4, mining, distance=distance, reduction=reduction)(x, labels)
    expected = brute_triplet(x, labels.tolist(), 0.4, mining, reduction, distance)
    assert expected > 0
    assert loss.item() == pytest.approx(expected, abs=1e-10)


def test_reductions_differ_when_some_triplets_are_easy():
    x, labels = pk_batch(4, 4, 8, seed=3)
    x = x + 3 * F.one_hot(labels, 8).double()  # well separated classes: many easy triplets
    nz = TripletLoss(0.2, "batch_all")(x, labels)
    mean = TripletLoss(0.2, "batch_all", reduction="mean")(x, labels)
    assert 0 < mean.item() < nz.item()


def test_all_triplets_counts():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    a, p, n = all_triplets(labels)
    # class 0: 2 anchors × 1 pos × 4 neg; class 1: 3 × 2 × 3; class 2: none
    assert len(a) == 2 * 1 * 4 + 3 * 2 * 3
    assert bool((labels[a] == labels[p]).all() and (labels[a] != labels[n]).all())
    assert bool((a != p).all())


def test_pairwise_distance_matches_cdist():
    x, _ = pk_batch(3, 3, 7, seed=5)
    torch.testing.assert_close(pairwise_distance(x), torch.cdist(F.normalize(x), F.normalize(x)))
    torch.testing.assert_close(pairwise_distance(x, normalize=False), torch.cdist(x, x))
    cos = F.cosine_similarity(x[:, None], x[None], dim=-1)
    torch.testing.assert_close(pairwise_distance(x, "cosine"), 1 - cos)
    assert torch.all(pairwise_distance(x).diagonal() == 0)


def brute_sct(x, labels, tau, lam):
    n = len(labels)
    xn = [np.asarray(v) / np.linalg.norm(v) for v in x.tolist()]
    total, count = 0.0, 0
    for a in range(n):
        pos = [xn[a] @ xn[q] for q in range(n) if q != a and labels[q] == labels[a]]
        neg = [xn[a] @ xn[q] for q in range(n) if labels[q] != labels[a]]
        if not pos or not neg:
            continue
        s_ap, s_an = min(pos), max(neg)
        if s_an > s_ap:
            total += lam * s_an
        else:
            total += -math.log(math.exp(s_ap / tau) / (math.exp(s_ap / tau) + math.exp(s_an / tau)))
        count += 1
    return total / count


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_selectively_contrastive_matches_brute_force(seed):
    x, labels = pk_batch(4, 3, 5, seed=seed, separation=2.0)
    tau, lam = [0.1, 0.5, 0.2, 1.0][seed], [1.0, 0.5, 2.0, 1.0][seed]
    got = SelectivelyContrastiveLoss(tau=tau, lam=lam)(x, labels)
    assert got.item() == pytest.approx(brute_sct(x, labels.tolist(), tau, lam), rel=1e-10)
    # both branches occur in the batch (so the test checks each of them)
    sim = F.normalize(x) @ F.normalize(x).T
    same = labels[:, None] == labels[None]
    s_ap = torch.where(same & ~torch.eye(len(x), dtype=torch.bool), sim, 2.0).min(1).values
    s_an = torch.where(~same, sim, -2.0).max(1).values
    assert 0 < int((s_an > s_ap).sum()) < len(x)


def test_selectively_contrastive_uses_both_branches():
    # anchor 0: positive 1 is far, negative 2 is closer → hard (λ·S_an);
    # anchor 1: the same pair seen from the other side; anchor 2/3 easy
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.2]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    lam, tau = 3.0, 0.1
    loss = SelectivelyContrastiveLoss(tau, lam)(x, labels)
    assert loss.item() == pytest.approx(brute_sct(x, labels.tolist(), tau, lam), rel=1e-12)
    xn = F.normalize(x)
    s_an0 = float(xn[0] @ xn[2])
    assert s_an0 > float(xn[0] @ xn[1])  # the hard branch is really taken for anchor 0


def brute_center(x, labels, centers):
    return sum(0.5 * float(((x[i] - centers[c]) ** 2).sum())
               for i, c in enumerate(labels.tolist())) / len(labels)


def test_center_loss_matches_brute_force():
    torch.manual_seed(0)
    loss = CenterLoss(5, 4).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 4, 4, 4, 2, 0, 3])
    assert loss(x, labels).item() == pytest.approx(
        brute_center(x, labels, loss.centers.detach()), rel=1e-12)
    # zero exactly at the centres
    assert loss(loss.centers.detach()[labels], labels).item() == 0.0


def test_softmax_center_is_ce_plus_weighted_center():
    torch.manual_seed(1)
    loss = SoftmaxCenterLoss(4, 6, weight=0.3).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    ce = F.cross_entropy(loss.logits(x), labels)
    expected = ce.item() + 0.3 * brute_center(x, labels, loss.center.centers.detach())
    assert loss(x, labels).item() == pytest.approx(expected, rel=1e-12)
    assert loss.logits(x).shape == (8, 4)
    with pytest.raises(ValueError):
        loss(x, torch.tensor([0, 1, 2, 3, 4, 2, 1, 0]))  # label out of range


def test_center_gradient_pulls_centres_towards_features():
    loss = CenterLoss(2, 3)
    x = torch.randn(6, 3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    opt = torch.optim.SGD(loss.parameters(), lr=1.0)
    before = loss(x, labels).item()
    for _ in range(40):
        opt.zero_grad()
        loss(x, labels).backward()
        opt.step()
    assert loss(x, labels).item() < 0.5 * before
    torch.testing.assert_close(loss.centers.detach()[0], x[:3].mean(0), atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_gradcheck(mining, distance):
    x, labels = pk_batch(3, 3, 4, seed=21)
    loss = TripletLoss(0.3, mining, distance=distance)
    assert loss(x, labels).item() > 0
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (leaf(x),))


def test_sct_and_center_gradcheck():
    x, labels = pk_batch(3, 3, 4, seed=22)
    sct = SelectivelyContrastiveLoss(0.2, 2.0)
    assert torch.autograd.gradcheck(lambda e: sct(e, labels), (leaf(x),))
    x2 = leaf(x * 0.2)  # includes hard triplets
    assert torch.autograd.gradcheck(lambda e: sct(e, labels), (x2,))
    center = CenterLoss(3, 4).double()

    def center_fn(e, c):  # the centres as a gradcheck input too
        return torch.func.functional_call(center, {"centers": c}, (e, labels))

    assert torch.autograd.gradcheck(center_fn, (leaf(x), leaf(center.centers)))
    sc = SoftmaxCenterLoss(3, 4, weight=0.5).double()
    assert torch.autograd.gradcheck(lambda e: sc(e, labels), (leaf(x),))


def test_softmax_triplet_gradcheck_and_sum():
    torch.manual_seed(3)
    x, labels = pk_batch(3, 3, 4, seed=23)
    loss = LOSSES.build("softmax_triplet", num_classes=3, dim=4, weight=0.7,
                        mining="batch_all").double()
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (leaf(x),))
    expected = loss.classifier(x, labels) + 0.7 * TripletLoss(0.2, "batch_all")(x, labels)
    assert loss(x, labels).item() == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(loss.logits(x), loss.classifier.classifier(x))


# --------------------------------------------------------------------------- degenerate batches


def degenerate_batches():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    yield "identical", torch.ones(6, 4, dtype=torch.float64), labels, True
    yield "zeros", torch.zeros(6, 4, dtype=torch.float64), labels, True
    yield "single_class", torch.randn(6, 4, dtype=torch.float64), torch.zeros(6, dtype=int), False
    yield "singletons", torch.randn(4, 4, dtype=torch.float64), torch.arange(4), False
    yield "empty", torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=int), False
    yield "one", torch.randn(1, 4, dtype=torch.float64), torch.zeros(1, dtype=int), False


@pytest.mark.parametrize("case", list(degenerate_batches()), ids=lambda c: c[0])
@pytest.mark.parametrize("make", [
    *[lambda m=m, d=d: TripletLoss(0.2, m, distance=d) for m in MININGS
      for d in ["euclidean", "cosine"]],
    lambda: TripletLoss(0.2, "batch_hard", normalize=False),
    lambda: SelectivelyContrastiveLoss(),
    lambda: SelectivelyContrastiveLoss(mining="batch_all"),
])
def test_degenerate_batches_give_finite_loss_and_gradient(case, make):
    _, x, labels, has_triplets = case
    x = leaf(x)
    loss = make()(x, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    if not has_triplets:
        assert loss.item() == 0.0
        assert torch.all(x.grad == 0)


def test_identical_embeddings_give_margin():
    x = leaf(torch.ones(6, 4, dtype=torch.float64))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = TripletLoss(0.3, "batch_all")(x, labels)
    assert loss.item() == pytest.approx(0.3)  # every triplet sits at d_ap = d_an = 0
    assert TripletLoss(0.3, "semi_hard")(x, labels).item() == 0.0  # none is semi-hard
    assert SelectivelyContrastiveLoss()(x, labels).item() == pytest.approx(math.log(2))


def test_center_loss_degenerate():
    loss = CenterLoss(3, 4)
    x = leaf(torch.zeros(0, 4))
    out = loss(x, torch.zeros(0, dtype=torch.long))
    out.backward()
    assert out.item() == 0.0


# --------------------------------------------------------------------------- registry


def test_registry_names_signatures_and_logits():
    import hashlab.losses.center  # noqa: F401  (registration)
    import hashlab.losses.triplet  # noqa: F401

    for name in ["triplet", "softmax_triplet", "selective_contrastive", "center"]:
        factory = LOSSES.get(name)
        params = inspect.signature(factory).parameters
        assert list(params)[:2] == ["num_classes", "dim"]
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        with pytest.raises(ConfigError, match="bogus"):
            check_kwargs(factory, {"bogus": 1}, "loss.args")
    t = LOSSES.build("triplet", num_classes=10, dim=8, margin=0.3, mining="batch_hard",
                     distance="cosine", normalize=True)
    assert isinstance(t, TripletLoss) and (t.margin, t.mining, t.distance) == (0.3, "batch-hard",
                                                                                "cosine")
    assert not hasattr(t, "logits")
    s = LOSSES.build("selective_contrastive", num_classes=10, dim=8, tau=0.2, lam=0.5)
    assert isinstance(s, SelectivelyContrastiveLoss) and (s.tau, s.lam) == (0.2, 0.5)
    assert not hasattr(s, "logits")
    st = LOSSES.build("softmax_triplet", num_classes=10, dim=8)
    assert isinstance(st, TripletRegularizedLoss) and isinstance(st.classifier, SoftmaxLoss)
    assert (st.weight, st.triplet.margin, st.triplet.mining) == (1.0, 0.2, "semi-hard")
    assert st.logits(torch.randn(3, 8)).shape == (3, 10)
    c = LOSSES.build("center", num_classes=10, dim=8)
    assert isinstance(c, SoftmaxCenterLoss) and c.weight == 0.01
    assert c.logits(torch.randn(3, 8)).shape == (3, 10)
    assert set(MINERS) == {m.replace("_", "-") for m in MININGS}


@pytest.mark.parametrize("kwargs", [
    {"mining": "hardest"}, {"distance": "manhattan"}, {"margin": -0.1}, {"reduction": "sum"}])
def test_triplet_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TripletLoss(**kwargs)


def test_other_bad_arguments():
    with pytest.raises(ValueError):
        SelectivelyContrastiveLoss(tau=0)
    with pytest.raises(ValueError):
        SelectivelyContrastiveLoss(mining="semi_hard")
    with pytest.raises(TypeError):
        TripletRegularizedLoss(TripletLoss(), TripletLoss(), 1.0)  # no logits
    with pytest.raises(ValueError):
        TripletLoss()(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError):
        TripletDiagram(mode="all")


# --------------------------------------------------------------------------- triplet diagram


def brute_diagram(x, labels):
    n = len(labels)
    xn = [np.asarray(v) / np.linalg.norm(v) for v in x.tolist()]
    out = []
    for a in range(n):
        pos = [float(xn[a] @ xn[q]) for q in range(n) if q != a and labels[q] == labels[a]]
        neg = [float(xn[a] @ xn[q]) for q in range(n) if labels[q] != labels[a]]
        if pos and neg:
            out.append((min(pos), max(neg)))
    return out


def test_triplet_diagram_records_hardest_pairs(tmp_path):
    diagram = TripletDiagram()
    expected = []
    for seed in range(3):
        x, labels = pk_batch(4, 3, 5, seed=seed, dtype=torch.float32)
        labels[0] = 7  # anchor without positive: skipped
        diagram.record(x, labels)
        expected += brute_diagram(x.double(), labels.tolist())
    np.testing.assert_allclose(diagram.s_ap, [e[0] for e in expected], atol=1e-6)
    np.testing.assert_allclose(diagram.s_an, [e[1] for e in expected], atol=1e-6)
    summary = diagram.to_dict()
    assert summary["num_batches"] == 3 and summary["num_triplets"] == len(expected) == 33
    hard = np.mean([s_an > s_ap for s_ap, s_an in expected])
    assert summary["fraction_hard"] == pytest.approx(hard)
    assert 0 < hard < 1
    assert summary["mean_gap"] == pytest.approx(np.mean([a - b for a, b in expected]), abs=1e-6)
    path = diagram.plot(tmp_path / "sub" / "diagram.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name != "diagram.png"]  # no temp left


def test_triplet_diagram_random_mode_hexbin_and_empty(tmp_path):
    diagram = TripletDiagram(mode="random", seed=0)
    x, labels = pk_batch(8, 4, 6, seed=4)
    s_ap, s_an = diagram.record(x, labels)
    sim = F.normalize(x) @ F.normalize(x).T
    same = labels[:, None] == labels[None]
    for a in range(len(labels)):
        pos = sim[a][same[a] & (torch.arange(len(labels)) != a)]
        neg = sim[a][~same[a]]
        assert torch.isclose(pos, torch.tensor(s_ap[a], dtype=pos.dtype)).any()
        assert torch.isclose(neg, torch.tensor(s_an[a], dtype=neg.dtype)).any()
    again = TripletDiagram(mode="random", seed=0)
    np.testing.assert_array_equal(again.record(x, labels)[0], s_ap)
    hardest_ap, hardest_an = TripletDiagram().record(x, labels)
    assert np.all(s_ap >= hardest_ap - 1e-12) and np.all(s_an <= hardest_an + 1e-12)
    assert np.any(s_ap > hardest_ap + 1e-6) and np.any(s_an < hardest_an - 1e-6)
    diagram.plot(tmp_path / "hex.png", hexbin_above=10)
    assert (tmp_path / "hex.png").read_bytes()[:4] == b"\x89PNG"
    empty = TripletDiagram()
    assert empty.to_dict()["num_triplets"] == 0 and empty.to_dict()["fraction_hard"] is None
    empty.plot(tmp_path / "empty.png")
    assert (tmp_path / "empty.png").exists()
    diagram.reset()
    assert diagram.to_dict()["num_triplets"] == 0


def test_miners_distances_and_reductions_are_registered_and_share_one_hinge():
    from hashlab.losses.hashing import EuclideanTripletLoss, HammingTripletLoss
    from hashlab.losses.registry import DISTANCES, REDUCTIONS
    from hashlab.losses.triplet import MinedTripletLoss

    assert {"euclidean", "cosine", "hamming"} <= set(DISTANCES)
    assert set(REDUCTIONS) == {"avg-nonzero", "mean"}
    loss = TripletLoss(mining="Batch_Hard", reduction="avg_nonzero")  # old spellings
    assert (loss.mining, loss.reduction) == ("batch-hard", "avg-nonzero")
    with pytest.raises(ValueError, match="mining: unknown miner 'hardest'"):
        TripletLoss(mining="hardest")
    for cls in (TripletLoss, HammingTripletLoss, EuclideanTripletLoss):
        assert issubclass(cls, MinedTripletLoss)
        assert cls.triplet_loss is MinedTripletLoss.triplet_loss
    x, labels = pk_batch(4, 3, 6, seed=2)
    loss = TripletLoss(0.5, "batch_all")
    value = loss(x, labels)
    assert loss.last_num_triplets == 4 * 3 * 2 * 9 and 0 < loss.last_num_active
    torch.testing.assert_close(pairwise_distance(x, "hamming"), 0.5 * (6 - x @ x.T))
    assert value.item() > 0

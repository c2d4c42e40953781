"""Deep hashing losses (DPSH, DPH's Hamming / Euclidean triplets) and hash-head activations."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from hashlab.config import ModelConfig
from hashlab.errors import ConfigError
from hashlab.eval.metrics import retrieval_metrics
from hashlab.index.codes import hamming_distances, pack_bits
from hashlab.losses import LOSSES, quantization_penalty
from hashlab.losses.hashing import (
    DPSHLoss,
    EuclideanTripletLoss,
    HammingTripletLoss,
    QuantizationLoss,
    hamming_distance_matrix,
    pairwise_similarity,
)
from hashlab.models import HEADS, CodeModel, HashHead, build_model
from hashlab.models.heads import sign_ste
from hashlab.registry import check_kwargs


def relaxed_codes(p: int, k: int, bits: int, seed: int, separation: float = 0.8,
                  dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """tanh codes of a (P×K) batch with some class structure (easy, semi-hard and hard
    triplets all occur), shuffled."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)
    centers = torch.randn(p, bits, generator=g, dtype=dtype)
    z = separation * centers[labels] + torch.randn(p * k, bits, generator=g, dtype=dtype)
    perm = torch.randperm(p * k, generator=g)
    return torch.tanh(z[perm]), labels[perm].clone()


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def random_signs(n: int, bits: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, bits), generator=g).to(dtype) * 2 - 1


# --------------------------------------------------------------------------- DPSH


def dpsh_oracle(u: np.ndarray, sim: np.ndarray, eta: float) -> float:
    """The DPSH objective transcribed pair by pair in float64, in its closed form
    −(s θ − log(1 + e^θ)), averaged over ordered pairs i ≠ j, plus η mean (b − u)²."""
    n, k = u.shape
    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            theta = 0.5 * sum(float(u[i, m]) * float(u[j, m]) for m in range(k))
            total += -(float(sim[i, j]) * theta - math.log(1.0 + math.exp(theta)))
            pairs += 1
    quant = sum((math.copysign(1.0, float(u[i, m])) - float(u[i, m])) ** 2
                for i in range(n) for m in range(k)) / (n * k)
    return total / pairs + eta * quant


def similarity_oracle(labels: np.ndarray) -> np.ndarray:
    n = len(labels)
    if labels.ndim == 1:
        return np.array([[float(labels[i] == labels[j]) for j in range(n)] for i in range(n)])
    return np.array([[float(any(labels[i] * labels[j])) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eta", [0.0, 0.1, 2.0])
def test_dpsh_matches_pairwise_loop(seed, eta):
    p, k, bits = [(3, 4, 8), (4, 3, 13), (2, 5, 32)][seed]
    u, labels = relaxed_codes(p, k, bits, seed, separation=2.0)
    ours = DPSHLoss(quantization_weight=eta)(u, labels).item()
    expected = dpsh_oracle(u.numpy(), similarity_oracle(labels.numpy()), eta)
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_dpsh_multi_hot_similarity_and_value():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(9, 5, generator=g) < 0.3).long()
    y[0] = 0  # a sample without any label is similar to nothing, not even itself
    y[1] = torch.tensor([1, 1, 0, 0, 0])
    y[2] = torch.tensor([0, 1, 0, 0, 1])  # shares label 1 with sample 1
    sim = similarity_oracle(y.numpy())
    assert sim[1, 2] == 1 and sim[0].sum() == 0
    np.testing.assert_array_equal(pairwise_similarity(y).numpy(), sim.astype(bool))
    u = torch.tanh(2 * torch.randn(9, 12, generator=g, dtype=torch.float64))
    ours = DPSHLoss(quantization_weight=0.3)(u, y).item()
    assert ours == pytest.approx(dpsh_oracle(u.numpy(), sim, 0.3), rel=1e-12)
    # one-hot multi-hot labels give the same loss as the class ids
    ids = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0])
    one_hot = torch.nn.functional.one_hot(ids, 3).float()
    assert DPSHLoss()(u, one_hot).item() == pytest.approx(DPSHLoss()(u, ids).item(), rel=1e-14)


def test_dpsh_gradcheck():
    u, labels = relaxed_codes(3, 3, 6, seed=4)
    loss = DPSHLoss(quantization_weight=0.5)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (leaf(u),))
    y = (torch.rand(9, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (leaf(u),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpsh_stable_for_large_theta(dtype):
    bits = 256
    code = random_signs(1, bits, seed=0, dtype=dtype)
    u = leaf(code.repeat(4, 1))  # identical ±1 codes: θ_ij = k/2 = 128
    theta = torch.tensor(bits / 2, dtype=dtype)
    if dtype == torch.float32:  # the naive log(1 + e^θ) overflows here
        assert torch.isinf(torch.log(1 + torch.exp(theta)))
    # all pairs dissimilar: −log(1 − σ(θ)) = softplus(θ) ≈ θ = 128
    loss = DPSHLoss()(u, torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(128.0, rel=1e-6)
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    # opposite codes (θ = −128) and similar pairs: −log σ(−128) = 128
    v = leaf(torch.cat([code, -code]))
    loss = DPSHLoss()(v, torch.tensor([0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(128.0, rel=1e-6)
    assert torch.isfinite(v.grad).all()
    # and the right answer costs nothing
    assert DPSHLoss()(u.detach(), torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        0.0, abs=1e-30)


def test_dpsh_small_batches_and_code_range():
    u = leaf(torch.tanh(torch.randn(1, 8, dtype=torch.float64)))
    loss = DPSHLoss(quantization_weight=0.0)(u, torch.tensor([3]))
    loss.backward()
    assert loss.item() == 0.0 and u.grad is not None
    # sigmoid codes with code_range="01" are the ±1 loss on 2u − 1
    s, labels = relaxed_codes(3, 3, 10, seed=5)
    sig = (s + 1) / 2
    for qw in (0.0, 0.4):
        assert DPSHLoss(qw, code_range="01")(sig, labels).item() == pytest.approx(
            DPSHLoss(qw)(s, labels).item(), rel=1e-12)


# --------------------------------------------------------------------------- quantization


def test_quantization_penalty_is_dpsh_regulariser():
    u = torch.tanh(torch.randn(5, 7, dtype=torch.float64))
    b = torch.sign(u)
    expected = ((b - u) ** 2).sum(1).mean() / 7
    assert quantization_penalty(u).item() == pytest.approx(expected.item(), rel=1e-14)
    assert QuantizationLoss(weight=3.0)(u, None).item() == pytest.approx(
        3 * expected.item(), rel=1e-14)
    assert QuantizationLoss(code_range="01")((u + 1) / 2).item() == pytest.approx(
        expected.item(), rel=1e-12)
    assert QuantizationLoss()(torch.tensor([[1.0, -1.0]])).item() == 0.0


# --------------------------------------------------------------------------- Hamming triplet


@pytest.mark.parametrize("bits", [8, 13, 64])
def test_relaxed_hamming_is_hamming_on_signs(bits):
    codes = random_signs(11, bits, seed=bits)
    packed = pack_bits(codes > 0)
    expected = hamming_distances(packed, packed)
    ours = hamming_distance_matrix(codes)
    np.testing.assert_array_equal(ours.numpy(), expected.astype(np.float64))
    assert (expected > 0).sum() > 0  # not vacuous
    # DPH's Hamming distance on {0, 1} codes via code_range="01"
    loss = HammingTripletLoss(code_range="01")
    assert torch.equal(loss.distance_matrix(2 * ((codes + 1) / 2) - 1), ours)


def brute_triplets(u: np.ndarray, labels: np.ndarray, dist, margin: float, mining: str):
    n = len(labels)
    d = [[dist(u[i], u[j]) for j in range(n)] for i in range(n)]
    out = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if mining == "batch_hard":
            if pos and neg:
                p = max(pos, key=lambda j: d[a][j])
                q = min(neg, key=lambda j: d[a][j])
                out.append(d[a][p] + margin - d[a][q])
            continue
        for p, q in itertools.product(pos, neg):
            gap = d[a][q] - d[a][p]
            if mining == "semi_hard" and not 0 < gap <= margin:
                continue
            out.append(d[a][p] + margin - d[a][q])
    return [max(v, 0.0) for v in out]


def reduce(losses: list[float], reduction: str) -> float:
    if reduction == "avg_nonzero":
        losses = [v for v in losses if v > 0]
    return sum(losses) / len(losses) if losses else 0.0


def hamming(x: np.ndarray, y: np.ndarray) -> float:
    return 0.5 * (len(x) - sum(float(a) * float(b) for a, b in zip(x, y, strict=True)))


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("reduction", ["avg_nonzero", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_hamming_triplet_matches_brute_force(mining, reduction, seed):
    p, k, bits = [(3, 3, 12), (4, 3, 16)][seed]
    u, labels = relaxed_codes(p, k, bits, seed)
    margin = bits / 4
    loss = HammingTripletLoss(margin=margin, mining=mining, reduction=reduction)
    ours = loss(u, labels).item()
    raw = brute_triplets(u.numpy(), labels.numpy(), hamming, margin, mining)
    assert sum(v > 0 for v in raw) > 0  # not vacuous
    assert ours == pytest.approx(reduce(raw, reduction), rel=1e-12, abs=1e-12)
    assert loss.last_num_triplets == len(raw)
    assert loss.last_num_active == sum(v > 0 for v in raw)


def test_hamming_triplet_default_margin_and_exact_codes():
    codes = random_signs(12, 16, seed=3)
    labels = torch.arange(4).repeat_interleave(3)
    loss = HammingTripletLoss(reduction="mean")
    assert loss.effective_margin(16) == 4.0
    raw = brute_triplets(codes.numpy(), labels.numpy(), hamming, 4.0, "batch_all")
    assert loss(codes, labels).item() == pytest.approx(reduce(raw, "mean"), rel=1e-12)
    # gradient of each active hinge: ∂/∂u_a = ½ (u_n − u_p), ∂/∂u_p = −½ u_a, ∂/∂u_n = ½ u_a
    u = leaf(codes)
    HammingTripletLoss(margin=4.0, reduction="mean")(u, labels).backward()
    expected = torch.zeros_like(codes)
    a, p, n = loss.mine(codes, labels)
    d = hamming_distance_matrix(codes)
    active = (d[a, p] - d[a, n] + 4.0) > 0
    for i, j, q in zip(a[active].tolist(), p[active].tolist(), n[active].tolist(), strict=True):
        expected[i] += 0.5 * (codes[q] - codes[j])
        expected[j] -= 0.5 * codes[i]
        expected[q] += 0.5 * codes[i]
    torch.testing.assert_close(u.grad, expected / len(a), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- Euclidean triplet


def pml_triplet(margin: float, mining: str):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses, miners

    dist = distances.LpDistance(normalize_embeddings=False, p=2)
    loss = losses.TripletMarginLoss(margin=margin, distance=dist)
    if mining == "none":  # PML's loss alone uses every triplet of the batch
        return lambda emb, labels: loss(emb, labels)
    if mining == "batch_all":
        miner = miners.TripletMarginMiner(margin, type_of_triplets="all", distance=dist)
    elif mining == "batch_hard":
        miner = miners.BatchHardMiner(distance=dist)
    else:
        miner = miners.TripletMarginMiner(margin, type_of_triplets="semihard", distance=dist)
    return lambda emb, labels: loss(emb, labels, miner(emb, labels))


@pytest.mark.parametrize("mining", ["none", "batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_euclidean_triplet_matches_pytorch_metric_learning(mining, seed):
    p, k, bits = [(4, 4, 8), (3, 5, 16), (5, 3, 12)][seed]
    margin = [1.0, 0.5, math.sqrt(12) / 2][seed]
    u, labels = relaxed_codes(p, k, bits, seed)
    ours_in, theirs_in = leaf(u), leaf(u)
    ours_mining = "batch_all" if mining == "none" else mining
    ours = EuclideanTripletLoss(margin=margin, mining=ours_mining)(ours_in, labels)
    theirs = pml_triplet(margin, mining)(theirs_in, labels)
    assert theirs.item() > 0  # the comparison must not be vacuous
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10, rel=1e-10)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, atol=1e-10, rtol=1e-8)


def test_euclidean_triplet_brute_force_and_binary_codes():
    u, labels = relaxed_codes(3, 4, 9, seed=6)
    euclid = lambda x, y: float(np.linalg.norm(x - y))  # noqa: E731
    raw = brute_triplets(u.numpy(), labels.numpy(), euclid, 1.5, "batch_all")
    assert EuclideanTripletLoss(1.5)(u, labels).item() == pytest.approx(
        reduce(raw, "avg_nonzero"), rel=1e-12)
    codes = random_signs(10, 16, seed=2)
    loss = EuclideanTripletLoss()
    assert loss.effective_margin(16) == 2.0
    torch.testing.assert_close(loss.distance_matrix(codes),
                               2 * hamming_distance_matrix(codes).sqrt(), rtol=1e-12, atol=1e-12)


def test_triplet_losses_add_quantization_and_handle_no_triplets():
    u, labels = relaxed_codes(3, 3, 8, seed=7)
    for cls in (HammingTripletLoss, EuclideanTripletLoss):
        plain = cls(margin=1.0)(u, labels)
        with_q = cls(margin=1.0, quantization_weight=0.7)(u, labels)
        assert with_q.item() == pytest.approx((plain + 0.7 * quantization_penalty(u)).item(),
                                              rel=1e-12)
        # sigmoid codes through code_range="01"
        assert cls(margin=1.0, code_range="01")((u + 1) / 2, labels).item() == pytest.approx(
            plain.item(), rel=1e-12)
        # one class only: no triplet, zero loss with a gradient
        x = leaf(u)
        zero = cls()(x, torch.zeros(9, dtype=torch.long))
        zero.backward()
        assert zero.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- registry and errors


def test_registered_names_args_and_defaults():
    dpsh = LOSSES.build("dpsh", num_classes=10, dim=64)
    assert isinstance(dpsh, DPSHLoss) and dpsh.quantization_weight == 0.1
    ham = LOSSES.build("hamming_triplet", num_classes=10, dim=64, margin=8, mining="semi_hard")
    assert isinstance(ham, HammingTripletLoss) and ham.effective_margin(64) == 8.0
    assert LOSSES.build("hamming_triplet", num_classes=10, dim=64).effective_margin(64) == 16.0
    euc = LOSSES.build("euclidean_triplet", num_classes=10, dim=64, quantization_weight=0.1)
    assert isinstance(euc, EuclideanTripletLoss) and euc.effective_margin(64) == 4.0
    for name in ("dpsh", "hamming_triplet", "euclidean_triplet"):
        with pytest.raises(ConfigError, match=r"loss.args.quantisation_weight"):
            check_kwargs(LOSSES.get(name), {"quantisation_weight": 0.1}, "loss.args")
    with pytest.raises(ValueError, match=r"shape \[batch, 64\]"):
        dpsh(torch.zeros(4, 32), torch.zeros(4, dtype=torch.long))


def test_dph_factory_reads_the_training_data_and_its_hook_sets_the_counts():
    from hashlab.data.facts import TrainData
    from hashlab.losses.dph import DPHLoss

    attrs = np.array([[1, 0, 2], [1, 1, 0], [0, 2, 2], [1, 0, 0]])
    data = TrainData(3, np.array([0, 1, 2, 0]), attrs, ["a", "b", "c"])
    assert LOSSES.entry("dph").meta["needs"] == ("attributes",)
    loss = LOSSES.build("dph", num_classes=3, dim=8, data=data, attribute_weight=0.5)
    assert isinstance(loss, DPHLoss) and (loss.num_attributes, loss.attribute_weight) == (3, 0.5)
    loss.on_train_data(data)
    expected = DPHLoss(3, 8, 3)
    expected.set_attribute_counts(np.array([3, 1, 0]), np.array([1, 2, 2]))
    torch.testing.assert_close(loss.pos_weight, expected.pos_weight)
    torch.testing.assert_close(loss.neg_weight, expected.neg_weight)
    with pytest.raises(ConfigError, match="data.attributes"):
        LOSSES.build("dph", num_classes=3, dim=8, data=TrainData(3, np.zeros(0, dtype=np.int64)))


def test_input_validation():
    u, labels = torch.tanh(torch.randn(6, 8)), torch.tensor([0, 0, 1, 1, 2, 2])
    for loss in (DPSHLoss(), HammingTripletLoss(), EuclideanTripletLoss()):
        with pytest.raises(ValueError, match="codes must have shape"):
            loss(u[0], labels)
        with pytest.raises(ValueError, match="labels must have 6 rows"):
            loss(u, labels[:5])
        with pytest.raises(ValueError, match="labels"):
            loss(u, labels.float())
    for cls in (HammingTripletLoss, EuclideanTripletLoss):
        with pytest.raises(ValueError, match="margin must be >= 0"):
            cls(margin=-1.0)
        with pytest.raises(ValueError, match="mining"):
            cls(mining="hardest")
        with pytest.raises(ValueError, match="reduction"):
            cls(reduction="sum")
        with pytest.raises(ValueError, match=r"labels must have shape \[batch\]"):
            cls()(u, torch.nn.functional.one_hot(labels))
    with pytest.raises(ValueError, match="quantization_weight must be >= 0"):
        DPSHLoss(quantization_weight=-0.1)
    with pytest.raises(ValueError, match="quantization_weight must be >= 0"):
        HammingTripletLoss(quantization_weight=float("nan"))
    with pytest.raises(ValueError, match="code_range"):
        DPSHLoss(code_range="sigmoid")
    with pytest.raises(ValueError, match="labels must have shape"):
        DPSHLoss()(u, torch.zeros(6, 2, 2))


# --------------------------------------------------------------------------- heads


def model_with_head(head: HashHead) -> CodeModel:
    return CodeModel(nn.Identity(), head)  # "images" are the features


def test_default_tanh_head_is_unchanged():
    torch.manual_seed(0)
    head = HashHead(6, 10)
    assert head.activation == "tanh"
    torch.manual_seed(0)
    reference = nn.Linear(6, 10)  # the same initialisation as before: one Linear, same RNG use
    assert torch.equal(head.proj.weight, reference.weight)
    assert list(head.state_dict()) == ["proj.weight", "proj.bias"]
    x = torch.randn(7, 6)
    assert torch.equal(head(x), torch.tanh(reference(x)))
    built = HEADS.build("hash", in_dim=6, dim=10)
    assert isinstance(built, HashHead) and built.activation == "tanh"


def test_sign_ste_head_forward_backward_and_bits():
    head = HashHead(4, 9, activation="sign_ste")
    with torch.no_grad():
        head.proj.weight.copy_(torch.randn(9, 4))
        head.proj.bias.zero_()
        head.proj.weight[0] = 0.0  # bit 0 has z = 0 exactly
    x = torch.randn(12, 4) * 2
    x[0] = 0.0  # and so does every bit of sample 0
    u = head(x)
    assert set(u.unique().tolist()) <= {-1.0, 1.0}
    z = head.pre_activation(x)
    assert (z[:, 0] == 0).all() and (u[:, 0] == -1).all()
    np.testing.assert_array_equal(model_with_head(head).encode(x, "binary"), pack_bits(u > 0))
    np.testing.assert_array_equal(model_with_head(head).encode(x, "binary"), pack_bits(z > 0))
    # backward: clipped straight-through, d u / d z = 1[|z| <= 1]
    zz = leaf(torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0001, 7.0]))
    out = sign_ste(zz)
    assert out.tolist() == [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    g = torch.arange(1.0, 9.0)
    out.backward(g)
    assert zz.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]
    # and it trains the projection
    head.zero_grad()
    head(x).sum().backward()
    assert head.proj.weight.grad.abs().sum() > 0


def test_sigmoid_head_bits_agree_with_encode():
    torch.manual_seed(1)
    head = HashHead(5, 16, activation="sigmoid")
    x = torch.randn(20, 5)
    u = head(x)
    assert ((u > 0) & (u < 1)).all()
    torch.testing.assert_close(u, torch.sigmoid(head.pre_activation(x)))
    bits = model_with_head(head).encode(x, "binary")
    np.testing.assert_array_equal(bits, pack_bits(u > 0.5))
    # float codes: encode's float output is the sigmoid code itself
    floats = model_with_head(head).encode(x, "float")
    np.testing.assert_array_equal(floats, u.detach().numpy())


def test_head_activation_validation_and_config():
    with pytest.raises(ValueError, match="activation must be one of"):
        HashHead(3, 4, activation="relu")
    if "head_args" not in {f.name for f in dataclasses.fields(ModelConfig)}:
        pytest.skip("this config has no model.head_args")
    cfg = ModelConfig(dim=12, head_args={"activation": "sign_ste"},
                      backbone_args={"width": 4, "feature_dim": 16})
    model = build_model(cfg, in_channels=1)
    assert model.head.activation == "sign_ste" and model.binary
    out = model(torch.randn(2, 1, 28, 28))
    assert set(out.unique().tolist()) <= {-1.0, 1.0}


# --------------------------------------------------------------------------- toy training


def test_dpsh_training_on_blobs_increases_map():
    """Two Gaussian blobs separable along x but spread along y: a random linear hash mostly
    cuts along y (low mAP); 150 SGD steps of DPSH learn to cut along x (it takes ~50)."""
    g = torch.Generator().manual_seed(0)
    n, bits = 200, 8
    labels = torch.arange(2).repeat_interleave(n // 2)
    centers = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    x = centers[labels] + torch.randn(n, 2, generator=g) * torch.tensor([0.5, 4.0])
    torch.manual_seed(0)
    model = nn.Linear(2, bits)
    loss_fn = DPSHLoss(quantization_weight=0.1)

    def mean_ap() -> float:
        with torch.no_grad():
            packed = pack_bits(model(x) > 0)
        metrics = retrieval_metrics(packed, packed, labels.numpy(), labels.numpy(),
                                    kind="binary", nbits=bits, pr_curve=False, radius=None,
                                    exclude_self=True, query_db_indices=np.arange(n))
        return metrics["mAP@all"]

    before = mean_ap()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(150):
        idx = torch.randint(0, n, (64,), generator=g)
        loss = loss_fn(torch.tanh(model(x[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = mean_ap()
    assert before < 0.8, before
    assert after > 0.95 and after > before + 0.15, (before, after)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])

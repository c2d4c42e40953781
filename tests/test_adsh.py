"""ADSH: the loss against a loop transcription of the paper's objective (values and gradients,
float64, class ids and multi-hot labels), the discrete cyclic coordinate descent against brute
force, and training through the engine's hooks (indices, end of epoch, exact resume)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hashlab.config import load_config
from hashlab.data.facts import TrainData
from hashlab.encode import TrainedRun
from hashlab.eval.protocols import evaluate_run
from hashlab.losses import LOSSES
from hashlab.losses.adsh import ADSHLoss, adsh_objective, dcc_update
from hashlab.train.engine import Trainer
from tests.conftest import assert_crash_resume_is_exact, tiny_config

TOL = 1e-10


def similar(a: torch.Tensor, b: torch.Tensor, neg: float = -1.0) -> float:
    """S = +1 if the two items share a label, ``neg`` otherwise."""
    if a.ndim == 0:
        return 1.0 if int(a) == int(b) else neg
    return 1.0 if any(int(x) and int(y) for x, y in zip(a, b, strict=True)) else neg


def loop_objective(u, labels, indices, V, database_labels, gamma, neg=-1.0):
    k = u.shape[1]
    total = u.new_zeros(())
    for i in range(u.shape[0]):
        for j in range(V.shape[0]):
            dot = sum(u[i, c] * V[j, c] for c in range(k))
            total = total + (dot - k * similar(labels[i], database_labels[j], neg)) ** 2
        total = total + gamma * sum((V[indices[i], c] - u[i, c]) ** 2 for c in range(k))
    return total


def problem(n=9, m=5, k=4, classes=3, seed=0, multi=False):
    g = torch.Generator().manual_seed(seed)
    if multi:
        db_labels = (torch.rand(n, classes, generator=g) < 0.4).long()
    else:
        db_labels = torch.randint(0, classes, (n,), generator=g)
    V = torch.where(torch.rand(n, k, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    idx = torch.randperm(n, generator=g)[:m]
    u = torch.tanh(torch.randn(m, k, generator=g, dtype=torch.float64))
    return u, db_labels[idx], idx, V, db_labels


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("seed, neg", [(0, -1.0), (1, -1.0), (2, -0.3)])
def test_objective_matches_the_loop_transcription(multi, seed, neg):
    u, labels, idx, V, db = problem(seed=seed, multi=multi)
    a, b = u.clone().requires_grad_(True), u.clone().requires_grad_(True)
    value = adsh_objective(a, labels, idx, V, db, 3.0, 1.0, neg)
    expected = loop_objective(b, labels, idx, V, db, 3.0, neg)
    value.backward()
    expected.backward()
    assert abs(value.item() - expected.item()) <= TOL * max(1.0, abs(expected.item()))
    torch.testing.assert_close(a.grad, b.grad, rtol=TOL, atol=TOL)


def test_loss_is_the_objective_over_n_times_batch_and_records_codes():
    u, labels, idx, V, db = problem(n=11, m=6, k=5)
    loss = ADSHLoss(gamma=2.0, similarity="pm1", dim=5).double()
    loss.on_train_data(TrainData(3, db.numpy()))
    loss.V = V.clone()
    x = u.clone().requires_grad_(True)
    y = u.clone().requires_grad_(True)
    value = loss(x, labels, indices=idx)
    expected = loop_objective(y, labels, idx, V, db, 2.0) / (11 * 6)
    value.backward()
    expected.backward()
    assert abs(value.item() - expected.item()) <= TOL * max(1.0, abs(expected.item()))
    torch.testing.assert_close(x.grad, y.grad, rtol=TOL, atol=TOL)
    torch.testing.assert_close(loss.U[idx], u)
    assert loss.seen.sum() == 6 and loss.seen[idx].all()
    loss.eval()  # eval-mode calls record nothing
    loss.seen.zero_()
    loss(u, labels, indices=idx)
    assert not loss.seen.any()


def objective_of(V, U, omega, labels, gamma, neg=-1.0):
    return loop_objective(U, labels[omega], omega, V, labels, gamma, neg).item()


@pytest.mark.parametrize("multi, neg", [(False, -1.0), (True, -1.0), (False, -0.25)])
def test_dcc_last_column_is_the_brute_force_optimum_and_objective_never_rises(multi, neg):
    for seed in range(3):
        U, _, omega, V, labels = problem(n=8, m=5, k=3, seed=seed, multi=multi)
        new = dcc_update(V, U, omega, labels, 1.5, 1.0, neg)
        assert set(new.unique().tolist()) <= {-1.0, 1.0}
        after = objective_of(new, U, omega, labels, 1.5, neg)
        assert after <= objective_of(V, U, omega, labels, 1.5, neg) + 1e-9
        best = min(
            objective_of(torch.cat([new[:, :-1], torch.tensor(col, dtype=V.dtype)[:, None]], 1),
                         U, omega, labels, 1.5, neg)
            for col in itertools.product((-1.0, 1.0), repeat=8))
        assert after == pytest.approx(best, abs=1e-9)


def test_dcc_single_bit_is_the_global_optimum():
    U, _, omega, V, labels = problem(n=7, m=4, k=1, seed=3)
    new = dcc_update(V, U, omega, labels, gamma=0.5)
    best = min(objective_of(torch.tensor(col, dtype=V.dtype)[:, None], U, omega, labels, 0.5)
               for col in itertools.product((-1.0, 1.0), repeat=7))
    assert objective_of(new, U, omega, labels, 0.5) == pytest.approx(best, abs=1e-9)


def test_soft_similarity_balances_the_pairs():
    db = np.array([0, 0, 0, 1, 2, 2])
    loss = ADSHLoss(dim=4)
    loss.on_train_data(TrainData(3, db))
    same = sum(int(a == b) for a in db for b in db)  # ordered pairs, with i = j: 9 + 1 + 4
    assert float(loss.dissimilar) == pytest.approx(-same / (36 - same))
    assert torch.equal(loss.V, torch.zeros(6, 4))  # the authors' start
    pm1 = ADSHLoss(dim=4, similarity="pm1")
    pm1.on_train_data(TrainData(3, db))
    assert float(pm1.dissimilar) == -1.0


def test_on_epoch_end_updates_V_from_the_seen_codes_only():
    loss = ADSHLoss(gamma=1.0, update_every=2, dim=4)
    db = torch.tensor([0, 0, 1, 1, 2, 2])
    loss.on_train_data(TrainData(3, db.numpy()))
    loss.V = torch.where(torch.rand(6, 4) < 0.5, -1.0, 1.0)
    before = loss.V.clone()
    idx = torch.tensor([0, 2, 4])
    u = torch.tanh(torch.randn(3, 4))
    loss(u, db[idx], indices=idx)
    loss.on_epoch_end(0)  # update_every=2: nothing yet
    assert torch.equal(loss.V, before)
    loss.on_epoch_end(1)
    assert torch.equal(loss.V, dcc_update(before, u, idx, db, 1.0, 1.0, float(loss.dissimilar)))
    assert not loss.seen.any()


def test_bad_inputs():
    loss = LOSSES.get("adsh")(num_classes=3, dim=4)
    with pytest.raises(RuntimeError, match="on_train_data"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]), indices=torch.tensor([0, 1]))
    loss.on_train_data(TrainData(3, np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="indices"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="indices"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]), indices=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="codes"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]), indices=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="gamma"):
        LOSSES.get("adsh")(num_classes=3, dim=4, gamma=-1.0)
    with pytest.raises(ValueError, match="similarity"):
        LOSSES.get("adsh")(num_classes=3, dim=4, similarity="hard")
    with pytest.raises(ValueError, match="update_every"):
        LOSSES.get("adsh")(num_classes=3, dim=4, update_every=0)
    with pytest.raises(ValueError, match="-1"):
        loss.on_train_data(TrainData(3, np.array([0, -1, 2])))


def adsh_config(tmp_path, **train):
    return load_config(tiny_config(tmp_path, loss={"name": "adsh", "args": {"gamma": 20.0}},
                                   optim={"name": "sgd", "lr": 0.05},
                                   train={"epochs": 3, **train}))


def test_trains_through_the_engine_and_resumes_exactly(tmp_path):
    cfg = adsh_config(tmp_path)
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    V0 = straight.loss_fn.V.clone()
    history = straight.fit()
    assert history[-1]["loss"] < history[0]["loss"]
    assert not torch.equal(straight.loss_fn.V, V0)  # the database codes were learned
    assert_crash_resume_is_exact(cfg, tmp_path / "straight", tmp_path / "crashed", (1, 3))
    # the finished run loads (buffers sized from the file) and retrieves far above chance
    result = evaluate_run(TrainedRun(tmp_path / "straight"), "retrieval", progress=False)
    assert result["metrics"]["binary"]["mAP@all"] > 0.4
    # model.pt reloads the training-set-sized buffers (V) at their stored size
    run = TrainedRun(tmp_path / "straight")
    assert run.loss_fn.V.shape == V0.shape

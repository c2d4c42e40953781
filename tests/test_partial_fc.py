"""PartialFC: r = 1 equals MarginSoftmax; with r < 1 the sampled classes follow the rule and the
loss is MarginSoftmax on exactly them; sparse gradients; the generator in the state dict; errors;
and the sharded mode on 2 gloo processes against one process on the whole batch."""

from __future__ import annotations

import math
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hashlab.config import load_config
from hashlab.errors import ConfigError
from hashlab.losses import LOSSES, partial_fc
from hashlab.losses.margin import MARGINS, MININGS, MarginSoftmax
from hashlab.losses.partial_fc import PartialFC, shard_bounds
from hashlab.registry import check_kwargs
from hashlab.train.engine import CHECKPOINT, Trainer, load_checkpoint
from tests.conftest import tiny_config

B, D, C = 20, 6, 13
F64 = torch.float64
MARGIN_KW = {
    "none": {},
    "cos": {"m": 0.35},
    "arc": {"m": 0.5},
    "sphere": {"m": 4},  # with SphereFace's λ blend (and its annealing in training)
    "combined": {"m1": 1.2, "m2": 0.3, "m3": 0.1},
}
MINING_KW = {"none": {}, "hard": {"hard_ratio": 0.4}, "focal": {"gamma": 2.0}, "sv": {"t": 1.3}}
COMBOS = [(m, k) for m in MARGINS for k in MININGS]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second torch thread only adds waiting on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(margin: str, mining: str, **extra) -> dict:
    return {"margin": margin, "mining": mining, "s": 8.0, **MARGIN_KW[margin],
            **MINING_KW[mining], **extra}


def _pair(margin: str, mining: str, classes: int = C, **pfc_kw):
    """A float64 MarginSoftmax and a PartialFC of the same method and weights."""
    args = _args(margin, mining, **pfc_kw.pop("margin_extra", {}))
    ref = MarginSoftmax(classes, D, **args).double()
    pfc = PartialFC(classes, D, method="margin-softmax", **args, **pfc_kw).double()
    with torch.no_grad():
        pfc.weight.copy_(ref.weight)
    return ref, pfc


def _batch(seed: int = 0, n: int = B, classes: int = C):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D, generator=g, dtype=F64),
            torch.randint(0, classes, (n,), generator=g))


def _run(loss, x, y):
    """(value, d/d embeddings, d/d weight as a dense tensor)."""
    x = x.clone().requires_grad_()
    loss.zero_grad(set_to_none=True)
    value = loss(x, y)
    value.backward()
    grad = loss.weight.grad
    return value.detach(), x.grad, grad.to_dense() if grad.is_sparse else grad


def _close(a, b, tol=1e-11):
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=tol, atol=tol), (a - b).abs().max()


# ----------------------------------------------------------------------- r = 1: MarginSoftmax
@pytest.mark.parametrize(("margin", "mining"), COMBOS)
def test_rate_one_equals_margin_softmax(margin, mining):
    x, y = _batch()
    for variant in ({}, {"sparse_grad": True}, {"split": True},
                    {"margin_extra": {"normalize_features": False}}):
        ref, pfc = _pair(margin, mining, sample_rate=1.0,
                         **{k: v for k, v in variant.items() if k != "split"})
        pfc._split = bool(variant.get("split"))  # the sharded mode's softmax, in one process
        for mode in (True, False):  # training (sphere's λ anneals alike) and evaluation
            ref.train(mode), pfc.train(mode)
            expected, got = _run(ref, x, y), _run(pfc, x, y)
            for e, g in zip(expected, got, strict=True):
                _close(e, g)
            assert pfc.last_index is None and pfc.draws == 0
        assert torch.equal(ref.iteration, pfc.iteration)


def test_presets_and_margin_softmax_methods():
    x, y = _batch()
    for key, ref_cls in (("arcface", "arcface"), ("sv-arc-softmax", "sv-arc-softmax"),
                         ("hm_softmax", "hm-softmax")):
        ref = LOSSES.build(ref_cls, num_classes=C, dim=D, s=10.0).double()
        pfc = LOSSES.build("partial-fc", num_classes=C, dim=D, method=key, sample_rate=1,
                           s=10.0).double()
        assert (pfc.margin, pfc.mining, pfc.s) == (ref.margin, ref.mining, 10.0)
        with torch.no_grad():
            pfc.weight.copy_(ref.weight)
        for e, g in zip(_run(ref, x, y), _run(pfc, x, y), strict=True):
            _close(e, g)
    assert LOSSES.build("partial-fc", num_classes=C, dim=D).method == "arcface"


def test_initial_weight_is_margin_softmax_s():
    torch.manual_seed(3)
    ref = MarginSoftmax(C, D)
    torch.manual_seed(3)
    assert torch.equal(PartialFC(C, D).weight, ref.weight)


# ------------------------------------------------------------------------------ r < 1: sampling
@pytest.mark.parametrize(("margin", "mining"), COMBOS)
def test_sampled_loss_is_margin_softmax_on_the_subset(margin, mining):
    classes, rate = 40, 0.3
    ref_full, pfc = _pair(margin, mining, classes=classes, sample_rate=rate, seed=1)
    for step in range(3):
        x, y = _batch(step, classes=classes)
        value, gx, gw = _run(pfc, x, y)
        index = pfc.last_index
        assert index is not None and torch.equal(index, index.unique())  # sorted, distinct
        assert set(y.tolist()) <= set(index.tolist())
        assert index.numel() == max(y.unique().numel(), math.ceil(rate * classes))
        # the oracle: MarginSoftmax over exactly these classes, labels remapped to positions
        oracle = MarginSoftmax(index.numel(), D, **_args(margin, mining)).double()
        with torch.no_grad():
            oracle.weight.copy_(ref_full.weight[index])
            oracle.iteration.copy_(pfc.iteration - int(margin == "sphere"))
        expected = _run(oracle, x, torch.searchsorted(index, y))
        _close(value, expected[0])
        _close(gx, expected[1])
        _close(gw[index], expected[2])
        rest = torch.ones(classes, dtype=torch.bool)
        rest[index] = False
        assert not gw[rest].any()  # the other classes get nothing
    assert pfc.draws == 3


def test_sample_count_rule_and_positives_always_kept():
    pfc = PartialFC(1000, D, sample_rate=0.01, seed=2)
    assert pfc.num_sampled(3) == 10 and pfc.num_sampled(10) == 10 and pfc.num_sampled(64) == 64
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        y = torch.randint(0, 1000, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g)
        index, targets = pfc.sample_classes(y)
        assert index.numel() == max(y.unique().numel(), 10)
        assert torch.equal(index[targets], y)  # every positive centre, at its label's column
        seen.update(index.tolist())
    assert len(seen) > 300  # the negatives are drawn anew each step
    assert PartialFC(7, D, sample_rate=0.5).num_sampled(0) == 4  # ceil(3.5)
    assert PartialFC(10, D, sample_rate=0.3).num_sampled(1) == 3  # not ceil(3.0000000000000004)


def test_evaluation_uses_every_class():
    ref, pfc = _pair("arc", "sv", sample_rate=0.2)
    x, y = _batch()
    ref.eval(), pfc.eval()
    for e, g in zip(_run(ref, x, y), _run(pfc, x, y), strict=True):
        _close(e, g)
    assert pfc.last_index is None and pfc.draws == 0


def test_sparse_gradient_equals_dense():
    x, y = _batch(classes=60, n=12)
    losses = [PartialFC(60, D, method="sv-am-softmax", sample_rate=0.25, seed=4,
                        sparse_grad=sparse).double() for sparse in (False, True)]
    with torch.no_grad():
        losses[1].weight.copy_(losses[0].weight)
    (v0, gx0, gw0), (v1, gx1, gw1) = (_run(loss, x, y) for loss in losses)
    assert losses[1].weight.grad.is_sparse and not losses[0].weight.grad.is_sparse
    assert losses[1].weight.grad._nnz() == losses[1].last_index.numel()
    _close(v0, v1), _close(gx0, gx1), _close(gw0, gw1)
    # plain SGD and SparseAdam take the sparse gradient; SGD moves the same rows as dense
    for loss in losses:
        torch.optim.SGD(loss.parameters(), lr=0.5).step()
    _close(losses[0].weight, losses[1].weight)
    torch.optim.SparseAdam([losses[1].weight]).step()
    # check_optimizer: what takes the sparse gradient properly
    sparse = losses[1]
    sparse.check_optimizer(torch.optim.SGD(sparse.parameters(), lr=0.1))
    sparse.check_optimizer(torch.optim.SparseAdam([sparse.weight]))
    losses[0].check_optimizer(torch.optim.Adam(losses[0].parameters()))  # dense: anything
    for bad in (torch.optim.Adam(sparse.parameters()),
                torch.optim.SGD(sparse.parameters(), lr=0.1, momentum=0.9),
                torch.optim.SGD(sparse.parameters(), lr=0.1, weight_decay=5e-4)):
        with pytest.raises(ValueError, match="sparse_grad"):
            sparse.check_optimizer(bad)


def test_generator_state_round_trips_through_the_state_dict(tmp_path):
    a = PartialFC(500, D, sample_rate=0.05, seed=7)
    ys = [torch.randint(0, 500, (16,)) for _ in range(6)]
    x = torch.randn(16, D)
    for y in ys[:3]:
        a(x, y)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    b = PartialFC(500, D, sample_rate=0.05, seed=99)  # another seed: the state wins
    b.load_state_dict(state)
    assert b.draws == 3 and torch.equal(a.weight, b.weight)
    for y in ys[3:]:
        a(x, y), b(x, y)
        assert torch.equal(a.last_index, b.last_index)
    # different seeds sample differently; the same seed the same
    c, d = (PartialFC(500, D, sample_rate=0.05, seed=s) for s in (7, 8))
    c(x, ys[0]), d(x, ys[0])
    assert not torch.equal(c.last_index, d.last_index)
    # a state from another world size: reseeded from (seed, rank, draws), deterministically
    other = {**state, "sampler_world_size": torch.tensor(2),
             "sampler_ranks": torch.tensor([0, 1]),
             "sampler_generators": state["sampler_generators"].repeat(2, 1)}
    e, f = PartialFC(500, D, sample_rate=0.05, seed=7), PartialFC(500, D, sample_rate=0.05, seed=7)
    e.load_state_dict(other), f.load_state_dict(other)
    e(x, ys[0]), f(x, ys[0])
    assert torch.equal(e.last_index, f.last_index) and e.draws == 4
    # a MarginSoftmax state (no sampler) loads only with strict=False
    plain = MarginSoftmax(500, D).state_dict()
    with pytest.raises(RuntimeError, match="sampler_draws"):
        PartialFC(500, D).load_state_dict(plain)
    g = PartialFC(500, D)
    g.load_state_dict(plain, strict=False)
    assert torch.equal(g.weight, plain["weight"])


def test_predict_and_logits_over_every_class(monkeypatch):
    pfc = PartialFC(300, D, sample_rate=0.1)
    x = torch.randn(17, D)
    logits = pfc.logits(x)
    assert logits.shape == (17, 300)
    assert torch.equal(pfc.predict(x), logits.argmax(1))
    monkeypatch.setattr(partial_fc, "_PREDICT_CHUNK", 7)  # classes scored 7 at a time
    assert torch.equal(pfc.predict(x), logits.argmax(1))


def test_errors_name_the_argument():
    for rate in (0, 1.5, -0.1, True, "0.5", None):
        with pytest.raises(ValueError, match="sample_rate"):
            PartialFC(C, D, sample_rate=rate)
    with pytest.raises(ValueError, match="method"):
        PartialFC(C, D, method="softmax")
    with pytest.raises(TypeError, match="margin"):
        PartialFC(C, D, method="arcface", margin="cos")  # a preset fixes its method
    with pytest.raises(TypeError, match="gamma"):
        PartialFC(C, D, method="arcface", gamma=2.0)  # not an ArcFace argument
    with pytest.raises(ValueError, match="seed"):
        PartialFC(C, D, seed=-1)
    with pytest.raises(ValueError, match="hard_ratio"):  # MarginSoftmax's own validation
        PartialFC(C, D, method="margin-softmax", mining="hard", hard_ratio=0)
    factory = LOSSES.get("partial-fc")
    assert factory is PartialFC and not PartialFC.sharded
    check_kwargs(factory, {"method": "cosface", "sample_rate": 0.2, "m": 0.3}, "loss.args")
    with pytest.raises(ConfigError, match="loss.args.rate"):
        check_kwargs(factory, {"rate": 0.2}, "loss.args")
    entry = LOSSES.entry("partial-fc")
    assert dict(entry.defaults) == {"method": "arcface", "sample_rate": 0.1,
                                    "sparse_grad": False, "seed": 0}


def test_trainer_resumes_with_the_same_sampling(tmp_path):
    """Through the training engine: a run stopped mid-epoch and resumed equals a straight run
    (the sampling generator is in the checkpoint); model.pt loads into a new module."""
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 2, "batch_size": 6,
                                                   "max_batches_per_epoch": 4},
                                  loss={"name": "partial-fc",
                                        "args": {"method": "cosface", "sample_rate": 0.3}}))

    class Crash(Exception):
        pass

    def crash(trainer, epoch, step):
        if (epoch, step) == (1, 2):
            raise Crash

    Trainer(cfg, tmp_path / "straight", progress=False).fit()
    with pytest.raises(Crash):
        Trainer(cfg, tmp_path / "crashed", progress=False, callbacks=[crash]).fit()
    Trainer(cfg, tmp_path / "crashed", progress=False).fit(resume=True)
    a, b = (load_checkpoint(tmp_path / run / CHECKPOINT)["loss"] for run in ("straight",
                                                                              "crashed"))
    assert a["sampler_draws"] > 0 and a["sampler_draws"] == b["sampler_draws"]
    assert torch.equal(a["sampler_generators"], b["sampler_generators"])
    assert torch.equal(a["weight"], b["weight"])
    fresh = PartialFC(10, 16, method="cosface", sample_rate=0.3)
    fresh.load_state_dict(a)


# ---------------------------------------------------------------------------------- sharded
W = 2
SHARDED_C, SHARDED_B = 11, 5  # 11 classes: shards of 5 and 6
SHARDED_CASES = [  # (margin, mining, sample_rate, sparse_grad, extra MarginSoftmax arguments)
    *((m, k, 1.0, False, {}) for m, k in COMBOS),
    ("arc", "sv", 0.5, False, {}),
    ("cos", "focal", 0.5, True, {}),
    ("none", "hard", 0.5, False, {}),
    ("cos", "sv", 1.0, False, {"normalize_features": False}),
    ("sphere", "focal", 0.5, False, {"normalize_features": False}),
]


def _sharded_case(rank: int, margin: str, mining: str, rate: float, sparse: bool,
                  extra: dict) -> dict:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(SHARDED_C, D, generator=g, dtype=F64)
    n = W * SHARDED_B
    x = torch.randn(n, D, generator=g, dtype=F64)
    y = torch.randint(0, SHARDED_C, (n,), generator=g)
    args = _args(margin, mining, **extra)
    pfc = PartialFC(SHARDED_C, D, method="margin-softmax", sample_rate=rate, sparse_grad=sparse,
                    seed=3, **args).double()
    assert pfc.sharded and pfc.world_size == W
    pfc.load_state_dict({"weight": weight}, strict=False)  # the whole weight: keeps its rows
    rows = slice(rank * SHARDED_B, (rank + 1) * SHARDED_B)
    value, gx, gw = _run(pfc, x[rows], y[rows])

    # one process on the whole batch, over the classes the ranks sampled together
    local = (torch.arange(pfc.num_local) if pfc.last_index is None else pfc.last_index)
    parts: list = [None] * W
    dist.all_gather_object(parts, (local + pfc.class_start).tolist())
    classes = torch.tensor(sorted(c for part in parts for c in part))
    ref = MarginSoftmax(classes.numel(), D, **args).double()
    with torch.no_grad():
        ref.weight.copy_(weight[classes])
    ref_value, ref_gx, ref_gw = _run(ref, x, torch.searchsorted(classes, y))
    full_gw = torch.zeros_like(weight)
    full_gw[classes] = ref_gw
    out = {"value": (value - ref_value).abs().item(),
           "weight_grad": (gw - full_gw[pfc.class_start : pfc.class_stop]).abs().max().item(),
           "embedding_grad": (gx - W * ref_gx[rows]).abs().max().item(),
           "sampled": classes.numel()}
    if rate == 1.0 and not extra:
        ref_logits = ref.logits(x)
        out["logits"] = (pfc.logits(x[rows]) - ref_logits[rows]).abs().max().item()
        out["predict"] = torch.equal(pfc.predict(x[rows]), ref_logits[rows].argmax(1))
    return out


def _sharded_worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=W,
                            timeout=timedelta(seconds=60))
    try:
        results = {str(case[:4]) + str(case[4]): _sharded_case(rank, *case)
                   for case in SHARDED_CASES}
        # the initial weight: this rank's rows of the one-process initialisation
        torch.manual_seed(5)
        init = PartialFC(SHARDED_C, D, method="cosface", sample_rate=0.5, seed=3)
        assert init.sharded and (init.class_start, init.class_stop) == shard_bounds(
            SHARDED_C, W, rank)
        x = torch.randn(SHARDED_B, D)
        y = torch.randint(0, SHARDED_C, (SHARDED_B,))
        init(x, y)  # one sampling step: the generators have moved
        state = init.gather_state_dict()  # a collective: the whole classifier
        again = PartialFC(SHARDED_C, D, method="cosface", sample_rate=0.5, seed=8)
        again.load_state_dict(state)
        results["state"] = {
            "local_weight": init.weight.detach().clone(),
            "reloaded_weight_equal": torch.equal(again.weight, init.weight),
            "generator_equal": torch.equal(again.generator.get_state(),
                                           init.generator.get_state()),
            "local_state_keys": sorted(init.state_dict()),
        }
        init(x, y), again(x, y)
        results["state"]["same_sampling"] = torch.equal(init.last_index, again.last_index)
        if rank == 0:
            torch.save(state, os.path.join(out_dir, "gathered.pt"))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sharded_over_two_processes_equals_one_process(tmp_path):
    mp.spawn(_sharded_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=W, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(W)]
    for name in results[0]:
        if name == "state":
            continue
        for rank, result in enumerate(results):
            got = result[name]
            assert got["value"] < 1e-10, (name, rank, got)
            assert got["weight_grad"] < 1e-10, (name, rank, got)
            assert got["embedding_grad"] < 1e-10, (name, rank, got)
            assert got.get("logits", 0.0) < 1e-10 and got.get("predict", True), (name, got)
        if "0.5" in name:
            assert results[0][name]["sampled"] < SHARDED_C  # sampling did happen
    # the gathered state: the whole classifier, which one process loads
    torch.manual_seed(5)
    single = PartialFC(SHARDED_C, D, method="cosface", sample_rate=0.5, seed=3)
    gathered = torch.load(tmp_path / "gathered.pt", weights_only=True)
    assert gathered["weight"].shape == (SHARDED_C, D)
    assert gathered["sampler_ranks"].tolist() == [0, 1]
    assert gathered["sampler_generators"].shape[0] == 2
    for rank, result in enumerate(results):
        state = result["state"]
        start, stop = shard_bounds(SHARDED_C, W, rank)
        assert torch.equal(state["local_weight"], single.weight[start:stop])  # same init
        assert torch.equal(gathered["weight"][start:stop], state["local_weight"])
        assert state["reloaded_weight_equal"] and state["generator_equal"]
        assert state["same_sampling"]
        assert state["local_state_keys"] == ["iteration", "sampler_draws", "sampler_generators",
                                             "sampler_ranks", "sampler_world_size", "weight"]
    single.load_state_dict(gathered)  # a sharded run's model loads in one process
    assert torch.equal(single.weight, gathered["weight"]) and not single.sharded

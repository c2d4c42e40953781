"""ExchNet's head: each loss term against a loop transcription of the paper's formula (values
and gradients, float64), the exchange at probability 0 / 1, the anchors as per-class means of
the part features, the hooks through the real trainer, and an exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashlab.config import load_config
from hashlab.data.facts import TrainData
from hashlab.encode import TrainedRun
from hashlab.errors import ConfigError
from hashlab.eval.protocols import evaluate_run
from hashlab.models.exchnet import (
    ExchNetHead,
    channel_diversity,
    exchange_parts,
    spatial_diversity,
)
from hashlab.models.model import build_model
from hashlab.train.engine import Trainer
from tests.conftest import assert_crash_resume_is_exact, tiny_config


def _softmax_loop(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _mean_hellinger_loop(dists: list[list]) -> torch.Tensor:
    """(1 / C(M,2)) Σ_{l<k} (1/√2) sqrt(Σ_d (√p_l[d] − √p_k[d])²), written out."""
    m = len(dists)
    total, pairs = 0.0, 0
    for l_ in range(m):
        for k in range(l_ + 1, m):
            sq = sum((dists[l_][d].sqrt() - dists[k][d].sqrt()) ** 2
                     for d in range(len(dists[l_])))
            total = total + sq.sqrt() / math.sqrt(2.0)
            pairs += 1
    return total / pairs


def spatial_loop(maps: torch.Tensor) -> torch.Tensor:
    """L_sp per image: Â_j = Σ_c F_j[c], softmax over the flattened positions, then
    1 − mean pairwise Hellinger distance."""
    b, m, c, h, w = maps.shape
    out = []
    for i in range(b):
        dists = []
        for j in range(m):
            agg = [sum(maps[i, j, ch, y, x] for ch in range(c)) for y in range(h) for x in range(w)]
            exps = [a.exp() for a in agg]
            z = sum(exps)
            dists.append([e / z for e in exps])
        out.append(1.0 - _mean_hellinger_loop(dists))
    return torch.stack(out)


def channel_loop(feats: torch.Tensor, t: float) -> torch.Tensor:
    """L_cp per image: p_j = softmax(f_j), [t − mean pairwise Hellinger]_+."""
    out = []
    for i in range(feats.shape[0]):
        dists = []
        for j in range(feats.shape[1]):
            exps = [v.exp() for v in feats[i, j]]
            z = sum(exps)
            dists.append([e / z for e in exps])
        out.append(torch.clamp(t - _mean_hellinger_loop(dists), min=0.0))
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_spatial_diversity_matches_the_loop(seed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(2, 3, 2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    got, want = spatial_diversity(maps), spatial_loop(maps)
    assert torch.allclose(got, want, atol=1e-12)
    w = torch.randn(2, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((got * w).sum(), maps)
    (gb,) = torch.autograd.grad((want * w).sum(), maps)
    assert torch.allclose(ga, gb, atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_channel_diversity_matches_the_loop(t):
    g = torch.Generator().manual_seed(3)
    feats = (2 * torch.randn(3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    got, want = channel_diversity(feats, t), channel_loop(feats, t)
    assert torch.allclose(got, want, atol=1e-12)
    if t == 0.0:
        assert (got == 0).all()  # the hinge is off: no gradient either
    (ga,) = torch.autograd.grad(got.sum(), feats, allow_unused=True)
    (gb,) = torch.autograd.grad(want.sum(), feats, allow_unused=True)
    assert torch.allclose(ga, gb, atol=1e-12)


def test_identical_parts_give_spatial_loss_one_and_disjoint_parts_zero():
    same = torch.randn(1, 1, 2, 3, 3).expand(2, 3, 2, 3, 3)
    assert torch.allclose(spatial_diversity(same), torch.ones(2))
    far = torch.full((1, 2, 1, 1, 2), 0.0)
    far[0, 0, 0, 0, 0] = far[0, 1, 0, 0, 1] = 60.0  # each part's map is one position
    assert spatial_diversity(far).item() == pytest.approx(0.0, abs=1e-12)


def test_exchange_at_probability_zero_and_one():
    g = torch.Generator().manual_seed(0)
    f, anchors = torch.randn(6, 4, 3, generator=g), torch.randn(6, 4, 3, generator=g)
    out, swap = exchange_parts(f, anchors, 0.0, generator=g)
    assert torch.equal(out, f) and not swap.any()
    out, swap = exchange_parts(f, anchors, 1.0, generator=g)
    assert torch.equal(out, anchors) and swap.all()
    out, swap = exchange_parts(f, anchors, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[swap], anchors[swap]) and torch.equal(out[~swap], f[~swap])
    assert 0 < int(swap.sum()) < swap.numel()


def _head(**kw) -> ExchNetHead:
    torch.manual_seed(0)
    return ExchNetHead(in_dim=5, dim=8, parts=3, local_dim=4, **kw).double()


def test_anchors_are_the_per_class_means_of_the_part_features():
    head = _head(exchange_prob=0.0)
    head.on_train_data(TrainData(4, np.zeros(1, dtype=np.int64)))
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(6, 5, 4, 4, generator=g, dtype=torch.float64),
                torch.tensor(lab)) for lab in ([0, 1, 1, 3, 0, 1], [3, 3, 1, 0, 0, 0])]
    head.train()
    parts = []
    for x, y in batches:
        head(x, labels=y)
        parts.append(head.features(x)[1].detach())  # train mode: the same batch statistics
    head.on_epoch_end(0)
    f, y = torch.cat(parts), torch.cat([b[1] for b in batches])
    for c in range(4):
        rows = [f[i] for i in range(len(y)) if int(y[i]) == c]
        if rows:
            assert torch.allclose(head.anchors[c], sum(rows) / len(rows), atol=1e-12)
            assert head.has_anchor[c]
        else:
            assert not head.has_anchor[c] and (head.anchors[c] == 0).all()  # class 2: unseen


def test_forward_exchanges_with_the_anchors_and_reports_the_diversity_losses():
    x, y = torch.randn(4, 5, 3, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    head = _head(exchange_prob=1.0, spatial_weight=0.7, channel_weight=0.2, threshold=0.9)
    head.on_train_data(TrainData(2, np.zeros(1, dtype=np.int64)))
    head.train()
    head.anchors = torch.randn(2, 3, 4, dtype=torch.float64)
    head.has_anchor = torch.tensor([True, False])
    u = head(x, labels=y)
    maps, f, glob = head.features(x)
    want_aux = 0.7 * spatial_diversity(maps).mean() + 0.2 * channel_diversity(f, 0.9).mean()
    assert torch.allclose(head.aux_loss, want_aux, atol=1e-12)
    # class 0 has an anchor: all its parts are the anchor's; class 1 has none: unchanged
    f_hat = torch.where((y == 0)[:, None, None], head.anchors[y], f)
    want = torch.tanh(head.hash(head.norm(torch.cat([f_hat.flatten(1), glob], 1))))
    assert torch.allclose(u, want, atol=1e-12)
    # encoding never exchanges, and leaves no training loss behind
    head.eval()
    z = head.pre_activation(x)
    assert torch.allclose(head(x), torch.tanh(z)) and head.aux_loss is None


def test_bad_arguments_and_backbones():
    for kw, word in (({"parts": 1}, "parts"), ({"exchange_prob": 1.5}, "exchange_prob"),
                     ({"threshold": -0.1}, "threshold"), ({"spatial_weight": -1}, "spatial")):
        with pytest.raises(ValueError, match=word):
            ExchNetHead(in_dim=4, dim=8, **kw)
    with pytest.raises(ValueError, match="feature map"):
        _head().features(torch.zeros(2, 5, dtype=torch.float64))
    cfg = load_config(tiny_config(__import__("pathlib").Path("/tmp"),
                                  model={"head": "exchnet", "head_args": {"parts": 2}}))
    model = build_model(cfg.model, in_channels=1)
    assert model.head.local_dim == model.backbone.feature_channels == 16
    with pytest.raises(ConfigError, match="head_args.nope"):
        build_model(load_config(tiny_config(
            __import__("pathlib").Path("/tmp"),
            model={"head": "exchnet", "head_args": {"nope": 1}})).model, in_channels=1)


def test_trains_through_the_engine_learns_and_resumes_exactly(tmp_path):
    cfg = load_config(tiny_config(
        tmp_path, model={"head": "exchnet", "head_args": {"parts": 2, "local_dim": 8}},
        loss={"name": "adsh", "args": {"gamma": 20.0}}, optim={"name": "sgd", "lr": 0.01},
        train={"epochs": 3}))
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    assert straight.model.head.anchors.shape == (10, 2, 8)  # sized by on_train_data
    straight.fit()
    assert straight.model.head.has_anchor.all()
    assert_crash_resume_is_exact(cfg, tmp_path / "straight", tmp_path / "crashed", (1, 3))
    run = TrainedRun(tmp_path / "straight")  # model.pt reloads the anchors at their size
    assert torch.equal(run.model.head.anchors, straight.model.head.anchors)
    result = evaluate_run(run, "retrieval", progress=False)
    assert result["metrics"]["binary"]["mAP@all"] > 0.3  # chance: 0.1; 0.54 when written


def test_on_the_imagenet_layout_resnet_for_larger_images():
    """ExchNet reads the last map of ResNet-18 (ImageNet stem: 64×64 → 2×2) and trains on it."""
    from hashlab.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", backbone_args={"width": 8},
                                    head="exchnet", head_args={"parts": 2, "local_dim": 8},
                                    dim=12), in_channels=3)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    assert model.backbone.feature_map(x).shape == (4, 64, 2, 2)
    model.train()
    u = model(x, labels=y)
    assert u.shape == (4, 12) and model.head.aux_loss is not None
    (u.sum() + model.head.aux_loss).backward()
    assert model.head.attention.weight.grad is not None
    floats, bits = model.encode_all(x)
    assert floats.shape == (4, 12) and bits.shape == (4, 2)

"""FeatMatch (hashlab.train.recipes.featmatch): the pieces against independent oracles
(formulas, brute-force clustering, a loop transcription of the attention head) and the recipe
end to end on digits: outputs, the ablation, exact resume, argument checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hashlab.config import load_config
from hashlab.errors import ConfigError
from hashlab.train.recipes.featmatch import (
    AttentionRefiner,
    FeatMatch,
    class_prototypes,
    confident_bank,
    cyclic_lr,
    kmeans_means,
    load_featmatch,
    mixup,
    sharpen,
    strong_augment,
)
from tests.conftest import tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fmnist" / "semi"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- sharpen, mixup
def test_sharpen_matches_the_formula():
    p = torch.softmax(torch.randn(6, 5, generator=gen(0)), dim=1)
    for t in (0.25, 0.75, 1.0, 2.0):
        expected = torch.tensor([[p[i, c].item() ** (1 / t) for c in range(5)] for i in range(6)])
        expected /= expected.sum(dim=1, keepdim=True)
        assert torch.allclose(sharpen(p, t), expected, atol=1e-6)
    low = sharpen(p, 0.5)
    assert torch.equal(low.argmax(1), p.argmax(1))
    assert (low.max(1).values > p.max(1).values).all()  # T < 1 sharpens
    with pytest.raises(ValueError, match="temperature"):
        sharpen(p, 0.0)


def test_mixup_is_a_convex_combination_with_lambda_at_least_half():
    x = torch.randn(10, 1, 4, 4, generator=gen(1))
    t = torch.softmax(torch.randn(10, 3, generator=gen(2)), dim=1)
    lams = []
    for seed in range(40):
        m = mixup(x, t, 0.75, gen(seed))
        assert 0.5 <= m.lam <= 1.0
        assert sorted(m.perm.tolist()) == list(range(10))
        assert torch.allclose(m.inputs, m.lam * x + (1 - m.lam) * x[m.perm], atol=1e-6)
        assert torch.allclose(m.targets, m.lam * t + (1 - m.lam) * t[m.perm], atol=1e-6)
        assert torch.allclose(m.targets.sum(1), torch.ones(10), atol=1e-6)
        lams.append(m.lam)
    assert len(set(lams)) > 30  # drawn, not constant
    again = mixup(x, t, 0.75, gen(7))
    first = mixup(x, t, 0.75, gen(7))
    assert again.lam == first.lam and torch.equal(again.inputs, first.inputs)
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, t, 0.0, gen(0))


# ---------------------------------------------------------------- the strong view
@pytest.mark.parametrize("shape", [(5, 1, 12, 12), (3, 3, 10, 14)])
def test_strong_augment_is_seeded_and_keeps_shape_and_dtype(shape):
    x = torch.randn(*shape, generator=gen(3))
    a, b = strong_augment(x, gen(11)), strong_augment(x, gen(11))
    c = strong_augment(x, gen(12))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, x)
    assert strong_augment(x.double(), gen(11)).dtype == torch.float64


def test_strong_augment_pieces():
    x = torch.randn(6, 2, 16, 16, generator=gen(4))
    off = {"shift": 0.0, "rotation": 0.0, "brightness": 0.0, "contrast": 0.0, "cutout": 0.0}
    assert torch.allclose(strong_augment(x, gen(0), **off), x, atol=1e-5)  # identity
    # brightness only: one constant offset per image, within the bound
    y = strong_augment(x, gen(1), **{**off, "brightness": 0.5})
    d = (y - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-5)
    assert (d[:, 0].abs() <= 0.5).all() and d[:, 0].abs().max() > 0.01
    # contrast only: the image mean kept, deviations scaled by one factor in [0.7, 1.3]
    y = strong_augment(x, gen(2), **{**off, "contrast": 0.3})
    mx, my = x.mean((1, 2, 3), keepdim=True), y.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(mx, my, atol=1e-5)
    s = ((y - my).flatten(1) / (x - mx).flatten(1))
    assert torch.allclose(s, s[:, :1].expand_as(s), atol=1e-3)
    assert ((s[:, 0] >= 0.7 - 1e-5) & (s[:, 0] <= 1.3 + 1e-5)).all()
    # cutout only: a zero rectangle of side <= 4, the same in every channel, the rest unchanged
    ones = torch.ones(8, 2, 16, 16)
    y = strong_augment(ones, gen(3), **{**off, "cutout": 0.25})
    for img in y:
        assert torch.equal(img[0], img[1])
        zero = (img[0] == 0).nonzero()
        assert len(zero) > 0
        (r0, c0), (r1, c1) = zero.min(0).values, zero.max(0).values
        assert r1 - r0 < 4 and c1 - c0 < 4
        assert (img[0, r0:r1 + 1, c0:c1 + 1] == 0).all()
        assert int((img[0] == 1).sum()) == 256 - len(zero)


# ---------------------------------------------------------------- prototypes
def blobs(directions: torch.Tensor, per: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points along each direction with norms 1..10 and a little angular noise."""
    g = gen(seed)
    rows, ids = [], []
    for i, d in enumerate(directions):
        u = d / d.norm()
        noise = 0.01 * torch.randn(per, len(d), generator=g)
        norms = torch.linspace(1, 10, per)[:, None] * (1 + torch.rand(per, 1, generator=g))
        rows.append((u + noise) * norms)
        ids += [i] * per
    return torch.cat(rows), torch.tensor(ids)


def test_kmeans_means_are_means_of_unnormalised_members_of_faiss_clusters():
    import faiss

    x = torch.randn(80, 6, generator=gen(5)) * torch.rand(80, 1, generator=gen(6)) * 5
    got = kmeans_means(x, 4, seed=9, iterations=15)
    xn = (x / x.norm(dim=1, keepdim=True)).numpy().astype(np.float32)
    km = faiss.Kmeans(6, 4, niter=15, seed=9, min_points_per_centroid=1,
                      max_points_per_centroid=80)
    km.train(xn)
    centroids = torch.from_numpy(km.centroids)
    assign = ((torch.from_numpy(xn)[:, None] - centroids[None]) ** 2).sum(2).argmin(1)
    expected = torch.stack([x[assign == c].mean(0) for c in assign.unique()])
    assert torch.allclose(got, expected, atol=1e-5)


def test_kmeans_means_recovers_direction_clusters():
    dirs = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 1.0]])
    x, ids = blobs(dirs, 12, seed=7)
    got = kmeans_means(x, 3, seed=1)
    expected = torch.stack([x[ids == i].mean(0) for i in range(3)])
    normalised = torch.stack([(x / x.norm(dim=1, keepdim=True))[ids == i].mean(0)
                              for i in range(3)])
    order = got.argmax(1).clamp(max=2)  # blob 0 → axis 0, 1 → 1, 2 → axis 2 or 3
    assert sorted(order.tolist()) == [0, 1, 2]
    assert torch.allclose(got[order.argsort()], expected, atol=1e-5)
    assert not torch.allclose(expected, normalised, atol=1e-2)  # the norms matter


def test_class_prototypes_from_labelled_features_only():
    # class 0: three direction clusters (its k-means centroids are known); classes 1, 2: one
    x0, sub = blobs(torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [1.0, 1.0, 0, 0, 0]]),
                    6, seed=2)
    x12, y12 = blobs(torch.eye(5)[2:4], 7, seed=3)
    x = torch.cat([x0, x12, torch.tensor([[0.0, 0, 0, 0, 5], [0, 0, 0, 1, 7]])])
    y = torch.cat([torch.zeros(18, dtype=torch.long), y12 + 1, torch.tensor([3, 3])])
    p = class_prototypes(x, y, None, 4, num_classes=5, seed=3)  # class 3: 2 features, 4: none
    assert p.threshold is None and p.labelled.all()
    assert torch.bincount(p.labels, minlength=5).tolist() == [4, 4, 4, 3, 0]
    for c in range(4):
        assert torch.allclose(p.features[p.labels == c][0], x[y == c].mean(0), atol=1e-6)
    centres = p.features[p.labels == 0][1:]
    expected = torch.stack([x0[sub == i].mean(0) for i in range(3)])
    match = torch.cdist(centres, expected).argmin(1)
    assert sorted(match.tolist()) == [0, 1, 2]
    assert torch.allclose(centres, expected[match], atol=1e-5)
    # class 3: the mean, then both members themselves (fewer than per_class − 1)
    assert torch.allclose(p.features[p.labels == 3][1:], x[y == 3])
    one = class_prototypes(x, y, None, 1, num_classes=4)
    assert torch.allclose(one.features, torch.stack([x[y == c].mean(0) for c in range(4)]))


def test_class_prototypes_bank_threshold_is_halved_until_every_class_has_enough():
    num_classes, per_class = 5, 4
    lab_x, lab_y = blobs(torch.eye(5), 6, seed=4)

    def probs(c: int, conf: float, n: int = 6) -> torch.Tensor:
        p = torch.full((n, num_classes), (1 - conf) / (num_classes - 1))
        p[:, c] = conf
        return p

    bank_x = torch.randn(36, 5, generator=gen(8))
    unsure = torch.tensor([[0.24, 0.19, 0.19, 0.19, 0.19]]).repeat(6, 1)  # class 0, never kept
    bank_p = torch.cat([probs(0, 0.9), probs(1, 0.9), probs(2, 0.4), probs(3, 0.9),
                        probs(4, 0.9), unsure])
    keep, used = confident_bank(bank_p, per_class, num_classes, 0.5, 5)
    assert used == 0.25  # class 2 (0.4) is short at 0.5, has 6 > 4 at 0.25
    assert keep is not None and keep.tolist() == [True] * 30 + [False] * 6
    assert confident_bank(bank_p, per_class, num_classes, 0.5, 0) == (None, None)
    # 0.8 then 0.4: class 2 (exactly 0.4) is not above it; a second halving (0.2) suffices
    assert confident_bank(bank_p, per_class, num_classes, 0.8, 1) == (None, None)
    assert confident_bank(bank_p, per_class, num_classes, 0.8, 2)[1] == 0.2
    # at most five halvings (0.5 → 0.015625): every class still has 6, not more than 6
    assert confident_bank(bank_p, 6, num_classes, 0.5, 5) == (None, None)

    p = class_prototypes(lab_x, lab_y, (bank_x, bank_p), per_class, num_classes=num_classes,
                         labelled_ratio=0.5, seed=0)
    assert p.threshold == 0.25
    for c in range(num_classes):
        lab = p.features[(p.labels == c) & p.labelled]
        unl = p.features[(p.labels == c) & ~p.labelled]
        assert len(lab) == 2 and len(unl) == 2  # round(4 · 0.5) and the rest
        assert torch.allclose(lab[0], lab_x[lab_y == c].mean(0), atol=1e-6)
        kept = bank_x[6 * c:6 * c + 6]
        assert torch.allclose(unl[0], kept.mean(0), atol=1e-6)  # mean of kept rows only

    # a class the bank never predicts: the bank is not used, all from the labelled features
    collapsed = torch.cat([probs(c, 0.9) for c in (0, 1, 3, 4)] + [probs(0, 0.9, 12)])
    p = class_prototypes(lab_x, lab_y, (bank_x, collapsed), per_class,
                         num_classes=num_classes)
    assert p.threshold is None and p.labelled.all()
    assert torch.bincount(p.labels).tolist() == [4] * 5


# ---------------------------------------------------------------- attention
def test_attention_refiner_matches_a_loop_transcription():
    torch.manual_seed(0)
    dim, heads = 10, 3  # head width 3: the concatenation (9) is mapped back to 10
    r = AttentionRefiner(dim, heads, dropout=0.5).double().eval()
    f = torch.randn(4, dim, dtype=torch.float64)
    protos = torch.randn(7, dim, dtype=torch.float64)
    out, att = r(f, protos)
    assert out.shape == (4, dim) and att.shape == (4, heads, 7)
    d = r.head_dim
    for i in range(4):
        gs = []
        for h in range(heads):
            w, b = r.embed[h].weight, r.embed[h].bias
            ex = w @ f[i] + b
            ep = [w @ protos[j] + b for j in range(7)]
            scores = [float((ex @ ep[j]).detach()) / math.sqrt(d) for j in range(7)]
            top = max(scores)
            e = [math.exp(s - top) for s in scores]
            a = [v / sum(e) for v in e]
            assert torch.allclose(att[i, h], torch.tensor(a, dtype=torch.float64))
            agg = sum(a[j] * ep[j] for j in range(7))
            gs.append(torch.relu(r.combine[h].weight @ torch.cat([agg, ex])
                                 + r.combine[h].bias))
        expected = torch.relu(f[i] + r.out.weight @ torch.cat(gs) + r.out.bias)
        assert torch.allclose(out[i], expected, atol=1e-10)
    r.train()
    torch.manual_seed(1)
    assert not torch.allclose(r(f, protos)[0], out)  # attention dropout acts in training


def test_cyclic_lr_follows_the_official_schedule():
    lr, p, c, e = 0.04, 30, 100, 20
    assert cyclic_lr(0, lr, p, c, e) == pytest.approx(lr / 100)
    assert cyclic_lr(15, lr, p, c, e) == pytest.approx((lr / 100 + lr / 10) / 2)
    assert cyclic_lr(p, lr, p, c, e) == pytest.approx(lr / 10)
    assert cyclic_lr(p + c, lr, p, c, e) == pytest.approx(lr)
    assert cyclic_lr(p + c + 50, lr, p, c, e) == pytest.approx((lr + lr / 10) / 2)
    assert cyclic_lr(p + 2 * c, lr, p, c, e) == pytest.approx(lr / 10)
    assert cyclic_lr(p + 2 * c + e, lr, p, c, e) == pytest.approx(lr / 1e4)


# ---------------------------------------------------------------- the recipe
ARGS = {"iterations": 12, "stage_iterations": 4, "pretrain_iterations": 4,
        "labelled_batch": 16, "unlabelled_batch": 32, "rampup_iterations": 6,
        "prototypes_per_class": 3}


def config(tmp_path: Path, **args):
    return load_config(tiny_config(
        tmp_path, data={"semi": {"labels_per_class": 10, "validation": 100, "seed": 0}},
        optim={"name": "adam", "lr": 1e-3},
        recipe={"name": "featmatch", "args": {**ARGS, **args}}))


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def assert_same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fm")
    recipe = FeatMatch(config(tmp), tmp / "straight", progress=False,
                       **config(tmp).recipe.args)
    return recipe, recipe.run(), tmp


def test_recipe_end_to_end(straight):
    from hashlab.encode import TrainedRun

    recipe, summary, _ = straight
    run = recipe.run_dir
    saved = json.loads((run / "recipe.json").read_text())
    assert saved["recipe"] == "featmatch" and saved["attention"] is True
    assert 0 <= saved["test_accuracy"] <= 1 and 0 < saved["mAP@all"] <= 1
    assert saved["steps"] == 12 and saved["refined_predictions"] is True
    stages = saved["stages"]
    assert [s["stage"] for s in stages] == ["pretrain-1", "main-1", "main-2"]
    for s in stages:
        for key in ("loss", "pseudo_confidence", "pseudo_accuracy", "prototypes",
                    "val_accuracy"):
            assert key in s, key
        assert 0 <= s["pseudo_accuracy"] <= 1 and 0.1 <= s["pseudo_confidence"] <= 1
    assert stages[0]["prototypes"] == 0 and stages[0]["loss_refined"] == 0
    assert stages[1]["prototypes"] == 30 and stages[1]["loss_refined"] > 0
    state = final_state(run)
    assert {"model", "loss", "config", "dataset", "recipe_heads", "featmatch"} <= state.keys()
    assert state["featmatch"]["prototypes"]["features"].shape[1] == 16
    # the stored classifier (refined codes with the stored prototypes) gives the test accuracy
    trained = TrainedRun(run)
    codes = trained.encode("test", progress=False)
    probs = load_featmatch(run).probabilities(torch.from_numpy(codes.float))
    acc = float((probs.argmax(1).numpy() == np.asarray(codes.labels)).mean())
    assert acc == pytest.approx(saved["test_accuracy"], abs=1.5 / len(codes.labels))
    plain = torch.softmax(recipe.heads(torch.from_numpy(codes.float)), dim=2)[0]
    assert not torch.allclose(plain, probs)  # the prediction is the refined one


def test_ablation_without_attention_runs_and_differs(straight, tmp_path):
    recipe, summary, tmp = straight
    cfg = config(tmp_path, attention=False)
    ablation = FeatMatch(cfg, tmp_path / "plain", progress=False, **cfg.recipe.args)
    assert ablation.refiner is None
    out = ablation.run()
    assert out["attention"] is False and out["prototypes"] == 0
    assert [s["prototypes"] for s in out["stages"]] == [0, 0, 0]
    assert out["stages"][0]["loss"] == pytest.approx(summary["stages"][0]["loss"])  # pretrain
    assert out["stages"][2]["loss"] != pytest.approx(summary["stages"][2]["loss"])
    a, b = final_state(recipe.run_dir), final_state(ablation.run_dir)
    assert b["featmatch"] == {"attention": False, "refiner": None, "prototypes": None}
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_killed_and_resumed_recipe_equals_an_uninterrupted_one(straight, tmp_path):
    recipe, summary, tmp = straight
    cfg = config(tmp)  # the same config as the straight run (its output_dir included)

    class Killed(Exception):
        pass

    def kill(r, stage, step):
        if stage == 1:  # after main-1's checkpoint: main-2 rebuilds prototypes from the bank
            raise Killed

    run_dir = tmp_path / "killed"
    with pytest.raises(Killed):
        FeatMatch(cfg, run_dir, progress=False, callbacks=[kill], **cfg.recipe.args).run()
    assert not (run_dir / "model.pt").exists()
    resumed = FeatMatch(cfg, run_dir, progress=False, **cfg.recipe.args).run(resume=True)
    a, b = final_state(recipe.run_dir), final_state(run_dir)
    for key in ("model", "recipe_heads", "featmatch"):
        assert_same(a[key], b[key], key)
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in summary["stages"]]
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in resumed["stages"]] == strip
    assert resumed["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.parametrize(("args", "name"), [
    ({"iterations": 0}, "recipe.args.iterations"),
    ({"pretrain_iterations": 20}, "recipe.args.pretrain_iterations"),
    ({"temperature": 0.0}, "recipe.args.temperature"),
    ({"mixup_alpha": -1.0}, "recipe.args.mixup_alpha"),
    ({"labelled_ratio": 1.5}, "recipe.args.labelled_ratio"),
    ({"threshold": 0.0}, "recipe.args.threshold"),
    ({"heads": 3}, "recipe.args.heads"),
    ({"attention_heads": 17}, "recipe.args.attention_heads"),
    ({"schedule": "cosine"}, "recipe.args.schedule"),
    ({"schedule": "cyclic", "cycle_iterations": 5}, "recipe.args.cycle_iterations"),
    ({"unlabelled_batch": 1}, "recipe.args.unlabelled_batch"),
    ({"strong_cutout": 2.0}, "recipe.args.strong_cutout"),
    ({"nonsense": 1}, "recipe.args.nonsense"),
])
def test_bad_arguments_are_config_errors(tmp_path, args, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        cfg = config(tmp_path, **args)
        FeatMatch(cfg, tmp_path / "bad", progress=False, **cfg.recipe.args)


def test_shipped_configs_load():
    lite = load_config(CONFIGS / "featmatch-lite.yaml")
    full = load_config(CONFIGS / "featmatch-full.yaml")
    assert lite.recipe.name == full.recipe.name == "featmatch"
    assert lite.data.semi is not None and lite.data.semi.labels_per_class == 100
    assert full.recipe.args["strong_views"] == 8 and full.recipe.args["iterations"] == 183000
    assert full.recipe.args["prototypes_per_class"] == 20
    assert full.optim.name == "sgd" and full.optim.lr == 0.04 and full.optim.momentum == 0.95
    assert lite.recipe.args["iterations"] <= 10000

"""The complementary-labels recipe: its main-task targets, loss and metrics against
transcriptions of their definitions (loops, scikit-learn on predictions recomputed from the saved
model), the threshold chosen on validation only, switching an auxiliary set off, keeping the best
stage, exact resumption, and argument errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from hashlab.config import RunConfig, from_dict, load_config
from hashlab.data.attributes import read_class_attributes
from hashlab.encode import TrainedRun
from hashlab.errors import CheckpointError, ConfigError
from hashlab.train.engine import FINAL_MODEL, load_checkpoint
from hashlab.train.recipes.complementary import (
    Complementary,
    best_f1_threshold,
    load_complementary,
    main_targets,
)
from hashlab.train.recipes.semi import load_heads
from tests.conftest import tiny_config

SEMI = {"labels_per_class": 5, "validation": 120, "seed": 0}
TINY = {"positive": [8], "epochs": 3, "chunks": 3, "hidden": 16}


def config(tmp_path, semi=None, **args):
    return from_dict(RunConfig, tiny_config(
        tmp_path, data={"semi": semi or SEMI}, optim={"name": "adam", "lr": 3e-3},
        train={"batch_size": 32},
        recipe={"name": "complementary", "args": {**TINY, **args}}))


def make(cfg, run_dir=None, **kwargs):
    """The recipe as ``hashlab train`` builds it: its args from the config."""
    return Complementary(cfg, run_dir, progress=False, **cfg.recipe.args, **kwargs)


def state_of(run_dir):
    saved = load_checkpoint(run_dir / FINAL_MODEL)
    return saved["model"], saved["complementary"]["state"]


def assert_same_weights(a, b):
    for part_a, part_b in zip(a, b, strict=True):
        assert part_a.keys() == part_b.keys()
        for key in part_a:
            assert torch.equal(part_a[key], part_b[key]), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run with both auxiliary sets and ``select: best``, with the weights after every
    stage (a callback's snapshots)."""
    tmp = tmp_path_factory.mktemp("comp")
    snapshots = []

    def snapshot(recipe, stage, step):
        snapshots.append((
            {k: v.clone() for k, v in recipe.model.state_dict().items()},
            {k: v.clone() for k, v in recipe.classifier.state_dict().items()}))

    recipe = make(config(tmp, auxiliary={"classes": 1.0, "attributes": 0.5}, select="best"),
                  tmp / "run", callbacks=[snapshot])
    summary = recipe.run()
    return recipe, summary, snapshots


# ------------------------------------------------------------------ formulas
def test_main_targets_are_membership_of_the_positive_classes(tmp_path):
    labels = np.random.default_rng(0).integers(0, 10, size=200)
    got = main_targets(labels, [2, 7]).tolist()
    assert got == [1.0 if int(v) in (2, 7) else 0.0 for v in labels]
    recipe = make(config(tmp_path))
    assert recipe.main_y.tolist() == [1.0 if int(v) == 8 else 0.0
                                      for v in recipe.labelled.labels]
    assert sum(recipe.main_y.tolist()) == SEMI["labels_per_class"]  # one class of ten


def test_the_f1_threshold_is_the_best_distinct_score():
    rng = np.random.default_rng(1)
    y = rng.random(120) < 0.3
    scores = np.round(np.clip(y * 0.25 + rng.random(120) * 0.8, 0, 1), 2)  # with ties
    threshold, f1 = best_f1_threshold(y, scores)
    by_hand = {t: f1_score(y, scores >= t) for t in sorted(set(scores.tolist()))}
    best = max(by_hand.values())
    assert f1 == pytest.approx(best)
    assert threshold == min(t for t, v in by_hand.items() if v == best)
    assert best_f1_threshold(np.zeros(5, bool), np.linspace(0, 1, 5)) == (None, None)


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.mark.parametrize("main_loss", ["bce", "ce"])
def test_the_loss_is_main_plus_weighted_auxiliary_losses(tmp_path, main_loss):
    w_classes, w_attributes, q = 0.7, 0.3, 0.1
    recipe = make(config(tmp_path, main_loss=main_loss, heads=2, quantization_weight=q,
                         auxiliary={"classes": w_classes, "attributes": w_attributes}))
    recipe.model.eval()
    recipe.classifier.eval()  # no dropout: the hand computation sees the same logits
    idx = torch.tensor([0, 5, 13, 21, 40, 46, 47, 49])
    with torch.no_grad():
        codes = recipe.model(recipe.images(recipe.labelled, idx, None))
        total, _ = recipe.loss(codes, idx)
        main_logits = recipe.classifier.main(codes).tolist()  # [heads, B, K]
        class_logits = recipe.classifier.aux["classes"](codes)[0].tolist()
        attr_logits = recipe.classifier.aux["attributes"](codes)[0].tolist()
    labels = [int(recipe.labelled.labels[i]) for i in idx]
    table = read_class_attributes("fmnist").matrix  # digits' names are not in it: by class id
    main = 0.0
    for head in main_logits:
        terms = []
        for z, label in zip(head, labels, strict=True):
            y = 1.0 if label == 8 else 0.0
            if main_loss == "bce":
                terms.append(_bce(z[0], y))
            else:
                terms.append(math.log(sum(math.exp(v) for v in z)) - z[int(y)])
        main += sum(terms) / len(terms)
    classes = sum(math.log(sum(math.exp(v) for v in z)) - z[label]
                  for z, label in zip(class_logits, labels, strict=True)) / len(labels)
    attr = [_bce(z[j], float(table[label, j]))
            for z, label in zip(attr_logits, labels, strict=True) for j in range(len(z))]
    quant = q * sum((abs(c) - 1) ** 2 for row in codes.tolist() for c in row) / codes.numel()
    expected = quant + main + w_classes * classes + w_attributes * sum(attr) / len(attr)
    assert total.item() == pytest.approx(expected, rel=1e-5)


def test_a_zero_weight_gives_the_auxiliary_head_no_gradient(tmp_path):
    recipe = make(config(tmp_path))  # auxiliary defaults to {classes: 1}
    assert list(recipe.classifier.aux) == ["classes"]
    recipe.model.eval()
    recipe.classifier.eval()
    idx = torch.arange(16)
    images = recipe.images(recipe.labelled, idx, None)

    def grads(weights):
        recipe.weights = weights
        recipe.optimizer.zero_grad(set_to_none=True)
        codes = recipe.model(images)
        total, terms = recipe.loss(codes, idx)
        total.backward()
        named = [*recipe.model.named_parameters(), *recipe.classifier.named_parameters()]
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                for n, p in named}

    off, on = grads({"classes": 0.0}), grads({"classes": 1.0})
    aux = [n for n in off if n.startswith("aux.")]
    assert aux and all(torch.count_nonzero(off[n]) == 0 for n in aux)
    assert any(torch.count_nonzero(on[n]) > 0 for n in aux)
    recipe.weights = {}
    recipe.optimizer.zero_grad(set_to_none=True)
    codes = recipe.model(images)
    (recipe.quantization(codes) + recipe.loss_terms(codes, idx)["main"]).backward()
    trunk = dict(recipe.model.named_parameters())
    for n, p in trunk.items():  # the trunk sees the main task alone
        assert torch.allclose(off[n], p.grad, atol=1e-7), n
    assert any(not torch.allclose(on[n], p.grad, atol=1e-7) for n, p in trunk.items())


def test_weight_zero_is_the_main_task_only_baseline(tmp_path, trained):
    short = {"epochs": 2, "chunks": 1}
    zero = make(config(tmp_path, auxiliary={"classes": 0.0}, **short), tmp_path / "zero")
    assert len(zero.classifier.aux) == 0
    summary = zero.run()
    make(config(tmp_path, auxiliary={}, **short), tmp_path / "none").run()
    assert_same_weights(state_of(tmp_path / "zero"), state_of(tmp_path / "none"))
    assert summary["auxiliary"] == {} and load_complementary(tmp_path / "zero")[1][
        "aux_outputs"] == {}
    assert set(summary["stages"][0]) >= {"loss", "loss_main"}
    assert "loss_classes" not in summary["stages"][0]
    assert {"loss_classes", "loss_attributes"} <= set(trained[1]["stages"][0])


# ------------------------------------------------------------------ summary and selection
def test_summary_metrics_equal_sklearn_on_the_saved_model(trained):
    recipe, summary, _ = trained
    heads, facts = load_complementary(recipe.run_dir)
    run = TrainedRun(recipe.run_dir)

    def scores(dataset):
        images, labels = dataset.get_batch(torch.arange(len(dataset)))
        with torch.no_grad():
            s = heads.positive_scores(run.model(images))
        return np.array([int(v) == 8 for v in labels]), s.numpy()

    y, s = scores(run.load_split("test"))
    assert summary["test_ap"] == pytest.approx(average_precision_score(y, s))
    assert summary["test_f1@0.5"] == pytest.approx(f1_score(y, s >= 0.5))
    yv, sv = scores(recipe.validation)
    by_hand = {t: f1_score(yv, sv >= t) for t in sorted(set(sv.tolist()))}
    best = max(by_hand.values())
    assert summary["val_f1"] == pytest.approx(best)
    assert summary["val_threshold"] == facts["threshold"]
    assert by_hand[summary["val_threshold"]] == pytest.approx(best)
    assert summary["test_f1@val_threshold"] == pytest.approx(
        f1_score(y, s >= summary["val_threshold"]))
    assert summary["val_ap"] == pytest.approx(average_precision_score(yv, sv))
    assert facts["positive"] == [8] and facts["auxiliary"] == {"classes": 1.0,
                                                               "attributes": 0.5}
    assert 0 < summary["mAP@all"] <= 1 and summary["test_positives"] == int(y.sum())
    assert json.loads((recipe.run_dir / "recipe.json").read_text())["test_ap"] == \
        summary["test_ap"]
    assert "test AP" in recipe.summary_table(summary)
    with pytest.raises(CheckpointError, match="no recipe heads"):
        load_heads(recipe.run_dir)  # the engine's C-way heads are not this recipe's


def test_the_threshold_depends_on_validation_not_on_test(trained, monkeypatch):
    recipe, summary, _ = trained
    test = TrainedRun(recipe.run_dir).load_split("test")
    flipped = test.subset(np.arange(len(test)))
    flipped.labels[:] = (flipped.labels + 1) % 10  # other test labels, other positives
    monkeypatch.setattr(TrainedRun, "load_split", lambda self, split: flipped)
    again = recipe.summarise()
    assert again["val_threshold"] == summary["val_threshold"]
    assert again["test_ap"] != summary["test_ap"]
    monkeypatch.undo()
    full = recipe.validation
    try:  # and it follows the validation part: the best threshold on a part of it
        recipe.validation = full.subset(np.arange(50))
        part = recipe.validation_choice()
        yv = main_targets(recipe.validation.labels, [8]).numpy()
        assert (part["threshold"], part["val_f1"]) == best_f1_threshold(
            yv, recipe.positive_scores(recipe.validation))
    finally:
        recipe.validation = full


def test_select_best_keeps_the_stage_with_the_best_validation_ap(trained):
    recipe, summary, snapshots = trained
    aps = [s["val_ap"] for s in summary["stages"]]
    best = aps.index(max(aps))
    assert summary["selected_stage"] == best + 1
    assert_same_weights(state_of(recipe.run_dir), snapshots[best])


def test_a_killed_recipe_resumes_to_the_uninterrupted_result(tmp_path, trained):
    recipe, summary, _ = trained

    class Kill(Exception):
        pass

    def kill_after_stage_1(recipe, stage, step):
        if stage == 1:
            raise Kill

    args = {"auxiliary": {"classes": 1.0, "attributes": 0.5}, "select": "best"}
    crashed = make(config(tmp_path, **args), tmp_path / "crashed",
                   callbacks=[kill_after_stage_1])
    with pytest.raises(Kill):
        crashed.run()
    assert not (tmp_path / "crashed" / FINAL_MODEL).exists()
    resumed = make(config(tmp_path, **args), tmp_path / "crashed").run(resume=True)
    assert_same_weights(state_of(recipe.run_dir), state_of(tmp_path / "crashed"))
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in summary["stages"]]
    assert strip == [{k: v for k, v in s.items() if k != "seconds"} for s in resumed["stages"]]
    assert resumed["test_ap"] == summary["test_ap"]


# ------------------------------------------------------------------ arguments and config
@pytest.mark.parametrize(("args", "key"), [
    ({"positive": None}, "recipe.args.positive"),
    ({"positive": [10]}, "recipe.args.positive"),
    ({"positive": [1, 1]}, "recipe.args.positive"),
    ({"positive": list(range(10))}, "recipe.args.positive"),
    ({"positive": [True]}, "recipe.args.positive"),
    ({"auxiliary": {"colours": 1.0}}, "recipe.args.auxiliary.colours"),
    ({"auxiliary": {"classes": -1.0}}, "recipe.args.auxiliary.classes"),
    ({"auxiliary": [1.0]}, "recipe.args.auxiliary"),
    ({"main_loss": "hinge"}, "recipe.args.main_loss"),
    ({"select": "first"}, "recipe.args.select"),
    ({"epochs": 0}, "recipe.args.epochs"),
    ({"auxiliary": {"attributes": 1.0}, "attribute_table": "nope"},
     "recipe.args.attribute_table"),
])
def test_bad_arguments_are_config_errors(tmp_path, args, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make(config(tmp_path, **args))


def test_select_best_needs_validation_and_unknown_args_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe\.args\.select"):
        make(config(tmp_path, semi={**SEMI, "validation": 0}, select="best"))
    with pytest.raises(ConfigError, match=r"recipe\.args\.postive"):
        config(tmp_path, postive=[3])


def test_the_shirt_config_loads():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "fmnist" / "semi"
                      / "complementary-shirt.yaml")
    assert cfg.recipe.name == "complementary" and cfg.data.dataset == "fashion-mnist"
    assert cfg.recipe.args["positive"] == [6] and cfg.recipe.args["auxiliary"] == {
        "classes": 1.0}
    assert cfg.data.semi.labels_per_class == 100

"""Tri-net and single-head pseudo-labelling: output smearing, agreement labelling and DES
against transcriptions of their definitions on fixed inputs; the recipe end to end (per-round
logs checked against the hidden labels), exact resumption, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from hashlab.cli import app
from hashlab.config import RunConfig, from_dict
from hashlab.errors import ConfigError
from hashlab.train.engine import FINAL_MODEL, load_checkpoint
from hashlab.train.recipes.pseudo_label import PseudoLabel
from hashlab.train.recipes.semi import Supervised, load_heads
from hashlab.train.recipes.trinet import TriNet, agreeing_labels, des_keep, smear_labels
from tests.conftest import tiny_config

SEMI = {"labels_per_class": 8, "validation": 150, "seed": 0}
TINY = {"init_epochs": 25, "rounds": 4, "pool_base": 150, "finetune_every": 2,
        "finetune_epochs": 3, "des_passes": 6, "hidden": 32, "sigma0": 0.6, "sigma_os": 0.2}


def semi_config(tmp_path, recipe="tri-net", **args):
    return from_dict(RunConfig, tiny_config(
        tmp_path, data={"semi": SEMI}, optim={"name": "adam", "lr": 2e-3},
        train={"batch_size": 32}, recipe={"name": recipe, "args": {**TINY, **args}}))


def make(cls, config, run_dir=None, **kwargs):
    """The recipe as ``hashlab train`` builds it: its args from the config."""
    return cls(config, run_dir, progress=False, **config.recipe.args, **kwargs)


# ------------------------------------------------------------------ formulas
def test_smearing_matches_its_formula():
    labels = torch.tensor([0, 2, 1, 2])
    out = smear_labels(labels, 3, 0.3, torch.Generator().manual_seed(5))
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    for i in range(4):
        row = [float(c == labels[i]) + max(float(z[i, c]) * 0.3, 0.0) for c in range(3)]
        total = sum(row)
        for c in range(3):
            assert out[i, c].item() == pytest.approx(row[c] / total)
    assert torch.allclose(out.sum(1), torch.ones(4))
    assert torch.equal(smear_labels(labels, 3, 0.0), torch.eye(3)[labels])


def test_agreement_needs_same_class_and_enough_confidence():
    p = torch.tensor([  # two labelling heads, four images, three classes
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
        [[0.8, 0.1, 0.1], [0.95, 0.03, 0.02], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]])
    mask, labels = agreeing_labels(p, 0.72)
    assert mask.tolist() == [True, False, False, False]  # image 2: min confidence 0.6 < 0.72
    assert labels[0] == 0
    mask, _ = agreeing_labels(p, 0.72, confidence="mean")
    assert mask.tolist() == [True, True, False, False]  # means 0.85, 0.775, –, 0.7
    mask, labels = agreeing_labels(p, 0.55)
    assert mask.tolist() == [True, True, False, True] and labels[3] == 2


def test_des_rejects_exactly_the_unstable_labels():
    k_passes, n = 9, 5
    labels = torch.tensor([0, 1, 2, 0, 1])
    disagreements = [0, 2, 3, 9, 4]  # passes voting against each image's pseudo-label
    probs = torch.zeros(k_passes, 2, n, 3)
    for i, k in enumerate(disagreements):
        for pass_ in range(k_passes):
            cls = (int(labels[i]) + 1) % 3 if pass_ < k else int(labels[i])
            probs[pass_, 0, i, cls] = 0.7
            probs[pass_, 1, i, cls] = 0.4  # the two heads' sum decides the vote
            probs[pass_, 1, i, (cls + 1) % 3] = 0.5  # head 2 alone would vote otherwise
    keep = des_keep(labels, probs, 1 / 3)
    assert keep.tolist() == [k < 9 / 3 for k in disagreements] == [True, True, False, False,
                                                                     False]
    assert des_keep(labels, probs, 0.5).tolist() == [True, True, True, False, True]  # 4 < 4.5


# ------------------------------------------------------------------ recipe
def test_trinet_runs_logs_rounds_against_hidden_truth(tmp_path):
    recipe = make(TriNet, semi_config(tmp_path))
    captured = {}
    original = recipe.fit_pseudo

    def spy(v, pool, labels, gen, name):  # the pseudo-labels each head trains on
        captured.setdefault(name, {})[v] = (pool.clone(), labels.clone())
        return original(v, pool, labels, gen, name)

    recipe.fit_pseudo = spy
    summary = recipe.run()
    stages = summary["stages"]
    assert [s["stage"] for s in stages] == ["init", "round-1", "round-2", "round-3", "round-4"]
    truth = np.asarray(recipe.unlabelled.labels)
    n_u = len(truth)
    # pools double until the whole set; round 4 (= 2 · finetune_every, pool saturated) fine-tunes
    assert [s.get("pool") for s in stages[1:4]] == [300, 600, min(1200, n_u)]
    assert stages[4]["fine_tune"] is True and stages[4]["sigma"] == pytest.approx(0.55)
    assert stages[1]["sigma_t"] == pytest.approx(0.4)  # σ − σ_os after the smeared init
    assert stages[2]["sigma_t"] == pytest.approx(0.6)
    labelled_any = False
    for stage in stages[1:4]:
        for head in stage["heads"]:
            pool, labels = captured[stage["stage"]][head["head"] - 1]
            assert head["after_des"] == len(pool) <= head["pseudo_labels"]
            if len(pool):
                labelled_any = True
                acc = float((labels.numpy() == truth[pool.numpy()]).mean())
                assert head["accuracy_after_des"] == pytest.approx(acc)
    assert labelled_any
    assert summary["test_accuracy"] > 0.5 and summary["mAP@all"] > 0.3
    heads = load_heads(recipe.run_dir)
    assert len(heads) == 3
    saved = json.loads((recipe.run_dir / "recipe.json").read_text())
    assert saved["test_accuracy"] == summary["test_accuracy"]


def test_a_killed_recipe_resumes_to_the_uninterrupted_result(tmp_path):
    straight = make(TriNet, semi_config(tmp_path), tmp_path / "straight")
    straight.run()

    class Kill(Exception):
        pass

    def kill_after_round_2(recipe, stage, step):
        if stage == 2:
            raise Kill

    crashed = make(TriNet, semi_config(tmp_path), tmp_path / "crashed",
                     callbacks=[kill_after_round_2])
    with pytest.raises(Kill):
        crashed.run()
    assert not (tmp_path / "crashed" / FINAL_MODEL).exists()
    make(TriNet, semi_config(tmp_path), tmp_path / "crashed").run(resume=True)
    a = load_checkpoint(tmp_path / "straight" / FINAL_MODEL)
    b = load_checkpoint(tmp_path / "crashed" / FINAL_MODEL)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["recipe_heads"]["state"]:
        assert torch.equal(a["recipe_heads"]["state"][key], b["recipe_heads"]["state"][key])
    logs_a = json.loads((tmp_path / "straight" / "recipe.json").read_text())["stages"]
    logs_b = json.loads((tmp_path / "crashed" / "recipe.json").read_text())["stages"]
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in logs_a]
    assert strip == [{k: v for k, v in s.items() if k != "seconds"} for s in logs_b]


def test_ablations_and_baselines_change_what_is_trained(tmp_path):
    no_des = make(TriNet, semi_config(tmp_path, des=False), tmp_path / "nodes").run()
    assert all(h["after_des"] == h["pseudo_labels"] for s in no_des["stages"][1:4]
               for h in s["heads"])
    no_ft = make(TriNet, semi_config(tmp_path, finetune=False), tmp_path / "noft").run()
    assert "fine_tune" not in no_ft["stages"][4]
    no_smear = make(TriNet, semi_config(tmp_path, smearing=False), tmp_path / "nosmear").run()
    assert no_smear["stages"][0]["smeared"] is False
    assert no_smear["stages"][1]["sigma_t"] == pytest.approx(0.6)  # no σ_os without smearing
    single = make(PseudoLabel, semi_config(tmp_path, "pseudo-label"), tmp_path / "pl").run()
    assert len(single["head_accuracies"]) == 1
    sup = make(Supervised, from_dict(RunConfig, tiny_config(
        tmp_path, data={"semi": SEMI}, optim={"name": "adam", "lr": 2e-3},
        train={"batch_size": 32}, recipe={"name": "supervised",
                                          "args": {"epochs": 20, "chunks": 2}})),
        tmp_path / "sup").run()
    assert [s["stage"] for s in sup["stages"]] == ["train-1", "train-2"]
    assert sup["steps"] == 20 * 3  # 80 labelled images in batches of 32: 3 batches per epoch


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe.args.sigma0"):
        make(TriNet, semi_config(tmp_path, sigma0=1.5))
    with pytest.raises(ConfigError, match="at least 2 heads"):
        make(TriNet, semi_config(tmp_path, heads=1))
    with pytest.raises(ConfigError, match="set data.semi"):
        make(TriNet, from_dict(RunConfig, tiny_config(tmp_path)))
    with pytest.raises(ConfigError, match="recipe.args"):
        from_dict(RunConfig, tiny_config(tmp_path, data={"semi": SEMI},
                                         recipe={"name": "tri-net", "args": {"rouns": 3}}))


def test_cli_trains_a_semi_recipe_and_prints_its_table(tmp_path):
    cfg = semi_config(tmp_path, rounds=2).to_dict()
    path = tmp_path / "tri.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["train", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "round-2" in result.output and "tri-net: test accuracy" in result.output
    ev = CliRunner().invoke(app, ["eval", str(tmp_path / "runs" / "tiny"),
                                  "--protocol", "retrieval"])
    assert ev.exit_code == 0, ev.output

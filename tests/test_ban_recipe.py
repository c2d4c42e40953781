"""The Born-Again recipe through ``hashlab train``: generations trained in their own run
folders with their own seeds, the student's loss equal to the BAN loss against the previous
generation on the same batch, a recipe killed in generation 2 resuming to the uninterrupted
result, and the summary's ensemble accuracy against a direct computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from hashlab.cli import app
from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.errors import CheckpointError, ConfigError
from hashlab.train.engine import CHECKPOINT, load_checkpoint
from hashlab.train.recipes.ban import BornAgain
from hashlab.train.recipes.distill import ban_loss
from tests.conftest import tiny_config


def recipe_config(tmp_path, **args):
    return tiny_config(tmp_path, train={"epochs": 2},
                       recipe={"name": "ban", "args": {"generations": 2, **args}})


def test_cli_trains_the_generations_and_summarises(tmp_path):
    path = tmp_path / "ban.yaml"
    path.write_text(yaml.safe_dump(recipe_config(tmp_path)))
    result = CliRunner().invoke(app, ["train", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "recipe.json").read_text())
    rows = summary["generations"]
    assert [r["generation"] for r in rows] == [1, 2] and [r["seed"] for r in rows] == [0, 1000]
    assert "ensemble acc" in result.output
    # the summary's numbers, recomputed from the two finished runs
    probs, labels = [], None
    for k, row in zip((1, 2), rows, strict=True):
        trained = TrainedRun(run / f"gen-{k}")
        codes = trained.encode("test", progress=False)
        with torch.no_grad():
            z = trained.loss_fn.logits(torch.from_numpy(codes.float)).double()
        p = torch.softmax(z, 1).numpy()
        labels = np.asarray(codes.labels)
        assert row["test_accuracy"] == pytest.approx((p.argmax(1) == labels).mean())
        probs.append(p)
        assert row["test_accuracy"] > 0.5  # digits: chance 0.1
    assert rows[1]["ensemble_accuracy"] == pytest.approx(
        ((probs[0] + probs[1]).argmax(1) == labels).mean())
    # the generations differ: a fresh seed, not a copy of the teacher
    a = load_checkpoint(run / "gen-1" / CHECKPOINT)["model"]
    b = load_checkpoint(run / "gen-2" / CHECKPOINT)["model"]
    assert any(not torch.equal(a[key], b[key]) for key in a)
    # training into it again needs --resume
    again = CliRunner().invoke(app, ["train", str(path), "--no-progress"])
    assert again.exit_code != 0 and "--resume" in again.output


def test_the_student_objective_is_ban_against_the_teacher_on_the_same_batch(tmp_path):
    cfg = load_config(recipe_config(tmp_path, temperature=2.0))
    recipe = BornAgain(cfg, tmp_path / "r", progress=False, **cfg.recipe.args)
    recipe.run()
    teacher, student = TrainedRun(tmp_path / "r" / "gen-1"), TrainedRun(tmp_path / "r" / "gen-2")
    images, labels = student.load_split("train").get_batch(torch.arange(16))
    codes = student.model(images)

    class Trainer:  # what the objective reads of the trainer
        loss_fn = student.loss_fn

    got = recipe.objective(teacher)(Trainer, images, codes, labels)
    assert got.requires_grad  # the student is trained through it
    with torch.no_grad():
        target = teacher.loss_fn.logits(teacher.model(images))
    assert torch.allclose(got, ban_loss(student.loss_fn.logits(codes), target, 2.0))
    # embedding-level distillation adds the mean squared distance to the teacher's codes
    recipe.code_weight = 0.5
    with_codes = recipe.objective(teacher)(Trainer, images, codes, labels)
    with torch.no_grad():
        teacher_codes = teacher.model(images)
    mse = sum(float((a - b) ** 2) for ra, rb in zip(codes.tolist(), teacher_codes.tolist(),
                                                    strict=True) for a, b in zip(ra, rb,
                                                                                 strict=True))
    assert with_codes.item() == pytest.approx(got.item() + 0.5 * mse / codes.numel(), rel=1e-5)


def test_a_recipe_killed_in_generation_two_resumes_to_the_same_result(tmp_path):
    class Crash(Exception):
        pass

    def crash(trainer, epoch, step):
        if trainer.run_dir.name == "gen-2" and (epoch, step) == (1, 2):
            raise Crash

    cfg = load_config(recipe_config(tmp_path, loss="ban+l"))
    straight = BornAgain(cfg, tmp_path / "straight", progress=False, **cfg.recipe.args).run()
    with pytest.raises(Crash):
        BornAgain(cfg, tmp_path / "crashed", progress=False, callbacks=[crash],
                  **cfg.recipe.args).run()
    with pytest.raises(CheckpointError, match="--resume"):
        BornAgain(cfg, tmp_path / "crashed", progress=False, **cfg.recipe.args).run()
    resumed = BornAgain(cfg, tmp_path / "crashed", progress=False,
                        **cfg.recipe.args).run(resume=True)
    for k in (1, 2):
        a = load_checkpoint(tmp_path / "straight" / f"gen-{k}" / CHECKPOINT)
        b = load_checkpoint(tmp_path / "crashed" / f"gen-{k}" / CHECKPOINT)
        for part in ("model", "loss"):
            for key in a[part]:
                assert torch.equal(a[part][key], b[part][key]), (k, part, key)
    assert straight["generations"] == resumed["generations"]


def test_bad_recipe_configs(tmp_path):
    for args, word in (({"generations": 1}, "generations"), ({"loss": "kd"}, "loss"),
                       ({"loss": "dkpp", "temperature": 2.0}, "temperature"),
                       ({"nope": 1}, "nope")):
        with pytest.raises(ConfigError, match=word):
            cfg = load_config(recipe_config(tmp_path, **args))
            BornAgain(cfg, tmp_path / "r", **cfg.recipe.args)
    with pytest.raises(ConfigError, match="recipe.name"):
        load_config(tiny_config(tmp_path, recipe={"name": "nope"}))
    cfg = load_config(tiny_config(tmp_path, loss={"name": "dpsh", "args": {}},
                                  recipe={"name": "ban"}))
    with pytest.raises(ConfigError, match="logits"):
        BornAgain(cfg, tmp_path / "r", **cfg.recipe.args)

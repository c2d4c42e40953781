"""Tests for hashlab.data.learned_augment: the Gumbel gate, the learned affine and thin-plate-spline
warps, the adversarial control loss, the fixed random warps, and the trainer integration
(``data.augment.learned``: training, exact resume, the figure, config errors)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from hashlab.config import AugmentConfig, LearnedAugmentConfig, load_config
from hashlab.data.augment import BatchAugment
from hashlab.data.learned_augment import (
    AffineWarp,
    LearnedAugmentor,
    LearnedAugmentTraining,
    RandomAffine,
    RandomElastic,
    TPSWarp,
    adversarial_control_loss,
    build_batch_augment,
    control_points,
    gumbel_gate,
    gumbel_noise,
    temperature,
    tps_grid,
    tps_sampling_matrix,
    true_class_agreement,
    warp_affine,
    warp_tps,
)
from hashlab.errors import ConfigError
from hashlab.train.engine import CHECKPOINT, Trainer, load_checkpoint
from tests.conftest import assert_crash_resume_is_exact, tiny_config


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ gate
LOGITS = [[0.3, -1.2, 2.0, 0.1], [1.5, 1.4, -0.3, 0.0], [-2.0, 0.5, 0.4, 0.6]]
NOISE = [[0.9, 3.5, -0.4, 0.2], [-0.1, 0.3, 1.7, -0.5], [1.1, -0.2, 0.0, 0.4]]


def test_gumbel_gate_hard_is_argmax_and_soft_is_tempered_softmax():
    logits, noise, tau = torch.tensor(LOGITS), torch.tensor(NOISE), 0.7
    hard = gumbel_gate(logits, tau, noise=noise, hard=True)
    soft = gumbel_gate(logits, tau, noise=noise, hard=False)
    for i, (row, g) in enumerate(zip(LOGITS, NOISE, strict=True)):
        z = [a + b for a, b in zip(row, g, strict=True)]
        best = max(range(len(z)), key=lambda k: z[k])
        assert hard[i].tolist() == [1.0 if k == best else 0.0 for k in range(len(z))]
        e = [math.exp(v / tau) for v in z]
        assert soft[i].tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-6)
    # the noise changes the choice of row 0 (argmax of the logits alone is 2, with G it is 1)
    assert hard[0].argmax() == 1 and logits[0].argmax() == 2


def test_gumbel_gate_hard_sample_has_the_soft_gradient():
    weights = torch.tensor([[1.0, -2.0, 0.5, 3.0]] * 3)
    grads = []
    for hard in (True, False):
        logits = torch.tensor(LOGITS, requires_grad=True)
        (gumbel_gate(logits, 0.5, noise=torch.tensor(NOISE), hard=hard) * weights).sum().backward()
        grads.append(logits.grad)
    assert torch.allclose(grads[0], grads[1]) and grads[0].abs().sum() > 0


def test_gumbel_noise_is_seeded_and_standard_gumbel():
    a, b = gumbel_noise((4, 3), gen(5)), gumbel_noise((4, 3), gen(5))
    assert torch.equal(a, b) and not torch.equal(a, gumbel_noise((4, 3), gen(6)))
    u = torch.rand(4, 3, generator=gen(5))
    assert torch.allclose(a, -torch.log(-torch.log(u)))
    drawn = gumbel_gate(torch.zeros(2, 3), 1.0, generator=gen(5))
    fixed = gumbel_gate(torch.zeros(2, 3), 1.0, noise=gumbel_noise((2, 3), gen(5)))
    assert torch.equal(drawn, fixed)


def test_temperature_anneals_geometrically_from_tau0_to_tau_min():
    taus = [temperature(s, 5, 2.0, 0.125) for s in range(5)]
    assert taus[0] == pytest.approx(2.0) and taus[-1] == pytest.approx(0.125)
    assert taus[2] == pytest.approx(math.sqrt(2.0 * 0.125))  # the middle step: geometric mean
    assert all(a > b for a, b in zip(taus, taus[1:], strict=False))


# ------------------------------------------------------------------------------------ warps
def test_warp_affine_translation_by_one_pixel():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    theta = torch.tensor([[1.0, 0.0, 2 / 6], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    y = warp_affine(x, theta)
    assert torch.allclose(y[..., :-1], x[..., 1:], atol=1e-4)  # output column j reads j + 1
    assert torch.allclose(y[..., -1], x[..., -1], atol=1e-4)  # border padding


def test_affine_warp_starts_at_identity_and_has_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 10, 7)
    warp = AffineWarp(2, scale=0.3)
    y = warp(x)
    assert torch.allclose(y, x, atol=1e-5)
    (y * torch.randn_like(y)).sum().backward()
    assert warp.loc.out.weight.grad.abs().sum() > 0 and warp.loc.out.bias.grad.abs().sum() > 0
    with torch.no_grad():  # bounded: every parameter within ±scale of the identity
        warp.loc.out.bias.fill_(50.0)
    offset = warp.theta(x) - torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert offset.abs().max() <= 0.3 + 1e-6 and offset.abs().max() > 0.29


@pytest.mark.parametrize("layout, points, size", [("grid", 4, (9, 9)), ("edges", 5, (7, 12))])
def test_tps_warp_with_zero_displacement_is_identity(layout, points, size):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    warp = TPSWarp(3, points, layout, scale=0.2)
    assert warp.control.shape == ((points * points, 2) if layout == "grid" else (2 * points, 2))
    assert torch.allclose(warp(x), x, atol=1e-5)


def test_tps_reproduces_affine_maps_and_interpolates_control_points():
    control = control_points(3, "grid")
    a = torch.tensor([[1.1, 0.2], [-0.1, 0.9]], dtype=torch.float64)
    b = torch.tensor([0.05, -0.1], dtype=torch.float64)
    matrix = tps_sampling_matrix(control, 9, 9)
    grid = tps_grid(matrix, (control @ a.T + b)[None], 9, 9)
    theta = torch.cat([a, b[:, None]], 1)[None]
    expected = torch.nn.functional.affine_grid(theta, [1, 1, 9, 9], align_corners=False)
    assert torch.allclose(grid, expected, atol=1e-10)
    # the spline passes through the displaced control points: (0, 0) is pixel (4, 4)'s centre
    targets = control + 0.2 * torch.randn(control.shape, generator=gen(0), dtype=torch.float64)
    grid = tps_grid(matrix, targets[None], 9, 9)
    assert torch.allclose(grid[0, 4, 4], targets[4], atol=1e-10)


def test_tps_displacement_moves_the_control_point_content():
    x = torch.randn(1, 1, 9, 9, generator=gen(2))
    warp = TPSWarp(1, 3, "grid", scale=0.6)
    delta = 4 / 9  # two pixels to the right, in normalised units
    with torch.no_grad():
        bias = torch.zeros(9, 2)
        bias[4, 0] = math.atanh(delta / 0.6)  # only the centre control point moves
        warp.loc.out.bias.copy_(bias.view(-1))
    with torch.no_grad():
        y = warp(x)
    assert float(y[0, 0, 4, 4]) == pytest.approx(float(x[0, 0, 4, 6]), abs=1e-5)
    displacement = torch.zeros(1, 9, 2)
    displacement[0, 4, 0] = delta
    assert torch.allclose(y, warp_tps(x, warp.control, displacement), atol=1e-6)
    assert not torch.allclose(y, x, atol=1e-2)


def test_learned_augmentor_choice_follows_the_gate_and_starts_at_identity():
    torch.manual_seed(3)
    x = torch.randn(5, 1, 8, 8)
    aug = LearnedAugmentor(1, ("identity", "affine", "tps"))
    with torch.no_grad():
        aug.gate.out.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    noise = gumbel_noise((5, 3), gen(4))
    y, choice = aug(x, tau=0.5, noise=noise)
    assert choice.tolist() == (torch.tensor([0.0, 1.0, -1.0]) + noise).argmax(1).tolist()
    assert y.shape == x.shape and torch.allclose(y, x, atol=1e-5)  # every warp starts at I
    with pytest.raises(ValueError, match="transforms"):
        LearnedAugmentor(1, ("affine", "shear"))


# ------------------------------------------------------------------ adversarial control loss
def test_adversarial_control_loss_per_sample_matches_the_formula():
    aug, orig = [0.9, 2.5, 0.2], [0.5, 1.0, 0.3]
    probs = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    labels = [0, 2, 1]
    expected = []
    for i in range(3):
        alpha = max(1.0, math.exp(probs[i][labels[i]]))
        expected.append(abs(1 - math.exp(aug[i] - alpha * orig[i])))
    onehot = torch.eye(3)[labels]
    f64 = {"dtype": torch.float64}
    got = adversarial_control_loss(torch.tensor(aug, **f64), torch.tensor(orig, **f64),
                                   torch.tensor(probs, **f64), onehot.double())
    assert float(got) == pytest.approx(sum(expected) / 3, rel=1e-9)


def test_adversarial_control_loss_batch_mean_and_alpha_floor():
    # scalar (batch-mean) losses: alpha from the mean agreement; negative agreement: alpha = 1
    f64 = {"dtype": torch.float64}
    probs = torch.tensor([[0.6, 0.4], [0.2, 0.8]], **f64)
    onehot = torch.tensor([[1.0, 0], [1.0, 0]], **f64)
    aug, orig = torch.tensor(1.3, **f64), torch.tensor(0.8, **f64)
    alpha = math.exp((0.6 + 0.2) / 2)
    got = adversarial_control_loss(aug, orig, probs, onehot)
    assert float(got) == pytest.approx(abs(1 - math.exp(1.3 - alpha * 0.8)), rel=1e-9)
    got = adversarial_control_loss(aug, orig, -probs, onehot)
    assert float(got) == pytest.approx(abs(1 - math.exp(1.3 - 0.8)), rel=1e-9)


class _WithLogits(nn.Module):
    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


def test_true_class_agreement_softmax_and_fallback():
    codes = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 3.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([1, -1, 0])  # the second image's category is hidden
    probs, onehot = true_class_agreement(_WithLogits(), codes, labels, torch.tensor(0.3))
    assert torch.allclose(probs, torch.softmax(codes[[0, 2]], 1))
    assert onehot.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    probs, onehot = true_class_agreement(nn.Identity(), codes, labels, torch.tensor(0.3))
    assert float((probs * onehot).sum()) == pytest.approx(math.exp(-0.3))


def test_augmentor_step_moves_towards_harder_images():
    torch.manual_seed(0)
    training = LearnedAugmentTraining(LearnedAugmentConfig(lr=0.05), 1, total_steps=10, seed=0)
    before = {k: v.clone() for k, v in training.augmentor.state_dict().items()}
    x = torch.randn(8, 1, 8, 8)
    target = torch.randn(8, 1, 8, 8)
    _, augmented = training.augment(x, gen(0), 0)
    loss_aug = ((augmented - target) ** 2).mean()
    loss_orig = ((x - target) ** 2).mean()
    value = training.step(loss_aug, loss_orig, torch.ones(1, 1), torch.ones(1, 1))
    alpha = math.e  # agreement 1
    assert value == pytest.approx(abs(1 - math.exp(float(loss_orig) * (1 - alpha))), rel=1e-4)
    after = training.augmentor.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------- fixed baselines
@pytest.mark.parametrize("make", [RandomAffine, RandomElastic])
def test_random_warps_are_seeded_shape_preserving_and_off_at_zero(make):
    x = torch.randn(6, 3, 9, 11, generator=gen(0))
    t = make(0.2)
    a, b, c = t(x, gen(1)), t(x, gen(1)), t(x, gen(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, x, atol=1e-3)
    off = make(0.0)
    assert not off.active and off(x, gen(1)) is x


def test_random_affine_draws_theta_from_the_generator():
    x = torch.randn(4, 1, 8, 8, generator=gen(0))
    offset = 0.3 * (2 * torch.rand(4, 6, generator=gen(9)) - 1)
    theta = (torch.tensor([1.0, 0, 0, 0, 1.0, 0]) + offset).view(4, 2, 3)
    assert torch.equal(RandomAffine(0.3)(x, gen(9)), warp_affine(x, theta))


def test_build_batch_augment_is_plain_batch_augment_when_new_options_are_off():
    config = AugmentConfig(hflip=True, crop_padding=2)
    augment = build_batch_augment(config)
    assert type(augment) is BatchAugment
    x = torch.randn(5, 1, 8, 8, generator=gen(0))
    assert torch.equal(augment(x, gen(3)), BatchAugment(config)(x, gen(3)))
    composed = build_batch_augment(AugmentConfig(hflip=True, crop_padding=2, affine=0.1,
                                                 elastic=0.1))
    g = gen(3)
    expected = RandomElastic(0.1)(RandomAffine(0.1)(BatchAugment(config)(x, g), g), g)
    assert torch.equal(composed(x, gen(3)), expected)


# --------------------------------------------------------------------------- trainer
LEARNED = {"probability": 0.75, "lr": 0.01, "tau0": 1.0, "tau_min": 0.2}


def _learned_config(tmp_path, **learned):
    return load_config(tiny_config(
        tmp_path, data={"augment": {"crop_padding": 1, "learned": {**LEARNED, **learned}}},
        train={"epochs": 2, "batch_size": 16, "max_batches_per_epoch": 3, "device": "cpu"}))


def test_trainer_trains_the_augmentor_and_resumes_exactly(tmp_path):
    cfg = _learned_config(tmp_path)
    trainer = Trainer(cfg, tmp_path / "straight", progress=False)
    initial = {k: v.clone() for k, v in trainer.learned_augment.augmentor.state_dict().items()}
    trainer.fit()
    run = tmp_path / "straight"
    assert (run / "augmentations.png").stat().st_size > 0
    state = load_checkpoint(run / CHECKPOINT)
    trained = state["augmentor"]["augmentor"]
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    log = json.loads((run / "metrics.json").read_text())["learned_augment"]
    assert [e["epoch"] for e in log] == [1, 2] and log[-1]["tau"] == pytest.approx(0.2)
    assert sum(log[0]["chosen"].values()) == pytest.approx(1.0)

    assert_crash_resume_is_exact(cfg, run, tmp_path / "crashed", crash_at=(1, 1))
    resumed = load_checkpoint(tmp_path / "crashed" / CHECKPOINT)["augmentor"]
    for key, value in trained.items():
        assert torch.equal(value, resumed["augmentor"][key]), key
    assert resumed["log"] == state["augmentor"]["log"]


def test_trainer_without_learned_augment_has_no_augmentor(tmp_path):
    cfg = load_config(tiny_config(
        tmp_path, data={"augment": {"affine": 0.1, "elastic": 0.05}},
        train={"epochs": 1, "batch_size": 32, "max_batches_per_epoch": 2, "device": "cpu"},
        scheduler={"name": "cosine"}))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.learned_augment is None and trainer.augment.active
    trainer.fit()
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert "augmentor" not in state and not (tmp_path / "run" / "augmentations.png").exists()


@pytest.mark.parametrize("augment, key", [
    ({"affine": -0.1}, "data.augment.affine"),
    ({"elastic": 1.5}, "data.augment.elastic"),
    ({"learned": {"probability": 0}}, "data.augment.learned.probability"),
    ({"learned": {"lr": 0}}, "data.augment.learned.lr"),
    ({"learned": {"tau0": 0.5, "tau_min": 1.0}}, "data.augment.learned.tau_min"),
    ({"learned": {"tps_points": 1}}, "data.augment.learned.tps_points"),
    ({"learned": {"tps_layout": "ring"}}, "data.augment.learned.tps_layout"),
    ({"learned": {"transforms": []}}, "data.augment.learned.transforms"),
    ({"learned": {"transforms": ["identity"]}}, "data.augment.learned.transforms"),
    ({"learned": {"transforms": ["affine", "affine"]}}, "data.augment.learned.transforms"),
    ({"learned": {"transforms": ["shear"]}}, "data.augment.learned.transforms"),
    ({"learned": {"affine_scale": 2.0}}, "data.augment.learned.affine_scale"),
    ({"learned": {"width": 0}}, "data.augment.learned.width"),
    ({"learned": {"temperature": 1.0}}, "data.augment.learned.temperature"),
])
def test_bad_augment_values_name_the_key(augment, key):
    with pytest.raises(ConfigError) as info:
        load_config({"data": {"augment": augment}})
    assert str(info.value).startswith(key)

"""Cross-modal hashing (hashlab.crossmodal): DCMH's objective against a loop transcription, the
code update, AADAH's attention split and adversarial step, the generic trainer (learning,
exact resume, model.pt), configs."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hashlab.crossmodal import (
    CROSSMODAL_METHODS,
    CrossModalRun,
    CrossModalTrainer,
    load_crossmodal_config,
)
from hashlab.crossmodal.aadah import AADAH, FeatureAttention, similarity_loss
from hashlab.crossmodal.base import cross_modal_similarity
from hashlab.crossmodal.dcmh import DCMH, dcmh_batch_loss, dcmh_objective, update_codes
from hashlab.crossmodal.towers import CrossModalNet, TextTower, split_features
from hashlab.crossmodal.trainer import build_net, lr_factor
from hashlab.data.arrays import ArrayDataset
from hashlab.data.paired import PairedData
from hashlab.errors import CheckpointError, ConfigError
from hashlab.eval.metrics import retrieval_metrics
from hashlab.index.codes import pack_bits
from hashlab.models.backbones import SmallCNN

SRC = Path(__file__).resolve().parents[1] / "src" / "hashlab"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one intra-op thread beats two on a busy 2-core machine (the
    previous setting is restored for the other test modules)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ data
def synthetic_paired(n: int, seed: int, num_labels: int = 4, size: int = 8, vocab: int = 24
                     ) -> PairedData:
    """Items with 1-2 of ``num_labels`` labels; an image is the sum of its labels' fixed random
    templates plus noise, a text has each of its labels' 4 words with probability 0.6 plus
    random noise words. Templates and words are the same for every ``seed``."""
    fixed = np.random.default_rng(123)
    templates = fixed.random((num_labels, size, size)) > 0.7
    words = fixed.permutation(vocab)[: num_labels * 4].reshape(num_labels, 4)
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, num_labels), np.uint8)
    first = rng.integers(0, num_labels, n)
    labels[np.arange(n), first] = 1
    extra = np.flatnonzero(rng.random(n) < 0.3)
    labels[extra, rng.integers(0, num_labels, len(extra))] = 1
    pixels = rng.normal(60, 30, (n, size * size)) + 120 * (
        labels.astype(float) @ templates.reshape(num_labels, -1))
    images = np.clip(pixels, 0, 255).astype(np.uint8).reshape(n, size, size)
    texts = (rng.random((n, vocab)) < 0.05).astype(np.float32)
    for label in range(num_labels):
        rows = np.flatnonzero(labels[:, label])
        texts[np.ix_(rows, words[label])] += rng.random((len(rows), 4)) < 0.6
    return PairedData(ArrayDataset(images, first, mean=0.3, std=0.3), texts, labels,
                      [f"w{i}" for i in range(vocab)], [f"l{i}" for i in range(num_labels)])


def config_dict(tmp_path: Path, method_name: str = "dcmh", **sections: object) -> dict:
    cfg = {
        "name": f"cm-{method_name}", "seed": 0, "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "synthetic"},
        "image": {"backbone": "small-cnn", "backbone_args": {"width": 4, "feature_dim": 32}},
        "text": {"hidden": [32], "feature_dim": 32, "dropout": 0.0},
        "dim": 16, "method": {"name": method_name},
        "optim": {"name": "adam", "lr": 2e-2},
        "train": {"epochs": 4, "batch_size": 32, "device": "cpu"},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value  # type: ignore[dict-item]
    return cfg


# ------------------------------------------------------------------------------ DCMH objective
def _loop_loss(codes, idx, own, other, S_full, B, gamma, eta, image_batch):
    """J_x (a batch of images) or J_y (a batch of texts), transcribed term by term in the
    paper's indices: Σ over image i and text j of log(1 + e^Θ_ij) − S_ij Θ_ij with
    Θ_ij = ½ F_iᵀ G_j, where the batch's own rows are the live ``codes``."""
    b, n, k = codes.shape[0], other.shape[0], other.shape[1]
    total = codes.new_zeros(())
    for a, mine in enumerate(idx.tolist()):
        for theirs in range(n):
            i, j = (mine, theirs) if image_batch else (theirs, mine)
            F_i = codes[a] if image_batch else other[i]
            G_j = other[j] if image_batch else codes[a]
            theta = 0.5 * sum(F_i[c] * G_j[c] for c in range(k))
            total = total + torch.log(1 + torch.exp(theta)) - S_full[i, j] * theta
        for c in range(k):
            total = total + gamma * (B[mine, c] - codes[a, c]) ** 2
    rows = {m: a for a, m in enumerate(idx.tolist())}
    for c in range(k):
        col = sum(codes[rows[m], c] if m in rows else own[m, c] for m in range(n))
        total = total + eta * col ** 2
    return total / (b * n)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_dcmh_batch_loss_equals_the_loop_transcription(modality):
    g = torch.Generator().manual_seed(3)
    n, b, k, gamma, eta = 7, 3, 5, 0.7, 0.3
    labels = (torch.rand(n, 4, generator=g) < 0.35).long()
    method = DCMH(dim=k, gamma=gamma, eta=eta)
    method.bind(labels, torch.Generator().manual_seed(0))
    method.F = torch.randn(n, k, generator=g, dtype=torch.float64)
    method.G = torch.randn(n, k, generator=g, dtype=torch.float64)
    method.B = torch.where(torch.rand(n, k, generator=g) > 0.5, 1.0, -1.0).double()
    idx = torch.tensor([5, 0, 3])
    codes = torch.tanh(torch.randn(b, k, generator=g, dtype=torch.float64)).requires_grad_()
    S_full = cross_modal_similarity(labels, torch.arange(n)).double()
    assert torch.equal(S_full, S_full.T) and 0 < S_full.mean() < 1

    loss = method.batch_loss(modality, codes, idx)
    (grad,) = torch.autograd.grad(loss, codes)
    ref_codes = codes.detach().clone().requires_grad_()
    own, other = (method.F, method.G) if modality == "image" else (method.G, method.F)
    ref = _loop_loss(ref_codes, idx, own, other, S_full, method.B, gamma, eta,
                     image_batch=modality == "image")
    (ref_grad,) = torch.autograd.grad(ref, ref_codes)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_dcmh_batch_gradient_is_the_whole_objectives_over_b_n():
    """The batch loss holds every term of J that depends on the batch: its gradient is
    ∂J/∂F_batch / (b n) (the authors' normalisation)."""
    g = torch.Generator().manual_seed(1)
    n, k, idx = 9, 4, torch.tensor([2, 7, 4, 0])
    F = torch.tanh(torch.randn(n, k, generator=g, dtype=torch.float64))
    G = torch.tanh(torch.randn(n, k, generator=g, dtype=torch.float64))
    B = update_codes(F, G)
    S = (torch.rand(n, n, generator=g) < 0.4).double()
    S = torch.maximum(S, S.T)
    F_b = F[idx].clone().requires_grad_()
    batch = dcmh_batch_loss(F_b, idx, F, G, S[idx], B, 0.5, 2.0)
    F_full = F.clone().requires_grad_()
    whole = dcmh_objective(F_full, G, B, S, 0.5, 2.0)
    torch.testing.assert_close(torch.autograd.grad(batch, F_b)[0],
                               torch.autograd.grad(whole, F_full)[0][idx] / (len(idx) * n))


def test_update_codes_is_the_sign_and_minimises_the_code_terms():
    g = torch.Generator().manual_seed(0)
    F, G = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    for gamma in (0.1, 1.0, 7.0):
        assert torch.equal(update_codes(F, G, gamma), torch.sign(gamma * (F + G)))
    assert update_codes(torch.zeros(1, 2), torch.zeros(1, 2)).tolist() == [[-1.0, -1.0]]
    with pytest.raises(ValueError, match="gamma"):
        update_codes(F, G, 0.0)
    # brute force over every B in {-1, +1}^{2x3}
    F, G = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    gamma = 0.8

    def code_terms(B):
        return gamma * ((B - F).pow(2).sum() + (B - G).pow(2).sum())

    best = min(code_terms(torch.tensor(bits, dtype=torch.float32).reshape(2, 3))
               for bits in itertools.product((-1.0, 1.0), repeat=6))
    torch.testing.assert_close(code_terms(update_codes(F, G, gamma)), best)


# ------------------------------------------------------------------------------ AADAH
def test_attention_masks_are_in_the_unit_interval_and_the_parts_add_up_exactly():
    torch.manual_seed(0)
    attention = FeatureAttention(64)
    features = torch.relu(torch.randn(500, 64) * 5)
    mask = attention(features)
    assert mask.shape == features.shape and mask.min() >= 0 and mask.max() <= 1
    attended, unattended = split_features(features, mask)
    assert torch.equal(attended + unattended, features)  # exactly, not up to rounding
    torch.testing.assert_close(attended, mask * features)
    torch.testing.assert_close(unattended, (1 - mask) * features)
    # the retrieval codes are the attended codes
    net = CrossModalNet(SmallCNN(1, 4, 16), TextTower(24, [16], 16), 8,
                        FeatureAttention(16), FeatureAttention(16))
    bows = torch.rand(5, 24)
    f = net.features("text", bows)
    a, _ = split_features(f, net.attention["text"](f))
    assert torch.equal(net.hash_input("text", f), a)
    assert np.array_equal(net.encode("text", bows), pack_bits(net.hashes["text"]
                                                              .pre_activation(a) > 0))


@pytest.fixture()
def aadah_setup():
    torch.manual_seed(0)
    data = synthetic_paired(48, seed=0)
    cfg = load_crossmodal_config(config_dict(Path("/nonexistent"), "aadah"))
    net = build_net(cfg, 1, data.vocabulary_size)
    method = AADAH(dim=cfg.dim)
    method.bind(torch.as_tensor(data.labels), torch.Generator().manual_seed(0))
    optimizers = {name: torch.optim.SGD(params, lr=0.5 * factor)
                  for name, (params, factor) in method.param_groups(net).items()}
    return data, net, method, optimizers


@pytest.mark.parametrize("modality", ["image", "text"])
def test_adversarial_step_moves_each_objective_the_intended_way(aadah_setup, modality):
    data, net, method, optimizers = aadah_setup
    idx = torch.arange(16)
    x = data.images.get_batch(idx)[0] if modality == "image" else data.text_batch(idx.numpy())
    S = method.similarity(idx)
    other = method.memory(modality)[1]

    def hashing_loss(n):
        with torch.no_grad():
            return method.hashing_loss(n, modality, n.features(modality, x), idx, S)[0]

    f = net.features(modality, x).detach()  # the batch's features before any step

    def unattended(n):
        with torch.no_grad():
            return similarity_loss(method.codes(n, modality, f)[1], other, S)

    def attention_objective(n):
        with torch.no_grad():
            return method.attention_loss(n, modality, f, S)[0]

    states = [copy.deepcopy((net, method, optimizers)) for _ in range(2)]
    before = hashing_loss(net)
    (net_h, m_h, opt_h), (net_a, m_a, opt_a) = states
    logs_h = m_h.adversarial_step(net_h, modality, x, idx, opt_h, attention_step=False)
    logs_a = m_a.adversarial_step(net_a, modality, x, idx, opt_a, attention_step=True)
    # the hashing step lowers the hashing objective; without an attention step nothing else
    assert hashing_loss(net_h) < before
    assert "attention_loss" not in logs_h and "attention_loss" in logs_a
    assert torch.equal(m_h.F, m_a.F) and torch.equal(m_h.G, m_a.G)  # same memory refresh
    # the attention step (same hashing step before it) raises the unattended similarity loss
    # and lowers the attention objective, at the batch's features
    assert unattended(net_a) > unattended(net_h)
    assert attention_objective(net_a) < attention_objective(net_h)
    # ... and it changed only the attention module of this modality
    params_h = dict(net_h.named_parameters())
    changed = {k for k, v in net_a.named_parameters() if not torch.equal(v, params_h[k])}
    assert changed and all(k.startswith(f"attention.{modality}.") for k in changed)


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """DCMH and AADAH trained on the same synthetic training set (4 epochs, 128 items)."""
    tmp = tmp_path_factory.mktemp("crossmodal")
    data = synthetic_paired(128, seed=0)
    runs = {}
    for method in ("dcmh", "aadah"):
        cfg = load_crossmodal_config(config_dict(tmp, method))
        trainer = CrossModalTrainer(cfg, progress=False, data=data)
        trainer.fit()
        runs[method] = trainer
    return runs


def _cross_modal_map(run: CrossModalRun, test: PairedData) -> tuple[float, float, float]:
    query, database = test.subset(np.arange(60)), test.subset(np.arange(60, len(test)))
    kw = {"kind": "binary", "nbits": run.dim, "pr_curve": False}
    i2t = retrieval_metrics(run.encode_images(query), run.encode_texts(database),
                            query.labels, database.labels, **kw)["mAP@all"]
    t2i = retrieval_metrics(run.encode_texts(query), run.encode_images(database),
                            query.labels, database.labels, **kw)["mAP@all"]
    chance = float((query.labels.astype(float) @ database.labels.T.astype(float) > 0).mean())
    return i2t, t2i, chance


@pytest.mark.parametrize("method", ["dcmh", "aadah"])
def test_trainer_learns_cross_modal_retrieval(trained, method):
    trainer = trained[method]
    run = CrossModalRun(trainer.run_dir)
    i2t, t2i, chance = _cross_modal_map(run, synthetic_paired(180, seed=1))
    assert chance < 0.5
    assert i2t > chance + 0.2 and t2i > chance + 0.2, (i2t, t2i, chance)
    history = json.loads((trainer.run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(math.isfinite(h["image_loss"]) and math.isfinite(h["text_loss"]) for h in history)
    assert (trainer.run_dir / "curve.png").stat().st_size > 0
    assert (trainer.run_dir / "config.yaml").is_file()
    if method == "aadah":
        assert {"image_unattended", "text_attention_loss", "image_mask_mean"} <= history[-1].keys()


@pytest.mark.parametrize("method", ["dcmh", "aadah"])
def test_model_reloads_and_encodes_identically(trained, method):
    trainer = trained[method]
    run = CrossModalRun(trainer.run_dir)
    data = synthetic_paired(20, seed=2)
    images, _ = data.images.get_batch(torch.arange(20))
    bows = data.text_batch(np.arange(20))
    assert np.array_equal(run.encode_images(data), trainer.net.encode("image", images))
    assert np.array_equal(run.encode_images(images), run.encode_images(data.images))
    assert np.array_equal(run.encode_texts(data), trainer.net.encode("text", bows))
    assert np.array_equal(run.encode_texts(bows.numpy()), run.encode_texts(data))
    floats = run.image_codes(data)
    assert floats.dtype == np.float32 and floats.shape == (20, 16)
    assert np.array_equal(pack_bits(floats > 0), run.encode_images(data))
    assert run.encode_texts(data).shape == (20, 2) and run.encode_texts(data).dtype == np.uint8
    assert run.vocabulary == data.vocabulary and run.image_shape == (1, 8, 8)
    assert set(run.net.attention) == ({"image", "text"} if method == "aadah" else set())
    with pytest.raises(ValueError, match="bags of words"):
        run.encode_texts(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="images"):
        run.encode_images(torch.zeros(2, 1, 10, 10))


def test_resume_after_a_crash_mid_epoch_is_exact(tmp_path):
    data = synthetic_paired(64, seed=0)
    sections = {"train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
                "text": {"hidden": [16], "feature_dim": 16, "dropout": 0.3},
                "method": {"name": "aadah", "args": {"attention_every": 2}}}
    cfg = load_crossmodal_config(config_dict(tmp_path, "aadah", **sections))
    whole = CrossModalTrainer(cfg, tmp_path / "whole", progress=False, data=data)
    whole.fit()

    class Crash(Exception):
        pass

    def crash(trainer, epoch, step):
        if epoch == 1 and step == 5:  # mid-epoch 2, in the text pass
            raise Crash

    crashed = CrossModalTrainer(cfg, tmp_path / "crashed", progress=False, data=data,
                                callbacks=[crash])
    with pytest.raises(Crash):
        crashed.fit()
    with pytest.raises(CheckpointError, match="already holds a run"):
        CrossModalTrainer(cfg, tmp_path / "crashed", progress=False, data=data).fit()
    resumed = CrossModalTrainer(cfg, tmp_path / "crashed", progress=False, data=data)
    resumed.fit(resume=True)
    a, b = whole.state_dict(), resumed.state_dict()
    for part in ("net", "method"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert a["optimizers"].keys() == b["optimizers"].keys() == {
        "image", "text", "image-attention", "text-attention"}
    for name in a["optimizers"]:
        for pa, pb in zip(a["optimizers"][name]["state"].values(),
                          b["optimizers"][name]["state"].values(), strict=True):
            assert all(torch.equal(pa[s], pb[s]) for s in pa)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b["history"]]
    # another config cannot resume this run
    other = load_crossmodal_config(config_dict(tmp_path, "aadah", **sections,
                                               optim={"lr": 0.5}))
    with pytest.raises(CheckpointError, match="optim.lr"):
        CrossModalTrainer(other, tmp_path / "crashed", progress=False, data=data).fit(
            resume=True)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("change, key", [
    ({"colour": "red"}, "colour: unknown key"),
    ({"dim": 0}, "dim: must be in"),
    ({"text": {"dropout": 1.5}}, "text.dropout"),
    ({"text": {"hidden": [0]}}, r"text.hidden\[0\]"),
    ({"text": {"depth": 2}}, "text.depth: unknown key"),
    ({"method": {"name": "nope"}}, "method.name: unknown cross-modal-method 'nope'"),
    ({"method": {"name": "dcmh", "args": {"bogus": 1}}}, "method.args.bogus"),
    ({"method": {"name": "dcmh", "args": {"gamma": "x"}}}, "method.args.gamma"),
    ({"method": {"name": "dcmh", "args": {"gamma": -1.0}}}, "method.args"),
    ({"method": {"name": "aadah", "args": {"attention_every": 0}}}, "method.args"),
    ({"image": {"backbone": "nope"}}, "image.backbone: unknown backbone"),
    ({"image": {"backbone_args": {"depth": 3}}}, "image.backbone_args.depth"),
    ({"optim": {"lr": 0}}, "optim.lr"),
    ({"optim": {"schedule": "step"}}, "optim.schedule"),
    ({"train": {"batch_size": 1}}, "train.batch_size"),
    ({"train": {"device": "gpu"}}, "train.device"),
    ({"seed": -1}, "seed"),
    ({"name": "a/b"}, "name"),
])
def test_config_errors_name_the_key(tmp_path, change, key):
    cfg = config_dict(tmp_path)
    for section, value in change.items():
        cfg[section] = value if not isinstance(value, dict) else {**cfg.get(section, {}),
                                                                  **value}
    with pytest.raises(ConfigError, match=key):
        load_crossmodal_config(cfg)


def test_shipped_configs_and_overrides(tmp_path):
    for name in ("dcmh", "aadah"):
        cfg = load_crossmodal_config(SRC / "configs" / "fmnist" / f"{name}-64.yaml",
                                     ["train.epochs=2", "method.args.gamma=2"])
        assert cfg.method.name == name and cfg.dim == 64 and cfg.train.epochs == 2
        assert cfg.data.dataset == "fmnist-captions" and cfg.method.args["gamma"] == 2.0
    with pytest.raises(ConfigError, match="config file not found"):
        load_crossmodal_config(tmp_path / "missing.yaml")
    cfg = load_crossmodal_config(config_dict(tmp_path), ["train.batch_size=500"])
    with pytest.raises(ConfigError, match="train.batch_size: 500 is larger"):
        CrossModalTrainer(cfg, progress=False, data=synthetic_paired(40, seed=0))


def test_learning_rate_schedules_and_run_errors(tmp_path):
    for schedule in ("linear", "cosine"):
        assert lr_factor(schedule, 0, 5, 0.1) == 1.0
        assert lr_factor(schedule, 4, 5, 0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 2, 5, 0.1) == pytest.approx(0.55)
    assert lr_factor("constant", 3, 5, 0.1) == lr_factor("linear", 0, 1, 0.1) == 1.0
    with pytest.raises(CheckpointError, match="not found"):
        CrossModalRun(tmp_path)
    torch.save({"model": {}, "config": {}}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="missing net"):
        CrossModalRun(tmp_path)


def test_registry_and_generic_trainer_name_no_method():
    assert {"dcmh", "aadah"} <= set(CROSSMODAL_METHODS.names())
    assert CROSSMODAL_METHODS.get("DCMH") is DCMH and CROSSMODAL_METHODS.get("aadah") is AADAH
    for module in ("trainer.py", "base.py", "towers.py", "config.py", "registry.py"):
        text = (SRC / "crossmodal" / module).read_text().lower()
        assert "aadah" not in text and "import dcmh" not in text and "dcmh(" not in text, module

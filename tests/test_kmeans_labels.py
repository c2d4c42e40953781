"""K-means self-labels (recipe ``kmeans-labels``): the clustering against a brute-force
nearest-centroid oracle, empty clusters forced and re-filled (by hand-computed splits), the
recipe end to end without reading a label (logs checked against the hidden labels), exact
resumption, other losses and code sizes, a folder of unlabelled images, and bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import hashlab.data.registry as data_registry
from hashlab.config import RunConfig, from_dict
from hashlab.encode import TrainedRun
from hashlab.errors import ConfigError, DataError
from hashlab.eval.protocols import evaluate_run
from hashlab.train.engine import CHECKPOINT, FINAL_MODEL, load_checkpoint
from hashlab.train.recipes.kmeans_labels import KMeansLabels, fill_empty_clusters, kmeans_labels
from tests.conftest import tiny_config

TINY = {"rounds": 2, "epochs_per_round": 2, "clusters": 12, "batch_size": 64}


def km_config(tmp_path, train=None, **args):
    return from_dict(RunConfig, tiny_config(
        tmp_path, train={"limit_train_samples": 640, **(train or {})},
        recipe={"name": "kmeans-labels", "args": {**TINY, **args}}))


def make(config, run_dir=None, **kwargs):
    """The recipe as ``hashlab train`` builds it: its args from the config."""
    return KMeansLabels(config, run_dir, progress=False, **config.recipe.args, **kwargs)


def normalised(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny runs gain nothing from a second thread, and on a busy 2-core machine waiting
    for it can cost ten times the work; the setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ clustering
def test_labels_are_the_nearest_centroids_of_the_normalised_features():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 8))
    x = (centres[rng.integers(0, 5, 400)] + 0.4 * rng.normal(size=(400, 8))).astype(np.float32)
    x *= rng.uniform(0.5, 3.0, size=(400, 1)).astype(np.float32)  # lengths must not matter
    labels, centroids, reassigned = kmeans_labels(torch.from_numpy(x), 7, seed=1, iterations=15)
    assert labels.shape == (400,) and labels.dtype == torch.int64
    assert centroids.shape == (7, 8) and reassigned == 0
    xn = normalised(x.astype(np.float64))
    dist = ((xn[:, None, :] - centroids.numpy()[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(labels.numpy(), dist.argmin(1))
    assert set(labels.tolist()) == set(range(7))
    again = kmeans_labels(x, 7, seed=1, iterations=15)
    assert torch.equal(again.labels, labels) and torch.equal(again.centroids, centroids)
    whitened = kmeans_labels(x, 7, seed=1, iterations=15, pca_dim=4)
    assert whitened.centroids.shape == (7, 4)
    with pytest.raises(ValueError, match="k must be"):
        kmeans_labels(x[:5], 6)


def test_fill_empty_clusters_splits_the_largest_at_its_median():
    # six points on a line, all in cluster 0, k = 3: cluster 1 takes the upper half {3, 4, 5};
    # then clusters 0 and 1 are equally large and the lower id (0 = {0, 1, 2}) gives cluster 2
    # its upper ⌊3/2⌋ = 1 point, {2}
    x = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4, 0], [5, 0]], dtype=np.float32)
    labels, centroids, n = fill_empty_clusters(x, np.zeros(6, dtype=np.int64),
                                               np.zeros((3, 2), dtype=np.float32))
    assert n == 2
    assert labels.tolist() == [0, 0, 2, 1, 1, 1]
    assert np.allclose(centroids, [[0.5, 0], [4, 0], [2, 0]])
    # the principal direction of the members decides, whatever the order of the points
    x = np.array([[0, 5], [0, -1], [0, 3], [0, 1]], dtype=np.float32)
    labels, _, _ = fill_empty_clusters(x, np.array([1, 1, 1, 1]), np.zeros((2, 2), np.float32))
    assert labels.tolist() == [0, 1, 0, 1]  # y = 5 and 3 move to the empty cluster 0
    # identical points have no direction: the later half in image order moves
    same = np.ones((5, 3), dtype=np.float32)
    labels, centroids, _ = fill_empty_clusters(same, np.zeros(5), np.zeros((2, 3), np.float32))
    assert labels.tolist() == [0, 0, 0, 1, 1] and np.allclose(centroids, 1)
    # nothing empty: nothing changes
    labels, _, n = fill_empty_clusters(x, np.array([0, 1, 0, 1]), np.zeros((2, 2), np.float32))
    assert n == 0 and labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="a point each"):
        fill_empty_clusters(x, np.zeros(4), np.zeros((5, 2), np.float32))


def test_a_forced_empty_cluster_is_reassigned_so_every_id_is_used():
    # three distinct points, four copies each, six clusters: copies of a point are equally near
    # every centroid, so they all take the same one and at least three clusters come out empty
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(3, 6)).astype(np.float32)
    x = np.repeat(distinct, 4, axis=0)
    labels, centroids, reassigned = kmeans_labels(x, 6, seed=0, iterations=10)
    ids = labels.numpy()
    assert reassigned >= 3
    assert np.bincount(ids, minlength=6).min() >= 1  # every id labels an image
    xn = normalised(x)
    for c in range(6):  # splitting never mixes distinct points, and the centroids follow
        members = xn[ids == c]
        assert np.allclose(members, members[0])
        assert np.allclose(centroids[c].numpy(), members[0], atol=1e-2)


# ------------------------------------------------------------------ the recipe
@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of the tiny recipe, with its summary."""
    tmp = tmp_path_factory.mktemp("straight")
    recipe = make(km_config(tmp), tmp / "run")
    return recipe, recipe.run()


def test_the_recipe_logs_rounds_and_writes_an_ordinary_run(straight):
    recipe, summary = straight
    stages = summary["stages"]
    assert [s["stage"] for s in stages] == ["cluster-1", "train-1", "cluster-2", "train-2"]
    state = load_checkpoint(recipe.run_dir / FINAL_MODEL)
    ids = state["recipe"]["cluster_ids"].numpy()  # the last round's ids
    truth = np.asarray(recipe.dataset.labels)
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    last = stages[2]
    assert last["nmi"] == pytest.approx(normalized_mutual_info_score(truth, ids))
    assert last["ari"] == pytest.approx(adjusted_rand_score(truth, ids))
    sizes = np.bincount(ids, minlength=12)
    assert (last["clusters_min"], last["clusters_max"]) == (sizes.min(), sizes.max())
    assert last["clusters_min"] >= 1 and last["nmi_previous"] is not None
    assert stages[0]["nmi_previous"] is None
    # 640 images in batches of 64, two views: 10 steps per epoch, 2 epochs per round
    assert [s["steps"] for s in stages] == [0, 20, 20, 40]
    assert all(np.isfinite(s["loss"]) and s["consistency"] > 0 for s in stages[1::2])
    assert state["dataset"]["num_classes"] == 12 and state["epochs"] == 4
    run = TrainedRun(recipe.run_dir)
    codes = run.encode("test", progress=False)
    assert codes.bits is not None and codes.float.shape[1] == 16
    result = evaluate_run(run, "retrieval", progress=False)
    assert result["metrics"]["binary"]["mAP@all"] == pytest.approx(summary["mAP@all"])
    assert summary["kind"] == "binary" and summary["mAP@all"] > 0.3  # 10 classes: chance ≈ 0.1
    saved = json.loads((recipe.run_dir / "recipe.json").read_text())
    assert saved["mAP@all"] == summary["mAP@all"]
    assert "cluster-2" in KMeansLabels.summary_table(summary)


def test_training_reads_no_label(straight, tmp_path, monkeypatch):
    """The same run with the training labels scrambled trains the same weights (only the
    logged NMI / ARI change)."""
    original = data_registry.load_dataset

    def scrambled(name, split, **kwargs):
        dataset = original(name, split, **kwargs)
        if split == "train":
            dataset.labels = np.random.default_rng(7).permutation(np.asarray(dataset.labels))
        return dataset

    monkeypatch.setattr(data_registry, "load_dataset", scrambled)
    recipe = make(km_config(tmp_path, evaluate=False), tmp_path / "run")
    summary = recipe.run()
    assert summary["mAP@all"] is None
    a = load_checkpoint(straight[0].run_dir / FINAL_MODEL)
    b = load_checkpoint(tmp_path / "run" / FINAL_MODEL)
    for part in ("model", "loss"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert torch.equal(a["recipe"]["cluster_ids"], b["recipe"]["cluster_ids"])
    assert summary["stages"][2]["nmi"] != straight[1]["stages"][2]["nmi"]


def test_a_killed_recipe_resumes_to_the_uninterrupted_result(straight, tmp_path):
    class Kill(Exception):
        pass

    def kill_after_the_second_clustering(recipe, stage, step):
        if (stage, step) == (2, -1):
            raise Kill

    crashed = make(km_config(tmp_path), tmp_path / "crashed",
                   callbacks=[kill_after_the_second_clustering])
    with pytest.raises(Kill):
        crashed.run()
    assert not (tmp_path / "crashed" / FINAL_MODEL).exists()
    assert load_checkpoint(tmp_path / "crashed" / CHECKPOINT)["stage"] == 3
    make(km_config(tmp_path), tmp_path / "crashed").run(resume=True)
    a = load_checkpoint(straight[0].run_dir / FINAL_MODEL)
    b = load_checkpoint(tmp_path / "crashed" / FINAL_MODEL)
    for part in ("model", "loss"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    logs_a = json.loads((straight[0].run_dir / "recipe.json").read_text())
    logs_b = json.loads((tmp_path / "crashed" / "recipe.json").read_text())
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in logs_a["stages"]]
    assert strip == [{k: v for k, v in s.items() if k != "seconds"} for s in logs_b["stages"]]
    assert logs_a["mAP@all"] == logs_b["mAP@all"]


@pytest.mark.parametrize(("loss", "dim", "args", "validation"), [
    ("csq", 12, {"consistency": "agreement"}, 0.2),
    ("orthohash", 20, {"features": "codes", "consistency_weight": 0.0}, 0.0),
])
def test_other_losses_and_code_sizes_train(tmp_path, loss, dim, args, validation):
    cfg = from_dict(RunConfig, tiny_config(
        tmp_path, model={"dim": dim}, loss={"name": loss, "args": {}},
        train={"limit_train_samples": 300, "max_batches_per_epoch": 2,
               "validation": {"fraction": validation}},
        recipe={"name": "kmeans-labels", "args": {
            **TINY, "rounds": 1, "epochs_per_round": 1, "clusters": 8, "evaluate": False,
            **args}}))
    summary = make(cfg, tmp_path / "run").run()
    train = summary["stages"][1]
    assert train["steps"] == 2 and np.isfinite(train["loss"])
    assert (train["consistency"] == 0) == (args.get("consistency_weight") == 0.0)
    # train.validation: a held-out part scored after each training stage, never trained on
    assert ("val_mAP" in train) == bool(validation) and "val_mAP" not in summary["stages"][0]
    if validation:
        assert 0 < train["val_mAP"] <= 1 and abs(summary["train_images"] - 240) <= 5
    run = TrainedRun(tmp_path / "run")
    assert run.meta["num_classes"] == 8 and run.model.dim == dim


def test_a_folder_of_unlabelled_images_is_hashed(tmp_path):
    from sklearn.datasets import load_digits

    images = (load_digits().images[:48] * 255 / 16).astype(np.uint8)
    flat = tmp_path / "photos"
    flat.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(flat / f"{i:03d}.png")

    def config(root):
        return from_dict(RunConfig, tiny_config(
            tmp_path, data={"dataset": "image-folder", "root": str(root), "image_size": 8},
            train={"batch_size": 16},
            recipe={"name": "kmeans-labels", "args": {"rounds": 1, "epochs_per_round": 1,
                                                      "clusters": 4}}))

    with pytest.raises(DataError, match="no class sub-folders"):
        make(config(flat), tmp_path / "flat")  # image-folder needs one folder level
    nested = tmp_path / "nested"
    (nested / "all").mkdir(parents=True)
    for path in flat.iterdir():
        path.rename(nested / "all" / path.name)
    summary = make(config(nested), tmp_path / "run").run()
    assert summary["mAP@all"] is None and "no classes" in summary["not_evaluated"]
    assert summary["stages"][0]["nmi"] is None  # nothing to compare the clusters with
    codes = TrainedRun(tmp_path / "run").encode("train", progress=False)
    assert codes.bits is not None and len(codes) == 48


@pytest.mark.parametrize(("args", "key"), [
    ({"clusters": 1}, "recipe.args.clusters"),
    ({"clusters": 641}, "recipe.args.clusters"),
    ({"rounds": 0}, "recipe.args.rounds"),
    ({"epochs_per_round": 1.5}, "recipe.args.epochs_per_round"),
    ({"features": "pixels"}, "recipe.args.features"),
    ({"consistency": "mse"}, "recipe.args.consistency"),
    ({"consistency_weight": -1.0}, "recipe.args.consistency_weight"),
    ({"strong_cutout": 1.5}, "recipe.args.strong_cutout"),
    ({"pca_dim": 33}, "recipe.args.pca_dim"),  # the backbone's features have 32 dimensions
    ({"evaluate": "yes"}, "recipe.args.evaluate"),
    ({"batch_size": 1000}, "recipe.args.batch_size"),
])
def test_bad_arguments_are_config_errors(tmp_path, args, key):
    cfg = km_config(tmp_path)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        KMeansLabels(cfg, tmp_path / "run", progress=False, **{**cfg.recipe.args, **args})


def test_configs_the_recipe_cannot_train_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="recipe.args.rouns"):
        from_dict(RunConfig, tiny_config(
            tmp_path, recipe={"name": "kmeans-labels", "args": {"rouns": 3}}))
    with pytest.raises(ConfigError, match="eval.protocol"):
        make(from_dict(RunConfig, tiny_config(
            tmp_path, eval={"protocol": "fmnist-retrieval"},
            recipe={"name": "kmeans-labels", "args": TINY})))
    with pytest.raises(ConfigError, match="takes_indices"):
        make(from_dict(RunConfig, tiny_config(
            tmp_path, loss={"name": "adsh", "args": {}},
            recipe={"name": "kmeans-labels", "args": TINY})))
    with pytest.raises(ConfigError, match="data.semi"):
        make(from_dict(RunConfig, tiny_config(
            tmp_path, data={"semi": {"labels_per_class": 5, "validation": 10}},
            recipe={"name": "kmeans-labels", "args": TINY})))

"""Cross-modal evaluation: both directions' metrics against a brute-force Hamming ranking with
scikit-learn's AP, and the CLI path train → eval on fmnist-captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from hashlab.cli import app
from hashlab.eval.crossmodal import crossmodal_metrics
from hashlab.index.codes import pack_bits
from tests.conftest import needs_fmnist, tiny_config

runner = CliRunner()


def brute_force(q_bits, db_bits, q_labels, db_labels, k=10):
    """mAP@all and P@k: rank by (Hamming distance, database position); relevant = share a
    label (multi-hot) or the same class (1-D)."""
    n = len(db_bits)
    aps, pks = [], []
    for i in range(len(q_bits)):
        d = (db_bits != q_bits[i]).sum(1)
        order = np.lexsort((np.arange(n), d))
        if q_labels.ndim == 2:
            rel = (db_labels[order] & q_labels[i]).any(1)
        else:
            rel = db_labels[order] == q_labels[i]
        aps.append(average_precision_score(rel, -np.arange(n)) if rel.any() else 0.0)
        pks.append(rel[:k].mean())
    return float(np.mean(aps)), float(np.mean(pks))


def test_both_directions_match_brute_force():
    rng = np.random.default_rng(0)
    nq, ndb, bits = 30, 80, 16
    signs = {(s, m): rng.random((n, bits)) < 0.5
             for s, n in (("q", nq), ("db", ndb)) for m in ("image", "text")}
    q_labels = (rng.random((nq, 5)) < 0.3).astype(np.uint8)
    db_labels = (rng.random((ndb, 5)) < 0.3).astype(np.uint8)
    q_classes, db_classes = rng.integers(0, 3, nq), rng.integers(0, 3, ndb)
    metrics = crossmodal_metrics(
        {m: pack_bits(signs["q", m]) for m in ("image", "text")},
        {m: pack_bits(signs["db", m]) for m in ("image", "text")},
        q_labels, db_labels, bits, query_classes=q_classes, database_classes=db_classes,
        topk=(10,))
    assert set(metrics) == {"image_to_text", "text_to_image", "image_to_text_class",
                            "text_to_image_class"}
    for name, qm, dm in (("image_to_text", "image", "text"), ("text_to_image", "text", "image")):
        for key, ql, dl in ((name, q_labels, db_labels), (f"{name}_class", q_classes,
                                                          db_classes)):
            want_map, want_p = brute_force(signs["q", qm], signs["db", dm], ql, dl)
            assert metrics[key]["mAP@all"] == pytest.approx(want_map, abs=1e-9), key
            assert metrics[key]["P@10"] == pytest.approx(want_p, abs=1e-9), key
    # the directions differ: image queries never see the image database
    assert metrics["image_to_text"]["mAP@all"] != metrics["text_to_image"]["mAP@all"]


@pytest.mark.slow
@needs_fmnist
def test_cli_trains_and_evaluates_a_crossmodal_run(tmp_path):
    config = tmp_path / "dcmh.yaml"
    config.write_text(json.dumps({
        "name": "xm", "seed": 0, "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "fmnist-captions", "args": {"n_train": 1000, "n_query": 100}},
        "image": {"backbone": "small-cnn", "backbone_args": {"width": 8, "feature_dim": 32}},
        "text": {"hidden": [64], "feature_dim": 32},
        "dim": 16, "method": {"name": "dcmh", "args": {"eta": 0.01}},
        "optim": {"name": "adam", "lr": 3.0e-3}, "train": {"epochs": 4, "batch_size": 100}}))
    result = runner.invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "xm"
    result = runner.invoke(app, ["eval", str(run), "--protocol", "fmnist-captions",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "eval" / "fmnist-captions.json").read_text())
    assert saved["n_queries"] == 100 and saved["n_database"] == 60_000
    for direction in ("image_to_text", "text_to_image"):
        # chance: 0.45 of the database shares a label with a query (attributes are shared
        # across classes), 0.1 shares its class; four short epochs learn well above both
        assert saved["metrics"][direction]["mAP@all"] > 0.7, direction
        assert saved["metrics"][f"{direction}_class"]["mAP@all"] > 0.18, direction
        assert saved["metrics"][direction]["nbits"] == 16
    assert "text→image" in result.output
    _search_by_text_and_by_image(tmp_path, run)
    # a single-modality protocol on a cross-modal run, and the reverse, are clear errors
    result = runner.invoke(app, ["eval", str(run), "--protocol", "fmnist-retrieval"])
    assert result.exit_code == 2 and "cross-modal run" in result.output
    image_cfg = tmp_path / "image.yaml"
    image_cfg.write_text(json.dumps(tiny_config(tmp_path, train={"epochs": 1})))
    assert runner.invoke(app, ["train", str(image_cfg), "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["eval", str(tmp_path / "runs" / "tiny"), "--protocol",
                                 "fmnist-captions"])
    assert result.exit_code == 2 and "image run" in result.output


def _search_by_text_and_by_image(tmp_path, run):
    """hashlab index / search on the cross-modal run, against the Python API + brute force."""
    from PIL import Image

    from hashlab.crossmodal.trainer import CrossModalRun
    from hashlab.data.text import bag_of_words
    from hashlab.index.codes import unpack_bits

    result = runner.invoke(app, ["index", str(run), "--modality", "image", "--no-progress"])
    assert result.exit_code == 0, result.output
    image_index = run / "index-database-image-flat"
    out, sheet = tmp_path / "hits.json", tmp_path / "sheet.png"
    result = runner.invoke(app, ["search", str(image_index), "--text", "ankle boot", "--k", "5",
                                 "--out", str(out), "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    hits = json.loads(out.read_text())["results"][0]
    xrun = CrossModalRun(run)
    db = xrun.load_split("database")
    q = unpack_bits(xrun.encode_texts(bag_of_words(["ankle boot"], xrun.vocabulary)), 16)[0]
    d = (unpack_bits(xrun.encode_images(db), 16) != q).sum(1)
    want = np.lexsort((np.arange(len(d)), d))[:5]  # (distance, id) order
    assert hits["ids"] == want.tolist() and hits["distances"] == d[want].tolist()
    assert hits["items"] == [db.images.classes[c] for c in db.classes[want]]
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # texts by image: a text index, queried with an image file
    result = runner.invoke(app, ["index", str(run), "--modality", "text", "--no-progress"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "query.png"
    Image.fromarray(db.images.images[int(want[0])]).save(png)
    result = runner.invoke(app, ["search", str(run / "index-database-text-flat"), "--image",
                                 str(png), "--k", "3"])
    assert result.exit_code == 0, result.output
    # the PNG holds the database image's exact pixels, so its code is that image's code
    q_img = unpack_bits(xrun.encode_images(db.images.subset([int(want[0])])), 16)[0]
    d_text = (unpack_bits(xrun.encode_texts(db), 16) != q_img).sum(1)
    top = np.lexsort((np.arange(len(d_text)), d_text))[:3]
    printed = [line.split(maxsplit=2)[2] for line in result.output.splitlines()[1:4]]
    assert printed == [db.sentences[i] for i in top]
    # words the run never saw are an error, not an empty query
    result = runner.invoke(app, ["search", str(image_index), "--text", "zzz qqq"])
    assert result.exit_code == 2 and "vocabulary" in result.output

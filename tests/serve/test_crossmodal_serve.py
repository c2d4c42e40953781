"""``hashlab serve`` on a cross-modal run (fmnist-captions, DCMH): text queries against the
image index, image queries against a text index, ``/v1/encode`` of texts, and every answer
checked against the run's own encoders and a brute-force Hamming ranking."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from hashlab.cli import app as cli
from hashlab.crossmodal.trainer import CrossModalRun
from hashlab.data.text import bag_of_words
from hashlab.serve import create_app
from tests.conftest import needs_fmnist
from tests.serve.test_api import b64, error

pytestmark = needs_fmnist
N_TRAIN, K = 300, 8


def train_captions_run(tmp: Path) -> Path:
    """A tiny DCMH run on fmnist-captions (``hashlab train``, one epoch); its directory."""
    config = tmp / "dcmh.yaml"
    config.write_text(json.dumps({
        "name": "xm", "seed": 0, "output_dir": str(tmp / "runs"),
        "data": {"dataset": "fmnist-captions", "args": {"n_train": N_TRAIN, "n_query": 50}},
        "image": {"backbone": "small-cnn", "backbone_args": {"width": 4, "feature_dim": 16}},
        "text": {"hidden": [32], "feature_dim": 16},
        "dim": 16, "method": {"name": "dcmh"},
        "optim": {"name": "adam", "lr": 3.0e-3}, "train": {"epochs": 1, "batch_size": 100}}))
    result = CliRunner().invoke(cli, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "xm"


def text_index(run: Path, out: Path) -> Path:
    """The text codes of the run's train split, indexed by ``hashlab index``."""
    result = CliRunner().invoke(cli, ["index", str(run), "--modality", "text", "--split",
                                      "train", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_captions_run(tmp_path_factory.mktemp("xm-serve"))


@pytest.fixture(scope="module")
def xrun(run_dir) -> CrossModalRun:
    return CrossModalRun(run_dir)


@pytest.fixture(scope="module")
def train(xrun):
    return xrun.load_split("train")


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(run_dir)) as c:
        yield c


@pytest.fixture(scope="module")
def text_client(run_dir, tmp_path_factory):
    index = text_index(run_dir, tmp_path_factory.mktemp("xm-index") / "texts")
    with TestClient(create_app(run_dir, index)) as c:
        yield c


def hamming(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    return np.unpackbits(q[None] ^ db, axis=1).sum(1)


def check_ranking(results: list[dict], q: np.ndarray, db: np.ndarray, k: int) -> None:
    """The hits are the k nearest by brute force: their distances are the k smallest ones and
    each hit's distance is its true distance to the query."""
    d = hamming(q, db)
    assert len(results) == k
    assert [h["distance"] for h in results] == sorted(d.tolist())[:k]
    for h in results:
        assert h["distance"] == d[h["id"]]


def png_of(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def test_info_says_cross_modal(client, text_client, xrun):
    info = client.get("/v1/info").json()
    assert info["cross_modal"] is True and info["modality"] == "image"
    assert info["count"] == N_TRAIN and info["nbits"] == 16 and info["split"] == "train"
    assert info["classes"][9] == "Ankle boot" and info["image_shape"] == [1, 28, 28]
    assert info["vocabulary_size"] == len(xrun.vocabulary) > 20
    info = text_client.get("/v1/info").json()
    assert info["modality"] == "text" and info["count"] == N_TRAIN and info["persistent"]


def test_text_query_finds_images_ranked_by_the_runs_codes(client, xrun, train):
    text = "a warm coat with long sleeves"
    r = client.post("/v1/search", json={"text": text, "k": K})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metric"] == "hamming" and body["warnings"] == []
    q = xrun.encode_texts(bag_of_words([text], xrun.vocabulary))[0]
    check_ranking(body["results"], q, xrun.encode_images(train), K)
    for h in body["results"]:
        i = h["id"]
        assert h["class_name"] == train.images.classes[int(train.classes[i])]
        assert h["labels"][0] == h["class_name"] and h["text"] is None  # an image item
        assert h["thumbnail_url"] == f"/v1/items/{i}/image"
    png = client.get(body["results"][0]["thumbnail_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_unknown_words_warn_and_unknown_texts_fail(client):
    r = client.post("/v1/search", json={"text": "ankle boot zzyzx", "k": 3}).json()
    assert len(r["results"]) == 3 and len(r["warnings"]) == 1 and "zzyzx" in r["warnings"][0]
    for text in ("zzyzx qqq", "", "  "):
        message = error(client.post("/v1/search", json={"text": text}), 400, "bad_text")
        assert "vocabulary" in message
    error(client.post("/v1/search", json={"text": "boot", "id": 1}), 422, "invalid_query")
    assert client.post("/v1/search", json={"id": 0, "k": 1}).json()["results"][0]["id"] == 0


def test_encode_texts_equals_the_text_tower(client, xrun):
    texts = ["ankle boot", "a short dress"]
    r = client.post("/v1/encode", json={"texts": texts})
    assert r.status_code == 200, r.text
    want = xrun.encode_texts(bag_of_words(texts, xrun.vocabulary))
    assert [c["bits_hex"] for c in r.json()["codes"]] == [w.tobytes().hex() for w in want]
    error(client.post("/v1/encode", json={"texts": "boot"}), 422, "invalid_request")
    error(client.post("/v1/encode", json={"texts": []}), 422, "invalid_request")
    error(client.post("/v1/encode", json={"texts": ["zzyzx"]}), 400, "bad_text")


def test_image_query_finds_texts_in_a_text_index(text_client, xrun, train):
    image = train.images.images[7]
    r = text_client.post("/v1/search", json={"image_b64": b64(png_of(image)), "k": K})
    assert r.status_code == 200, r.text
    # the server normalises an uploaded PNG as the training images: the same code
    q = xrun.encode_images(train.images.get_batch(np.array([7]))[0])[0]
    results = r.json()["results"]
    check_ranking(results, q, xrun.encode_texts(train), K)
    for h in results:
        assert h["text"] == train.sentences[h["id"]] and h["thumbnail_url"] is None
    error(text_client.get(f"/v1/items/{results[0]['id']}/image"), 404, "not_found")
    # a text query on a text index, and searching from a stored text by its id
    r = text_client.post("/v1/search", json={"text": "sneaker", "k": 3}).json()
    assert len(r["results"]) == 3 and all(isinstance(h["text"], str) for h in r["results"])
    first = r["results"][0]["id"]
    again = text_client.post("/v1/search", json={"id": first, "k": 1}).json()["results"]
    assert again[0]["distance"] == 0

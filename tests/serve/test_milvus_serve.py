"""``hashlab serve RUN --index milvus://...``: the service on a Milvus collection (the embedded
engine, milvus-lite) answers searches as the FAISS-served index does on the same codes and
metadata (plain, radius, filtered, re-ranked), and adds and deletes go to the collection, so
they outlive a restart (label, metadata and thumbnail included)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.eval.common import index_source, save_run_index
from hashlab.index import FloatIndex
from hashlab.index.milvus import MilvusCollectionError, MilvusIndex, write_run_collection
from hashlab.serve import ServeLimits, create_app
from hashlab.serve.metadata import synthetic_metadata
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config

pytest.importorskip("milvus_lite")

LIMITS = ServeLimits(max_upload_bytes=20_000, max_pixels=10_000, max_request_bytes=100_000)
FILTERS = [
    {"tags": ["sale"]},
    {"near": {"lat": 48.8566, "lon": 2.3522, "km": 8}},
    {"time": {"start": "2026-03-01T00:00:00Z", "end": "2026-06-30T00:00:00Z"}},
    {"near": {"lat": 35.6762, "lon": 139.6503, "km": 50}, "tags": ["new"],
     "time": {"start": "2026-02-01T00:00:00Z", "end": None}},
    {"tags": ["no-such-tag"]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny run, its FAISS-served twin (in memory, synthetic metadata) and a collection of
    the same codes with the same metadata."""
    tmp = tmp_path_factory.mktemp("milvus_serve")
    run = tmp / "run"
    Trainer(load_config(tiny_config(tmp, train={"epochs": 1})), run, progress=False).fit()
    trained = TrainedRun(run)
    db = trained.encode("train", progress=False)
    classes = list(trained.meta.get("classes") or []) or [
        str(i) for i in range(int(trained.meta["num_classes"]))]
    meta = synthetic_metadata(db.labels, classes, 0)
    uri = str(tmp / "codes.db")
    ids = np.arange(len(db), dtype=np.int64)
    binary = write_run_collection(trained, db.bits, ids, uri=uri, collection="served",
                                  split="train", code="binary", metadata=meta)
    floats = write_run_collection(trained, db.float, ids, uri=uri, collection="served_float",
                                  split="train", code="float", metadata=meta)
    return {"run": run, "trained": trained, "db": db, "tmp": tmp, "ref": binary.ref,
            "float_ref": floats.ref}


@pytest.fixture(scope="module")
def faiss_client(setup):
    with TestClient(create_app(setup["run"], limits=LIMITS)) as c:
        yield c


def png(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(
        out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def same_answer(a: dict, b: dict) -> None:
    """Same hits (ids, distances, scores, labels, metadata, thumbnails), count and exactness."""
    assert a["results"] == b["results"]
    assert (a["exact"], a["filtered_count"], a["metric"]) == \
        (b["exact"], b["filtered_count"], b["metric"])


def test_search_equals_the_faiss_served_index(setup, faiss_client):
    rng = np.random.default_rng(0)
    with TestClient(create_app(setup["run"], setup["ref"], limits=LIMITS)) as c:
        info = c.get("/v1/info").json()
        assert (info["backend"], info["persistent"], info["count"], info["index_kind"]) == \
            ("milvus", True, len(setup["db"]), "flat")
        assert info["synthetic_metadata"] is False  # the metadata is the collection's
        assert c.get("/health/ready").json()["count"] == len(setup["db"])
        assert c.get("/").status_code == 200
        bodies = [{"id": int(i), "k": 10} for i in rng.choice(len(setup["db"]), 4)]
        bodies += [{"code_hex": rng.integers(0, 256, 2, dtype=np.uint8).tobytes().hex(),
                    "k": 25}, {"id": 3, "radius": 3}, {"id": 5, "k": 7, "exact": True}]
        bodies += [{"id": int(i), "k": 10, "filters": f}
                   for i, f in zip(rng.choice(len(setup["db"]), len(FILTERS)), FILTERS,
                                   strict=True)]
        bodies += [{"id": 8, "radius": 5, "filters": FILTERS[0]},
                   {"id": 9, "k": 5, "filters": FILTERS[1], "rerank": {"lambda": 0.5}}]
        for body in bodies:
            got, want = c.post("/v1/search", json=body), faiss_client.post("/v1/search",
                                                                            json=body)
            assert got.status_code == want.status_code == 200, (body, got.text)
            same_answer(got.json(), want.json())
            assert "Milvus" in got.json()["method"]
        assert any(c.post("/v1/search", json=b).json()["results"] for b in bodies[6:9])
        item = c.get("/v1/items/4").json()
        assert item == faiss_client.get("/v1/items/4").json()
        assert c.get("/v1/items/4/image").content == faiss_client.get("/v1/items/4/image").content
        assert c.get(f"/v1/items/{len(setup['db'])}").status_code == 404


def test_float_collection_equals_a_faiss_float_index(setup, tmp_path):
    trained, db = setup["trained"], setup["db"]
    index = FloatIndex(db.float.shape[1])
    index.add(db.float, np.arange(len(db)))
    save_run_index(trained, index, tmp_path / "float", split="train", code="float")
    with TestClient(create_app(setup["run"], tmp_path / "float", limits=LIMITS)) as f, \
            TestClient(create_app(setup["run"], setup["float_ref"], limits=LIMITS)) as m:
        for body in ({"id": 1, "k": 10}, {"id": 2, "k": 10, "filters": FILTERS[0]},
                     {"vector": db.float[7].tolist(), "k": 5, "filters": FILTERS[2]}):
            got, want = m.post("/v1/search", json=body).json(), \
                f.post("/v1/search", json=body).json()
            assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]]
            np.testing.assert_allclose([h["distance"] for h in got["results"]],
                                       [h["distance"] for h in want["results"]], atol=1e-5)
            assert got["filtered_count"] == want["filtered_count"]


def test_add_delete_and_restart(setup):
    ref, n = setup["ref"], len(setup["db"])
    meta = {"lat": 45.0, "lon": 7.0, "tags": ["fresh"], "time": "2026-02-02T00:00:00Z",
            "store": "Turin"}
    with TestClient(create_app(setup["run"], ref, limits=LIMITS)) as c:
        new = c.post("/v1/items", json={"image_b64": b64(png(4)), "label": 7,
                                        "metadata": meta}).json()["id"]
        assert new == n
        coded = c.post("/v1/items", json={"code_hex": "0f0f", "id": 10**12}).json()["id"]
        assert c.post("/v1/items", json={"code_hex": "0f0f", "id": 3}).status_code == 409
        assert c.delete("/v1/items/11").json() == {"deleted": 11}
        assert c.delete("/v1/items/11").status_code == 404
        picture = c.get(f"/v1/items/{new}/image").content
        code = c.post("/v1/encode", json={"images_b64": [b64(png(4))]}).json()
        hits = c.post("/v1/search", json={"code_hex": code["codes"][0]["bits_hex"], "k": 1,
                                          "filters": {"tags": ["fresh"]}}).json()["results"]
        assert [h["id"] for h in hits] == [new] and hits[0]["label"] == 7
        assert hits[0]["metadata"] == meta and hits[0]["thumbnail_url"]
        assert c.get("/v1/info").json()["count"] == n + 1
        found = c.post("/v1/search", json={"id": coded, "k": 1}).json()["results"]
        assert found[0]["id"] == coded and found[0]["distance"] == 0
    with TestClient(create_app(setup["run"], ref, limits=LIMITS)) as c:  # a fresh server
        assert c.get("/v1/info").json()["count"] == n + 1
        item = c.get(f"/v1/items/{new}").json()
        assert item["metadata"] == meta and item["label"] == 7 and item["class_name"] == "7"
        assert c.get(f"/v1/items/{new}/image").content == picture
        assert c.get(f"/v1/items/{coded}").json()["image_url"] is None
        assert c.get("/v1/items/11").status_code == 404
        assert c.post("/v1/items", json={"code_hex": "0000"}).json()["id"] == 10**12 + 1
        for i in (new, coded, 10**12 + 1):
            assert c.delete(f"/v1/items/{i}").status_code == 200
        assert c.get("/v1/info").json()["count"] == n - 1
    index = MilvusIndex.open(ref)
    index.add(setup["db"].bits[11:12], [11])  # put the deleted image back for other tests
    assert index.ntotal == n


def test_a_collection_of_another_model_is_refused(setup):
    db, trained = setup["db"], setup["trained"]
    source = {**index_source(trained, "train", "binary"), "model_sha256": "0" * 64}
    other = MilvusIndex(str(setup["tmp"] / "codes.db"), "other", nbits=16, source=source,
                        overwrite=True)
    other.add(db.bits[:5], np.arange(5))
    with pytest.raises(MilvusCollectionError, match="another model.pt"):
        create_app(setup["run"], other.ref, limits=LIMITS)
    stray = MilvusIndex(str(setup["tmp"] / "codes.db"), "stray", nbits=16, overwrite=True,
                        source=index_source(trained, "train", "binary"))
    stray.add(db.bits[:2], [0, len(db) + 5])  # an id beyond the split, not added by serve
    with pytest.raises(Exception, match="another split"):
        create_app(setup["run"], stray.ref, limits=LIMITS)


def test_cli_serve_takes_a_milvus_reference(setup, monkeypatch):
    import uvicorn

    from hashlab import serve
    from hashlab.cli import app

    seen = {}
    monkeypatch.setattr(serve, "create_app", lambda run, index, **kw: seen.update(index=index))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    runner = CliRunner()
    assert runner.invoke(app, ["serve", str(setup["run"]), "--index", setup["ref"]]).exit_code == 0
    assert seen["index"] == setup["ref"]  # passed as the reference, not a Path
    assert runner.invoke(app, ["serve", str(setup["run"]), "--index", "some/dir"]).exit_code == 0
    assert seen["index"] == Path("some/dir")


def test_cli_index_writes_the_metadata_the_filters_search(setup, faiss_client, monkeypatch):
    """``hashlab index --backend milvus --synthetic-metadata`` stores the metadata the FAISS
    page makes up, so filtered searches answer alike; ``--metadata FILE`` stores the user's
    (a list per image, or an object keyed by position; null leaves an image without)."""
    import json

    from hashlab.cli import app

    runner, run, tmp = CliRunner(), str(setup["run"]), setup["tmp"]
    db, n = str(tmp / "cli.db"), len(setup["db"])
    out = runner.invoke(app, ["index", run, "--backend", "milvus", "--uri", db, "--collection",
                              "synth", "--synthetic-metadata", "--no-progress"])
    assert out.exit_code == 0, out.output
    with TestClient(create_app(setup["run"], f"milvus://{db}?collection=synth",
                               limits=LIMITS)) as c:
        for i, f in enumerate(FILTERS[:4]):
            body = {"id": i, "k": 10, "filters": f}
            same_answer(c.post("/v1/search", json=body).json(),
                        faiss_client.post("/v1/search", json=body).json())
    mine = [None] * n
    mine[2], mine[5] = {"tags": ["mine"]}, {"tags": ["mine", "other"]}
    for name, doc in (("list", mine), ("keyed", {"2": mine[2], "5": mine[5]})):
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(doc))
        out = runner.invoke(app, ["index", run, "--backend", "milvus", "--uri", db,
                                  "--collection", name, "--metadata", str(path),
                                  "--no-progress"])
        assert out.exit_code == 0, out.output
        with TestClient(create_app(setup["run"], f"milvus://{db}?collection={name}",
                                   limits=LIMITS)) as c:
            hits = c.post("/v1/search", json={"id": 0, "k": 20,
                                              "filters": {"tags": ["mine"]}}).json()
            assert sorted(h["id"] for h in hits["results"]) == [2, 5]
            assert c.get("/v1/items/5").json()["metadata"] == mine[5]
    bad = tmp / "bad.json"

    def no_encoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a bad --metadata file must be refused before the encoding")

    monkeypatch.setattr("hashlab.encode.TrainedRun.encode", no_encoding)
    for doc, message in (([{}] * (n - 1), f"for the split's {n} images"),
                         ({"x": {}}, "not an image position"), ([7] * n, "expected an object")):
        bad.write_text(json.dumps(doc))
        out = runner.invoke(app, ["index", run, "--backend", "milvus", "--uri", db,
                                  "--metadata", str(bad), "--no-progress"])
        assert out.exit_code != 0 and message in out.output, out.output
    out = runner.invoke(app, ["index", run, "--metadata", str(bad), "--no-progress"])
    assert out.exit_code != 0 and "go with --backend milvus" in out.output

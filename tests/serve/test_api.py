"""The HTTP API of ``hashlab serve`` (FastAPI TestClient) on one tiny trained run: every
endpoint, every bad input answered with a 4xx JSON error (and the server still serving
afterwards), micro-batching, a full queue, timeouts, persistence of adds and deletes, and a
failed save that changes nothing."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.eval.common import save_run_index
from hashlab.index import BinaryIndex, FloatIndex, load_index
from hashlab.index import store as index_store
from hashlab.index.filters import ItemFilter, MetadataTable
from hashlab.serve import ServeLimits, create_app
from hashlab.serve.metadata import ITEMS_FILE, attach_metadata
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config
from tests.test_index import bf_hamming

LIMITS = ServeLimits(max_upload_bytes=20_000, max_pixels=10_000, max_request_bytes=100_000)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    run = tmp / "run"
    Trainer(load_config(tiny_config(tmp, train={"epochs": 1})), run, progress=False).fit()
    return run


@pytest.fixture(scope="module")
def trained(run_dir) -> TrainedRun:
    return TrainedRun(run_dir)


@pytest.fixture(scope="module")
def db(trained):
    return trained.encode("train", progress=False)


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(run_dir, limits=LIMITS)) as c:
        yield c


def png(shape=(8, 8), seed=0, fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(out, fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def error(r, status: int, code: str | None = None) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def still_serving(c: TestClient) -> None:
    assert c.get("/health/ready").status_code == 200
    r = c.post("/v1/search", json={"id": 0, "k": 2})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


# ------------------------------------------------------------------------------ read endpoints
def test_info_health_home_and_metrics(client, db):
    info = client.get("/v1/info").json()
    assert info["nbits"] == info["dim"] == 16 and info["binary"] and info["code"] == "binary"
    assert info["index_kind"] == "flat" and info["exact_radius"] == 16
    assert info["count"] == len(db) and info["classes"] == [str(i) for i in range(10)]
    assert info["image_shape"] == [1, 8, 8] and "multihash" in info["kinds"]
    assert info["cross_modal"] is False and info["write_requires_key"] is False
    assert info["modality"] == "image" and info["vocabulary_size"] is None
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ready", "model": True,
                                                  "index": True, "count": len(db)}
    home = client.get("/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    text = client.get("/metrics").text
    assert metric(text, "hashlab_index_size") == len(db)
    assert 'hashlab_requests_total{endpoint="/v1/info",method="GET",status="200"}' in text
    assert 'hashlab_request_seconds_bucket{endpoint="/v1/info",le="+Inf"}' in text
    assert "# TYPE hashlab_batch_size histogram" in text
    error(client.get("/no/such/path"), 404, "not_found")
    error(client.put("/v1/info"), 405)


def test_encode_equals_the_command_line_encoding(client, trained, tmp_path):
    from hashlab.cli import _query_codes

    images = [png(seed=s) for s in range(3)]
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    want, _ = _query_codes(trained, {"split": "train"}, paths, None, None, None, False)
    r = client.post("/v1/encode", files=[("images", (f"{i}.png", d, "image/png"))
                                         for i, d in enumerate(images)])
    assert r.status_code == 200 and r.json()["nbits"] == 16
    codes = r.json()["codes"]
    assert [c["bits_hex"] for c in codes] == [b.tobytes().hex() for b in want.bits]
    assert [base64.b64decode(c["bits_b64"]) for c in codes] == [b.tobytes() for b in want.bits]
    np.testing.assert_allclose([c["float"] for c in codes], want.float, atol=1e-5)
    again = client.post("/v1/encode", json={"images_b64": [b64(d) for d in images]}).json()
    assert again["codes"] == codes
    # a JPEG, and a data URL, are images too
    jpeg = client.post("/v1/encode", json={"images_b64": [
        "data:image/jpeg;base64," + b64(png(fmt="JPEG"))]})
    assert jpeg.status_code == 200 and len(jpeg.json()["codes"]) == 1


# ------------------------------------------------------------------------------ search
def test_search_by_id_code_vector_and_image_equals_brute_force(client, db):
    dist = bf_hamming(db.bits[7:8], db.bits)[0]
    order = np.lexsort((np.arange(len(db)), dist))[:10]
    r = client.post("/v1/search", json={"id": 7}).json()  # k defaults to 10
    assert [x["id"] for x in r["results"]] == order.tolist()
    assert [x["distance"] for x in r["results"]] == dist[order].tolist()
    assert [x["score"] for x in r["results"]] == dist[order].tolist()
    assert r["metric"] == "hamming" and r["exact"] and r["warnings"] == [] and r["k"] == 10
    assert r["radius"] is None and r["took_ms"] >= 0
    top = r["results"][0]
    assert top["label"] == int(db.labels[order[0]]) and top["class_name"] == str(top["label"])
    assert top["thumbnail_url"] == f"/v1/items/{order[0]}/image" and top["metadata"]["synthetic"]
    by_hex = client.post("/v1/search", json={"code_hex": db.bits[7].tobytes().hex()}).json()
    by_b64 = client.post("/v1/search", json={"code_b64": b64(db.bits[7].tobytes())}).json()
    signs = np.where(np.unpackbits(db.bits[7], bitorder="little")[:16] > 0, 0.5, -0.5)
    by_vec = client.post("/v1/search", json={"vector": signs.tolist()}).json()
    for other in (by_hex, by_b64, by_vec):
        assert other["results"] == r["results"]
    image = png(seed=5)
    by_image = client.post("/v1/search", json={"image_b64": b64(image), "k": 4}).json()
    form = client.post("/v1/search/image", files={"image": ("q.png", image, "image/png")},
                       data={"k": "4"}).json()
    assert form["results"] == by_image["results"] and len(form["results"]) == 4
    # a Hamming radius: every code within it
    within = client.post("/v1/search", json={"id": 7, "radius": 3}).json()
    assert within["k"] is None and within["radius"] == 3
    assert sorted(x["id"] for x in within["results"]) == np.nonzero(dist <= 3)[0].tolist()
    # k beyond the items that match is clamped to them
    sale = client.post("/v1/search", json={"id": 7, "k": 1000, "filters": {"tags": ["sale"]}})
    assert len(sale.json()["results"]) == sale.json()["filtered_count"] < 1000


def test_filtered_search_and_rerank_equal_brute_force(client, db):
    items = [client.get(f"/v1/items/{i}").json()["metadata"] for i in range(len(db))]
    table = MetadataTable(np.arange(len(db)), items)
    filters = {"near": {"lat": 48.8566, "lon": 2.3522, "km": 20}, "tags": ["sale"],
               "time": {"start": "2026-03-01T00:00:00Z", "end": None}}
    keep = table.mask(ItemFilter.from_dict(filters))
    assert 0 < keep.sum() < len(db)
    dist = bf_hamming(db.bits[3:4], db.bits)[0].astype(float)
    dist[~keep] = np.inf
    order = np.lexsort((np.arange(len(db)), dist))[:5]
    r = client.post("/v1/search", json={"id": 3, "k": 5, "filters": filters}).json()
    assert [x["id"] for x in r["results"]] == order.tolist() and r["exact"]
    assert r["filtered_count"] == keep.sum()
    for x in r["results"]:
        assert "sale" in x["metadata"]["tags"] and x["metadata"]["time"] >= "2026-03"
    # re-ranked: distance + lambda * km over the filtered top 10 k candidates
    rr = client.post("/v1/search", json={"id": 3, "k": 5, "filters": filters,
                                         "rerank": {"lambda": 0.5}}).json()
    scores = [x["score"] for x in rr["results"]]
    assert scores == sorted(scores) and len(scores) == 5
    for x in rr["results"]:
        km = table.km_to(np.array([x["id"]]), ItemFilter.from_dict(filters).near)[0]
        assert x["score"] == pytest.approx(x["distance"] + 0.5 * km)
    # filters that match nothing: an empty answer, not an error
    none = client.post("/v1/search", json={"id": 3, "filters": {"tags": ["no-such-tag"]}})
    assert none.status_code == 200 and none.json()["results"] == []
    nowhere = client.post("/v1/search", json={"id": 3, "filters": {
        "near": {"lat": 0, "lon": -150, "km": 1}}, "rerank": {"lambda": 1}})
    assert nowhere.status_code == 200 and nowhere.json()["results"] == []


# ------------------------------------------------------------------------------ bad input
TRUNCATED = png((60, 60))[:150]
BAD_REQUESTS = [
    # (method, path, request kwargs, status, error code)
    ("post", "/v1/search/image", {"files": {"image": ("big.png", b"\0" * 30_000, "image/png")}},
     413, "too_large"),
    ("post", "/v1/encode", {"json": {"images_b64": [b64(b"\0" * 30_000)]}}, 413, "too_large"),
    ("post", "/v1/encode", {"files": {"images": ("wide.png", png((120, 120)), "image/png")}},
     413, "too_many_pixels"),
    ("post", "/v1/search", {"content": b"{" + b" " * 200_000 + b"}",
                            "headers": {"content-type": "application/json"}}, 413, "too_large"),
    ("post", "/v1/search", {"content": iter([b"{", b" " * 60_000, b" " * 60_000, b"}"]),
                            "headers": {"content-type": "application/json"}}, 413, "too_large"),
    ("post", "/v1/encode", {"files": {"images": ("a.txt", b"hello", "text/plain")}}, 415,
     "unsupported_media_type"),
    ("post", "/v1/search", {"content": b"id=3", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ("post", "/v1/search/image", {"json": {"k": 3}}, 415, "unsupported_media_type"),
    ("post", "/v1/encode", {"files": {"images": ("x.png", b"not an image", "image/png")}}, 400,
     "bad_image"),
    ("post", "/v1/search", {"json": {"image_b64": b64(TRUNCATED)}}, 400, "bad_image"),
    ("post", "/v1/search", {"json": {"image_b64": "!!!not base64!!!"}}, 400, "bad_base64"),
    ("post", "/v1/search", {"json": {"code_b64": "abc"}}, 400, "bad_base64"),
    ("post", "/v1/search", {"json": {"code_hex": "zz"}}, 400, "bad_code"),
    ("post", "/v1/search", {"json": {"code_hex": "abcdef"}}, 400, "bad_code"),
    ("post", "/v1/search", {"json": {"vector": [1.0, 2.0]}}, 400, "bad_code"),
    ("post", "/v1/search", {"json": {"id": 10**9}}, 404, "not_found"),
    ("get", "/v1/items/999999", {}, 404, "not_found"),
    ("get", "/v1/items/-1/image", {}, 404, "not_found"),
    ("get", "/v1/items/abc", {}, 422, "invalid_request"),
    ("post", "/v1/search", {"json": {"id": 1, "k": 0}}, 422, "invalid_k"),
    ("post", "/v1/search", {"json": {"id": 1, "k": -3}}, 422, "invalid_k"),
    ("post", "/v1/search", {"json": {"id": 1, "k": 1001}}, 422, "invalid_k"),
    ("post", "/v1/search", {"json": {"id": 1, "k": "ten"}}, 422, "invalid_request"),
    ("post", "/v1/search/image", {"files": {"image": ("q.png", png(), "image/png")},
                                  "data": {"k": "0"}}, 422, "invalid_k"),
    ("post", "/v1/search", {"json": {"id": 1, "radius": -1}}, 422, "invalid_radius"),
    ("post", "/v1/search", {"json": {"id": 1, "k": 3, "radius": 2}}, 422, "invalid_request"),
    ("post", "/v1/search", {"json": {"id": 1, "code_hex": "0000"}}, 422, "invalid_query"),
    ("post", "/v1/search", {"json": {"k": 3}}, 422, "invalid_query"),
    ("post", "/v1/search", {"json": {"id": 1, "colour": "red"}}, 422, "invalid_request"),
    ("post", "/v1/search", {"json": {"text": "a red shoe"}}, 400, "not_cross_modal"),
    ("post", "/v1/encode", {"json": {"texts": ["a red shoe"]}}, 400, "not_cross_modal"),
    ("post", "/v1/search", {"json": {"id": 1, "filters": {"near": {"lat": 200, "lon": 0,
                                                                   "km": 1}}}}, 422,
     "bad_filters"),
    ("post", "/v1/search", {"json": {"id": 1, "filters": {"time": {"start": "soon"}}}}, 422,
     "bad_filters"),
    ("post", "/v1/search", {"json": {"id": 1, "rerank": {"lambda": 1}}}, 422, "bad_rerank"),
    ("post", "/v1/search", {"json": {"id": 1, "rerank": {"lambda": -1}, "filters": {
        "near": {"lat": 0, "lon": 0, "km": 1}}}}, 422, "bad_rerank"),
    ("post", "/v1/search", {"content": b"{not json", "headers": {
        "content-type": "application/json"}}, 400, "bad_json"),
    ("post", "/v1/search", {"json": [1, 2]}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"images": []}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"images_b64": []}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"images_b64": ["x"] * 65}}, 413, "too_many_images"),
    ("post", "/v1/encode", {"data": {"images": "not a file"}, "files": {
        "other": ("a.png", png(), "image/png")}}, 400, "bad_image"),
    ("post", "/v1/encode", {"data": {"images": "a form"}}, 415, "unsupported_media_type"),
    ("post", "/v1/items", {"json": {"label": 3}}, 422, "invalid_request"),
    ("post", "/v1/items", {"json": {"code_hex": "0000", "label": 99}}, 422, "invalid_request"),
    ("post", "/v1/items", {"json": {"code_hex": "0000", "metadata": {"lat": 1}}}, 422,
     "bad_metadata"),
    ("post", "/v1/items", {"json": {"code_hex": "0000", "id": 5}}, 409, "conflict"),
    ("delete", "/v1/items/987654", {}, 404, "not_found"),
]


@pytest.mark.parametrize("method, path, kwargs, status, code", BAD_REQUESTS,
                         ids=[f"{s}-{c}-{p}" for _, p, _, s, c in BAD_REQUESTS])
def test_bad_input_is_a_json_error_and_the_server_keeps_serving(client, method, path, kwargs,
                                                                status, code):
    error(getattr(client, method)(path, **kwargs), status, code)
    still_serving(client)


# ------------------------------------------------------------------------------ items
def test_items_get_image_add_delete_in_memory(client, db):
    item = client.get("/v1/items/4").json()
    assert item["id"] == 4 and item["label"] == int(db.labels[4])
    assert item["image_url"] == "/v1/items/4/image" and item["metadata"]["synthetic"] is True
    r = client.get("/v1/items/4/image")
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (8, 8)
    count = client.get("/v1/info").json()["count"]
    added = client.post("/v1/items", json={"image_b64": b64(png(seed=9)), "label": 2,
                                           "metadata": {"lat": 1.5, "lon": 2.5, "tags": ["x"],
                                                        "time": "2026-05-01T10:00:00Z"}})
    assert added.status_code == 201
    new = added.json()["id"]
    assert new >= len(db) and client.get("/v1/info").json()["count"] == count + 1
    assert client.get(f"/v1/items/{new}").json()["metadata"]["tags"] == ["x"]
    assert client.get(f"/v1/items/{new}/image").headers["content-type"] == "image/png"
    hit = client.post("/v1/search", json={"image_b64": b64(png(seed=9)), "k": 1, "filters": {
        "tags": ["x"]}}).json()["results"]
    assert [h["id"] for h in hit] == [new] and hit[0]["distance"] == 0
    code_only = client.post("/v1/items", json={"code_hex": "ffff", "id": 10**6}).json()["id"]
    assert client.get(f"/v1/items/{code_only}").json()["image_url"] is None
    error(client.get(f"/v1/items/{code_only}/image"), 404, "not_found")
    assert client.delete(f"/v1/items/{new}").json() == {"deleted": new}
    assert client.delete(f"/v1/items/{code_only}").json() == {"deleted": code_only}
    error(client.get(f"/v1/items/{new}"), 404, "not_found")
    assert client.get("/v1/info").json()["count"] == count


def test_write_endpoints_need_the_api_key(run_dir):
    with TestClient(create_app(run_dir, api_key="s3cret", limits=LIMITS)) as c:
        assert c.get("/v1/info").json()["write_requires_key"] is True
        body = {"code_hex": "0f0f"}
        error(c.post("/v1/items", json=body), 401, "unauthorized")
        error(c.post("/v1/items", json=body, headers={"X-API-Key": "wrong"}), 401)
        error(c.delete("/v1/items/1"), 401, "unauthorized")
        still_serving(c)  # reads need no key
        new = c.post("/v1/items", json=body, headers={"X-API-Key": "s3cret"})
        assert new.status_code == 201
        assert c.delete(f"/v1/items/{new.json()['id']}",
                        headers={"X-API-Key": "s3cret"}).status_code == 200


def test_float_index_refuses_a_radius(run_dir, trained, db, tmp_path):
    index = FloatIndex(16)
    index.add(db.float, np.arange(len(db)))
    save_run_index(trained, index, tmp_path / "float", split="train", code="float")
    with TestClient(create_app(run_dir, tmp_path / "float", limits=LIMITS)) as c:
        info = c.get("/v1/info").json()
        assert info["code"] == "float" and info["nbits"] is None and not info["binary"]
        error(c.post("/v1/search", json={"id": 2, "radius": 1}), 400, "radius_needs_binary")
        error(c.post("/v1/search", json={"code_hex": "0000"}), 400, "bad_code")
        r = c.post("/v1/search", json={"id": 2, "k": 3}).json()
        assert r["metric"] == "cosine" and r["results"][0]["id"] == 2
        assert r["results"][0]["distance"] == pytest.approx(1.0, abs=1e-5)
        still_serving(c)


# ------------------------------------------------------------------------------ batching
class Gate:
    """Wraps the batcher's function: holds the first batch until released."""

    def __init__(self, fn):
        self.fn, self.entered, self.release = fn, threading.Event(), threading.Event()

    def __call__(self, batch):
        self.entered.set()
        assert self.release.wait(30)
        return self.fn(batch)


def _gated(app) -> tuple[object, Gate]:
    batcher = app.state.service.batcher
    gate = Gate(batcher.fn)
    batcher.fn = gate
    return batcher, gate


def _post_in_thread(c, results, i, image):
    results[i] = c.post("/v1/encode", json={"images_b64": [b64(image)]})


def _wait(condition, what):
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_concurrent_requests_are_batched(run_dir):
    app = create_app(run_dir, limits=ServeLimits(max_batch=8, max_delay_ms=20))
    batcher, gate = _gated(app)
    with TestClient(app) as c:
        results: dict[int, object] = {}
        threads = [threading.Thread(target=_post_in_thread, args=(c, results, i, png(seed=i)))
                   for i in range(6)]
        threads[0].start()
        assert gate.entered.wait(20)  # the first image is being encoded, alone
        for t in threads[1:]:
            t.start()
        _wait(lambda: batcher.depth == 5, "the other requests never queued")
        gate.release.set()
        for t in threads:
            t.join(30)
        assert all(results[i].status_code == 200 for i in range(6))
        text = c.get("/metrics").text
        assert metric(text, "hashlab_batch_size_count") == 2
        assert metric(text, "hashlab_batch_size_sum") == 6
        assert 'hashlab_batch_size_bucket{le="4"} 1' in text  # one batch of 5
        assert batcher.largest_batch == 5
        # batched codes equal codes encoded one at a time
        alone = c.post("/v1/encode", json={"images_b64": [b64(png(seed=3))]}).json()
        assert results[3].json()["codes"][0]["bits_hex"] == alone["codes"][0]["bits_hex"]


def test_a_full_queue_answers_busy_and_a_slow_encoder_times_out(run_dir):
    app = create_app(run_dir, limits=ServeLimits(max_batch=1, max_queue=1,
                                                 request_timeout_s=10))
    batcher, gate = _gated(app)
    with TestClient(app) as c:
        results: dict[int, object] = {}
        first = threading.Thread(target=_post_in_thread, args=(c, results, 0, png(seed=0)))
        first.start()
        assert gate.entered.wait(20)
        second = threading.Thread(target=_post_in_thread, args=(c, results, 1, png(seed=1)))
        second.start()
        _wait(lambda: batcher.depth == 1, "the second request never queued")
        r = c.post("/v1/search", json={"image_b64": b64(png(seed=2))})
        error(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
        still_serving(c)  # searches by id need no encoder
        gate.release.set()
        first.join(30)
        second.join(30)
        assert results[0].status_code == results[1].status_code == 200
        assert c.post("/v1/encode", json={"images_b64": [b64(png())]}).status_code == 200

    app = create_app(run_dir, limits=ServeLimits(request_timeout_s=0.3))
    batcher, gate = _gated(app)
    with TestClient(app) as c:
        error(c.post("/v1/encode", json={"images_b64": [b64(png())]}), 504, "timeout")
        gate.release.set()
        assert c.post("/v1/encode", json={"images_b64": [b64(png())]}).status_code == 200
        still_serving(c)


# ------------------------------------------------------------------------------ persistence
def test_add_and_delete_persist_and_a_failed_save_changes_nothing(run_dir, trained, db,
                                                                  tmp_path, monkeypatch):
    index = BinaryIndex(16)
    index.add(db.bits, np.arange(len(db)))
    out = tmp_path / "index"
    save_run_index(trained, index, out, split="train", code="binary")
    meta = {"lat": 45.0, "lon": 7.0, "tags": ["fresh"], "time": "2026-02-02T00:00:00Z",
            "store": "Turin"}
    with TestClient(create_app(run_dir, out, limits=LIMITS)) as c:
        assert c.get("/v1/info").json()["persistent"] is True
        new = c.post("/v1/items", json={"image_b64": b64(png(seed=4)), "label": 7,
                                        "metadata": meta}).json()["id"]
        assert c.delete("/v1/items/11").json() == {"deleted": 11}
        code = c.post("/v1/encode", json={"images_b64": [b64(png(seed=4))]}).json()
        picture = c.get(f"/v1/items/{new}/image").content
    assert load_index(out).ntotal == len(db)  # one added, one deleted
    assert (out / ITEMS_FILE).is_file()
    with TestClient(create_app(run_dir, out, limits=LIMITS)) as c:  # a fresh server
        assert c.get("/v1/info").json()["count"] == len(db)
        item = c.get(f"/v1/items/{new}").json()
        assert item["metadata"] == meta and item["label"] == 7 and item["class_name"] == "7"
        assert c.get(f"/v1/items/{new}/image").content == picture
        error(c.get("/v1/items/11"), 404, "not_found")
        hit = c.post("/v1/search", json={"code_hex": code["codes"][0]["bits_hex"], "k": 1,
                                         "filters": {"tags": ["fresh"]}}).json()["results"]
        assert [h["id"] for h in hit] == [new]

        def broken(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(index_store, "_write_faiss_file", broken)
        error(c.post("/v1/items", json={"code_hex": "0000"}), 500, "persist_failed")
        error(c.delete(f"/v1/items/{new}"), 500, "persist_failed")
        assert c.get("/v1/info").json()["count"] == len(db)  # nothing changed in memory
        assert c.get(f"/v1/items/{new}").status_code == 200
        still_serving(c)
        monkeypatch.undo()
    assert load_index(out).ntotal == len(db)  # nor on disk: the previous index loads
    assert not list(tmp_path.glob(".index.*"))  # no temporary folder left behind
    with TestClient(create_app(run_dir, out, limits=LIMITS)) as c:
        assert c.get(f"/v1/items/{new}").json()["metadata"] == meta
    # real metadata for the split's items, stored with the index
    attach_metadata(out, {2: {"lat": 10.0, "lon": 20.0, "tags": ["real"]}})
    with pytest.raises(ValueError, match="no item with id 11"):
        attach_metadata(out, {11: {}})
    with TestClient(create_app(run_dir, out, limits=LIMITS)) as c:
        assert c.get("/v1/items/2").json()["metadata"] == {"lat": 10.0, "lon": 20.0,
                                                           "tags": ["real"]}
        assert c.get(f"/v1/items/{new}").json()["metadata"] == meta
        assert c.get("/v1/items/3").json()["metadata"]["synthetic"] is True


def test_a_hash_index_filters_through_the_codes_and_cannot_delete(run_dir, trained, db,
                                                                  tmp_path):
    index = BinaryIndex(16, "hash", nflip=1)
    index.add(db.bits, np.arange(len(db)))
    save_run_index(trained, index, tmp_path / "hash", split="train", code="binary")
    filters = {"tags": ["new"], "near": {"lat": 35.68, "lon": 139.65, "km": 30}}
    with TestClient(create_app(run_dir, tmp_path / "hash", limits=LIMITS)) as c, \
            TestClient(create_app(run_dir, limits=LIMITS)) as flat:
        assert c.get("/v1/info").json()["index_kind"] == "hash"
        want = flat.post("/v1/search", json={"id": 9, "k": 7, "filters": filters}).json()
        got = c.post("/v1/search", json={"id": 9, "k": 7, "filters": filters}).json()
        assert got["results"] == want["results"] and got["exact"]
        assert "flat copy" in got["method"]
        error(c.delete("/v1/items/3"), 409, "conflict")
        new = c.post("/v1/items", json={"code_hex": db.bits[9].tobytes().hex(), "metadata": {
            "tags": ["new"], "lat": 35.68, "lon": 139.65}}).json()["id"]
        got = c.post("/v1/search", json={"id": 9, "k": 3, "filters": filters}).json()
        assert new in [x["id"] for x in got["results"]]
        still_serving(c)


def test_no_synthetic_metadata_and_the_command_line(run_dir, monkeypatch):
    with TestClient(create_app(run_dir, synthetic_metadata=False)) as c:
        assert c.get("/v1/items/0").json()["metadata"] is None
        r = c.post("/v1/search", json={"id": 0, "filters": {"tags": ["sale"]}})
        assert r.status_code == 200 and r.json()["results"] == []
    import uvicorn

    from hashlab.cli import app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda web, **kw: calls.append((web, kw)))
    result = CliRunner().invoke(app, ["serve", str(run_dir), "--port", "8123", "--max-batch",
                                      "4", "--no-synthetic-metadata"],
                                env={"HASHLAB_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    (web, kw), = calls
    assert kw == {"host": "127.0.0.1", "port": 8123, "log_level": "info", "access_log": True}
    svc = web.state.service
    assert svc.api_key == "k" and svc.limits.max_batch == 4 and svc.state.synthetic is None
    result = CliRunner().invoke(app, ["serve", str(run_dir / "missing")])
    assert result.exit_code == 2 and "error:" in result.output

"""The HTTP API of ``hashlab serve`` (FastAPI): :func:`create_app`. Endpoints and their JSON are
described in :mod:`hashlab.serve` and ``docs/serve.md``."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hashlab.errors import HashlabError
from hashlab.index.filters import ItemFilter
from hashlab.index.registry import BINARY_KINDS, FLOAT_KINDS
from hashlab.serve.batcher import BusyError, MicroBatcher
from hashlab.serve.errors import ApiError, error_response, install_error_handlers
from hashlab.serve.errors import validation_message as _validation_message
from hashlab.serve.images import (
    b64decode,
    check_content_type,
    decode_image,
    model_array,
    thumbnail_png,
)
from hashlab.serve.limits import ServeLimits
from hashlab.serve.metadata import check_metadata
from hashlab.serve.metrics import Metrics
from hashlab.serve.state import ConflictError, PersistError, ServeState, UnknownItemError

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
#: the ways to give the query of a search (exactly one per request)
QUERY_SOURCES = ("image_b64", "code_hex", "code_b64", "vector", "id", "text")
DEFAULT_K = 10
_PLACEHOLDER = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>hashlab</title></head>"
                "<body><h1>hashlab serve</h1><p>The web page is not installed; the API is at "
                "<a href=\"/docs\">/docs</a> (<code>GET /v1/info</code>).</p></body></html>")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RerankBody(_Body):
    lambda_: float = Field(alias="lambda")


class _CodeBody(_Body):
    """What gives an item's or a query's code: an image, packed bits, a vector or an id."""

    image_b64: str | None = None
    code_hex: str | None = None
    vector: list[float] | None = None
    id: int | None = None


class SearchBody(_CodeBody):
    code_b64: str | None = None
    text: str | None = None
    k: int | None = None
    radius: int | None = None
    exact: bool = False
    filters: dict[str, Any] | None = None
    rerank: RerankBody | None = None


class AddItemBody(_CodeBody):
    label: int | None = None
    metadata: dict[str, Any] | None = None


def _parse(model: type[_Body], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", _validation_message(exc.errors())) from None


async def _read_json(request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"expected a JSON body (Content-Type: application/json), got "
                       f"{kind or 'no content type'}")
    try:
        return json.loads(await request.body())
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_json", "the request body is not valid JSON") from None


def _bits_fields(bits: np.ndarray | None) -> dict[str, str | None]:
    if bits is None:
        return {"bits_hex": None, "bits_b64": None}
    raw = bits.tobytes()
    return {"bits_hex": raw.hex(), "bits_b64": base64.b64encode(raw).decode("ascii")}


class Service:
    """The state, encoder batcher, metrics and limits behind the routes of one app."""

    def __init__(self, state: ServeState, limits: ServeLimits, api_key: str | None) -> None:
        self.state, self.limits, self.api_key = state, limits, api_key
        self.metrics = Metrics()
        self.batcher = MicroBatcher(state.encode_batch, max_batch=limits.max_batch,
                                    max_delay_s=limits.max_delay_ms / 1000,
                                    max_queue=limits.max_queue,
                                    on_batch=self.metrics.observe_batch)
        self.metrics.gauges.update({
            "hashlab_index_size": ("Items in the index.", lambda: len(state.snap.index)),
            "hashlab_queue_depth": ("Images waiting for the encoder.",
                                    lambda: self.batcher.depth)})
        self.mode = "L" if state.image_shape[0] == 1 else "RGB"

    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "unauthorized", "this endpoint needs the server's API key in "
                                                "the X-API-Key header")

    # -- images ------------------------------------------------------------------------------

    async def upload_bytes(self, upload: Any, name: str) -> bytes:
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "bad_image", f"{name}: expected a file upload")
        check_content_type(upload.content_type, name)
        data = await upload.read(self.limits.max_upload_bytes + 1)
        if len(data) > self.limits.max_upload_bytes:
            raise ApiError(413, "too_large", f"{name}: more than the limit of "
                                             f"{self.limits.max_upload_bytes} bytes")
        return data

    def _decode(self, blobs: list[tuple[bytes, str]]) -> list[tuple[Any, Any]]:
        out = []
        for data, name in blobs:
            img = decode_image(data, name, self.limits, self.mode)
            out.append((img, self.state.to_tensor(model_array(img, self.state.image_shape))))
        return out

    async def encode(self, blobs: list[tuple[bytes, str]]) -> list[tuple[Any, ...]]:
        """``(float code, bits or None, decoded image)`` of each image, through the batcher."""
        decoded = await run_in_threadpool(self._decode, blobs)
        futures = []
        try:
            for _, tensor in decoded:
                futures.append(self.batcher.submit(tensor))
        except BusyError as exc:
            for f in futures:
                f.cancel()
            raise ApiError(503, "busy", str(exc), headers={"Retry-After": "1"}) from None
        try:
            outs = await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)),
                self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            for f in futures:
                f.cancel()
            raise ApiError(504, "timeout", f"the encoder did not answer within "
                                           f"{self.limits.request_timeout_s} s") from None
        return [(floats, bits, img) for (floats, bits), (img, _) in
                zip(outs, decoded, strict=True)]

    async def encode_texts(self, texts: Any) -> dict[str, Any]:
        """``POST /v1/encode`` with ``{"texts": [...]}``: the codes of texts (cross-modal)."""
        if not self.state.cross_modal:
            raise ApiError(400, "not_cross_modal", "this run is not cross-modal: it encodes "
                                                   "images only")
        if not isinstance(texts, list) or not texts or \
                not all(isinstance(t, str) for t in texts):
            raise ApiError(422, "invalid_request", "texts: expected a non-empty list of strings")
        if len(texts) > self.limits.max_images:
            raise ApiError(413, "too_many_texts", f"at most {self.limits.max_images} texts per "
                                                  "request")
        codes, warnings = [], []
        for t in texts:
            try:
                bits, w = await run_in_threadpool(self.state.text_code, t)
            except ValueError as exc:
                raise ApiError(400, "bad_text", str(exc)) from None
            codes.append({"float": None, **_bits_fields(bits)})
            warnings += w
        return {"nbits": self.state.code_size, "codes": codes, "warnings": warnings}

    # -- search ------------------------------------------------------------------------------

    def _k_radius(self, body: SearchBody) -> tuple[int | None, int | None]:
        if body.radius is not None:
            if body.k is not None:
                raise ApiError(422, "invalid_request", "give k or radius, not both")
            if not self.state.binary:
                raise ApiError(400, "radius_needs_binary", "radius is a Hamming radius: this "
                                                           "index holds float codes; use k")
            if body.radius < 0:
                raise ApiError(422, "invalid_radius", f"radius must be >= 0, got {body.radius}")
            return None, body.radius
        k = DEFAULT_K if body.k is None else body.k
        if not 1 <= k <= self.limits.max_k:
            raise ApiError(422, "invalid_k", f"k must be in 1..{self.limits.max_k}, got {k}")
        return k, None

    async def _query_code(self, body: SearchBody, image: tuple[bytes, str] | None
                          ) -> np.ndarray:
        state, limits = self.state, self.limits
        if image is not None or body.image_b64 is not None:
            blob = image or (b64decode(body.image_b64, "image_b64", limits.max_upload_bytes),
                             "image_b64")
            ((floats, bits, _),) = await self.encode([blob])
            return state.query_code(floats, bits)
        try:
            if body.code_hex is not None:
                try:
                    data = bytes.fromhex(body.code_hex)
                except ValueError:
                    raise ValueError("code_hex: not a hexadecimal string") from None
                return state.code_from_bytes(data, "code_hex")
            if body.code_b64 is not None:
                data = b64decode(body.code_b64, "code_b64", state.code_width)
                return state.code_from_bytes(data, "code_b64")
            if body.vector is not None:
                return state.code_from_vector(body.vector)
        except ValueError as exc:
            raise ApiError(400, "bad_code", str(exc)) from None
        return state.snap.code(body.id)  # type: ignore[arg-type]

    async def search(self, body: SearchBody, image: tuple[bytes, str] | None = None
                     ) -> dict[str, Any]:
        start = time.perf_counter()
        given = [n for n in QUERY_SOURCES if getattr(body, n) is not None]
        given += ["image"] if image is not None else []
        if len(given) != 1:
            raise ApiError(422, "invalid_query", "give exactly one query: image_b64, code_hex, "
                           f"code_b64, vector, id or text (got {', '.join(given) or 'none'})")
        if body.text is not None and not self.state.cross_modal:
            raise ApiError(400, "not_cross_modal", "this run is not cross-modal: it encodes "
                           "images only; query with an image, a code, a vector or an id")
        k, radius = self._k_radius(body)
        try:
            flt = ItemFilter.from_dict(body.filters)
        except ValueError as exc:
            raise ApiError(422, "bad_filters", str(exc)) from None
        lam = None
        if body.rerank is not None:
            lam = body.rerank.lambda_
            if flt.near is None:
                raise ApiError(422, "bad_rerank", "rerank needs filters.near: the location "
                                                  "whose distance is added to the score")
            if not math.isfinite(lam) or lam < 0:
                raise ApiError(422, "bad_rerank", f"rerank.lambda must be a finite number >= 0, "
                                                  f"got {lam}")
        text_warnings: list[str] = []
        if body.text is not None:
            try:
                q, text_warnings = await run_in_threadpool(self.state.text_code, body.text)
            except ValueError as exc:
                raise ApiError(400, "bad_text", str(exc)) from None
        else:
            q = await self._query_code(body, image)
        try:
            out = await run_in_threadpool(self.state.search, q, k=k, radius=radius,
                                          exact=body.exact, flt=flt, rerank=lam)
        except ValueError as exc:
            raise ApiError(400, "bad_search", str(exc)) from None
        out["warnings"] = text_warnings + out["warnings"]
        metric = "hamming" if self.state.binary else \
            self.state.snap.index.params.get("metric", "cosine")
        return {"results": out["results"], "exact": out["exact"], "warnings": out["warnings"],
                "metric": metric, "k": k, "radius": radius, "method": out["method"],
                "filtered_count": out["selected"],
                "took_ms": (time.perf_counter() - start) * 1000}

    # -- items -------------------------------------------------------------------------------

    async def add_item(self, body: AddItemBody) -> int:
        state, limits = self.state, self.limits
        if body.image_b64 is None and body.code_hex is None and body.vector is None:
            raise ApiError(422, "invalid_request", "give image_b64, code_hex or vector")
        if body.code_hex is not None and body.vector is not None:
            raise ApiError(422, "invalid_request", "give code_hex or vector, not both")
        if body.id is not None and not 0 <= body.id < 2**63:
            raise ApiError(422, "invalid_request", f"id must be >= 0, got {body.id}")
        if body.label is not None and not 0 <= body.label < len(state.classes):
            raise ApiError(422, "invalid_request",
                           f"label must be in 0..{len(state.classes) - 1}, got {body.label}")
        try:
            metadata = None if body.metadata is None else check_metadata(
                body.metadata, limits.max_metadata_bytes)
        except ValueError as exc:
            raise ApiError(422, "bad_metadata", str(exc)) from None
        code, png = None, None
        if body.code_hex is not None or body.vector is not None:
            code = await self._query_code(SearchBody(code_hex=body.code_hex, vector=body.vector),
                                          None)
        if body.image_b64 is not None:
            blob = (b64decode(body.image_b64, "image_b64", limits.max_upload_bytes), "image_b64")
            if code is None:
                ((floats, bits, img),) = await self.encode([blob])
                code = state.query_code(floats, bits)
            else:
                (img, _), = await run_in_threadpool(self._decode, [blob])
            png = await run_in_threadpool(thumbnail_png, img, limits.thumbnail_px)
        try:
            return await run_in_threadpool(state.add_item, code, item_id=body.id,
                                           label=body.label, metadata=metadata, image_png=png)
        except ValueError as exc:  # what the index refuses (Milvus: a tag over its limits)
            raise ApiError(422, "bad_item", str(exc)) from None


# ---------------------------------------------------------------------------------------------
# middleware
# ---------------------------------------------------------------------------------------------

class _HttpMiddleware:
    """A pure ASGI middleware: HTTP requests go to :meth:`http`, anything else passes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        raise NotImplementedError


class BodyLimitMiddleware(_HttpMiddleware):
    """413 for a request body over ``limit`` bytes: at once on its Content-Length, else as soon
    as reading passes the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        message = f"the request body is larger than the limit of {self.limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await error_response(413, "too_large", message)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, "too_large", message)
            return msg

        await self.app(scope, limited, send)


class MetricsMiddleware(_HttpMiddleware):
    """Counts every request by route, method and status, and times it."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        start, status = time.perf_counter(), 500

        async def sending(msg: Any) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status,
                                         time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------

def create_app(run_dir: str | Path, index_dir: str | Path | None = None, *,
               api_key: str | None = None, limits: ServeLimits | None = None,
               synthetic_metadata: bool = True) -> FastAPI:
    """The API of a finished run and its index (see :mod:`hashlab.serve`).

    Without ``index_dir``, an in-memory flat index of the run's ``train`` split (binary codes
    for a hash head, else float) with ids = positions. With it, the index built by ``hashlab
    index``; adds and deletes are saved to it atomically. A ``milvus://`` reference (a string)
    serves the collection written by ``hashlab index --backend milvus``: searches and filters
    run in Milvus, adds and deletes go straight to the collection. ``api_key``: required in the
    ``X-API-Key`` header of the write endpoints. ``synthetic_metadata``: give the split's
    images synthetic locations, tags and times when no metadata is stored.
    """
    limits = limits or ServeLimits()
    state = ServeState(run_dir, index_dir, limits=limits, synthetic=synthetic_metadata)
    svc = Service(state, limits, api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.ready = True
        yield
        state.ready = False
        svc.batcher.close()

    import hashlab

    app = FastAPI(title="hashlab", version=hashlab.__version__, lifespan=lifespan,
                  summary="image retrieval with compact codes")
    app.state.service = svc
    install_error_handlers(app)
    for exc_type, status, code in ((UnknownItemError, 404, "not_found"),
                                   (ConflictError, 409, "conflict"),
                                   (PersistError, 500, "persist_failed")):
        app.add_exception_handler(exc_type, lambda r, e, s=status, c=code: error_response(
            s, c, str(e)))
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        page = STATIC_DIR / "index.html"
        return FileResponse(page) if page.is_file() else HTMLResponse(_PLACEHOLDER)

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        index = state.snap.index
        return {"run": state.run.run_dir.name, "nbits": state.code_size if state.binary else None,
                "dim": state.code_size, "binary": state.binary, "code": state.code,
                "index_kind": index.kind,
                "exact_radius": index.exact_radius if state.binary else None,
                "count": len(index), "classes": state.classes,
                "image_shape": list(state.image_shape),
                "kinds": (BINARY_KINDS if state.binary else FLOAT_KINDS).names(),
                "cross_modal": state.cross_modal, "modality": state.modality,
                "vocabulary_size": getattr(state.run, "vocabulary_size", None),
                "write_requires_key": api_key is not None,
                "split": state.split, "persistent": state.persistent,
                "backend": state.backend,
                "synthetic_metadata": state.synthetic is not None,
                "limits": {"max_k": limits.max_k, "max_upload_bytes": limits.max_upload_bytes,
                           "max_pixels": limits.max_pixels, "max_images": limits.max_images}}

    @app.post("/v1/encode")
    async def encode(request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form(max_files=limits.max_images, max_fields=limits.max_images)
            uploads = form.getlist("images")
            blobs = [(await svc.upload_bytes(u, f"images[{i}]"), f"images[{i}]")
                     for i, u in enumerate(uploads)]
        else:
            body = await _read_json(request)
            if isinstance(body, dict) and set(body) == {"texts"}:
                return await svc.encode_texts(body["texts"])
            if not isinstance(body, dict) or set(body) != {"images_b64"} \
                    or not isinstance(body["images_b64"], list):
                raise ApiError(422, "invalid_request", "expected {\"images_b64\": [base64 "
                                                       "strings]}, {\"texts\": [strings]} "
                                                       "(cross-modal runs) or a multipart "
                                                       "field images")
            if len(body["images_b64"]) > limits.max_images:
                raise ApiError(413, "too_many_images", f"at most {limits.max_images} images "
                                                       "per request")
            blobs = [(b64decode(s, f"images_b64[{i}]", limits.max_upload_bytes),
                      f"images_b64[{i}]") for i, s in enumerate(body["images_b64"])]
        if not blobs:
            raise ApiError(422, "invalid_request", "no images: send one or more files in the "
                                                   "multipart field images, or images_b64")
        codes = await svc.encode(blobs)
        return {"nbits": state.code_size if state.run.model.binary else None,
                "codes": [{"float": floats.tolist(), **_bits_fields(bits)}
                          for floats, bits, _ in codes]}

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        return await svc.search(_parse(SearchBody, await _read_json(request)))

    @app.post("/v1/search/image")
    async def search_image(request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with a "
                                                          "file field image")
        form = await request.form(max_files=1, max_fields=8)
        if "image" not in form:
            raise ApiError(422, "invalid_request", "missing the file field image")
        fields: dict[str, Any] = {}
        for name in ("k", "radius", "exact", "filters"):
            value = form.get(name)
            if isinstance(value, str) and value != "":
                fields[name] = value
        if "filters" in fields:
            try:
                fields["filters"] = json.loads(fields["filters"])
            except ValueError:
                raise ApiError(400, "bad_json", "filters: not valid JSON") from None
        body = _parse(SearchBody, fields)
        return await svc.search(body, (await svc.upload_bytes(form["image"], "image"), "image"))

    @app.get("/v1/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, Any]:
        return state.item(state.snap, item_id)

    @app.get("/v1/items/{item_id}/image")
    async def get_item_image(item_id: int) -> Response:
        png = await run_in_threadpool(state.image_png, item_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/items", status_code=201)
    async def add_item(request: Request) -> JSONResponse:
        svc.check_key(request)
        item_id = await svc.add_item(_parse(AddItemBody, await _read_json(request)))
        return JSONResponse({"id": item_id}, status_code=201)

    @app.delete("/v1/items/{item_id}")
    async def delete_item(item_id: int, request: Request) -> dict[str, Any]:
        svc.check_key(request)
        await run_in_threadpool(state.delete_item, item_id)
        return {"deleted": item_id}

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready() -> dict[str, Any]:
        if not state.ready:
            raise ApiError(503, "not_ready", "the server is starting or stopping")
        try:
            count = await run_in_threadpool(len, state.snap.index)
        except HashlabError as exc:  # Milvus unreachable
            raise ApiError(503, "not_ready", f"the index does not answer: {exc}") from None
        return {"status": "ready", "model": True, "index": True, "count": count}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(svc.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app

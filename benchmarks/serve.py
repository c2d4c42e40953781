"""Throughput and latency of ``hashlab serve``, with the model-alone encoder as the ceiling.

Starts ``python -m hashlab serve RUN`` on 127.0.0.1 (a separate process, as a user would run it)
and drives it with a bounded asynchronous client (a minimal HTTP/1.1 client on asyncio streams,
``concurrency`` keep-alive connections with one request in flight each) for three kinds of
request:

- ``code``: ``POST /v1/search {"code_hex": ..., "k": 10}`` with the test split's codes;
- ``id``: ``POST /v1/search {"id": ..., "k": 10}`` with random database ids;
- ``image``: ``POST /v1/search {"image_b64": ..., "k": 10}`` with the test images as 28×28 PNGs
  (decoded, micro-batched and encoded by the server).

Each (kind, concurrency) pair sends ``--requests`` requests after a short warm-up and reports
requests/s and the p50 / p99 latency seen by the client. In the same run the encoder alone
(``CodeModel.encode_all`` on batches of the server's ``--max-batch`` preprocessed images, no HTTP)
gives the ceiling for search-by-image; the report shows image requests/s as a fraction of it.
The server and the client share the machine's cores, as on a laptop. Prints a table and
writes JSON.

    python benchmarks/serve.py [--run RUN] [--requests 2000] [--concurrency 1 8 32]

Without ``--run`` it trains the quick demo model (``fmnist/hash64``, 1 epoch on 12,000 images)
into ``--workdir`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from hashlab.io import atomic_write_json

KINDS = ("code", "id", "image")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_run(run: Path | None, workdir: Path) -> Path:
    if run is not None:
        return run
    path = workdir / "serve-bench"
    if not (path / "model.pt").exists():
        from hashlab.cli import resolve_config_path
        from hashlab.config import load_config
        from hashlab.train.engine import Trainer

        cfg = load_config(resolve_config_path("fmnist/hash64"), [
            "train.epochs=1", "train.limit_train_samples=12000", "name=serve-bench",
            f"output_dir={workdir}"])
        Trainer(cfg, path, progress=False).fit(resume=(path / "checkpoint.pt").exists())
    return path


def payloads(run: Path, n: int, seed: int = 0) -> dict[str, list[dict]]:
    """Request bodies of each kind: test-split codes, random ids, test images as PNG."""
    from hashlab.encode import TrainedRun

    trained = TrainedRun(run)
    test = trained.load_split("test")
    codes = trained.encode("test", progress=False)
    db_size = len(trained.load_split("train"))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(test), size=min(n, len(test)), replace=False)
    out: dict[str, list[dict]] = {"code": [], "id": [], "image": []}
    for i in pick:
        out["code"].append({"code_hex": codes.bits[i].tobytes().hex(), "k": 10})
        buf = io.BytesIO()
        Image.fromarray(np.asarray(test.images[i]).squeeze()).save(buf, format="PNG")
        out["image"].append({"image_b64": base64.b64encode(buf.getvalue()).decode(), "k": 10})
    out["id"] = [{"id": int(i), "k": 10} for i in rng.integers(0, db_size, len(pick))]
    return out


def encoder_ceiling(run: Path, batch: int, seconds: float = 5.0) -> float:
    """Images/s of the model alone on preprocessed test images, ``batch`` at a time."""
    from hashlab.encode import TrainedRun

    trained = TrainedRun(run)
    images, _ = trained.load_split("test").get_batch(torch.arange(batch))
    trained.model.encode_all(images)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        trained.model.encode_all(images)
        done += batch
    return done / (time.perf_counter() - start)


async def drive(host: str, port: int, bodies: list[dict], concurrency: int, total: int
                ) -> tuple[float, list[float], int]:
    """Send ``total`` requests over ``concurrency`` keep-alive connections (one request in flight
    on each): (requests/s, latencies in ms, failures). A minimal HTTP/1.1 client on asyncio
    streams, so that the load generator, which shares the cores with the server, costs as
    little CPU as possible (the role wrk plays elsewhere)."""
    requests = []
    for body in bodies:
        data = json.dumps(body).encode()
        requests.append(b"POST /v1/search HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                        b"application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    latencies: list[float] = []
    failures = 0
    sent = 0

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       request: bytes) -> int:
        writer.write(request)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return status

    async def connection(warm_up: int) -> None:
        nonlocal sent, failures
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in requests[:warm_up]:
                await exchange(reader, writer, request)
            await started.wait()
            while sent < total:
                request = requests[sent % len(requests)]
                sent += 1
                t0 = time.perf_counter()
                status = await exchange(reader, writer, request)
                latencies.append((time.perf_counter() - t0) * 1000)
                failures += status != 200
        finally:
            writer.close()

    started = asyncio.Event()
    tasks = [asyncio.create_task(connection(5)) for _ in range(concurrency)]
    await asyncio.sleep(0.5)  # let every connection open and warm up
    start = time.perf_counter()
    started.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    return len(latencies) / wall, latencies, failures


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("runs"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    args = parser.parse_args(argv)

    run = ensure_run(args.run, args.workdir)
    bodies = payloads(run, 1000)
    torch.set_num_threads(2)
    ceiling = encoder_ceiling(run, args.max_batch)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "hashlab", "serve", str(run), "--port", str(port),
         "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
         "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(600):  # wait up to 60 s for the model and index to load
            try:
                if httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not become ready in 60 s")
        for kind in args.kinds:
            for c in args.concurrency:
                rps, lat, failed = asyncio.run(drive("127.0.0.1", port, bodies[kind], c,
                                                     args.requests))
                row = {"kind": kind, "concurrency": c, "requests": len(lat),
                       "requests_per_second": rps, "p50_ms": percentile(lat, 50),
                       "p99_ms": percentile(lat, 99), "mean_ms": statistics.fmean(lat),
                       "failed": failed}
                rows.append(row)
                print(f"{kind:>5} c={c:<3} {rps:8.0f} req/s  p50 {row['p50_ms']:6.1f} ms  "
                      f"p99 {row['p99_ms']:6.1f} ms  failed {failed}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\nencoder alone (batch {args.max_batch}): {ceiling:.0f} images/s\n")
    print("| request | concurrency | requests/s | p50 ms | p99 ms | failed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| search by {r['kind']} | {r['concurrency']} | {r['requests_per_second']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} |")
    image = [r for r in rows if r["kind"] == "image"]
    if image:
        best = max(r["requests_per_second"] for r in image)
        print(f"\nsearch-by-image best / encoder alone = {best / ceiling:.2f} (target >= 0.70)")
    atomic_write_json(args.out, {
        "command": "python benchmarks/serve.py " + " ".join(argv or sys.argv[1:]),
        "run": str(run), "max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms,
        "encoder_images_per_second": ceiling, "rows": rows, "cpus": os.cpu_count(),
        "machine": platform.machine(), "torch": torch.__version__,
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Search backends (issue 17): insert rate and search latency of FAISS ``flat`` against Milvus
through :class:`hashlab.index.milvus.MilvusIndex`, on the same random codes.

- binary: 64-bit packed codes, ``BinaryIndex(64, "flat")`` (FAISS ``IndexBinaryFlat`` behind an
  id map) against a ``BIN_FLAT`` / Hamming collection;
- float: 128-d Gaussian vectors, cosine, ``FloatIndex(128, "flat")`` against a ``FLAT`` / IP
  collection (hashlab normalises the vectors for both).

Sizes: 100,000 codes (``--quick``), 100,000 and 1,000,000 (full); 1,000 queries (half
perturbed database codes / vectors, half random), k = 10. Per backend and size: inserts per
second (``add`` of every code with its id, in Milvus through ``MilvusIndex.add``: id check,
batches of 10,000 rows), the median and 95th percentile latency of one query at a time (a loop
over the queries), and the throughput of one call with all queries. Agreement: the fraction of
queries whose k ids are identical, in order, in both backends (binary: exact search with the
same tie rule, so 1.0 is expected; float: equal up to float rounding).

**Milvus here is milvus-lite**, the embedded engine of the tests (a local ``.db`` file and a
server process started by pymilvus), on the same machine as the benchmark: a test stand-in, not
a statement about Milvus standalone or a cluster, whose numbers depend on their deployment.

    python benchmarks/search_backends.py --quick   # 100k codes (~1-2 min on 2 cores)
    python benchmarks/search_backends.py           # 100k and 1M codes

Writes ``benchmarks/results/search_backends_{quick,full}.json`` (after every row; ``"complete":
false`` until the plan is done) and prints the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SIZES = {"quick": (100_000,), "full": (100_000, 1_000_000)}
NBITS, DIM, NQ, K = 64, 128, 1000, 10
FAMILIES = ("binary", "float")
BACKENDS = ("faiss", "milvus-lite")


def make_data(family: str, n: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` database codes and ``nq`` queries: half perturbed database entries, half random."""
    rng = np.random.default_rng(seed)
    half = nq // 2
    if family == "binary":
        x = rng.integers(0, 256, (n, NBITS // 8), dtype=np.uint8)
        flips = (rng.random((half, NBITS)) < 0.05).reshape(half, -1, 8)
        mask = np.packbits(flips, axis=2, bitorder="little")[..., 0]
        near = x[rng.choice(n, half, replace=False)] ^ mask
        far = rng.integers(0, 256, (nq - half, NBITS // 8), dtype=np.uint8)
        return x, np.concatenate([near, far]).astype(np.uint8)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    near = x[rng.choice(n, half, replace=False)] + 0.3 * rng.standard_normal((half, DIM),
                                                                             dtype=np.float32)
    far = rng.standard_normal((nq - half, DIM), dtype=np.float32)
    return x, np.concatenate([near, far]).astype(np.float32)


def measure(index: Any, x: np.ndarray, q: np.ndarray, ids: np.ndarray,
            single: int) -> tuple[dict[str, Any], np.ndarray]:
    """Insert ``x``, then time single queries and one batch; returns the row and the batch's
    ids."""
    start = time.perf_counter()
    index.add(x, ids)
    insert = time.perf_counter() - start
    index.search(q[:1], K)  # warm-up
    lat = []
    for row in q[:single]:
        t0 = time.perf_counter()
        index.search(row[None], K)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    _, found = index.search(q, K)
    batch = time.perf_counter() - t0
    lat_ms = np.asarray(lat) * 1000
    return {"insert_seconds": insert, "inserts_per_s": x.shape[0] / insert,
            "single_queries": len(lat), "single_median_ms": float(np.median(lat_ms)),
            "single_p95_ms": float(np.percentile(lat_ms, 95)),
            "batch_seconds": batch, "batch_qps": q.shape[0] / batch}, found


def environment(threads: int) -> dict[str, Any]:
    import faiss

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"faiss": faiss.__version__, "pymilvus": version("pymilvus"),
            "milvus-lite": version("milvus-lite"), "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "faiss_threads": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 codes only")
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="database sizes (default: 100,000; full: 100,000 and 1,000,000)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--queries", type=int, default=NQ)
    parser.add_argument("--single", type=int, default=None,
                        help="queries timed one at a time (default: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="FAISS OpenMP threads (1: the machine is shared)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import faiss

    from hashlab.index import BinaryIndex, FloatIndex
    from hashlab.index.milvus import MilvusIndex
    from hashlab.io import atomic_write_json

    faiss.omp_set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    sizes = tuple(args.sizes or SIZES[mode])
    single = args.single or args.queries
    out = args.out or Path("benchmarks/results") / f"search_backends_{mode}.json"
    env = environment(args.threads)
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv), "mode": mode, "quick": args.quick,
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, faiss {env['faiss']}, "
                   f"milvus-lite {env['milvus-lite']} (pymilvus {env['pymilvus']})",
        "environment": env,
        "settings": {"nbits": NBITS, "dim": DIM, "queries": args.queries, "k": K,
                     "single_queries": single, "sizes": list(sizes),
                     "families": args.families, "faiss_kind": "flat",
                     "milvus_kind": "flat (BIN_FLAT / FLAT, IP on normalised vectors)",
                     "milvus_insert_batch": 10_000, "faiss_threads": args.threads},
        "rows": [], "planned_runs": len(sizes) * len(args.families) * len(BACKENDS),
        "runs_done": 0, "complete": False}
    start = time.perf_counter()

    def save() -> None:
        result["seconds"] = time.perf_counter() - start
        atomic_write_json(out, result)

    with tempfile.TemporaryDirectory(prefix="search-backends-") as tmp:
        db = str(Path(tmp) / "bench.db")
        for n in sizes:
            for family in args.families:
                x, q = make_data(family, n, args.queries)
                ids = np.arange(n, dtype=np.int64)
                found: dict[str, np.ndarray] = {}
                for backend in BACKENDS:
                    if backend == "faiss":
                        index: Any = BinaryIndex(NBITS, "flat") if family == "binary" else \
                            FloatIndex(DIM, "flat")
                    else:
                        size = {"nbits": NBITS} if family == "binary" else {"dim": DIM}
                        index = MilvusIndex(db, f"bench_{family}_{n}", family=family,
                                            overwrite=True, **size)
                    row, found[backend] = measure(index, x, q, ids, single)
                    row = {"n": n, "family": family, "backend": backend, **row}
                    if backend != "faiss":
                        same = np.all(found[backend] == found["faiss"], axis=1)
                        row["agreement"] = float(same.mean())
                        overlap = [len(set(a) & set(b)) / K for a, b in
                                   zip(found[backend].tolist(), found["faiss"].tolist(),
                                       strict=True)]
                        row["id_overlap"] = float(statistics.mean(overlap))
                        index.drop()
                    del index
                    result["rows"].append(row)
                    result["runs_done"] += 1
                    save()
                    print(f"{family:6s} n={n:>9,} {backend:11s} insert "
                          f"{row['inserts_per_s']:>11,.0f}/s  single median "
                          f"{row['single_median_ms']:7.3f} ms  p95 "
                          f"{row['single_p95_ms']:7.3f} ms  batch {row['batch_qps']:>10,.0f} q/s"
                          + (f"  agreement {row['agreement']:.3f}" if "agreement" in row else ""),
                          flush=True)
    result["complete"] = True
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Search benchmark: hashlab's FAISS-backed binary indexes next to raw FAISS and numpy.

For random 64- and 256-bit codes (1M by default) and, if present, the codes of a trained
Fashion-MNIST run: 1,000 queries (database codes with 0–2 bits flipped, so that radius-2 lookups
find something), top-100 search and radius-2 search per index kind, queries/s, recall against the
exact flat scan, and memory per code (serialized index bytes / codes). The raw-FAISS and numpy
baselines are measured in the same run. Prints a table and writes JSON.

    python benchmarks/search.py                 # 1M codes
    python benchmarks/search.py --n 200000      # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from hashlab.index import BinaryIndex
from hashlab.io import atomic_write_json

KINDS = ["flat", "hash", "multihash", "ivf", "hnsw"]


def timed(fn, repeats: int = 3):
    """(best seconds, last result) of ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def timed_pair(fn_a, fn_b, repeats: int = 5):
    """Best seconds of ``fn_a`` and of ``fn_b``, called alternately so both see the same load."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn_a()
        best_a = min(best_a, time.perf_counter() - start)
        start = time.perf_counter()
        fn_b()
        best_b = min(best_b, time.perf_counter() - start)
    return best_a, best_b


def make_queries(db: np.ndarray, nq: int, nbits: int, rng: np.random.Generator) -> np.ndarray:
    q = db[rng.choice(len(db), nq, replace=False)].copy()
    for row in q:
        for bit in rng.choice(nbits, rng.integers(0, 3), replace=False):
            row[bit // 8] ^= np.uint8(1 << (bit % 8))
    return q


def recall(found: list[set[int]], truth: list[set[int]]) -> float:
    total = sum(len(t) for t in truth)
    return 1.0 if total == 0 else sum(len(f & t) for f, t in zip(found, truth, strict=True)) / total


def bench_codes(
    name: str, db: np.ndarray, nbits: int, nq: int, k: int, radius: int, kinds: list[str], seed: int
) -> dict:
    rng = np.random.default_rng(seed)
    q = make_queries(db, nq, nbits, rng)
    ids = np.arange(len(db), dtype=np.int64)
    rows: list[dict] = []

    # raw FAISS flat, the baseline hashlab's flat must keep up with
    raw = faiss.IndexBinaryFlat(8 * db.shape[1])
    raw.add(db)
    t_raw_knn, _ = timed(lambda: raw.search(q, k))
    t_raw_range, (lims, _, _) = timed(lambda: raw.range_search(q, radius + 1))
    rows.append(
        {
            "kind": "raw FAISS IndexBinaryFlat",
            "knn_qps": nq / t_raw_knn,
            "range_qps": nq / t_raw_range,
            "bytes_per_code": db.shape[1],
        }
    )

    # numpy brute force on a subset of queries, extrapolated
    sub = q[: max(10, nq // 50)]

    def numpy_knn():
        for row in sub:
            d = np.bitwise_count(db ^ row).sum(1)
            np.argpartition(d, k)[:k]

    t_np, _ = timed(numpy_knn, repeats=1)
    rows.append(
        {
            "kind": "numpy popcount scan",
            "knn_qps": len(sub) / t_np,
            "range_qps": len(sub) / t_np,
            "bytes_per_code": db.shape[1],
        }
    )

    truth_range: list[set[int]] = []
    truth_knn: list[set[int]] = []
    for kind in kinds:
        build_start = time.perf_counter()
        index = BinaryIndex(nbits, kind)
        index.add(db, ids)
        build = time.perf_counter() - build_start
        t_knn, (_, found) = timed(lambda index=index: index.search(q, k))
        row = {
            "kind": f"hashlab {kind}",
            "build_s": build,
            "knn_qps": nq / t_knn,
            "bytes_per_code": faiss.serialize_index_binary(index.faiss_index).size / len(db),
        }
        # the same FAISS index called directly: what hashlab's wrapper costs on top
        fi = index.faiss_index
        t_fk, _ = timed(lambda fi=fi: fi.search(q, k))
        row.update(raw_knn_qps=nq / t_fk, knn_vs_raw=t_fk / t_knn)
        knn_sets = [set(r[r >= 0].tolist()) for r in found]
        if kind == "flat":
            truth_knn = knn_sets
            # the acceptance ratio: raw IndexBinaryFlat and hashlab flat timed alternately
            t_raw_pair, t_ours_pair = timed_pair(
                lambda: raw.search(q, k), lambda index=index: index.search(q, k)
            )
            row["knn_vs_raw_flat"] = t_raw_pair / t_ours_pair
        row["knn_recall"] = recall(knn_sets, truth_knn)
        if kind != "hnsw":
            t_range, hits = timed(lambda index=index: index.range_search(q, radius))
            t_fr, _ = timed(lambda fi=fi: fi.range_search(q, radius + 1))
            row.update(raw_range_qps=nq / t_fr, range_vs_raw=t_fr / t_range)
            sets = [set(h[1].tolist()) for h in hits]
            if kind == "flat":
                truth_range = sets
                flat_range = t_range
            row.update(
                range_qps=nq / t_range,
                range_recall=recall(sets, truth_range),
                range_speedup_vs_flat=flat_range / t_range,
                exact_radius=index.exact_radius,
            )
        rows.append(row)
        print(f"  {name} {kind:10s} built in {build:6.1f}s", flush=True)
    mean_hits = float(np.diff(lims).mean())
    return {
        "name": name,
        "n": len(db),
        "nbits": nbits,
        "queries": nq,
        "k": k,
        "radius": radius,
        "mean_hits_within_radius": mean_hits,
        "rows": rows,
    }


def fmnist_codes(run: Path) -> np.ndarray | None:
    if not (run / "model.pt").exists():
        return None
    from hashlab.encode import TrainedRun

    return TrainedRun(run).encode("train", progress=False).bits


def print_table(result: dict) -> None:
    print(
        f"\n{result['name']}: {result['n']:,} × {result['nbits']}-bit codes, "
        f"{result['queries']} queries, top-{result['k']}, radius {result['radius']} "
        f"(mean {result['mean_hits_within_radius']:.1f} hits)"
    )
    head = (
        f"{'kind':28s} {'build s':>8s} {'knn q/s':>10s} {'÷raw':>7s} {'÷rawflat':>8s} "
        f"{'knn rec':>8s} {'range q/s':>10s} {'÷raw':>7s} {'range rec':>9s} {'range ×flat':>11s} "
        f"{'B/code':>7s}"
    )
    print(head)
    print("-" * len(head))
    cols = [
        ("build_s", "8.1f"),
        ("knn_qps", "10.0f"),
        ("knn_vs_raw", "7.2f"),
        ("knn_vs_raw_flat", "8.2f"),
        ("knn_recall", "8.3f"),
        ("range_qps", "10.0f"),
        ("range_vs_raw", "7.2f"),
        ("range_recall", "9.3f"),
        ("range_speedup_vs_flat", "11.1f"),
        ("bytes_per_code", "7.1f"),
    ]
    for r in result["rows"]:
        cells = [
            format(r[key], fmt) if key in r else format("–", ">" + fmt.split(".")[0])
            for key, fmt in cols
        ]
        print(f"{r['kind']:28s} " + " ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--bits", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    parser.add_argument("--run", type=Path, default=Path("runs/fmnist-hash64"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"))
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = []
    for nbits in args.bits:
        db = rng.integers(0, 256, size=(args.n, nbits // 8), dtype=np.uint8)
        results.append(
            bench_codes(f"random-{nbits}", db, nbits, args.queries, 100, 2, args.kinds, seed=nbits)
        )
        print_table(results[-1])
    codes = fmnist_codes(args.run)
    if codes is not None:
        results.append(
            bench_codes("fmnist-hash64", codes, 64, args.queries, 100, 2, args.kinds, seed=1)
        )
        print_table(results[-1])
    atomic_write_json(
        args.out,
        {"command": "python " + " ".join(sys.argv), "results": results, "faiss": faiss.__version__,
         "cpus": os.cpu_count(), "machine": platform.machine()},
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

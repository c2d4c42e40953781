"""Speed of ``retrieval_metrics`` on 1,000 queries x 60,000 database items.

Times binary (64-bit packed codes, Hamming) and float (64-d, cosine) evaluation with the
default settings (mAP@all, mAP/P/R@100 and @1000, P/R within radius 2, PR curve), next to a
naive baseline run in the same process: one query at a time, distances from unpacked bits
(binary) or a matrix-vector product (float), a full stable ``np.argsort`` and a cumsum. The
baseline runs on a subset of queries and is extrapolated linearly; on that subset its mAP@all
is checked against ``retrieval_metrics``. Binary codes are also evaluated through a flat
``BinaryIndex`` (``index_retrieval_metrics``, what the evaluation protocols run).

    python benchmarks/metrics_speed.py [--out benchmarks/results/metrics_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from hashlab.eval import retrieval_metrics
from hashlab.eval.index_metrics import index_retrieval_metrics
from hashlab.index import BinaryIndex
from hashlab.index.codes import pack_bits, unpack_bits


def make_data(
    n_queries: int, n_database: int, dim: int, n_classes: int, seed: int
) -> dict[str, np.ndarray]:
    """Class-clustered Gaussian float codes, their sign bits packed, and labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    ql = rng.integers(0, n_classes, n_queries)
    dl = rng.integers(0, n_classes, n_database)
    qf = (centres[ql] + 1.5 * rng.standard_normal((n_queries, dim))).astype(np.float32)
    df = (centres[dl] + 1.5 * rng.standard_normal((n_database, dim))).astype(np.float32)
    return {"qf": qf, "df": df, "qb": pack_bits(qf), "db": pack_bits(df), "ql": ql, "dl": dl}


def naive_metrics(
    kind: str,
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    nbits: int,
    topk: tuple[int, ...],
) -> dict[str, float]:
    """Per-query loop: distances, full stable argsort, cumsum; mAP@all, mAP/P/R@k, P/R@r2."""
    if kind == "binary":
        qbits = unpack_bits(q, nbits)
        dbits = unpack_bits(db, nbits)
    else:
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        dn = db / np.linalg.norm(db, axis=1, keepdims=True)
    ap, apk, pk, rk, pr2, rr2 = (
        [],
        {k: [] for k in topk},
        {k: [] for k in topk},
        {k: [] for k in topk},
        [],
        [],
    )
    for i in range(q.shape[0]):
        if kind == "binary":
            dist = (dbits != qbits[i]).sum(axis=1)
        else:
            dist = -(dn @ qn[i])
        order = np.argsort(dist, kind="stable")
        rel = dl[order] == ql[i]
        cum = np.cumsum(rel)
        ranks = np.arange(1, rel.size + 1)
        big_r = cum[-1]
        ap.append((cum / ranks)[rel].sum() / big_r if big_r else 0.0)
        for k in topk:
            hits = cum[k - 1]
            apk[k].append((cum[:k] / ranks[:k])[rel[:k]].sum() / hits if hits else 0.0)
            pk[k].append(hits / k)
            rk[k].append(hits / big_r if big_r else 0.0)
        if kind == "binary":
            m = int((dist <= 2).sum())
            hits = cum[m - 1] if m else 0
            pr2.append(hits / m if m else 0.0)
            rr2.append(hits / big_r if big_r else 0.0)
    out = {"mAP@all": float(np.mean(ap))}
    for k in topk:
        out[f"mAP@{k}"] = float(np.mean(apk[k]))
        out[f"P@{k}"] = float(np.mean(pk[k]))
        out[f"R@{k}"] = float(np.mean(rk[k]))
    if kind == "binary":
        out["P@r2"], out["R@r2"] = float(np.mean(pr2)), float(np.mean(rr2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/metrics_speed.json")
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--n-database", type=int, default=60000)
    parser.add_argument("--nbits", type=int, default=64, help="code bits = float dimension")
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--baseline-queries", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = make_data(args.n_queries, args.n_database, args.nbits, args.n_classes, args.seed)
    topk = (100, 1000)
    nb = min(args.baseline_queries, args.n_queries)
    rows: list[dict[str, Any]] = []
    for kind in ("binary", "float"):
        q, db = (data["qb"], data["db"]) if kind == "binary" else (data["qf"], data["df"])
        kw: dict[str, Any] = {"kind": kind, "topk": topk, "chunk_size": args.chunk_size}
        if kind == "binary":
            kw["nbits"] = args.nbits
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = retrieval_metrics(q, db, data["ql"], data["dl"], **kw)
            times.append(time.perf_counter() - t0)
        fast = min(times)

        t0 = time.perf_counter()
        naive = naive_metrics(kind, q[:nb], db, data["ql"][:nb], data["dl"], args.nbits, topk)
        naive_subset = time.perf_counter() - t0
        naive_full = naive_subset * args.n_queries / nb
        check = retrieval_metrics(q[:nb], db, data["ql"][:nb], data["dl"], **kw)
        max_diff = max(abs(check[key] - naive[key]) for key in naive)
        index_path: dict[str, Any] = {}
        if kind == "binary":  # what the protocols run: the same metrics through a flat index
            index = BinaryIndex(args.nbits, "flat")
            index.add(db)
            t0 = time.perf_counter()
            via = index_retrieval_metrics(index, q, data["ql"], np.arange(len(db)), data["dl"],
                                          topk=topk, pr_curve=True)
            index_path = {
                "index_path_seconds": time.perf_counter() - t0,
                "index_path_max_abs_diff": max(abs(via[k] - res[k]) for k in naive),
            }
        rows.append(
            {
                **index_path,
                "kind": kind,
                "n_queries": args.n_queries,
                "n_database": args.n_database,
                "bits_or_dim": args.nbits,
                "seconds": fast,
                "seconds_all_runs": times,
                "queries_per_second": args.n_queries / fast,
                "naive_seconds_extrapolated": naive_full,
                "naive_queries_timed": nb,
                "speedup_vs_naive": naive_full / fast,
                "max_abs_diff_vs_naive_on_subset": max_diff,
                "metrics": {k: v for k, v in res.items() if k != "pr_curve"},
            }
        )

    header = (
        f"{'kind':<7} {'queries x db':>15} {'seconds':>8} {'q/s':>8} {'naive s':>9} {'speedup':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        size = f"{r['n_queries']}x{r['n_database']}"
        print(
            f"{r['kind']:<7} {size:>15} {r['seconds']:>8.2f} {r['queries_per_second']:>8.0f} "
            f"{r['naive_seconds_extrapolated']:>9.1f} {r['speedup_vs_naive']:>7.1f}x"
        )
    for r in rows:
        if "index_path_seconds" in r:
            print(f"{r['kind']} through a flat BinaryIndex (the protocols' path): "
                  f"{r['index_path_seconds']:.2f} s, |index - direct| <= "
                  f"{r['index_path_max_abs_diff']:.1e}")
    for r in rows:
        m = r["metrics"]
        print(
            f"{r['kind']}: mAP@all={m['mAP@all']:.4f} mAP@1000={m['mAP@1000']:.4f} "
            f"P@100={m['P@100']:.4f}; |fast - naive| on {r['naive_queries_timed']} queries "
            f"<= {r['max_abs_diff_vs_naive_on_subset']:.1e}"
        )

    report = {
        "benchmark": "metrics_speed",
        "args": vars(args),
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        },
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

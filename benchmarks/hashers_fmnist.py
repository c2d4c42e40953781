"""mAP@all of the classical hashers (hashlab.hashers) on the fmnist-retrieval protocol.

Database = the 60,000 Fashion-MNIST training images, queries = 1,000 test images chosen by
``np.random.default_rng(0).choice(10000, 1000, replace=False)``, relevant = same class. Each
hasher is fitted on the database images (raw pixels scaled to [0, 1], flattened to 784-d;
SDH also gets the database labels), codes are ranked by Hamming distance and scored by
``retrieval_metrics(..., kind="binary")["mAP@all"]``. PQ codes are ranked by asymmetric
distance (ADC), the meaningful way to compare them; the ``pq-hamming`` row ranks the same
codes by Hamming distance to show that this is *not* meaningful. Baselines beside them:
``raw-cosine`` ranks the 784-d pixels by cosine similarity (no compression).

Reference: 64-bit ITQ should give mAP@all 0.489 +- 0.02.

    python benchmarks/hashers_fmnist.py [--bits 16 32 64] [--methods itq sdh] [--quick]

``--quick`` uses a 10,000-image database subset (drawn with default_rng(1)) for fitting and
ranking, and writes ``hashers_fmnist_quick.json`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.data import load_fashion_mnist
from hashlab.eval.metrics import ap_from_relevance, rank_by_similarity, retrieval_metrics
from hashlab.eval.protocols import fmnist_query_indices
from hashlab.hashers import PQHash, make_hasher

REFERENCE_ITQ_64 = 0.489
#: row label -> (hasher name, extra parameters); "lsh" is SimHash about the origin, as the
#: pixels are non-negative "lsh-centered" (center=True) measures angles about the data mean.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lsh": ("lsh", {}),
    "lsh-centered": ("lsh", {"center": True}),
    "pcah": ("pcah", {}),
    "itq": ("itq", {}),
    "sh": ("sh", {}),
    "klsh": ("klsh", {}),
    "sdh": ("sdh", {}),
    "pq": ("pq", {}),
}
METHODS = list(VARIANTS)


def load(quick: bool) -> dict[str, np.ndarray]:
    """Database and query pixels in [0, 1] (float32, 784-d) and labels."""
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    qi = fmnist_query_indices(len(xte))  # default_rng(0).choice(10000, 1000, replace=False)
    if quick:
        di = np.sort(np.random.default_rng(1).choice(len(xtr), 10_000, replace=False))
        xtr, ytr = xtr[di], ytr[di]

    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    return {"db": flat(xtr), "dbl": np.asarray(ytr), "q": flat(xte[qi]), "ql": np.asarray(yte[qi])}


def pq_adc_map(est: PQHash, data: dict[str, np.ndarray], db_codes: np.ndarray) -> float:
    """mAP@all of PQ codes ranked by asymmetric distance (ties by database index)."""
    aps = []
    for s in range(0, len(data["q"]), 250):
        dist = est.distances(data["q"][s : s + 250], db_codes)
        order = rank_by_similarity(-dist)
        aps.append(ap_from_relevance(data["dbl"][order] == data["ql"][s : s + 250, None]))
    return float(np.concatenate(aps).mean())


def run_one(label: str, nbits: int, data: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    name, params = VARIANTS[label]
    if name not in ("pcah", "sh"):  # the deterministic methods have no random_state
        params = {**params, "random_state": seed}
    est = make_hasher(name, n_bits=nbits, **params)
    t0 = time.perf_counter()
    est.fit(data["db"], data["dbl"] if name == "sdh" else None)  # only SDH uses labels
    t1 = time.perf_counter()
    db_codes = est.transform(data["db"])
    q_codes = est.transform(data["q"])
    t2 = time.perf_counter()
    ham = retrieval_metrics(
        q_codes, db_codes, data["ql"], data["dbl"], kind="binary", nbits=nbits, pr_curve=False
    )["mAP@all"]
    row: dict[str, Any] = {"fit_s": t1 - t0, "encode_s": t2 - t1}
    if name == "pq":
        row["mAP@all"] = pq_adc_map(est, data, db_codes)
        row["mAP@all_hamming"] = ham
    else:
        row["mAP@all"] = ham
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--quick", action="store_true", help="10k-image database subset")
    parser.add_argument("--seed", type=int, default=0, help="random_state of every hasher")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()
    out = Path(
        args.out or f"benchmarks/results/hashers_fmnist{'_quick' if args.quick else ''}.json"
    )

    start = time.perf_counter()
    data = load(args.quick)
    print(f"database {data['db'].shape}, queries {data['q'].shape}", flush=True)
    raw = retrieval_metrics(
        data["q"], data["db"], data["ql"], data["dbl"], kind="float", pr_curve=False
    )["mAP@all"]
    table: dict[str, dict[str, Any]] = {}
    for name in args.methods:
        for nbits in args.bits:
            row = run_one(name, nbits, data, args.seed)
            table.setdefault(name, {})[str(nbits)] = row
            print(
                f"{name:>6} {nbits:3d} bits  mAP@all {row['mAP@all']:.4f}  "
                f"fit {row['fit_s']:.1f}s  encode {row['encode_s']:.1f}s",
                flush=True,
            )

    bits_hdr = "".join(f"{b:>9d}b" for b in args.bits)
    print(f"\nmAP@all (fmnist-retrieval{', quick' if args.quick else ''})")
    print(f"{'method':<14}{bits_hdr}")
    for name in args.methods:
        label = f"{name} (ADC)" if name == "pq" else name
        print(
            f"{label:<14}" + "".join(f"{table[name][str(b)]['mAP@all']:10.4f}" for b in args.bits)
        )
        if name == "pq":
            print(
                f"{'pq (Hamming)':<14}"
                + "".join(f"{table[name][str(b)]['mAP@all_hamming']:10.4f}" for b in args.bits)
            )
    print(f"{'raw-cosine':<14}{raw:10.4f}  (784-d float pixels, no compression)")
    if "itq" in table and "64" in table["itq"] and not args.quick:
        got = table["itq"]["64"]["mAP@all"]
        ok = abs(got - REFERENCE_ITQ_64) <= 0.02
        print(
            f"ITQ 64 bits: {got:.4f} vs reference {REFERENCE_ITQ_64} +- 0.02: "
            f"{'OK' if ok else 'OUT OF RANGE'}"
        )

    report = {
        "protocol": "fmnist-retrieval",
        "quick": args.quick,
        "n_database": int(len(data["db"])),
        "n_queries": int(len(data["q"])),
        "features": "raw pixels / 255, 784-d",
        "seed": args.seed,
        "bits": args.bits,
        "table": table,
        "baseline_raw_cosine_mAP@all": raw,
        "reference_itq_64": REFERENCE_ITQ_64,
        "seconds": time.perf_counter() - start,
        "env": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

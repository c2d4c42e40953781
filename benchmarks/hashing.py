"""Learning-to-hash benchmark on fmnist-retrieval: classical and deep hashing at 16/32/64 bits,
plus DPH's category / attribute / combined retrieval with full and partial labels.

Every deep method uses the same backbone, optimiser, schedule and epochs (its preset in
``configs/fmnist/``, code length set with ``model.dim``); every binary code is evaluated through
the index API (``hashlab.eval.protocols.binary_index_metrics``: a flat ``BinaryIndex``).
Classical hashers run on raw pixels in [0, 1] (``benchmarks/hashers_fmnist.py``), always on
the full protocol (no training to shorten).

    python benchmarks/hashing.py --quick     # 3 epochs on 12,000 training images (< 30 min, CPU)
    python benchmarks/hashing.py             # 10 epochs, all 60,000 training images

Runs are cached in the work directory (finished runs are re-used), so an interrupted benchmark
continues where it stopped. Prints markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hashlab.cli import resolve_config_path
from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.eval.protocols import evaluate_run
from hashlab.io import atomic_write_json
from hashlab.train.engine import FINAL_MODEL, Trainer

DEEP = {  # method → preset
    "hash-ce (baseline)": "fmnist/hash64",
    "dpsh": "fmnist/dpsh-64",
    "cosface": "fmnist/cosface-64",
    "sv-arc-softmax": "fmnist/sv-arc-softmax-64",
    "dph": "fmnist/dph-64",
    "csq": "fmnist/csq-64",
    "orthohash": "fmnist/orthohash-64",
    "dpn": "fmnist/dpn-64",
    "greedy-hash": "fmnist/greedy-hash-64",
    "hashnet": "fmnist/hashnet-64",
    "dsh": "fmnist/dsh-64",
    "dtsh": "fmnist/dtsh-64",
}
DPH_VARIANTS = {  # label regime → preset (64 bits)
    "full labels": "fmnist/dph-64",
    "partial B+C+A": "fmnist/dph-partial-64",
    "fully-labelled part only (B)": "fmnist/dph-both-only-64",
}
QUICK = ["train.epochs=3", "train.limit_train_samples=12000"]


def run_one(preset: str, nbits: int, protocol: str, quick: bool, workdir: Path,
            extra: tuple[str, ...] = (), suffix: str = "") -> dict[str, Any]:
    """Train (or reuse) one run and evaluate it; the result JSON doubles as a cache."""
    name = f"{preset.split('/')[-1].replace('-64', '').replace('64', '')}-{nbits}b{suffix}"
    run_dir = workdir / name
    result_path = run_dir / "eval" / f"{protocol}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    overrides = [f"name={name}", f"model.dim={nbits}", *extra] + (QUICK if quick else [])
    cfg = load_config(resolve_config_path(preset), overrides)
    start = time.perf_counter()
    if not (run_dir / FINAL_MODEL).exists():
        resume = (run_dir / "checkpoint.pt").exists()
        Trainer(cfg, run_dir, progress=False).fit(resume=resume)
    train_s = time.perf_counter() - start
    result = evaluate_run(TrainedRun(run_dir), protocol, progress=False)
    result["train_seconds"] = train_s
    atomic_write_json(result_path, result)
    print(f"  {name:28s} {protocol:17s} done in {time.perf_counter() - start:6.0f} s", flush=True)
    return result


def deep_table(workdir: Path, bits: list[int], quick: bool, methods: list[str]) -> dict:
    table: dict[str, dict[int, float]] = {}
    for method in methods:
        for nbits in bits:
            r = run_one(DEEP[method], nbits, "fmnist-retrieval", quick, workdir)
            table.setdefault(method, {})[nbits] = r["metrics"]["binary"]["mAP@all"]
    return table


UNSEEN = ("data.classes=[0,1,2,3,4,5]",)


def unseen_table(workdir: Path, bits: list[int], quick: bool, methods: list[str]) -> dict:
    """mAP@all on fmnist-unseen: trained on classes 0-5, searched among classes 6-9."""
    table: dict[str, dict[int, float]] = {}
    for method in methods:
        if method == "dph":  # needs attribute labels of the training classes; not comparable
            continue
        for nbits in bits:
            r = run_one(DEEP[method], nbits, "fmnist-unseen", quick, workdir, UNSEEN, "-unseen")
            table.setdefault(method, {})[nbits] = r["metrics"]["binary"]["mAP@all"]
    return table


def dph_table(workdir: Path, quick: bool) -> dict[str, dict[str, float]]:
    out = {}
    for regime, preset in DPH_VARIANTS.items():
        m = run_one(preset, 64, "fmnist-dph", quick, workdir)["metrics"]
        out[regime] = {
            "category mAP": m["category"]["mAP@all"],
            "attribute mAP": m["attribute"]["mAP"],
            "combined R@100": m["combined"]["R@100"],
            "combined R@1000": m["combined"]["R@1000"],
            "combined mAP": m["combined"]["mAP"],
            "attribute combinations": m["attribute"]["n_combinations"],
        }
    return out


def classical_table(bits: list[int], names: list[str] | None) -> dict:
    """mAP@all of the classical hashers on raw pixels, full protocol
    (``benchmarks/hashers_fmnist.py``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import hashers_fmnist  # noqa: PLC0415  (a sibling script)

    data = hashers_fmnist.load(quick=False)
    table: dict[str, dict[int, float]] = {}
    for name in names or hashers_fmnist.METHODS:
        for nbits in bits:
            table.setdefault(name, {})[nbits] = hashers_fmnist.run_one(name, nbits, data, 0)[
                "mAP@all"
            ]
    return table


def markdown(rows: dict[str, dict[Any, float]], columns: list[Any], fmt: str = ".4f") -> str:
    head = "| method | " + " | ".join(str(c) for c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [format(row[c], fmt) if isinstance(row.get(c), float) else str(row.get(c, "–"))
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs on 12,000 images")
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--methods", nargs="+", default=list(DEEP), choices=list(DEEP))
    parser.add_argument("--hashers", nargs="*", default=None,
                        help="classical hashers to run (default: all; none: skip)")
    parser.add_argument("--skip-classical", action="store_true")
    parser.add_argument("--skip-dph", action="store_true")
    parser.add_argument("--unseen-bits", nargs="*", type=int, default=[64],
                        help="code lengths of the fmnist-unseen table (none: skip it)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    workdir = args.workdir or Path("runs") / f"bench-hashing-{mode}"
    out = args.out or Path("benchmarks/results") / f"hashing_{mode}.json"
    start = time.perf_counter()
    result: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "mode": mode,
                              "bits": args.bits}
    if not args.skip_classical:
        # always the full protocol (60,000-image database, ~5 min): quick mode shortens training
        result["classical"] = classical_table(args.bits, args.hashers)
        print("\nclassical hashers, fmnist-retrieval mAP@all (raw pixels)")
        print(markdown(result["classical"], args.bits))
    result["deep"] = deep_table(workdir, args.bits, args.quick, args.methods)
    print("\ndeep hashing, fmnist-retrieval mAP@all (same backbone and epochs)")
    print(markdown(result["deep"], args.bits))
    if args.unseen_bits:
        result["unseen"] = unseen_table(workdir, args.unseen_bits, args.quick, args.methods)
        print("\nunseen classes, fmnist-unseen mAP@all (trained on classes 0-5)")
        print(markdown(result["unseen"], args.unseen_bits))
    if not args.skip_dph:
        result["dph"] = dph_table(workdir, args.quick)
        cols = ["category mAP", "attribute mAP", "combined R@100", "combined R@1000",
                "combined mAP"]
        print("\nDPH, 64 bits, fmnist-dph (category / attribute / combined retrieval)")
        print(markdown(result["dph"], cols))
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(out, result)
    print(f"\n{result['seconds'] / 60:.1f} min; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

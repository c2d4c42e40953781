"""Learning-to-hash benchmark on fmnist-retrieval: classical and deep hashing at 16/32/64 bits,
plus DPH's category / attribute / combined retrieval with full and partial labels.

Every deep method uses the same backbone, optimiser, schedule and epochs (its preset in
``configs/fmnist/``, code length set with ``model.dim``); every binary code is evaluated through
the index API (``hashlab.eval.protocols.binary_index_metrics``: a flat ``BinaryIndex``).
Classical hashers run on raw pixels in [0, 1] (``benchmarks/hashers_fmnist.py``), always on
the full protocol (no training to shorten).

    python benchmarks/hashing.py --quick     # 3 epochs on 12,000 training images, seed 0
    python benchmarks/hashing.py             # 10 epochs, all 60,000 training images

Full mode trains every method at 16 and 64 bits with seeds 0, 1, 2 and at 12/24/32/48 bits with
seed 0 (``--bits`` / ``--seeds`` / ``--extra-seed-bits`` change that), in priority order: every
method once at 64 and 16 bits first, then the other seeds, then the other lengths, so that a
run cut short has the headline table first. Runs are cached in the work directory (finished
runs are re-used, a run killed mid-training resumes from its last epoch), and the JSON is
rewritten after every run with ``"complete": false`` until the whole plan is done, so an
interrupted benchmark continues where it stopped and its partial results can be published.

Two processes can share the work on a multi-core machine if their plans do not overlap (e.g. a
second one with ``--methods ... --bits 16 --seeds 2 --out other.json``); ``--collect`` then
gathers every finished run of the full plan into the JSON without training anything.

Full mode also evaluates the seed-0 runs at 12/24/32/48 bits on all 10,000 test queries (the
``retrieval`` protocol), the protocol of the one published Fashion-MNIST deep hashing table we
compare with (QSMIH); ``docs/results.md`` sets the two side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

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
    "adsh": "fmnist/adsh-64",
}
DPH_VARIANTS = {  # label regime → preset (64 bits)
    "full labels": "fmnist/dph-64",
    "partial B+C+A": "fmnist/dph-partial-64",
    "fully-labelled part only (B)": "fmnist/dph-both-only-64",
}
QUICK = ["train.epochs=3", "train.limit_train_samples=12000"]


def run_name(preset: str, nbits: int, seed: int = 0, suffix: str = "") -> str:
    stem = preset.split('/')[-1].replace('-64', '').replace('64', '')
    return f"{stem}-{nbits}b{suffix}" + (f"-s{seed}" if seed else "")


def run_one(preset: str, nbits: int, protocol: str, quick: bool, workdir: Path,
            extra: tuple[str, ...] = (), suffix: str = "", seed: int = 0,
            train: bool = True) -> dict[str, Any] | None:
    """Train (or reuse) one run and evaluate it; the result JSON doubles as a cache.
    ``train=False``: only the cached result (None if the run has not finished)."""
    name = run_name(preset, nbits, seed, suffix)
    run_dir = workdir / name
    result_path = run_dir / "eval" / f"{protocol}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    if not train:
        return None
    overrides = [f"name={name}", f"model.dim={nbits}", f"seed={seed}", *extra]
    overrides += QUICK if quick else []
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


def compute_seconds(workdir: Path) -> float:
    """Training plus evaluation time of every run in the work directory, summed: the compute
    behind the JSON, however many processes and sessions shared it."""
    total = 0.0
    for path in workdir.glob("*/eval/*.json"):
        r = json.loads(path.read_text())
        total += r.get("train_seconds", 0.0) + r.get("seconds", 0.0)
    return total


def deep_plan(methods: list[str], bits: list[int], seeds: list[int],
              seed_bits: list[int]) -> list[tuple[str, int, int]]:
    """(method, bits, seed) in priority order: the first seed at the multi-seed lengths
    (``seed_bits``, longest first), then the other seeds there, then the first seed at the other
    lengths. Every method is run once before any method is run twice."""
    head = sorted((b for b in bits if b in seed_bits), reverse=True)
    jobs = [(m, b, seeds[0]) for b in head for m in methods]
    jobs += [(m, b, s) for s in seeds[1:] for b in head for m in methods]
    jobs += [(m, b, seeds[0]) for b in bits if b not in head for m in methods]
    return jobs


def deep_table(workdir: Path, jobs: list[tuple[str, int, int]], quick: bool,
               on_result: Any = None, train: bool = True
               ) -> tuple[dict[str, dict[int, list[float]]], dict]:
    """mAP@all per method and code length, one value per seed (in seed order), and the
    Hamming-ranking PR curve of each method's longest code of the first seed
    (``train=False``: of the runs that have finished; the others are left out)."""
    runs: dict[str, dict[int, dict[int, float]]] = {}
    curves: dict[str, dict[str, Any]] = {}
    longest, first_seed = max(b for _, b, _ in jobs), min(s for _, _, s in jobs)
    for method, nbits, seed in jobs:
        r = run_one(DEEP[method], nbits, "fmnist-retrieval", quick, workdir, seed=seed,
                    train=train)
        if r is None:
            continue
        binary = r["metrics"]["binary"]
        runs.setdefault(method, {}).setdefault(nbits, {})[seed] = binary["mAP@all"]
        if nbits == longest and seed == first_seed and "pr_curve" in binary:
            curves[method] = {"bits": nbits, "seed": seed, **binary["pr_curve"]}
        if on_result is not None:
            on_result(_by_seed(runs), curves)
    return _by_seed(runs), curves


def _by_seed(runs: dict[str, dict[int, dict[int, float]]]) -> dict[str, dict[int, list[float]]]:
    return {m: {b: [v for _, v in sorted(by_seed.items())] for b, by_seed in sorted(row.items())}
            for m, row in runs.items()}


def carried_cells(previous: dict[str, Any], jobs: list[tuple[str, int, int]]
                  ) -> dict[str, dict[int, list[float]]]:
    """The (method, bits) cells of a previous JSON of the same mode that ``jobs`` does not
    re-run, so that re-running part of a table (e.g. run_all's quick tier) keeps the rest."""
    planned = {(m, str(b)) for m, b, _ in jobs}
    kept: dict[str, dict[int, list[float]]] = {}
    for method, row in previous.get("deep_runs", {}).items():
        for nbits, values in row.items():
            if (method, str(nbits)) not in planned:
                kept.setdefault(method, {})[int(nbits)] = values
    return kept


def mean_table(runs: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    return {m: {b: float(np.mean(v)) for b, v in row.items()} for m, row in runs.items()}


UNSEEN = ("data.classes=[0,1,2,3,4,5]",)


def unseen_table(workdir: Path, bits: list[int], quick: bool, methods: list[str],
                 previous: dict | None = None, on_result: Any = None,
                 train: bool = True) -> dict[str, dict[str, float]]:
    """mAP@all on fmnist-unseen: trained on classes 0-5, searched among classes 6-9.
    The cells of ``previous`` (an earlier JSON's table) that this call does not produce are
    kept; ``on_result`` sees the table after every run; ``train=False``: only finished runs."""
    table = {m: {str(b): v for b, v in row.items()} for m, row in (previous or {}).items()}
    for method in methods:
        if method == "dph":  # needs attribute labels of the training classes; not comparable
            continue
        for nbits in bits:
            r = run_one(DEEP[method], nbits, "fmnist-unseen", quick, workdir, UNSEEN, "-unseen",
                        train=train)
            if r is None:
                continue
            table.setdefault(method, {})[str(nbits)] = r["metrics"]["binary"]["mAP@all"]
            if on_result is not None:
                on_result(table)
    return table


# The lengths at which full mode also evaluates the seed-0 runs on all 10,000 test queries, to set
# them beside QSMIH's published Fashion-MNIST table (12/24/36/48 bits; our 32 against its 36).
ALL_QUERIES_BITS = (12, 24, 32, 48)


def all_queries_table(workdir: Path, methods: list[str], bits: list[int], quick: bool,
                      previous: dict | None = None) -> dict[str, dict[str, float]]:
    """mAP@all of the finished seed-0 runs at ``ALL_QUERIES_BITS`` on the ``retrieval``
    protocol: every one of the 10,000 test images queries the 60,000 training images (the
    published protocol; fmnist-retrieval takes 1,000 seeded queries). Trains nothing; each
    finished run is evaluated once (the result is cached beside its fmnist-retrieval one).
    The cells of ``previous`` (an earlier JSON's table) that this call does not produce stay."""
    table = {m: dict(row) for m, row in (previous or {}).items()}
    for method in methods:
        for nbits in (b for b in ALL_QUERIES_BITS if b in bits):
            if not (workdir / run_name(DEEP[method], nbits) / FINAL_MODEL).exists():
                continue
            r = run_one(DEEP[method], nbits, "retrieval", quick, workdir)
            table.setdefault(method, {})[str(nbits)] = r["metrics"]["binary"]["mAP@all"]
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


def machine() -> str:
    """The machine in words, for the tables (results depend on it)."""
    import os
    import platform

    import torch

    dev = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
           else f"{os.cpu_count()}-core {platform.machine()} CPU")
    return f"{dev}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs on 12,000 images")
    parser.add_argument("--bits", nargs="+", type=int, default=None,
                        help="code lengths (default: 16 32 64 quick, 12 16 24 32 48 64 full)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds (default: 0 quick, 0 1 2 full)")
    parser.add_argument("--extra-seed-bits", nargs="*", type=int, default=[16, 64],
                        help="code lengths that get every seed; the others get the first seed")
    parser.add_argument("--methods", nargs="+", default=list(DEEP), choices=list(DEEP))
    parser.add_argument("--hashers", nargs="*", default=None,
                        help="classical hashers to run (default: all; none: skip)")
    parser.add_argument("--skip-classical", action="store_true")
    parser.add_argument("--skip-dph", action="store_true")
    parser.add_argument("--unseen-bits", nargs="*", type=int, default=[64],
                        help="code lengths of the fmnist-unseen table (none: skip it)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true",
                        help="do not carry over the cells of the existing JSON that this "
                             "command does not re-run")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: gather the plan's finished runs into the JSON "
                             "(e.g. those of a second process) and evaluate the finished "
                             "12-48-bit ones on all test queries where not done yet; the "
                             "other tables are kept")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    bits = args.bits or ([16, 32, 64] if args.quick else [12, 16, 24, 32, 48, 64])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    workdir = args.workdir or Path("runs") / f"bench-hashing-{mode}"
    out = args.out or Path("benchmarks/results") / f"hashing_{mode}.json"
    start = time.perf_counter()
    result: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "mode": mode,
                              "machine": machine(), "bits": bits, "seeds": seeds,
                              "extra_seed_bits": args.extra_seed_bits, "complete": False}
    previous: dict[str, Any] = {}
    if out.exists() and not args.fresh:
        previous = json.loads(out.read_text())
        # the tables this command does not recompute (or not yet) stay as they were
        result.update({k: previous[k] for k in ("classical", "unseen", "dph") if k in previous})
    if args.collect:  # the table names the command that trains, and its time
        result["command"] = previous.get("command", result["command"])
        start -= previous.get("seconds", 0.0)
    jobs = deep_plan(args.methods, bits, seeds, args.extra_seed_bits)
    result.update(methods=args.methods, planned_runs=len(jobs))
    carried = carried_cells(previous, jobs)
    if carried:  # the table keeps every column the previous run had
        result["bits"] = sorted({*bits, *(int(b) for row in carried.values() for b in row)})

    def save(**parts: Any) -> None:
        result.update(parts, seconds=time.perf_counter() - start,
                      compute_seconds=compute_seconds(workdir))
        if carried:
            runs = {m: dict(sorted({**carried.get(m, {}), **row}.items()))
                    for m, row in result["deep_runs"].items()}
            runs.update({m: row for m, row in carried.items() if m not in runs})
            result.update(deep_runs=runs, deep=mean_table(runs),
                          carried_over={m: sorted(map(int, row)) for m, row in carried.items()})
        atomic_write_json(out, result)

    runs, curves = deep_table(
        workdir, jobs, args.quick,
        on_result=lambda r, c: save(deep_runs=r, deep=mean_table(r), pr_curves=c),
        train=not args.collect)
    save(deep_runs=runs, deep=mean_table(runs), pr_curves=curves)
    if not args.quick:
        save(all_queries=all_queries_table(workdir, args.methods, bits, args.quick,
                                           previous.get("all_queries")))

    def unseen(train: bool) -> dict[str, dict[str, float]]:
        return unseen_table(workdir, args.unseen_bits, args.quick, args.methods,
                            previous.get("unseen"), lambda t: save(unseen=t), train)

    if args.collect:
        found = sum(len(v) for row in runs.values() for v in row.values())
        print(f"collected {found} of the plan's {len(jobs)} runs into {out}")
        if args.unseen_bits:
            table = unseen(train=False)
            cells = sum(len(row) for row in table.values())
            print(f"the unseen-class table has {cells} cells")
        return 0
    print("\ndeep hashing, fmnist-retrieval mAP@all (same backbone and epochs; mean over seeds)")
    print(markdown(result["deep"], bits))
    if args.unseen_bits:
        save(unseen=unseen(train=True))
        print("\nunseen classes, fmnist-unseen mAP@all (trained on classes 0-5)")
        print(markdown(result["unseen"], [str(b) for b in args.unseen_bits]))
    if not args.skip_dph:
        save(dph=dph_table(workdir, args.quick))
        cols = ["category mAP", "attribute mAP", "combined R@100", "combined R@1000",
                "combined mAP"]
        print("\nDPH, 64 bits, fmnist-dph (category / attribute / combined retrieval)")
        print(markdown(result["dph"], cols))
    if not args.skip_classical:
        # always the full protocol (60,000-image database, ~5 min): quick mode shortens training
        save(classical=classical_table(bits, args.hashers))
        print("\nclassical hashers, fmnist-retrieval mAP@all (raw pixels)")
        print(markdown(result["classical"], bits))
    save(complete=True)
    print(f"\n{result['seconds'] / 60:.1f} min; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

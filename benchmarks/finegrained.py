"""Fine-grained hashing benchmark: ExchNet against its baselines on the two fine-grained
Fashion-MNIST protocols, 12 / 24 / 32 / 48 bits, seeds 0, 1, 2.

- ``fmnist-fine-upper``: T-shirt/top, Pullover, Coat, Shirt (the classes Fashion-MNIST models
  confuse most); ``fmnist-fine-shoes``: Sandal, Sneaker, Ankle boot. Every method trains on the
  protocol's classes only (``data.classes``) and is scored on them (database = their training
  images, 1,000 seeded test queries; ``docs/protocols.md``).
- Methods: ExchNet (``configs/fmnist/exchnet-48.yaml``: its head with the ADSH loss), ExchNet
  without the part exchange (``exchange_prob: 0``, an ablation), ADSH (the plain hash head with
  the same loss), OrthoHash (the hash-centre/codeword method that led the
  deep hashing table) and hash-ce (the baseline). The same backbone, optimiser and schedule for
  all (their presets), the code length set with ``model.dim``.

    python benchmarks/finegrained.py --quick   # 3 epochs on 6,000 training images of the classes
    python benchmarks/finegrained.py           # 10 epochs on all of them

Runs are cached under --workdir (finished runs are re-used, a run killed mid-training resumes)
and the JSON is rewritten after every run with ``"complete": false`` until the plan is done.
Every method and length is run with the first seed before any second seed. Prints a table
(mAP@all, mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashing import machine, run_one  # noqa: E402  (a sibling script)

METHODS = {  # method → preset, and overrides of it (an ablation)
    "exchnet": ("fmnist/exchnet-48", ()),
    "exchnet, no exchange": ("fmnist/exchnet-48", ("model.head_args.exchange_prob=0",)),
    "adsh": ("fmnist/adsh-64", ()),
    "orthohash": ("fmnist/orthohash-64", ()),
    "hash-ce (baseline)": ("fmnist/hash64", ()),
}
PROTOCOLS = {  # protocol → (run-name suffix, the classes it trains on)
    "fmnist-fine-upper": ("upper", [0, 2, 4, 6]),
    "fmnist-fine-shoes": ("shoes", [5, 7, 9]),
}
QUICK = ["train.epochs=3", "train.limit_train_samples=6000"]


def run_cell(method: str, protocol: str, nbits: int, seed: int, quick: bool,
             workdir: Path) -> dict[str, Any]:
    suffix, classes = PROTOCOLS[protocol]
    preset, overrides = METHODS[method]
    extra = (f"data.classes=[{','.join(map(str, classes))}]", f"eval.protocol={protocol}",
             *overrides, *(QUICK if quick else ()))
    if overrides:  # an ablation trains under its own name
        suffix += "-" + method.split(", ", 1)[-1].replace(" ", "-")
    return run_one(preset, nbits, protocol, False, workdir, extra=extra,
                   suffix=f"-{suffix}", seed=seed)


def format_table(table: dict[str, dict[str, dict[str, list[float]]]], bits: list[int]) -> str:
    lines = []
    for protocol, by_method in table.items():
        lines += [f"\n{protocol} (mAP@all)", "| method | " + " | ".join(f"{b} bits" for b in bits)
                  + " |", "|---" * (len(bits) + 1) + "|"]
        for method, by_bits in by_method.items():
            cells = [("–" if not (v := by_bits.get(str(b), [])) else
                      f"{np.mean(v):.4f} ± {np.std(v):.4f}") for b in bits]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=", ".join(QUICK))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS),
                        choices=list(PROTOCOLS))
    parser.add_argument("--bits", nargs="+", type=int, default=[12, 24, 32, 48])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    workdir = args.workdir or Path("runs") / f"bench-finegrained-{mode}"
    out = args.out or Path("benchmarks/results") / f"finegrained_{mode}.json"
    start = time.perf_counter()
    jobs = [(p, m, b, s) for s in args.seeds for p in args.protocols for b in args.bits
            for m in args.methods]
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    p_at_100: dict[str, dict[str, dict[str, list[float]]]] = {}
    result: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "mode": mode,
                              "machine": machine(), "bits": args.bits, "seeds": args.seeds,
                              "methods": {m: [METHODS[m][0], *METHODS[m][1]]
                                          for m in args.methods},
                              "protocols": {p: PROTOCOLS[p][1] for p in args.protocols},
                              "quick_overrides": QUICK if args.quick else [],
                              "planned_runs": len(jobs), "complete": False}
    train_seconds = 0.0  # summed over the runs, cached ones included: the cost of the table
    for done, (protocol, method, nbits, seed) in enumerate(jobs, 1):
        run = run_cell(method, protocol, nbits, seed, args.quick, workdir)
        binary, train_seconds = run["metrics"]["binary"], train_seconds + run["train_seconds"]
        for store, key in ((table, "mAP@all"), (p_at_100, "P@100")):
            store.setdefault(protocol, {}).setdefault(method, {}).setdefault(
                str(nbits), []).append(binary[key])
        result.update(table=table, p_at_100=p_at_100, runs_done=done,
                      complete=done == len(jobs), training_minutes=train_seconds / 60,
                      wall_minutes_this_invocation=(time.perf_counter() - start) / 60)
        atomic_write_json(out, result)
    print(f"\n{mode} mode, seeds {args.seeds}, {result['training_minutes']:.1f} min of training")
    print(format_table(table, args.bits))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

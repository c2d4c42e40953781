"""Cross-modal hashing benchmark on fmnist-captions: AADAH against its DCMH baseline, both
directions (image → text, text → image), 16 / 32 / 64 bits, seeds 0, 1, 2.

Each method is its preset (``configs/fmnist/{dcmh,aadah}-64.yaml``: the same towers, data,
optimiser and schedule) with the code length set by ``dim``; evaluation is the
``fmnist-captions`` protocol (flat ``BinaryIndex`` per direction; relevant = a shared class or
attribute, and at class level).

    python benchmarks/crossmodal.py --quick   # 2,000 training pairs, 5 epochs, 500 queries
    python benchmarks/crossmodal.py           # the presets: 10,000 pairs, 15 epochs, 2,000 queries

Finished runs are cached under --workdir (an interrupted benchmark resumes, a run killed
mid-training continues from its last epoch) and the JSON is rewritten after every run with
``"complete": false`` until the plan is done. Prints a table (mean ± std over seeds).
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
from hashlab.crossmodal.config import load_crossmodal_config
from hashlab.crossmodal.trainer import FINAL_MODEL, CrossModalRun, CrossModalTrainer
from hashlab.eval.protocols import evaluate_run
from hashlab.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashing import machine  # noqa: E402  (a sibling script)

METHODS = {"dcmh": "fmnist/dcmh-64", "aadah": "fmnist/aadah-64"}
QUICK = ["data.args.n_train=2000", "data.args.n_query=500", "train.epochs=5"]
COLUMNS = ("image_to_text", "text_to_image", "image_to_text_class", "text_to_image_class")


def run_one(method: str, nbits: int, seed: int, quick: bool, workdir: Path) -> dict[str, Any]:
    """Train (or reuse) one run and evaluate it; the result JSON doubles as a cache."""
    name = f"{method}-{nbits}b-s{seed}"
    run_dir = workdir / name
    result_path = run_dir / "eval" / "fmnist-captions.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    overrides = [f"name={name}", f"dim={nbits}", f"seed={seed}"] + (QUICK if quick else [])
    cfg = load_crossmodal_config(resolve_config_path(METHODS[method]), overrides)
    start = time.perf_counter()
    if not (run_dir / FINAL_MODEL).exists():
        resume = (run_dir / "checkpoint.pt").exists()
        CrossModalTrainer(cfg, run_dir, progress=False).fit(resume=resume)
    result = evaluate_run(CrossModalRun(run_dir), "fmnist-captions", progress=False)
    result["train_and_eval_seconds"] = time.perf_counter() - start
    atomic_write_json(result_path, result)
    m = result["metrics"]
    print(f"  {name:16s} i→t {m['image_to_text']['mAP@all']:.4f}  t→i "
          f"{m['text_to_image']['mAP@all']:.4f}  ({result['train_and_eval_seconds']:.0f} s)",
          flush=True)
    return result


def format_table(table: dict[str, dict[str, dict[str, list[float]]]], bits: list[int]) -> str:
    head = ["method", *(f"{c.replace('_to_', '→').replace('_class', ' (class)')} {b}b"
                        for b in bits for c in COLUMNS[:2])]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method, by_bits in table.items():
        cells = []
        for b in bits:
            for c in COLUMNS[:2]:
                v = by_bits.get(str(b), {}).get(c, [])
                cells.append("–" if not v else f"{np.mean(v):.4f} ± {np.std(v):.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=", ".join(QUICK))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    workdir = args.workdir or Path("runs") / f"bench-crossmodal-{mode}"
    out = args.out or Path("benchmarks/results") / f"crossmodal_{mode}.json"
    start = time.perf_counter()
    # every method and length with the first seed before any second seed
    jobs = [(m, b, s) for s in args.seeds for b in args.bits for m in args.methods]
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    result: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "mode": mode,
                              "machine": machine(), "bits": args.bits, "seeds": args.seeds,
                              "quick_overrides": QUICK if args.quick else [],
                              "planned_runs": len(jobs), "complete": False}
    for done, (method, nbits, seed) in enumerate(jobs, 1):
        metrics = run_one(method, nbits, seed, args.quick, workdir)["metrics"]
        cell = table.setdefault(method, {}).setdefault(str(nbits), {})
        for column in COLUMNS:
            cell.setdefault(column, []).append(metrics[column]["mAP@all"])
        cell.setdefault("text_to_image P@100", []).append(metrics["text_to_image"]["P@100"])
        result.update(table=table, runs_done=done, complete=done == len(jobs),
                      minutes=(time.perf_counter() - start) / 60)
        atomic_write_json(out, result)
    print(f"\n{mode} mode, seeds {args.seeds}, {result['minutes']:.1f} min")
    print(format_table(table, args.bits))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Partial FC benchmark (issue 17): memory and step time of the sampled classifier at 100k and
1M classes, and accuracy at sample rate 0.1 against 1.0 on a task where both fit.

- ``scale``: one training step of the classifier alone (forward + backward + SGD step) on a
  batch of 128 random embeddings of dim 128, at 100,000 and 1,000,000 classes: the full
  ``MarginSoftmax`` (ArcFace) against ``partial-fc`` at r = 0.1 with a dense and with a sparse
  weight gradient. Every configuration runs in a fresh subprocess; memory is its peak RSS
  (``resource.getrusage``) minus its RSS after the imports, time the median step after a
  warm-up. A configuration whose estimated memory exceeds ``--mem-cap-gib`` is recorded as
  "does not fit" and not run. SGD has momentum 0.9 for the dense gradients and none for the
  sparse one (SGD's momentum buffer grows without bound on sparse gradients).
- ``accuracy``: a synthetic task with many classes: Gaussian clusters in a 64-d input space
  (unit-variance centres, within-class noise sigma = 1.5; sigma chosen on the validation part
  in a pilot), a small MLP trunk (64 → 256 → 128) trained with CosFace through ``partial-fc``
  at r = 0.1 and r = 1.0, the same steps, batches and initialisation, seeds 0–2. Reported: top-1
  accuracy on the test samples (the nearest class centre, ``PartialFC.predict``), on the
  validation samples, the training time, and the ratio r = 0.1 / r = 1.0. (ArcFace's s = 64,
  m = 0.5 did not train from scratch on this task in the pilot: validation top-1 below 10 %.)

    python benchmarks/partial_fc.py --quick   # 2,000 classes, 3,000 steps (~5 min, 2 cores)
    python benchmarks/partial_fc.py           # 10,000 classes, 15,000 steps; more timed steps

Writes ``benchmarks/results/partial_fc_{quick,full}.json`` after every configuration
(``"complete": false`` until the plan is done) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BATCH, DIM = 128, 128
SCALE_CLASSES = (100_000, 1_000_000)
SCALE_RATE = 0.1
SCALE_METHOD = "arcface"
#: (name, kind, sample rate, sparse gradient, SGD momentum)
SCALE_CONFIGS = (
    ("full MarginSoftmax", "full", 1.0, False, 0.9),
    ("partial-fc r=0.1, dense grad", "partial", SCALE_RATE, False, 0.9),
    ("partial-fc r=0.1, sparse grad", "partial", SCALE_RATE, True, 0.0),
)
#: timed steps (after one warm-up step) per number of classes
SCALE_STEPS = {"quick": {100_000: 5, 1_000_000: 3}, "full": {100_000: 20, 1_000_000: 10}}
#: float32 tensors of [batch, classes used] the forward + backward holds at its peak (cosines,
#: margin logits, softmax, their gradients; about 4 measured at 100k classes), with a margin
ACTIVATIONS_PER_LOGIT = 6

ACCURACY = {
    "quick": {"classes": 2000, "steps": 3000},
    "full": {"classes": 10_000, "steps": 15_000},
}
TASK = {"input_dim": 64, "hidden": 256, "sigma": 1.5, "train_per_class": 10,
        "val_per_class": 3, "test_per_class": 5, "task_seed": 1234}
TRAIN = {"method": "cosface", "batch": BATCH, "lr": 0.1, "momentum": 0.9,
         "weight_decay": 5e-4, "schedule": "cosine"}
RATES = (1.0, 0.1)


# ------------------------------------------------------------------------------------ scale
def estimate_bytes(classes: int, kind: str, rate: float, sparse: bool, momentum: float) -> int:
    """Memory of a configuration: weight, its gradient, SGD's momentum, the logit-sized
    activations of one step and the sampling scores."""
    used = classes if kind == "full" else max(BATCH, math.ceil(rate * classes))
    weight = 4 * classes * DIM
    grad = 4 * used * DIM if sparse else weight
    state = weight if momentum else 0
    activations = 4 * BATCH * used * ACTIVATIONS_PER_LOGIT
    sampling = 0 if kind == "full" else 12 * classes  # scores, top-k indices
    return weight + grad + state + activations + sampling


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration in this (fresh) process; returns its measurements."""
    import resource

    import torch

    from hashlab.losses.margin import from_preset
    from hashlab.losses.partial_fc import PartialFC

    torch.set_num_threads(spec["threads"])

    def steps(classes: int, n: int) -> tuple[list[float], Any, Any]:
        if spec["kind"] == "full":
            loss = from_preset(SCALE_METHOD, classes, DIM)
        else:
            loss = PartialFC(classes, DIM, method=SCALE_METHOD, sample_rate=spec["rate"],
                             sparse_grad=spec["sparse"], seed=0)
        opt = torch.optim.SGD(loss.parameters(), lr=0.1, momentum=spec["momentum"])
        data = torch.Generator().manual_seed(0)
        times = []
        for _ in range(n):  # a new batch each step, as in training
            e = torch.randn(BATCH, DIM, generator=data).requires_grad_()
            y = torch.randint(0, classes, (BATCH,), generator=data)
            start = time.perf_counter()
            value = loss(e, y)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return times, loss, value.detach()

    # the same code on 1,000 classes first, so that the baseline includes the library code
    # a first call pages in; then the baseline: the peak RSS so far
    steps(1000, 2)
    torch.manual_seed(0)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, loss, value = steps(spec["classes"], 1 + spec["steps"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    classes = spec["classes"]
    sampled = getattr(loss, "last_index", None)
    return {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
            "memory_bytes": peak - baseline, "steps_ms": [1000 * t for t in times[1:]],
            "median_step_ms": 1000 * statistics.median(times[1:]),
            "classes_used": classes if sampled is None else int(sampled.numel()),
            "loss": float(value)}


def scale_part(mode: str, threads: int, cap: float, save: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for classes in SCALE_CLASSES:
        for name, kind, rate, sparse, momentum in SCALE_CONFIGS:
            est = estimate_bytes(classes, kind, rate, sparse, momentum)
            row: dict[str, Any] = {"classes": classes, "name": name, "kind": kind,
                                   "sample_rate": rate, "sparse_grad": sparse,
                                   "momentum": momentum, "estimate_bytes": est}
            if est > cap:
                row["status"] = "does not fit"
            else:
                spec = {"classes": classes, "kind": kind, "rate": rate, "sparse": sparse,
                        "momentum": momentum, "threads": threads,
                        "steps": SCALE_STEPS[mode][classes]}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                      capture_output=True, text=True)
                if proc.returncode == 0:
                    row.update(json.loads(proc.stdout.strip().splitlines()[-1]), status="ran")
                else:
                    row.update(status=f"failed (exit code {proc.returncode})",
                               error=proc.stderr[-2000:])
            rows.append(row)
            print(scale_line(row), flush=True)
            save()
    return rows


def scale_line(row: dict[str, Any]) -> str:
    head = f"{row['classes']:>9,} classes  {row['name']:30s}"
    if row["status"] != "ran":
        return (f"{head} {row['status']} (estimate {row['estimate_bytes'] / 2**30:.1f} GiB)")
    return (f"{head} {row['memory_bytes'] / 2**20:8.0f} MiB (estimate "
            f"{row['estimate_bytes'] / 2**20:.0f})  {row['median_step_ms']:8.1f} ms/step")


# --------------------------------------------------------------------------------- accuracy
def make_task(classes: int) -> dict[str, Any]:
    """Train / validation / test samples of ``classes`` Gaussian clusters (fixed task seed)."""
    import torch

    g = torch.Generator().manual_seed(TASK["task_seed"])
    centres = torch.randn(classes, TASK["input_dim"], generator=g)
    parts = {}
    for part in ("train", "val", "test"):
        y = torch.arange(classes).repeat_interleave(TASK[f"{part}_per_class"])
        x = centres[y] + TASK["sigma"] * torch.randn(len(y), TASK["input_dim"], generator=g)
        parts[part] = (x, y)
    return parts


def train_and_score(task: dict[str, Any], classes: int, steps: int, rate: float, seed: int
                    ) -> dict[str, float]:
    import torch
    from torch import nn

    from hashlab.losses.partial_fc import PartialFC

    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(TASK["input_dim"], TASK["hidden"]),
                          nn.BatchNorm1d(TASK["hidden"]), nn.ReLU(),
                          nn.Linear(TASK["hidden"], DIM))
    loss = PartialFC(classes, DIM, method=TRAIN["method"], sample_rate=rate, seed=seed)
    opt = torch.optim.SGD([*trunk.parameters(), *loss.parameters()], lr=TRAIN["lr"],
                          momentum=TRAIN["momentum"], weight_decay=TRAIN["weight_decay"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, y = task["train"]
    batches = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (TRAIN["batch"],), generator=batches)
        value = loss(trunk(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        schedule.step()
    seconds = time.perf_counter() - start
    trunk.eval(), loss.eval()
    out = {"train_seconds": seconds, "final_loss": float(value.detach())}
    with torch.no_grad():
        for part in ("val", "test"):
            xs, ys = task[part]
            out[part] = float((loss.predict(trunk(xs)) == ys).double().mean())
    return out


def accuracy_part(mode: str, seeds: list[int], result: dict[str, Any], save: Any) -> None:
    classes, steps = ACCURACY[mode]["classes"], ACCURACY[mode]["steps"]
    task = make_task(classes)
    runs = result["accuracy"]["runs"]
    for seed in seeds:
        for rate in RATES:
            cell = runs.setdefault(str(rate), {"test": [], "val": [], "train_seconds": []})
            out = train_and_score(task, classes, steps, rate, seed)
            for key in cell:
                cell[key].append(out[key])
            print(f"accuracy r={rate} seed {seed}: test {out['test']:.4f}, val "
                  f"{out['val']:.4f}, {out['train_seconds']:.0f} s", flush=True)
            result["runs_done"] += 1
            save()
    base, sampled = runs[str(1.0)]["test"], runs[str(0.1)]["test"]
    result["accuracy"]["ratio"] = statistics.mean(sampled) / statistics.mean(base)
    result["accuracy"]["ratio_per_seed"] = [s / b for s, b in zip(sampled, base, strict=True)]


# ------------------------------------------------------------------------------------- main
def environment(threads: int) -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 classes and 3,000 steps for accuracy; fewer timed steps")
    parser.add_argument("--parts", nargs="+", default=["scale", "accuracy"],
                        choices=["scale", "accuracy"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a shared machine makes more threads slower)")
    parser.add_argument("--mem-cap-gib", type=float, default=8.0,
                        help="configurations estimated above this are not run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0

    import torch

    from hashlab.io import atomic_write_json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hashing import machine  # sibling script

    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    out = args.out or Path("benchmarks/results") / f"partial_fc_{mode}.json"
    planned = (len(args.seeds) * len(RATES)) if "accuracy" in args.parts else 0
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv), "mode": mode, "quick": args.quick,
        "machine": f"{machine()}, {args.threads} torch thread(s)",
        "environment": environment(args.threads),
        "settings": {"batch": BATCH, "dim": DIM, "scale_method": SCALE_METHOD,
                     "scale_steps": {str(k): v for k, v in SCALE_STEPS[mode].items()},
                     "mem_cap_gib": args.mem_cap_gib,
                     "activations_per_logit": ACTIVATIONS_PER_LOGIT,
                     "accuracy": {**ACCURACY[mode], **TASK, **TRAIN, "rates": list(RATES)}},
        "seeds": args.seeds, "scale": [], "accuracy": {"runs": {}},
        "planned_runs": planned, "runs_done": 0, "complete": False}
    start = time.perf_counter()

    def save() -> None:
        result["seconds"] = time.perf_counter() - start
        atomic_write_json(out, result)

    if "scale" in args.parts:
        result["scale"] = scale_part(mode, args.threads, args.mem_cap_gib * 2**30, save)
    if "accuracy" in args.parts:
        accuracy_part(mode, args.seeds, result, save)
        acc = result["accuracy"]
        for rate in RATES:
            cell = acc["runs"][str(rate)]
            print(f"r = {rate}: test top-1 {statistics.mean(cell['test']):.4f} "
                  f"(seeds {', '.join(f'{v:.4f}' for v in cell['test'])})")
        print(f"ratio r=0.1 / r=1.0: {acc['ratio']:.4f}")
    result["complete"] = True
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

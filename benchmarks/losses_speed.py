"""Forward + backward time of MarginSoftmax at face-recognition scale.

Batch 256 × dim 512 × 10,000 classes on the CPU: the CosFace margin without mining, with SV
mining (SV-AM-Softmax), and pytorch-metric-learning's CosFaceLoss, all measured in the same run
(warm-up, then the median of --repeats). Prints a table and writes JSON.

    python benchmarks/losses_speed.py [--threads 2] [--repeats 15] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from hashlab.io import atomic_write_json
from hashlab.losses.margin import MarginSoftmax


def time_loss(loss: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward pass (after 3 warm-up passes)."""
    times = []
    for i in range(repeats + 3):
        e = x.detach().requires_grad_()
        loss.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss(e, y).backward()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/losses_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import pytorch_metric_learning
    from pytorch_metric_learning.losses import CosFaceLoss  # dev dependency: the baseline

    x = torch.randn(args.batch, args.dim)
    y = torch.randint(0, args.classes, (args.batch,))
    plain = MarginSoftmax(args.classes, args.dim, margin="cos", s=64.0, m=0.35)
    sv = MarginSoftmax(args.classes, args.dim, margin="cos", mining="sv", s=64.0, m=0.35, t=1.2)
    pml = CosFaceLoss(num_classes=args.classes, embedding_size=args.dim, margin=0.35, scale=64)
    with torch.no_grad():
        sv.weight.copy_(plain.weight)
        pml.W.copy_(plain.weight.t())
    with torch.no_grad():  # same inputs and weights: our CosFace and PML's agree
        ours, theirs = plain(x, y).item(), pml(x, y).item()
    if abs(ours - theirs) > 1e-3 * max(1.0, abs(theirs)):
        raise SystemExit(f"MarginSoftmax ({ours}) and PML CosFaceLoss ({theirs}) disagree")
    # interleave the three so that machine noise hits them alike
    results: dict[str, list[float]] = {"cos (no mining)": [], "cos + sv": [], "PML CosFaceLoss": []}
    for _ in range(3):
        for name, loss in zip(results, (plain, sv, pml), strict=True):
            results[name].append(time_loss(loss, x, y, args.repeats))
    ms = {name: 1000 * statistics.median(v) for name, v in results.items()}
    ratios = {"sv / no mining": ms["cos + sv"] / ms["cos (no mining)"],
              "sv / PML CosFace": ms["cos + sv"] / ms["PML CosFaceLoss"]}
    print(f"forward+backward, batch {args.batch} × dim {args.dim} × {args.classes} classes, "
          f"{args.threads} threads, median of {args.repeats} × 3 rounds")
    for name, v in ms.items():
        print(f"  {name:18s} {v:8.1f} ms")
    for name, r in ratios.items():
        print(f"  {name:18s} {r:8.2f}×  (target ≤ 1.30)")
    machine = {"torch": torch.__version__,
               "pytorch_metric_learning": pytorch_metric_learning.__version__,
               "python": platform.python_version(), "machine": platform.machine(),
               "cpu_count": os.cpu_count()}
    atomic_write_json(args.out, {"config": vars(args) | {"out": str(args.out)}, "ms": ms,
                                 "rounds_ms": {k: [1000 * t for t in v]
                                               for k, v in results.items()},
                                 "ratios": ratios, "loss_value": {"ours": ours, "pml": theirs},
                                 "machine": machine})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

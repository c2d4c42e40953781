"""Training throughput: hashlab's Trainer vs a plain PyTorch loop, same model, data and loss.

Both train the bundled ``fmnist/hash64`` model (small-cnn + 64-bit hash head, ``hash-ce`` loss, SGD
+ one-cycle) on the same in-memory Fashion-MNIST images (scikit-learn digits resized to 28×28 when
Fashion-MNIST is not installed), batch 256, for ``--batches`` steps per measurement. The plain loop
is what a user would write by hand: shuffle, slice a batch, normalise, forward, loss, backward, step
— no checkpoint, no logging, no augmentation (the Trainer's augmentation is switched off too, so
both do the same work); it is measured twice, as written and with the channels-last memory format
the Trainer uses on the CPU, and the faster one is the baseline. The Trainer's number is its own
epoch timer (the training loop; the per-epoch checkpoint write is reported separately). Runs
alternate (plain, Trainer, plain, ...) and the best of ``--repeats`` counts for each; the ratio is
the acceptance number (target ≥ 0.95).

    python benchmarks/train_throughput.py [--batches 80] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from hashlab.cli import resolve_config_path
from hashlab.config import load_config
from hashlab.data.facts import TrainData
from hashlab.data.registry import load_dataset
from hashlab.io import atomic_write_json
from hashlab.models.model import build_model
from hashlab.train.engine import Trainer, build_loss, build_optimizer, build_scheduler

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def config(batches: int, threads: int, workdir: Path):
    dataset = ["data.dataset=fashion-mnist"] if FMNIST.exists() else [
        "data.dataset=digits", "data.image_size=28"]
    return load_config(resolve_config_path("fmnist/hash64"), [
        *dataset, "data.augment.hflip=false", "data.augment.crop_padding=0",
        "train.epochs=1", "train.batch_size=256", f"train.max_batches_per_epoch={batches}",
        f"train.threads={threads}", "train.device=cpu", f"output_dir={workdir}"])


def plain_loop(cfg, batches: int, channels_last: bool = False) -> float:
    """Images per second of a hand-written loop over the same model, loss and optimiser
    (``channels_last``: the memory format the Trainer uses on the CPU)."""
    torch.manual_seed(cfg.seed)
    d = cfg.data
    data = load_dataset(d.dataset, "train", **({"image_size": d.image_size}
                                                if d.image_size else {}))
    model = build_model(cfg.model, int(data.image_shape[0]))
    loss_fn = build_loss(cfg, TrainData(data.num_classes, data.labels))
    optimizer = build_optimizer(cfg, [*model.parameters(), *loss_fn.parameters()])
    scheduler = build_scheduler(cfg, optimizer, batches)
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    order = torch.randperm(len(data))
    bs = cfg.train.batch_size
    start = time.perf_counter()
    for step in range(batches):
        images, labels = data.get_batch(order[step * bs:(step + 1) * bs])
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return batches * bs / (time.perf_counter() - start)


def trainer_run(cfg, name: str) -> tuple[float, float]:
    """(images per second of the Trainer's training loop, seconds of the whole fit)."""
    cfg.name = name
    trainer = Trainer(cfg, progress=False)
    start = time.perf_counter()
    history = trainer.fit()
    return history[-1]["images_per_second"], time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/train_throughput.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plain, tuned, hashlab, fits = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args.batches, args.threads, Path(tmp))
        for r in range(args.repeats):
            plain.append(plain_loop(cfg, args.batches))
            tuned.append(plain_loop(cfg, args.batches, channels_last=True))
            ips, seconds = trainer_run(config(args.batches, args.threads, Path(tmp)), f"r{r}")
            hashlab.append(ips)
            fits.append(seconds)
            print(f"repeat {r + 1}: plain {plain[-1]:.0f} img/s, plain channels-last "
                  f"{tuned[-1]:.0f} img/s, Trainer {ips:.0f} img/s "
                  f"(whole fit incl. checkpoint {seconds:.1f} s)")
    best_plain = max(max(plain), max(tuned))
    ratio = max(hashlab) / best_plain
    print(f"\n| loop | images/s (best of {args.repeats}) |\n|---|---|")
    print(f"| plain PyTorch | {max(plain):.0f} |\n| plain PyTorch, channels-last | "
          f"{max(tuned):.0f} |\n| hashlab Trainer | {max(hashlab):.0f} |")
    print(f"\nTrainer / best plain loop = {ratio:.3f} (target >= 0.95)")
    atomic_write_json(args.out, {
        "command": "python benchmarks/train_throughput.py", "dataset": cfg.data.dataset,
        "batches": args.batches, "batch_size": cfg.train.batch_size, "threads": args.threads,
        "plain_images_per_second": plain, "plain_channels_last_images_per_second": tuned,
        "trainer_images_per_second": hashlab,
        "trainer_fit_seconds": fits, "ratio_best": ratio,
        "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

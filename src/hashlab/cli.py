"""The ``hashlab`` command line: train → encode → eval, and ``demo`` for all three at once.

Every command reports an expected failure (a bad config, a missing or damaged file, a full
disk, ...) as ``error: <what> (<which file or key>): <how to fix>`` and exits with status 2; an
interrupt exits with 130. Anything else is a bug in hashlab: its traceback is printed, with a
request to report it, and the exit status is 1. All of it happens in :func:`_report`.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer

from hashlab.errors import HashlabError
from hashlab.registry import load_plugins

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="hashlab: train, encode, index, search and evaluate compact image codes.")

BUG_HINT = ("this is a bug in hashlab; please report it with the command you ran "
            "(and the traceback above)")
# OSErrors that are the user's or the machine's business, not a bug: a path that is missing,
# forbidden or of the wrong kind, a full or read-only disk
_EXPECTED_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError,
                       NotADirectoryError, FileExistsError)
_EXPECTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG})
F = TypeVar("F", bound=Callable[..., Any])


def _report(exc: BaseException, expected: tuple[type[BaseException], ...] = ()) -> int:
    """Print ``exc`` as the user should see it; returns the exit status (2 expected, 130
    interrupted, 1 a bug, with its traceback)."""
    if isinstance(exc, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    if isinstance(exc, (HashlabError, *expected)):
        message = str(exc)
    elif isinstance(exc, OSError) and (isinstance(exc, _EXPECTED_OS_ERRORS)
                                       or exc.errno in _EXPECTED_ERRNOS):
        from hashlab.io import describe_os_error

        reason, action = describe_os_error(exc)
        where = f" ({exc.filename})" if exc.filename is not None else ""
        message = f"{reason}{where}: {action}"
    elif isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        message = (f"out of memory ({type(exc).__name__}): use smaller batches "
                   "(train.batch_size, --batch-size) or smaller images, or a larger machine")
    else:
        traceback.print_exception(exc, file=sys.stderr)
        typer.secho(BUG_HINT, fg=typer.colors.RED, err=True)
        return 1
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return 2


def _guarded(fn: F, expected: tuple[type[BaseException], ...] = ()) -> F:
    """``fn`` with every failure reported by :func:`_report` (the one error-handling path of
    every command); ``expected``: exception types that are bad input for this command."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - reported by _report
            raise typer.Exit(code=_report(exc, expected)) from None

    return run  # type: ignore[return-value]


def command(name: str | None = None, *, expected: tuple[type[BaseException], ...] = ()
            ) -> Callable[[F], F]:
    """``@app.command(name)`` whose failures go through :func:`_report`."""
    return lambda fn: app.command(name)(_guarded(fn, expected))


def _check_output_file(out: Path | None) -> None:
    """Refuse ``--out`` before any work when it cannot be written as a file: an existing
    folder, a path under a file, or a folder without write permission."""
    if out is None:
        return
    if out.is_dir():
        raise HashlabError(f"--out {out}: is a folder; give a file name (e.g. "
                           f"{out / 'out.json'})")
    _check_parent_writable(out)


def _check_parent_writable(out: Path) -> None:
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise HashlabError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HashlabError(f"--out {out}: no permission to write in {parent}")


def _choices(module: str, name: str) -> str:
    """``a|b|c``: the keys of a registry, for help texts (never typed by hand)."""
    import importlib

    return "|".join(getattr(importlib.import_module(module), name).names())


def _main(
    plugin: Annotated[list[str] | None, typer.Option(
        "--plugin", help="import this module or package first, so that the losses, datasets, "
                         "index kinds, ... it registers can be used (repeatable; also "
                         "$HASHLAB_PLUGINS)")] = None,
) -> None:
    load_plugins(plugin or [])
    _PLUGINS[:] = plugin or []


#: the --plugin options of this command line (``hashlab train --nproc`` passes them on)
_PLUGINS: list[str] = []

app.callback()(_guarded(_main))

CONFIG_ROOT = Path(__file__).parent / "configs"
DEMO_CONFIG = "fmnist/hash64"


def resolve_config_path(config: str) -> Path:
    """A YAML path, or the name of a bundled preset such as ``fmnist/hash64``."""
    path = Path(config)
    if path.is_file():
        return path
    preset = CONFIG_ROOT / (config if config.endswith(".yaml") else f"{config}.yaml")
    if preset.is_file():
        return preset
    presets = ", ".join(sorted(str(p.relative_to(CONFIG_ROOT).with_suffix(""))
                               for p in CONFIG_ROOT.rglob("*.yaml")))
    raise HashlabError(f"config {config!r} is neither a file nor a preset; presets: {presets}")


def _format_table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    out = [title, line]
    out += [f"| {k:<{width}} | {v:>{vwidth}} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)


@command()
def train(
    config: Annotated[str, typer.Argument(help="YAML config file or preset name (fmnist/hash64)")],
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from its checkpoint")]
    = False,
    name: Annotated[str | None, typer.Option(help="run name (default: the config's name)")]
    = None,
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: OUTPUT_DIR/NAME)")]
    = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a config key, e.g. --set train.epochs=2 (repeatable)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    nproc: Annotated[int, typer.Option(
        min=1, help="train with N processes on this machine (DistributedDataParallel through "
                    "torchrun: gloo on CPU, nccl on GPUs; docs/scale.md)")] = 1,
) -> None:
    """Train a model from a YAML config; writes checkpoints, metrics and plots to the run dir.

    A config with a ``method`` section (``configs/fmnist/dcmh-64.yaml``) trains a cross-modal
    image–text run (docs/crossmodal.md). Under ``torchrun`` (or with ``--nproc N``) it trains
    with DistributedDataParallel; only rank 0 writes files."""
    from hashlab import distributed
    from hashlab.config import load_config, read_config_mapping
    from hashlab.crossmodal.config import is_crossmodal_config

    if nproc > 1 and distributed.env_world_size() == 1:
        argv = [config, *(["--resume"] if resume else []),
                *(["--name", name] if name is not None else []),
                *(["--run-dir", str(run_dir)] if run_dir is not None else []),
                *[a for item in set_ or [] for a in ("--set", item)],
                *([] if progress else ["--no-progress"])]
        code = _launch_torchrun(nproc, argv)
        if code:
            raise typer.Exit(code)
        return
    multi = distributed.env_world_size() > 1

    # --name is a string as given (quoted: "2024" or "a: b" must not become a number or a map)
    overrides = list(set_ or []) + ([f"name={json.dumps(name)}"] if name is not None else [])
    path = resolve_config_path(config)
    if is_crossmodal_config(read_config_mapping(path)):
        from hashlab.crossmodal.config import load_crossmodal_config
        from hashlab.crossmodal.trainer import CrossModalTrainer as Trainer

        cfg: Any = load_crossmodal_config(path, overrides)
        if multi:
            raise HashlabError("cross-modal runs train in one process: launch them without "
                               "torchrun / --nproc")
    else:
        from hashlab.train.engine import Trainer  # type: ignore[assignment]

        cfg = load_config(path, overrides)
        if cfg.recipe.name is not None:
            if multi:
                raise HashlabError("recipes train in one process: launch them without "
                                   "torchrun / --nproc")
            _train_recipe(cfg, run_dir, progress, resume)
            return
    trainer = Trainer(cfg, run_dir, progress=progress)
    main_rank = getattr(trainer, "rank", 0) == 0
    if main_rank:
        procs = f" on {trainer.world_size} processes" if multi else ""
        typer.echo(f"training {cfg.name}{procs} → {trainer.run_dir}")
    trainer.fit(resume=resume)
    if main_rank:
        typer.echo(f"done: {trainer.run_dir}")


def _launch_torchrun(nproc: int, train_args: list[str]) -> int:
    """``hashlab train ... --nproc N``: run ``hashlab train TRAIN_ARGS`` under ``torchrun
    --standalone --nproc_per_node N`` (a free port on this machine); its exit status."""
    import shlex
    import subprocess

    argv = [*(a for p in _PLUGINS for a in ("--plugin", p)), "train", *train_args]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "hashlab", *argv]
    typer.echo(f"launching {nproc} processes: torchrun --standalone --nproc_per_node={nproc} "
               f"-m hashlab {shlex.join(argv)}", err=True)
    return subprocess.call(cmd)


def _train_recipe(cfg: Any, run_dir: Path | None, progress: bool, resume: bool) -> None:
    """``hashlab train`` of a config with ``recipe:``: every stage, then its summary table."""
    from hashlab.train.recipes.registry import RECIPES

    recipe = RECIPES.get(cfg.recipe.name)(cfg, run_dir, progress=progress, **cfg.recipe.args)
    typer.echo(f"training {cfg.name} with recipe {cfg.recipe.name} → {recipe.run_dir}")
    summary = recipe.run(resume=resume)
    typer.echo(recipe.summary_table(summary))
    typer.echo(f"done: {recipe.run_dir}")


@command()
def encode(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    split: Annotated[str, typer.Option(help="dataset split to encode (train or test)")] = "test",
    out: Annotated[Path | None, typer.Option(
        help="output .npz file (default RUN/codes/SPLIT.npz); an existing folder is refused")]
    = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per batch")] = 1024,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Encode a split into float32 codes and packed bits (.npz with float, bits, labels)."""
    from hashlab.encode import CODES_DIR, TrainedRun

    _check_output_file(out)
    trained = TrainedRun(run)
    codes = trained.encode(split, batch_size=batch_size, progress=progress)
    path = out or run / CODES_DIR / f"{split}.npz"
    if out:
        codes.save(out)
    bits = f", bits {codes.bits.shape} uint8" if codes.bits is not None else ""
    typer.echo(f"{len(codes)} codes → {path} (float {codes.float.shape} float32{bits})")


@command("eval", expected=(ValueError,))
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    protocol: Annotated[str, typer.Option(
        help=f"evaluation protocol: {_choices('hashlab.eval.registry', 'PROTOCOLS')}")]
    = "fmnist-retrieval",
    out: Annotated[Path | None, typer.Option(
        help="output JSON file (default RUN/eval/PROTOCOL.json); an existing folder is refused")]
    = None,
    index: Annotated[Path | None, typer.Option(
        "--index", help="search the queries in this index (built by `hashlab index` from the "
                        "train split) instead of an exhaustive ranking")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Evaluate a run with a retrieval protocol; prints a table and writes JSON."""
    from hashlab.eval.protocols import evaluate_run, open_run
    from hashlab.eval.report import result_rows
    from hashlab.io import atomic_write_json

    _check_output_file(out)
    result = evaluate_run(open_run(run), protocol, progress=progress, index_dir=index)
    suffix = f"-index-{result['index']['kind']}" if index is not None else ""
    path = out or run / "eval" / f"{protocol}{suffix}.json"
    atomic_write_json(path, result)
    typer.echo(_format_table(result_rows(result), f"{protocol} on {run}"))
    typer.echo(f"written {path}")


@command()
def demo(
    config: Annotated[str, typer.Option(help="config file or preset")] = DEMO_CONFIG,
    run_dir: Annotated[Path | None, typer.Option(help="run directory")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a config key, e.g. --set train.epochs=2 (repeatable)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train the default config on Fashion-MNIST, encode, evaluate with fmnist-retrieval and print
    a table. Re-running continues an interrupted run, or re-evaluates a finished one."""
    from hashlab.config import load_config
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import evaluate_run
    from hashlab.eval.report import result_rows
    from hashlab.io import atomic_write_json
    from hashlab.train.engine import CHECKPOINT, FINAL_MODEL, Trainer

    start = time.perf_counter()
    cfg = load_config(resolve_config_path(config), list(set_ or []))
    directory = run_dir or Path(cfg.output_dir) / cfg.name
    if (directory / FINAL_MODEL).exists():
        typer.echo(f"{directory} already holds a finished run: evaluating it "
                   "(remove the directory to train again)")
    else:
        resume = (directory / CHECKPOINT).exists()
        typer.echo(("resuming" if resume else "training") + f" {cfg.name} → {directory}")
        Trainer(cfg, directory, progress=progress).fit(resume=resume)
    train_seconds = time.perf_counter() - start
    result = evaluate_run(TrainedRun(directory), cfg.eval.protocol, progress=progress)
    total = time.perf_counter() - start
    result["seconds_total"], result["seconds_train"] = total, train_seconds
    atomic_write_json(directory / "eval" / "demo.json", result)
    rows = result_rows(result)
    rows.append(("time taken (train + encode + eval)", f"{total:.0f} s"))
    typer.echo(_format_table(rows, f"hashlab demo: {cfg.eval.protocol}, {cfg.name}"))


@command(expected=(ValueError, NotImplementedError))
def index(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    split: Annotated[str | None, typer.Option(
        help="split whose codes fill the index (default: train; database for a cross-modal "
             "run)")] = None,
    modality: Annotated[str, typer.Option(
        help="cross-modal runs: index the image or the text codes")] = "image",
    kind: Annotated[str, typer.Option(
        help=f"index kind; binary: {_choices('hashlab.index.registry', 'BINARY_KINDS')}; "
             f"float: {_choices('hashlab.index.registry', 'FLOAT_KINDS')}")] = "flat",
    code: Annotated[str, typer.Option(help="binary (Hamming) or float (cosine) codes")]
    = "binary",
    out: Annotated[Path | None, typer.Option(
        help="index folder (default RUN/index-SPLIT-KIND); an existing folder that is not an "
             "index, or a file, is refused")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per encoding batch")] = 1024,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    backend: Annotated[str, typer.Option(
        help="faiss: save an index folder; milvus: write the codes into a Milvus collection "
             "(--uri, --collection; kinds flat, ivf; docs/scale.md)")] = "faiss",
    uri: Annotated[str | None, typer.Option(
        help="--backend milvus: a local .db file (embedded Milvus), http://host:19530 (a "
             "Milvus server) or a milvus:// reference")] = None,
    collection: Annotated[str | None, typer.Option(
        help="--backend milvus: collection name (default hashlab_RUN_SPLIT[_float]_KIND); an "
             "existing hashlab collection of that name is replaced")] = None,
    metadata: Annotated[Path | None, typer.Option(
        help="--backend milvus: JSON file of the images' metadata for filtered search (serve "
             "page, search filters): a list with one object (or null) per image of the split, "
             "or an object keyed by image position")] = None,
    synthetic_metadata: Annotated[bool, typer.Option(
        help="--backend milvus: store the made-up metadata (store, location, date, tags) that "
             "`hashlab serve` gives a FAISS-served split, for a demo of the filters")] = False,
) -> None:
    """Build a FAISS index of a split's codes (ids = image positions in the split) and save it,
    or (``--backend milvus``) write them into a Milvus collection."""
    from hashlab.encode import TrainedRun
    from hashlab.eval.common import save_run_index
    from hashlab.index import BinaryIndex, FloatIndex
    from hashlab.index.registry import BINARY_KINDS, FLOAT_KINDS
    from hashlab.index.store import MANIFEST_FILE

    if code not in ("binary", "float"):
        raise HashlabError(f"--code must be 'binary' or 'float', got {code!r}")
    if backend == "milvus":
        target = _milvus_target(run, uri, collection, out, split, code, kind)
    elif backend != "faiss":
        raise HashlabError(f"--backend must be 'faiss' or 'milvus', got {backend!r}")
    elif uri is not None or collection is not None or metadata is not None \
            or synthetic_metadata:
        raise HashlabError("--uri, --collection, --metadata and --synthetic-metadata go with "
                           "--backend milvus (a FAISS index's metadata is the serve page's "
                           "items.json)")
    else:
        (BINARY_KINDS if code == "binary" else FLOAT_KINDS).canonical(kind, key="--kind")
    if out is not None:  # checked before encoding: save_index refuses these only at the end
        if out.exists() and not (out / MANIFEST_FILE).is_file() and (
                not out.is_dir() or any(out.iterdir())):
            raise HashlabError(f"--out {out}: exists and is not an index folder; give a new "
                               "or empty folder")
        _check_parent_writable(out)
    from hashlab.crossmodal.trainer import CrossModalRun, is_crossmodal_run

    if is_crossmodal_run(run):  # image or text codes of a split, in one Hamming space
        if code != "binary" or modality not in ("image", "text"):
            raise HashlabError("a cross-modal run is indexed with binary codes and --modality "
                               f"image or text (got --code {code}, --modality {modality})")
        xrun = CrossModalRun(run)
        split = split or "database"
        bits, _ = xrun.encode_split(split, modality, batch_size=batch_size)  # type: ignore[arg-type]
        xidx = BinaryIndex(xrun.dim, kind)
        xidx.add(bits, np.arange(len(bits), dtype=np.int64))
        path = out or run / f"index-{split}-{modality}-{kind}"
        save_run_index(xrun, xidx, path, split=split, code="binary", modality=modality)
        typer.echo(f"{len(xidx)} {modality} codes ({kind}) → {path}")
        return
    split = split or "train"
    trained = TrainedRun(run)
    rows = None  # the metadata is checked before the encoding, the long part
    if backend == "milvus" and (metadata is not None or synthetic_metadata):
        rows = _index_metadata(metadata, synthetic_metadata, trained,
                               np.asarray(trained.load_split(split).labels, dtype=np.int64))
    codes = trained.encode(split, batch_size=batch_size, progress=progress)
    ids = np.arange(len(codes), dtype=np.int64)
    if code == "binary" and codes.bits is None:
        raise HashlabError("this run has an embedding head: use --code float")
    if backend == "milvus":
        from hashlab.index.milvus import write_run_collection

        written = write_run_collection(
            trained, codes.bits if code == "binary" else codes.float, ids, split=split,
            code=code, kind=kind, progress=progress,
            metadata=rows,
            **target)
        typer.echo(f"{len(ids)} {code} codes ({kind}) → {written.ref}")
        return
    if code == "binary":
        idx: Any = BinaryIndex(codes.nbits, kind)
        idx.add(codes.bits, ids)
    else:
        idx = FloatIndex(codes.float.shape[1], kind)
        idx.add(codes.float, ids)
    name = f"index-{split}-{kind}" if code == "binary" else f"index-{split}-float-{kind}"
    path = out or run / name
    save_run_index(trained, idx, path, split=split, code=code)  # with its source.json
    typer.echo(f"{len(idx)} {code} codes ({kind}) → {path}")


def _index_metadata(path: Path | None, synthetic: bool, trained: Any,
                    labels: np.ndarray) -> list[dict[str, Any] | None] | None:
    """``hashlab index --backend milvus``: one metadata object (or None) per image of the
    split, from ``--metadata`` or ``--synthetic-metadata`` (None: no metadata)."""
    from hashlab.serve.limits import ServeLimits
    from hashlab.serve.metadata import check_metadata
    from hashlab.serve.metadata import synthetic_metadata as make_synthetic

    n = len(labels)
    if synthetic:
        if path is not None:
            raise HashlabError("give --metadata or --synthetic-metadata, not both")
        return list(make_synthetic(labels, trained.class_names()))
    if path is None:
        return None
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HashlabError(f"--metadata {path}: cannot read it as JSON ({exc})") from None
    rows: list[dict[str, Any] | None] = [None] * n
    if isinstance(doc, list):
        if len(doc) != n:
            raise HashlabError(f"--metadata {path}: {len(doc)} entries for the split's {n} "
                               "images; give one object (or null) per image")
        entries = list(enumerate(doc))
    elif isinstance(doc, dict):
        entries = []
        for key, value in doc.items():
            if not key.isdigit() or int(key) >= n:
                raise HashlabError(f"--metadata {path}: key {key!r} is not an image position "
                                   f"of the split (0 to {n - 1})")
            entries.append((int(key), value))
    else:
        raise HashlabError(f"--metadata {path}: expected a list or an object keyed by image "
                           f"position, got {type(doc).__name__}")
    limit = ServeLimits().max_metadata_bytes
    for i, value in entries:
        if value is not None:
            try:
                rows[i] = check_metadata(value, limit, f"metadata[{i}]")
            except ValueError as exc:
                raise HashlabError(f"--metadata {path}: {exc}") from None
    return rows


def _milvus_target(run: Path, uri: str | None, collection: str | None, out: Path | None,
                   split: str | None, code: str, kind: str) -> dict[str, str]:
    """``hashlab index --backend milvus``: the ``uri`` and ``collection`` to write, checked
    before any encoding (reachable, a valid name that is free or holds a hashlab collection)."""
    import re

    from hashlab.crossmodal.trainer import is_crossmodal_run
    from hashlab.index.milvus import KINDS, check_writable, is_milvus_uri, parse_milvus_uri

    if uri is None:
        raise HashlabError("--backend milvus needs --uri: a local .db file (e.g. codes.db), "
                           "http://host:19530 or milvus://...")
    if out is not None:
        raise HashlabError("--out is the folder of a FAISS index; --backend milvus writes to "
                           "--uri / --collection")
    if kind not in KINDS:
        raise HashlabError(f"--kind {kind!r}: a Milvus collection is one of "
                           f"{', '.join(KINDS)}")
    if is_crossmodal_run(run):
        raise HashlabError("--backend milvus indexes single-modality runs; index a cross-modal "
                           "run with the faiss backend")
    if collection is None and is_milvus_uri(uri):
        collection = parse_milvus_uri(uri, collection_required=False).collection
    if collection is None:
        name = f"{run.resolve().name}_{split or 'train'}{'_float' if code == 'float' else ''}"
        collection = "hashlab_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{name}_{kind}")[:200]
    check_writable(uri, collection)
    return {"uri": uri, "collection": collection}




def _query_codes(trained: Any, source: dict[str, Any], images: list[Path] | None,
                 ids: list[int] | None, split: str | None, limit: int | None,
                 progress: bool) -> tuple[Any, list[str]]:
    """Codes of the queries and a name for each."""
    from hashlab.data.arrays import ArrayDataset

    if sum(x is not None and x != [] for x in (images, ids, split)) != 1:
        raise HashlabError("give exactly one of --image, --ids or --split")
    if images:
        from PIL import Image

        from hashlab.data.image_folder import read_image

        c, h, w = trained.meta["image_shape"]
        arrays = [read_image(p, "L" if c == 1 else "RGB", (h, w), Image.Resampling.BICUBIC)
                  for p in images]
        ref = trained.load_split(source["split"])
        ds = ArrayDataset(np.stack(arrays), np.zeros(len(arrays), dtype=np.int64),
                          mean=ref.mean, std=ref.std)
        return trained.encode_dataset(ds, progress=False), [str(p) for p in images]
    if ids:
        codes = trained.encode(source["split"], progress=progress)
        bad = [i for i in ids if not 0 <= i < len(codes)]
        if bad:
            raise HashlabError(f"--ids {bad} are not in the {source['split']} split "
                               f"(0..{len(codes) - 1})")
        sel = np.asarray(ids)
        return codes.take(sel), [f"{source['split']}:{i}" for i in ids]
    codes = trained.encode(split, progress=progress)
    sel = np.arange(min(limit or len(codes), len(codes)))
    return codes.take(sel), [f"{split}:{i}" for i in sel]


@command(expected=(ValueError, NotImplementedError))
def search(
    index_dir: Annotated[str, typer.Argument(
        metavar="INDEX", help="index directory, or a Milvus collection written by `hashlab index "
                              "--backend milvus` (milvus:///abs/path.db?collection=NAME, "
                              "milvus://host:19530?collection=NAME)")],
    image: Annotated[list[Path] | None, typer.Option(help="query image file (repeatable)")]
    = None,
    ids: Annotated[list[int] | None, typer.Option(help="query by id of an indexed image")]
    = None,
    split: Annotated[str | None, typer.Option(help="query with every image of a split")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="with --split: the first N only")]
    = None,
    k: Annotated[int, typer.Option(min=1, help="neighbours per query")] = 10,
    radius: Annotated[int | None, typer.Option(
        min=0, help="binary: all codes within this Hamming radius instead of the top k")] = None,
    exact: Annotated[bool, typer.Option(
        "--exact", help="guarantee complete results: raise the index's search parameters for "
                        "this search, or scan every stored code (slower). Without it a search "
                        "beyond what the index kind finds exactly prints a warning and is "
                        "marked \"exact\": false in the JSON")] = False,
    run: Annotated[Path | None, typer.Option(help="run that encodes queries (default: the "
                                                  "index's run)")] = None,
    text: Annotated[list[str] | None, typer.Option(
        help="cross-modal index of images: a text query (repeatable)")] = None,
    sheet: Annotated[Path | None, typer.Option(
        help="cross-modal index of images: write a contact sheet PNG of the first query's "
             "hits")] = None,
    out: Annotated[Path | None, typer.Option(
        help="write results as JSON to this file (an existing folder is refused)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Search an index with images, indexed ids or a whole split; prints or writes JSON.
    A cross-modal run's index (``hashlab index RUN --modality image|text``) is searched with
    ``--text`` (images by text) or ``--image`` (texts, or images, by image)."""
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import load_run_index, read_index_source
    from hashlab.index.query import run_query
    from hashlab.io import atomic_write_json

    _check_output_file(out)
    _check_output_file(sheet)
    milvus: Any = None  # the collection, when INDEX is a milvus:// reference
    if index_dir.lower().startswith(("milvus://", "milvus+https://")):
        from hashlab.index.milvus import MilvusIndex, check_run_source

        milvus = MilvusIndex.open(index_dir)
        source = check_run_source(milvus)
    else:
        source = read_index_source(Path(index_dir))
    if "modality" in source:
        from hashlab.crossmodal.search import search_crossmodal

        results, lines = search_crossmodal(Path(index_dir), source, texts=text or [],
                                           images=image or [], k=k, radius=radius,
                                           exact=exact, sheet=sheet)
        for warning in results.pop("warnings"):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        if out:
            atomic_write_json(out, results)
            typer.echo(f"{len(results['results'])} queries → {out}")
        else:
            typer.echo("\n".join(lines))
        if sheet:
            typer.echo(f"contact sheet → {sheet}")
        return
    if text or sheet:
        raise HashlabError("--text and --sheet search a cross-modal run's index (hashlab index "
                           "RUN --modality image); this index is of a single-modality run")
    trained = TrainedRun(run or source["run"])
    binary = source["code"] == "binary"
    if milvus is not None:
        check_run_source(milvus, trained)  # same model, code width and split size
        idx: Any = milvus
    else:
        idx, _ = load_run_index(trained, Path(index_dir))
    queries, names = _query_codes(trained, source, image, ids, split, limit, progress)
    q = queries.bits if binary else queries.float
    if radius is not None and not binary:
        raise HashlabError("--radius needs a binary index")
    if not out:  # only the first 20 queries are printed
        q, names = q[:20], names[:20]
    searcher = idx.query if milvus is not None else functools.partial(run_query, idx)
    res = searcher(q, k=None if radius is not None else k, radius=radius, exact=exact)
    for warning in res.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    results = [{"query": n, "ids": f.tolist(), ("distances" if binary else "similarities"):
                d.tolist(), "exact": bool(ok)}
               for n, (d, f), ok in zip(names, res.hits, res.query_exact, strict=True)]
    if out:
        atomic_write_json(out, {"index": str(index_dir), "k": k, "radius": radius,
                                **res.summary(), "results": results})
        typer.echo(f"{len(results)} queries → {out}")
    else:
        for r in results[:20]:
            pairs = list(zip(r["ids"], r.get("distances", r.get("similarities")), strict=True))
            shown = ", ".join(f"{i} ({d:.4g})" for i, d in pairs[:k])
            more = f" … {len(pairs)} within radius {radius}" if len(pairs) > k else ""
            typer.echo(f"{r['query']}: {shown}{more}")
        if len(queries) > 20:
            typer.echo(f"... {len(queries) - 20} more queries (use --out for all)")


@command("list")
def list_methods(
    family: Annotated[str | None, typer.Argument(
        help="one family (losses, hashers, binary-index-kinds, ...); default: all")] = None,
    markdown: Annotated[bool, typer.Option(help="print Markdown tables (as in docs/)")] = False,
) -> None:
    """List every registered method: name, aliases, one-line description and defaults."""
    from hashlab.docgen import family_table, format_defaults
    from hashlab.registry import all_families

    families = all_families()
    if family is not None:
        key = family.strip().lower().replace("_", "-")
        if key not in families:
            raise HashlabError(f"unknown family {family!r}; known: "
                               f"{', '.join(sorted(families))}")
        families = {key: families[key]}
    for name, registry in families.items():
        entries = registry.entries()
        if markdown:
            typer.echo(f"## {name}\n\n{family_table(registry)}")
            continue
        typer.secho(f"{name} ({len(entries)}): {registry.description}", bold=True)
        for e in entries:
            aliases = f" (alias {', '.join(e.aliases)})" if e.aliases else ""
            typer.echo(f"  {e.name}{aliases}: {e.description}")
            if e.defaults:
                typer.echo(f"      defaults: {format_defaults(e.defaults)}")
        typer.echo("")


@command()
def presets() -> None:
    """List the bundled config presets."""
    for p in sorted(CONFIG_ROOT.rglob("*.yaml")):
        typer.echo(str(p.relative_to(CONFIG_ROOT).with_suffix("")))


@command()
def report(
    runs: Annotated[list[Path], typer.Argument(
        help="run directories of finished training runs; several are compared")],
    out: Annotated[Path | None, typer.Option(
        help="output HTML file (default RUN/report.html for one run, report.html in the "
             "current folder for several); an existing folder is refused")] = None,
    protocol: Annotated[str | None, typer.Option(
        help=f"evaluation protocol: {_choices('hashlab.eval.registry', 'PROTOCOLS')} "
             "(default: each run config's eval.protocol, or retrieval when that needs "
             "Fashion-MNIST and the run was trained on another dataset)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Write one self-contained HTML report of a run, or a comparison of several: config,
    training and PR curves, retrieval grid, code projection, confusion matrix, distances."""
    from hashlab.report import REPORT_FILE, build_report

    _check_output_file(out)
    path = out or (runs[0] / REPORT_FILE if len(runs) == 1 else Path(REPORT_FILE))
    written = build_report(runs, path, protocol=protocol, progress=progress)
    typer.echo(f"report → {written}")


def main() -> None:  # pragma: no cover - console entry point
    """The ``hashlab`` console script: the commands report their own failures (``_report``);
    this catches what escapes them (while the command line itself is being set up)."""
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - reported by _report
        sys.exit(_report(exc))


__all__ = ["app"]


@command(expected=(ValueError,))
def serve(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    index: Annotated[str | None, typer.Option(
        "--index", metavar="INDEX",
        help="serve this index (built by `hashlab index` from the run): a folder, or a Milvus "
             "collection written by `hashlab index --backend milvus` "
             "(milvus:///abs/path.db?collection=NAME, milvus://host:19530?collection=NAME); "
             "items added or deleted are saved to it. Default: an in-memory flat index of the "
             "run's train split")] = None,
    host: Annotated[str, typer.Option(help="address to listen on (127.0.0.1: this machine "
                                           "only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="HASHLAB_API_KEY", show_envvar=True,
        help="require this key in the X-API-Key header of the write endpoints (POST/DELETE "
             "/v1/items)")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="images per encoder forward pass")]
    = 32,
    max_delay_ms: Annotated[float, typer.Option(
        min=0, help="how long the encoder waits for more images to batch")] = 5.0,
    synthetic_metadata: Annotated[bool, typer.Option(
        help="give the split's images synthetic store locations, tags and times (demo data) "
             "when the index stores no metadata")] = True,
    access_log: Annotated[bool, typer.Option(
        help="log every request (uvicorn's access log; off for benchmarks)")] = True,
) -> None:
    """Serve a run and its index over HTTP: web page, search API, metrics."""
    import uvicorn

    from hashlab.index.milvus import is_milvus_uri
    from hashlab.serve import ServeLimits, create_app

    limits = ServeLimits(max_batch=max_batch, max_delay_ms=max_delay_ms)
    served = index if index is None or is_milvus_uri(index) else Path(index)
    web = create_app(run, served, api_key=api_key, limits=limits,
                     synthetic_metadata=synthetic_metadata)
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        typer.secho(f"warning: listening on {host} without --api-key: anyone who can reach "
                    "it can add and delete items", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"serving {run} on http://{host}:{port}/ (API docs at /docs; Ctrl-C stops)")
    uvicorn.run(web, host=host, port=port, log_level="info", access_log=access_log)

"""Run configuration: YAML → typed, validated dataclasses.

Every field has a type and a default; unknown keys, wrong types and out-of-range values raise
:class:`~hashlab.errors.ConfigError` whose message names the offending key (``optim.lr``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from hashlab.errors import ConfigError, HashlabError

SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
INT_MAX = 2**63 - 1  # every integer ends up in a torch / numpy int64


MAX_TPS_POINTS = 16
MAX_AUGMENTOR_WIDTH = 256


@dataclass
class LearnedAugmentConfig:
    """The sample-aware learned augmentor (:mod:`hashlab.data.learned_augment`; the method and
    every key: docs/data-and-models.md, "Learned augmentation"). A gate picks one of
    ``transforms`` per image (Gumbel-softmax, temperature annealed from ``tau0`` to
    ``tau_min``); the augmentor is trained against the model with its own Adam (``lr``)."""

    transforms: list[Literal["identity", "affine", "tps"]] = field(
        default_factory=lambda: ["affine", "tps"])
    probability: float = 0.5  # share of each batch the model trains on augmented
    lr: float = 1e-3
    tau0: float = 1.0
    tau_min: float = 0.1
    affine_scale: float = 0.2  # bound of each affine parameter's offset from the identity
    tps_scale: float = 0.1  # bound of each control point's displacement (image half-widths)
    tps_points: int = 4  # control points per row (grid: points², edges: 2·points)
    tps_layout: Literal["grid", "edges"] = "grid"
    width: int = 8  # channels of the small networks (gate, localisation)

    def validate(self, path: str) -> None:
        check_field(len(self.transforms) > 0 and len(set(self.transforms)) == len(self.transforms),
                    f"{path}.transforms", "must name each transform at most once, and at least one")
        check_field(self.transforms != ["identity"], f"{path}.transforms",
                    "needs a warp (affine or tps), not only identity")
        check_field(0 < self.probability <= 1, f"{path}.probability", "must be in (0, 1]")
        check_field(self.lr > 0, f"{path}.lr", "must be > 0")
        check_field(self.tau0 > 0, f"{path}.tau0", "must be > 0")
        check_field(0 < self.tau_min <= self.tau0, f"{path}.tau_min",
                    f"must be in (0, tau0] = (0, {self.tau0:g}]")
        check_field(0 < self.affine_scale <= 1, f"{path}.affine_scale", "must be in (0, 1]")
        check_field(0 < self.tps_scale <= 1, f"{path}.tps_scale", "must be in (0, 1]")
        check_field(2 <= self.tps_points <= MAX_TPS_POINTS, f"{path}.tps_points",
                    f"must be in 2..{MAX_TPS_POINTS}")
        check_field(1 <= self.width <= MAX_AUGMENTOR_WIDTH, f"{path}.width",
                    f"must be in 1..{MAX_AUGMENTOR_WIDTH}")


@dataclass
class AugmentConfig:
    """Batch augmentations applied on the fly during training (all seeded): flips and shifts
    (:class:`hashlab.data.augment.BatchAugment`), random affine and elastic warps of strength
    ``affine`` / ``elastic`` (0 = off) and the learned augmentor ``learned``
    (:mod:`hashlab.data.learned_augment`)."""

    hflip: bool = False
    crop_padding: int = 0
    affine: float = 0.0
    elastic: float = 0.0
    learned: LearnedAugmentConfig | None = None

    def validate(self, path: str) -> None:
        check_field(self.crop_padding >= 0, f"{path}.crop_padding", "must be >= 0")
        check_field(0 <= self.affine <= 1, f"{path}.affine", "must be in [0, 1] (0 = off)")
        check_field(0 <= self.elastic <= 1, f"{path}.elastic", "must be in [0, 1] (0 = off)")


@dataclass
class PartialLabelsConfig:
    """DPH's partially labelled training data: the training images are cut (seeded) into
    disjoint parts ``both`` (category + attributes), ``category`` (attributes hidden) and
    ``attribute`` (category hidden) of these fractions; ``use`` names the parts trained on."""

    both: float = 1.0
    category: float = 0.0
    attribute: float = 0.0
    use: list[Literal["both", "category", "attribute"]] = field(
        default_factory=lambda: ["both", "category", "attribute"])
    seed: int = 0

    def validate(self, path: str) -> None:
        for name in ("both", "category", "attribute"):
            check_field(0 <= getattr(self, name) <= 1, f"{path}.{name}", "must be in [0, 1]")
        check_field(self.both + self.category + self.attribute <= 1 + 1e-9, path,
               "fractions both + category + attribute must sum to <= 1")
        check_field(len(self.use) > 0 and len(set(self.use)) == len(self.use), f"{path}.use",
               "must name each part at most once, and at least one")
        check_seed(self.seed, f"{path}.seed")


@dataclass
class SemiConfig:
    """The low-label protocol (``fmnist-semi``): ``labels_per_class`` labelled images per class,
    ``validation`` held-out images, the rest unlabelled, drawn with ``seed``
    (:mod:`hashlab.data.semi`). A plain run trains on the labelled part only (the
    supervised-only baseline); semi-supervised recipes also use the unlabelled part."""

    labels_per_class: int = 100
    validation: int = 5000
    seed: int = 0

    def validate(self, path: str) -> None:
        check_field(self.labels_per_class >= 1, f"{path}.labels_per_class", "must be >= 1")
        check_field(self.validation >= 0, f"{path}.validation", "must be >= 0")
        check_seed(self.seed, f"{path}.seed")


MAX_IMAGE_SIZE = 4096
MAX_DIM = 65536


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    root: str | None = None
    download: bool = True
    image_size: int | None = None
    classes: list[int] | None = None  # train on these class indices only (open-set protocols)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # visual attributes (DPH): a built-in class table ("fmnist"), a class-table CSV
    # ("class,attr1,..."), a per-image CSV ("image,attr1,...") or CelebA's list_attr_celeba.txt
    attributes: str | None = None
    partial_labels: PartialLabelsConfig | None = None
    semi: SemiConfig | None = None  # the low-label split (hashlab.data.semi)

    def validate(self, path: str) -> None:
        check_field(self.image_size is None or 1 <= self.image_size <= MAX_IMAGE_SIZE,
               f"{path}.image_size", f"must be in 1..{MAX_IMAGE_SIZE} or null")
        if self.partial_labels is not None:
            check_field(self.attributes is not None, f"{path}.partial_labels",
                   "needs data.attributes (the labels it hides)")
        if self.classes is not None:
            check_field(len(self.classes) >= 2, f"{path}.classes", "needs at least 2 classes")
            check_field(len(set(self.classes)) == len(self.classes), f"{path}.classes",
                   "has duplicates")
            check_field(min(self.classes) >= 0, f"{path}.classes", "must be >= 0")


@dataclass
class ModelConfig:
    backbone: str = "small-cnn"  # a name in BACKBONES (hashlab list backbones)
    backbone_args: dict[str, Any] = field(default_factory=dict)
    head: str = "hash"  # a name in HEADS (hashlab list heads)
    head_args: dict[str, Any] = field(default_factory=dict)
    dim: int = 64

    def validate(self, path: str) -> None:
        check_field(0 < self.dim <= MAX_DIM, f"{path}.dim", f"must be in 1..{MAX_DIM}")


@dataclass
class LossConfig:
    name: str = "hash-ce"  # a name in LOSSES (hashlab list losses)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True

    def validate(self, path: str) -> None:
        check_field(self.lr > 0, f"{path}.lr", "must be > 0")
        check_field(0 <= self.momentum < 1, f"{path}.momentum", "must be in [0, 1)")
        check_field(self.weight_decay >= 0, f"{path}.weight_decay", "must be >= 0")


@dataclass
class SchedulerConfig:
    name: Literal["none", "cosine", "step", "onecycle"] = "onecycle"
    step_size: int = 10
    gamma: float = 0.1
    warmup_fraction: float = 0.25

    def validate(self, path: str) -> None:
        check_field(self.step_size > 0, f"{path}.step_size", "must be > 0")
        check_field(0 < self.gamma <= 1, f"{path}.gamma", "must be in (0, 1]")
        check_field(0 < self.warmup_fraction < 1, f"{path}.warmup_fraction", "must be in (0, 1)")


@dataclass
class SamplerConfig:
    """``random``: shuffled batches of ``train.batch_size``; ``pk``: P classes × K images each
    (triplet losses need positives in every batch); ``train.batch_size`` is then P·K."""

    name: Literal["random", "pk"] = "random"
    p: int = 16
    k: int = 8

    def validate(self, path: str) -> None:
        check_field(self.p >= 2, f"{path}.p", "must be >= 2")
        check_field(self.k >= 2, f"{path}.k", "must be >= 2")


MAX_THREADS = 1024


@dataclass
class ValidationConfig:
    """A seeded, class-stratified part of the training set held out from training and searched
    after every epoch (binary codes, each held-out image against the others: mAP@all), so that
    epochs and hyperparameters are chosen without the test queries (docs/protocols.md)."""

    fraction: float = 0.0  # share of each class held out; 0 = no validation split
    seed: int = 0
    keep: Literal["last", "best"] = "last"  # which epoch's weights become model.pt

    def validate(self, path: str) -> None:
        check_field(0.0 <= self.fraction < 1.0, f"{path}.fraction", "must be in [0, 1)")
        check_field(0 <= self.seed <= SEED_MAX, f"{path}.seed", f"must be in [0, {SEED_MAX}]")
        check_field(self.keep == "last" or self.fraction > 0, f"{path}.keep",
               "'best' needs a validation split (set fraction > 0)")


@dataclass
class DistributedConfig:
    """How a run launched by ``torchrun`` (``hashlab train --nproc N``) trains on several
    processes with DistributedDataParallel (docs/scale.md). Ignored in one process."""

    # losses see the whole global batch: codes (with their gradients), labels and indices of
    # every rank are gathered before the loss (triplet mining, pairwise hashing losses, losses
    # with per-image state). Without it each rank's loss sees its own part of the batch.
    gather: bool = False
    sync_batchnorm: bool = True  # CUDA: BatchNorm statistics over the global batch
    find_unused_parameters: bool = False  # DDP's option, for models with unused parameters
    timeout_s: float = 1800.0  # how long a rank waits for the others in a collective

    def validate(self, path: str) -> None:
        check_field(self.timeout_s > 0, f"{path}.timeout_s", "must be > 0")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    device: str = "auto"
    threads: int | None = None
    max_batches_per_epoch: int | None = None
    limit_train_samples: int | None = None
    triplet_diagram: bool = False  # record (S_ap, S_an) of each batch → triplet_diagram.png
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def validate(self, path: str) -> None:
        check_field(self.epochs > 0, f"{path}.epochs", "must be > 0")
        check_field(self.batch_size > 1, f"{path}.batch_size", "must be > 1")
        check_field(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"{path}.device", f"must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        for name in ("threads", "max_batches_per_epoch", "limit_train_samples"):
            value = getattr(self, name)
            check_field(value is None or value > 0, f"{path}.{name}", "must be > 0 or null")
        check_field(self.threads is None or self.threads <= MAX_THREADS, f"{path}.threads",
               f"must be <= {MAX_THREADS}")


@dataclass
class EvalConfig:
    protocol: str = "fmnist-retrieval"
    batch_size: int = 1024

    def validate(self, path: str) -> None:
        check_field(self.batch_size > 0, f"{path}.batch_size", "must be > 0")


@dataclass
class RecipeConfig:
    """A multi-stage way of training around the engine (``hashlab.train.recipes``); ``name``
    None: one plain training run."""

    name: str | None = None  # a name in RECIPES (hashlab list recipes)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything a training run needs. ``hashlab train CONFIG`` reads one of these."""

    name: str = "run"
    seed: int = 0
    # modules or packages to import before the names below are looked up: a user's own losses,
    # backbones, datasets, ... registered from outside hashlab (see docs/contributing.md)
    plugins: list[str] = field(default_factory=list)
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)

    def validate(self, path: str) -> None:
        """Load the plug-ins, then check every registered name (the key names the field)."""
        from hashlab.data.registry import DATASETS
        from hashlab.eval.registry import PROTOCOLS
        from hashlab.losses.registry import LOSSES
        from hashlab.models.registry import BACKBONES, HEADS
        from hashlab.registry import load_plugins

        check_field(is_folder_name(self.name), "name",
               f"must be a single folder name (not empty, not '.' or '..', no '/' or '\\'), got "
               f"{self.name!r}; to train elsewhere, set output_dir or pass --run-dir")
        check_seed(self.seed, "seed")
        load_plugins(self.plugins)
        for registry, key, value in ((DATASETS, "data.dataset", self.data.dataset),
                                     (BACKBONES, "model.backbone", self.model.backbone),
                                     (HEADS, "model.head", self.model.head),
                                     (LOSSES, "loss.name", self.loss.name),
                                     (PROTOCOLS, "eval.protocol", self.eval.protocol)):
            try:
                registry.canonical(value)
            except HashlabError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        # method arguments get the type of the factory's parameter (``s: 30.0`` → a number)
        self.loss.args = coerce_args(LOSSES.get(self.loss.name), self.loss.args, "loss.args")
        self.model.backbone_args = coerce_args(BACKBONES.get(self.model.backbone),
                                               self.model.backbone_args, "model.backbone_args")
        self.model.head_args = coerce_args(HEADS.get(self.model.head), self.model.head_args,
                                           "model.head_args")
        if self.recipe.name is not None:
            from hashlab.train.recipes.registry import RECIPES

            try:
                factory = RECIPES.get(self.recipe.name)
            except HashlabError as exc:
                raise ConfigError(f"recipe.name: {exc}") from None
            from hashlab.registry import check_kwargs

            check_kwargs(factory, self.recipe.args, "recipe.args")
            self.recipe.args = coerce_args(factory, self.recipe.args, "recipe.args")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


T = TypeVar("T")


def check_field(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_seed(seed: int, key: str) -> None:
    check_field(0 <= seed <= SEED_MAX, key, f"must be in 0..{SEED_MAX} (2**32 - 1), got {seed}")


def is_folder_name(name: str) -> bool:
    """A single path component: the run directory stays inside ``output_dir``."""
    return name.strip() not in ("", ".", "..") and not any(c in name for c in "/\\\0")


_SIMPLE_TYPES: dict[Any, type] = {t: t for t in (bool, int, float, str)}
_SIMPLE_TYPES.update({t.__name__: t for t in (bool, int, float, str)})


def _param_type(param: inspect.Parameter) -> Any:
    """The type a factory parameter wants (from its annotation, else its default), or None."""
    ann = param.annotation
    if isinstance(ann, str):  # ``from __future__ import annotations``: "float | None"
        parts = {p.strip() for p in ann.split("|")}
        nullable = bool(parts & {"None", "NoneType"})
        simple = [_SIMPLE_TYPES.get(p) for p in parts - {"None", "NoneType"}]
        if len(simple) == 1 and simple[0] is not None:
            return simple[0] | None if nullable else simple[0]
        return None
    if isinstance(ann, type) and ann in _SIMPLE_TYPES:
        return ann
    if ann is inspect.Parameter.empty and type(param.default) in (bool, float, str):
        return type(param.default)
    return None


def _check_finite(value: Any, key: str) -> None:
    """No NaN or infinity anywhere in ``value`` (nested lists and mappings included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def coerce_args(factory: Any, args: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Check and convert the values of a method's ``args`` (``loss.args``, ...) to the types of
    ``factory``'s parameters, with the same rules as typed config keys (finite numbers, ...).
    Unknown argument names are left to :func:`hashlab.registry.check_kwargs`."""
    from hashlab.registry import factory_parameters

    try:
        params = factory_parameters(factory) or {}
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = {}
    out = {}
    for name, value in args.items():
        param = params.get(name) if isinstance(name, str) else None
        tp = _param_type(param) if param is not None else None
        out[name] = _coerce(value, tp, f"{key}.{name}") if tp is not None else value
        _check_finite(out[name], f"{key}.{name}")
    return out


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert (int → float, dict → dataclass)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {_describe(tp)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches no type of "
                          + " | ".join(_describe(a) for a in args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if abs(value) > INT_MAX:
            raise ConfigError(f"{key}: {value} is out of range (at most {INT_MAX} in size)")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):  # YAML reads "5e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(number)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")  # programming error


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key; allowed keys: {', '.join(names)}")
    kwargs = {key: _coerce(value, hints[key], prefix + key) for key, value in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path or cls.__name__)
    return obj


def read_config_mapping(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (or a copy of a mapping), before validation;
    unreadable files, invalid YAML and non-mappings raise ConfigError."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text (UTF-8) YAML file ({exc})") from exc
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        where = "" if isinstance(source, Mapping) else f"{source}: "
        raise ConfigError(f"{where}config must be a mapping at the top level (key: value lines), "
                          f"got {type(data).__name__}")
    return dict(data)


def load_config(source: str | Path | Mapping[str, Any], overrides: list[str] | None = None
                ) -> RunConfig:
    """Load a :class:`RunConfig` from a YAML file or a mapping, then apply ``key=value`` overrides.

    ``overrides`` use dotted keys with YAML values, e.g. ``["train.epochs=2", "optim.lr=0.1"]``.
    """
    data = read_config_mapping(source)
    data = apply_overrides(dict(data), overrides or [])
    return from_dict(RunConfig, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key such as "
                              f"train.epochs, got the key {key!r}")
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError) as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{key}: {raw!r} is not a valid YAML value ({problem}); check its "
                              "brackets and quotes (a text holding ':', '[' or '{' needs quotes: "
                              f"--set '{key}=\"...\"')") from None
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, Mapping):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data

"""Partial FC: a sampled, and under DDP sharded, margin-softmax classifier for huge class counts.

The idea of InsightFace's Partial FC (An et al., "Partial FC: Training 10 Million Identities
on a Single Machine", 2021): at each training step the softmax runs over the classes of the
batch (its *positive* class centres) plus a uniform random fraction ``r`` of the others, so the
logits, their gradients and the weight rows touched are ``r`` times smaller; with several
processes, the class-weight matrix is split across them. The loss is any
:class:`~hashlab.losses.margin.MarginSoftmax` method (every margin and mining, SV included),
computed by MarginSoftmax's own code on the chosen classes.

What it does, the sampling rule, memory per class, sparse gradients and the exactness of the
sharded mode: ``docs/scale.md#the-sampled-classifier-partial-fc``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hashlab import distributed
from hashlab.losses.margin import METHOD_ARGS, PRESET_CLASSES, PRESETS, MarginSoftmax
from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import check_class_batch
from hashlab.registry import canonical_key

#: rows of the initial weight drawn at a time (bounds the memory of a sharded initialisation)
_INIT_CHUNK = 1 << 14
#: classes scored at a time by :meth:`PartialFC.predict`
_PREDICT_CHUNK = 1 << 16


def shard_bounds(num_classes: int, world: int, rank: int) -> tuple[int, int]:
    """The classes ``[start, stop)`` that ``rank`` of ``world`` holds: ``[k C / W, (k+1) C / W)``
    rounded down, so shard sizes differ by at most one."""
    return rank * num_classes // world, (rank + 1) * num_classes // world


def _layout() -> tuple[int, int]:
    """(world size, rank) of the running process group; (1, 0) without one."""
    if distributed.is_distributed():
        return distributed.world_size(), distributed.rank()
    return 1, 0


def _generator_seed(seed: int, rank: int, draws: int) -> int:
    """A 64-bit generator seed mixed from the user's seed, the rank and the draws made so far."""
    words = np.random.SeedSequence([seed, rank, draws]).generate_state(2, np.uint32)
    return int(words[0]) << 32 | int(words[1])


@LOSSES.register(
    "partial-fc",
    description="Partial FC: a MarginSoftmax method over the batch's classes + a random "
                "fraction of the others; the class weights sharded across DDP ranks "
                "(An et al. 2021)",
    defaults={"method": "arcface", "sample_rate": 0.1, "sparse_grad": False, "seed": 0})
class PartialFC(MarginSoftmax):
    """A :class:`MarginSoftmax` method trained on a sample of the classes at each step.

    Args:
        num_classes, dim: the classifier's size (all classes, on all ranks together).
        method: ``"margin-softmax"`` or a preset key of
            :data:`~hashlab.losses.margin.PRESET_TABLE` (``"arcface"``, ``"cosface"``,
            ``"sv-arc-softmax"``, ...); ``margin_args`` are that method's arguments (a preset
            refuses ``margin`` / ``mining`` and what its class does not take).
        sample_rate: ``r`` in (0, 1]. A training step uses the batch's classes plus a uniform
            random subset of the others, ``max(#positives, ceil(r · C_local))`` classes in
            all (``C_local``: the classes this process holds). ``r = 1``, and evaluation mode,
            use every class.
        sparse_grad: gather the sampled rows with ``F.embedding(..., sparse=True)``, so that
            ``weight.grad`` is a sparse tensor over those rows (``[S, dim]`` instead of
            ``[C, dim]``). The optimiser must take sparse gradients: ``torch.optim.SGD`` with
            ``momentum=0`` and ``weight_decay=0``, or ``torch.optim.SparseAdam`` (Adam and
            AdamW refuse them; SGD with momentum takes them but its momentum buffer then grows
            at every step).
        seed: seeds the module's own generator (mixed with the rank); its state is part of
            ``state_dict()``, so a resumed run samples the same classes.

    Under a running ``torch.distributed`` process group of ``W > 1`` ranks (at construction),
    rank ``k`` holds the classes ``[k C / W, (k+1) C / W)`` as its ``weight`` and
    :attr:`sharded` is True: the module must not be wrapped in DDP nor its gradients averaged.
    Every rank then calls the loss (and :meth:`logits`, :meth:`predict`,
    :meth:`gather_state_dict`) together, each with its own batch of the same size; the loss is
    the mean over the global batch, equal on every rank, and the gradients are those of one
    process training on the global batch (the local embeddings' times ``W``, which DDP's
    average over ranks brings back). ``gather_state_dict()`` gives the whole-class state for
    checkpoints; ``load_state_dict`` takes a whole-class state (any ``W``, one process
    included) and keeps this rank's rows.
    """

    #: the parameters are rank-local: never wrap this module in DDP or average its gradients
    sharded: bool = False

    def __init__(
        self,
        num_classes: int,
        dim: int,
        method: str = "arcface",
        sample_rate: float = 0.1,
        sparse_grad: bool = False,
        seed: int = 0,
        **margin_args: Any,
    ) -> None:
        key = canonical_key(method) if isinstance(method, str) else method
        if key == "margin-softmax":
            args = dict(margin_args)
        elif key in PRESETS:
            fixed = [k for k in METHOD_ARGS if k in margin_args]
            if fixed:
                raise TypeError(f"method {key!r} fixes {' and '.join(fixed)}; use "
                                "method='margin-softmax' to choose them")
            # the preset class's own check: a TypeError naming an argument it does not take
            inspect.signature(PRESET_CLASSES[key]).bind(num_classes, dim, **margin_args)
            args = {**PRESETS[key], **margin_args}
        else:
            raise ValueError(f"method must be 'margin-softmax' or a preset "
                             f"({', '.join(PRESETS)}), got {method!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) \
                or not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be a number in (0, 1], got {sample_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        world, rank = _layout()
        if num_classes < world:
            raise ValueError(f"{num_classes} classes cannot be sharded over {world} ranks")
        super().__init__(num_classes, dim, **args)  # validates the margin arguments
        self.method, self.sample_rate = key, float(sample_rate)
        self.sparse_grad, self.seed = bool(sparse_grad), seed
        self.world_size, self.rank = world, rank
        self.class_start, self.class_stop = shard_bounds(num_classes, world, rank)
        self.num_local = self.class_stop - self.class_start
        self.sharded = world > 1
        self.generator = torch.Generator().manual_seed(_generator_seed(seed, rank, 0))
        self.draws = 0  # sampling steps so far
        #: the local classes the last training forward used (sorted), None when all
        self.last_index: torch.Tensor | None = None
        self._split = self.sharded  # the split softmax of the sharded mode (tests force it)

    def initial_weight(self, num_classes: int, dim: int) -> torch.Tensor:
        """This rank's rows of a Xavier-uniform ``[num_classes, dim]`` matrix drawn in chunks
        of rows, so that the ranks together start from exactly the one-process weight of the
        same seed, and none holds the whole matrix."""
        world, rank = _layout()
        start, stop = shard_bounds(num_classes, world, rank)
        bound = math.sqrt(6.0 / (num_classes + dim))  # Xavier-uniform of the whole matrix
        weight = torch.empty(stop - start, dim)
        for lo in range(0, num_classes, _INIT_CHUNK):
            hi = min(lo + _INIT_CHUNK, num_classes)
            block = torch.empty(hi - lo, dim).uniform_(-bound, bound)
            a, b = max(lo, start), min(hi, stop)
            if a < b:
                weight[a - start : b - start] = block[a - lo : b - lo]
        return weight

    def extra_repr(self) -> str:
        shard = (f", classes [{self.class_start}, {self.class_stop}) of rank {self.rank}/"
                 f"{self.world_size}" if self.sharded else "")
        return (f"{super().extra_repr()}, method={self.method!r}, "
                f"sample_rate={self.sample_rate}, sparse_grad={self.sparse_grad}{shard}")

    # --------------------------------------------------------------------------- sampling
    def num_sampled(self, num_positive: int) -> int:
        """How many local classes a training step uses: ``max(#positives, ceil(r·C_local))``."""
        share = math.ceil(round(self.sample_rate * self.num_local, 9))
        return max(num_positive, min(self.num_local, share))

    def sample_classes(self, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(index, targets)`` for the (global) batch ``labels``: the local classes of this
        step, sorted (None: all of them), and each sample's target column in them (−1 where its
        class is on another rank). Draws from the module's generator when sampling."""
        local = labels.long() - self.class_start
        own = (local >= 0) & (local < self.num_local)
        if not (self.training and self.sample_rate < 1):
            return None, torch.where(own, local, -1)
        positive = torch.unique(local[own]).cpu()
        score = torch.rand(self.num_local, generator=self.generator)
        score[positive] = 2.0  # every positive centre is kept
        k = self.num_sampled(positive.numel())
        index = torch.topk(score, k, sorted=False).indices.sort().values.to(labels.device)
        self.draws += 1
        column = torch.searchsorted(index, local.clamp(0, self.num_local - 1))
        return index, torch.where(own, column, -1)

    def _rows(self, index: torch.Tensor | None) -> torch.Tensor:
        """The weight rows of ``index`` (all when None), with a sparse gradient if asked."""
        if self.sparse_grad and self.weight.requires_grad and torch.is_grad_enabled():
            if index is None:
                index = torch.arange(self.num_local, device=self.weight.device)
            return F.embedding(index, self.weight, sparse=True)
        return self.weight if index is None else self.weight.index_select(0, index)

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """With ``sparse_grad``, raise a ValueError unless ``optimizer`` takes the sparse
        gradient of ``weight`` properly: ``SparseAdam``, or ``SGD`` with ``momentum=0`` and
        ``weight_decay=0`` in its parameter group (Adam and AdamW refuse sparse gradients, SGD's
        weight decay fails on them, and its momentum buffer grows at every step)."""
        if not self.sparse_grad:
            return
        for group in optimizer.param_groups:
            if not any(p is self.weight for p in group["params"]):
                continue
            if isinstance(optimizer, torch.optim.SparseAdam):
                return
            if (isinstance(optimizer, torch.optim.SGD) and not group.get("momentum")
                    and not group.get("weight_decay")):
                return
            raise ValueError(
                f"partial-fc sparse_grad=True needs torch.optim.SGD with momentum=0 and "
                f"weight_decay=0 (optim: {{name: sgd, momentum: 0, weight_decay: 0, "
                f"nesterov: false}}) or torch.optim.SparseAdam for the class weights; got "
                f"{type(optimizer).__name__} with momentum={group.get('momentum')}, "
                f"weight_decay={group.get('weight_decay')}; or set sparse_grad: false")

    # ------------------------------------------------------------------------------- loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_class_batch(embeddings, labels, self.dim, self.num_classes)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x, y = embeddings, labels.long()
            if self.sharded:
                # W × the local rows' gradient: after DDP's average, one process's gradient
                x = distributed.all_gather_with_grad(distributed.scale_grad(x, self.world_size))
                y = distributed.all_gather_nograd(y)
            index, targets = self.sample_classes(y)
            self.last_index = index
            cos, norms = self._cosine(x, self._rows(index))
            if y.numel() == 0:
                loss = cos.sum() * 0.0
            elif self._split:
                loss = self.mining_loss(self._split_cross_entropy(cos, targets, norms))
            else:
                logits = self.margin_logits_from_cosine(cos, targets, norms)
                loss = self.mining_loss(F.cross_entropy(logits, targets, reduction="none"))
            if self.training and self.margin == "sphere":
                self.iteration.add_(1)
            return loss

    def _split_cross_entropy(self, cos: torch.Tensor, targets: torch.Tensor,
                             norms: torch.Tensor | None) -> torch.Tensor:
        """The per-sample cross-entropy [N] of the margin logits when the classes are split
        over the ranks: ``cos`` [N, K] against this rank's K classes, ``targets`` the target
        column (−1: on another rank). Every differentiable term is this rank's own, summed
        over the ranks by ``all_reduce_sum_with_grad``: the softmax denominator's part and the
        target logit (non-zero on its one owner); the maximum (for stability) and SV's
        threshold ``f`` are detached. In one process it equals ``F.cross_entropy`` of
        :meth:`margin_logits_from_cosine`."""
        own = targets >= 0
        column = targets.clamp(min=0).unsqueeze(1)
        f_own = torch.where(own, self.target_logit(cos.gather(1, column).squeeze(1)), 0.0)
        f = distributed.all_reduce_sum(f_own)  # detached: the SV mask's threshold
        scale = (torch.full_like(f, self.s) if norms is None else self.s * norms.squeeze(1))
        z_y = distributed.all_reduce_sum_with_grad(f_own * scale)
        is_target = torch.zeros_like(cos, dtype=torch.bool).scatter_(1, column, own.unsqueeze(1))
        z = (self.sv_cosines(cos, f) * scale.unsqueeze(1)).masked_fill(is_target, -math.inf)
        top = distributed.all_reduce_max(torch.maximum(z.detach().amax(1), z_y.detach()))
        rest = distributed.all_reduce_sum_with_grad(torch.exp(z - top.unsqueeze(1)).sum(1))
        return torch.log(rest + torch.exp(z_y - top)) + top - z_y

    # ------------------------------------------------------------------------- prediction
    def full_weight(self) -> torch.Tensor:
        """The whole ``[C, dim]`` class-weight matrix (detached). Sharded: a collective that
        every rank calls (each gets the whole matrix)."""
        w = self.weight.detach()
        if not self.sharded:
            return w
        size = -(-self.num_classes // self.world_size)  # the largest shard
        padded = torch.zeros(size, self.dim, dtype=w.dtype, device=w.device)
        padded[: self.num_local] = w
        parts = distributed.all_gather_nograd(padded).split(size)
        return torch.cat([part[: b - a] for part, (a, b) in zip(parts, (
            shard_bounds(self.num_classes, self.world_size, r)
            for r in range(self.world_size)), strict=True)])

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class scores ``s cos θ`` [B, C] over every class (no margin), for prediction.
        Sharded: a collective (it gathers the whole weight); :meth:`predict` is cheaper."""
        if not self.sharded:
            return super().logits(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must have shape [batch, {self.dim}], got {tuple(embeddings.shape)}")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos, norms = self._cosine(embeddings, self.full_weight())
            return cos * self.s if norms is None else cos * (self.s * norms)

    @torch.no_grad()
    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``logits(embeddings).argmax(1)`` [B] without the ``[B, C]`` logits: the classes are
        scored in chunks, and sharded, each rank scores its own for the global batch (a
        collective; ties go to the lowest class id, as argmax)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must have shape [batch, {self.dim}], got {tuple(embeddings.shape)}")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = distributed.all_gather_nograd(embeddings) if self.sharded else embeddings
            best = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=torch.float64)
            arg = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            for lo in range(0, self.num_local, _PREDICT_CHUNK):
                cos, _ = self._cosine(x, self.weight[lo : lo + _PREDICT_CHUNK])
                value, where = cos.max(1)
                better = value.double() > best
                best = torch.where(better, value.double(), best)
                arg = torch.where(better, where + lo, arg)
            if not self.sharded:
                return arg
            arg = arg + self.class_start
            top = distributed.all_reduce_max(best)
            candidate = torch.where(best == top, arg, self.num_classes)
            arg = -distributed.all_reduce_max(-candidate)
            n = embeddings.shape[0]
            return arg[self.rank * n : (self.rank + 1) * n]

    # ------------------------------------------------------------------------------ state
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        """``weight``, ``iteration`` and the sampler: ``sampler_draws`` (sampling steps so far),
        ``sampler_world_size``, ``sampler_ranks`` [k] and ``sampler_generators`` [k, L] (the
        generator states of those ranks: this rank's here, every rank's in
        :meth:`gather_state_dict`), all tensors, so a resumed run samples the same classes."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "sampler_draws"] = torch.tensor(self.draws)
        destination[prefix + "sampler_world_size"] = torch.tensor(self.world_size)
        destination[prefix + "sampler_ranks"] = torch.tensor([self.rank])
        destination[prefix + "sampler_generators"] = self.generator.get_state().unsqueeze(0)

    def _restore_sampler(self, draws: torch.Tensor, world_size: torch.Tensor,
                         ranks: torch.Tensor, generators: torch.Tensor) -> None:
        """This rank's generator from a saved state of the same world size; under another
        world size, a generator seeded from ``seed``, the rank and the draws made."""
        self.draws = int(draws)
        ranks_list = [int(r) for r in ranks.reshape(-1)]
        if int(world_size) == self.world_size and self.rank in ranks_list:
            state = generators[ranks_list.index(self.rank)]
            # a copy with its own storage: set_state reads a row view from its storage's start
            self.generator.set_state(state.detach().to("cpu", torch.uint8).clone())
        else:
            self.generator.manual_seed(_generator_seed(self.seed, self.rank, self.draws))

    def gather_state_dict(self) -> dict[str, Any]:
        """The state dict of the whole classifier: the ``[C, dim]`` weight and every rank's
        generator. Sharded: a collective every rank calls (each gets the whole state; rank 0
        saves it); in one process, ``state_dict()``. The file is the same whatever ``W`` and
        loads with ``load_state_dict`` under any ``W``, one process included."""
        state = self.state_dict()
        if not self.sharded:
            return state
        state["weight"] = self.full_weight()
        everyone: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(everyone, (self.rank, self.generator.get_state()))
        everyone.sort(key=lambda pair: pair[0])
        state["sampler_ranks"] = torch.tensor([r for r, _ in everyone])
        state["sampler_generators"] = torch.stack([g for _, g in everyone])
        return state

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        """A whole-class ``weight`` [C, dim] loads as this rank's rows; the sampler's
        entries restore the generator (:meth:`_restore_sampler`)."""
        keys = {name: prefix + "sampler_" + name
                for name in ("draws", "world_size", "ranks", "generators")}
        sampler = {name: state_dict[key] for name, key in keys.items() if key in state_dict}
        state_dict = {k: v for k, v in state_dict.items() if k not in keys.values()}
        weight = state_dict.get(prefix + "weight")
        if (self.sharded and isinstance(weight, torch.Tensor) and weight.ndim == 2
                and weight.shape[0] == self.num_classes):
            state_dict[prefix + "weight"] = weight[self.class_start : self.class_stop]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if len(sampler) == len(keys):
            self._restore_sampler(**sampler)
        elif strict:
            missing_keys.extend(key for name, key in keys.items() if name not in sampler)

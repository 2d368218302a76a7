"""Compare what the DDP ranks did with what one process did on the whole batch.

Takes the :class:`~.ddp_rank.ProcessRecord` of every rank and of the
single-process reference and returns the comparison: per parameter, per rank, the
worst difference from the reference (:class:`DdpLeaf`, gradient, parameter after
the step, buffer), the disagreements between ranks, and hints that name the cause
from the pattern of the differences (a factor of the world size, a parameter
never reduced, a step inside ``no_sync()``, ranks that saw the same batch or the
same random numbers, weights changed on one rank, per-rank BatchNorm statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..results import DdpLeaf, Hint
from .ddp_rank import ProcessRecord

__all__ = ["Comparison", "compare_records"]


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_records`."""

    leaves: tuple[DdpLeaf, ...]
    across_ranks: tuple[DdpLeaf, ...]
    hints: tuple[Hint, ...]
    notes: tuple[str, ...]
    judged_against_reference: bool
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Nothing differs that should agree, and no pattern of a bug was seen."""
        against = self.judged_against_reference and any(not leaf.passed for leaf in self.leaves)
        return not against and not self.across_ranks and not self.problems


def _leaf(
    name: str,
    what: str,
    rank: int,
    step: int,
    ref: torch.Tensor | None,
    val: torch.Tensor | None,
    atol: float | None,
    rtol: float,
    scale: float,
) -> DdpLeaf | None:
    """The worst element of ``val`` against ``ref`` (None when neither exists).

    Without ``atol``, the absolute floor is ``rtol * scale``: the largest entry of all
    the tensors of this kind at this step. A gradient that is zero in exact arithmetic
    (a bias before a BatchNorm) is roundoff on the scale of the others, not of its own.
    """
    if ref is None and val is None:
        return None
    if ref is None or val is None or ref.shape != val.shape:
        present = val if val is not None else ref
        assert present is not None
        size = float(present.detach().abs().max()) if present.numel() else 0.0
        return DdpLeaf(
            parameter=name,
            what=what,
            rank=rank,
            step=step,
            max_abs_error=math.inf if ref is not None and val is not None else size,
            allowed=0.0,
            index=(),
            reference=math.nan if ref is None else float(ref.flatten()[0]) if ref.numel() else 0.0,
            value=math.nan if val is None else float(val.flatten()[0]) if val.numel() else 0.0,
            mismatched=max(present.numel(), 1),
            numel=present.numel(),
            missing="reference" if ref is None else "rank" if val is None else "shape",
        )
    r, v = ref.double(), val.double()
    if r.numel() == 0:
        return DdpLeaf(name, what, rank, step, 0.0, 0.0, (), 0.0, 0.0, 0, 0)
    diff = (v - r).abs()
    floor = atol if atol is not None else rtol * scale
    allowed = floor + rtol * r.abs()
    bad = ~(diff <= allowed)  # NaN counts as bad
    ratio = torch.where(allowed > 0, diff / allowed.clamp_min(1e-300), diff * math.inf)
    ratio = torch.nan_to_num(ratio, nan=math.inf)
    flat = int(ratio.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), r.shape))
    return DdpLeaf(
        parameter=name,
        what=what,
        rank=rank,
        step=step,
        max_abs_error=float(diff.max()),
        allowed=float(allowed.flatten()[flat]),
        index=index,
        reference=float(r.flatten()[flat]),
        value=float(v.flatten()[flat]),
        mismatched=int(bad.sum()),
        numel=r.numel(),
    )


def _score(leaf: DdpLeaf) -> float:
    if leaf.mismatched == 0:
        return leaf.max_abs_error / leaf.allowed if leaf.allowed > 0 else 0.0
    return math.inf if leaf.allowed == 0 else leaf.max_abs_error / leaf.allowed


def _largest(tensors: Sequence[torch.Tensor | None]) -> float:
    return max((float(t.abs().max()) for t in tensors if t is not None and t.numel()), default=0.0)


def _pairs(
    ref: ProcessRecord, val: ProcessRecord, steps: int
) -> list[tuple[str, str, int, torch.Tensor | None, torch.Tensor | None, float]]:
    """(name, what, step, reference, value, scale) for every tensor the two records share."""
    out: list[tuple[str, str, int, torch.Tensor | None, torch.Tensor | None, float]] = []
    if steps == 0:
        grads, params = ref.final_grads, ref.final_params
        g, p = _largest(list(grads.values())), _largest(list(params.values()))
        for name in ref.parameters:
            out.append((name, "grad", 0, grads.get(name), val.final_grads.get(name), g))
            out.append((name, "param", 0, params.get(name), val.final_params.get(name), p))
    for k in range(steps):
        a, b = ref.steps[k], val.steps[k]
        g, p = _largest(list(a.grads.values())), _largest(list(a.params.values()))
        for name in ref.parameters:
            out.append((name, "grad", k + 1, a.grads.get(name), b.grads.get(name), g))
            out.append((name, "param", k + 1, a.params.get(name), b.params.get(name), p))
    for name, buf in ref.buffers.items():
        out.append((name, "buffer", steps, buf, val.buffers.get(name), _largest([buf])))
    return out


def _worst(
    ref: ProcessRecord, val: ProcessRecord, rank: int, steps: int, atol: float | None, rtol: float
) -> list[DdpLeaf]:
    """Per (tensor, kind), the worst comparison over the steps."""
    worst: dict[tuple[str, str], DdpLeaf] = {}
    for name, what, step, a, b, scale in _pairs(ref, val, steps):
        leaf = _leaf(name, what, rank, step, a, b, atol, rtol, scale)
        if leaf is None:
            continue
        key = (name, what)
        if key not in worst or _score(leaf) > _score(worst[key]):
            worst[key] = leaf
    return list(worst.values())


def _on_ranks(where: dict[str, list[int]]) -> str:
    """``"'fc.weight' on ranks [1]; 'fc.bias' on ranks [1]"``."""
    return "; ".join(f"{name!r} on ranks {ranks}" for name, ranks in where.items())


def _ratio(ref: ProcessRecord, val: ProcessRecord) -> float | None:
    """The least-squares factor ``val ≈ c * ref`` over the first step's gradients.

    Without an optimizer step (a loop that only accumulates, or updates by hand), over
    the final gradients.
    """
    if ref.steps and val.steps:
        ref_grads, val_grads = ref.steps[0].grads, val.steps[0].grads
    elif not ref.steps and not val.steps:
        ref_grads, val_grads = ref.final_grads, val.final_grads
    else:
        return None
    num = den = 0.0
    for name in ref.parameters:
        a, b = ref_grads.get(name), val_grads.get(name)
        if a is None or b is None or a.shape != b.shape:
            continue
        num += float((a.double() * b.double()).sum())
        den += float((a.double() ** 2).sum())
    if den == 0.0:
        return None
    c = num / den
    # a factor is only a factor if it explains the difference
    residual = 0.0
    for name in ref.parameters:
        a, b = ref_grads.get(name), val_grads.get(name)
        if a is not None and b is not None and a.shape == b.shape:
            residual += float(((b.double() - c * a.double()) ** 2).sum())
    return c if residual <= 1e-6 * c * c * den else None


def compare_records(
    reference: ProcessRecord,
    ranks: Sequence[ProcessRecord],
    *,
    atol: float | None,
    rtol: float,
) -> Comparison:
    """Compare every rank with the reference and with rank 0; name the likely causes."""
    world = len(ranks)
    hints: list[Hint] = []
    notes: list[str] = []
    problems: list[str] = []
    counts = [len(r.steps) for r in ranks]
    steps = min([len(reference.steps), *counts])
    if any(c != len(reference.steps) for c in counts):
        problems.append("step_count")
        hints.append(
            Hint(
                "step_count",
                f"the optimizer stepped {counts} times on ranks 0..{world - 1} and "
                f"{len(reference.steps)} times in the single-process run: a step taken inside "
                "a no_sync() window, or a step that depends on the rank or on the shard size.",
            )
        )
    leaves = [leaf for r in ranks for leaf in _worst(reference, r, r.rank, steps, atol, rtol)]
    across = [
        leaf
        for r in ranks[1:]
        for leaf in _worst(ranks[0], r, r.rank, steps, atol, rtol)
        if not leaf.passed
    ]
    stochastic = reference.rng_consumed or any(r.rng_consumed for r in ranks)
    if stochastic:
        notes.append(
            "the step draws random numbers (dropout?): the ranks' gradients cannot match one "
            "process on the whole batch, so they are compared across ranks only; make the step "
            "deterministic (model.eval() for dropout) for the full comparison."
        )
    if steps == 0 and any(r.grads_at_last_sync for r in (reference, *ranks)):
        notes.append(
            "the step took no optimizer step and its last backward ran inside no_sync(): "
            "gradients were compared as they were after the last backward outside no_sync()."
        )
    # --- the batches and random streams of the ranks
    seen: dict[str, int] = {}
    for r in ranks:
        if r.batch_digest in seen:
            problems.append("same_batch")
            hints.append(
                Hint(
                    "same_batch",
                    f"ranks {seen[r.batch_digest]} and {r.rank} got the same batch: the global "
                    "batch is not split between ranks (a sampler without rank=/num_replicas=, "
                    "a shard that ignores the rank). Give each rank its own part: "
                    "DistributedSampler(dataset, num_replicas=world_size, rank=rank).",
                )
            )
            break
        seen[r.batch_digest] = r.rank
    if stochastic and world > 1:
        for k in range(min(len(r.rng_digests) for r in ranks)):
            if len({r.rng_digests[k] for r in ranks}) == 1:
                problems.append("same_seed")
                hints.append(
                    Hint(
                        "same_seed",
                        f"every rank starts step {k + 1} with the same random state, so dropout "
                        "masks (and every random draw) are identical across ranks: seed each "
                        "rank differently, e.g. torch.manual_seed(seed + rank) once the model "
                        "is built (DDP copies rank 0's weights to the others).",
                    )
                )
                break
    # --- disagreements between ranks
    grads_apart = sorted({leaf.parameter for leaf in across if leaf.what == "grad"})
    params_apart = sorted({leaf.parameter for leaf in across if leaf.what == "param"})
    buffers_apart = sorted({leaf.parameter for leaf in across if leaf.what == "buffer"})
    trainable = [n for n in reference.parameters if reference.final_params.get(n) is not None]
    failing = {leaf.parameter for leaf in leaves if not leaf.passed and leaf.what == "grad"}
    # a parameter used on some ranks only: never reduced (it differs between ranks), or
    # reduced by find_unused_parameters=True as an average that counts the ranks that did
    # not use it as zeros (it differs from one process on the whole batch)
    unused = {
        n: [r.rank for r in ranks if all(n not in u for u in r.used)]
        for n in sorted(set(grads_apart) | (set() if stochastic else failing))
    }
    unused = {n: rs for n, rs in unused.items() if rs and len(rs) < world}
    if unused:
        where = _on_ranks(unused)
        hints.append(
            Hint(
                "unused",
                f"parameters took no part in the forward on some ranks ({where}): without "
                "DDP's find_unused_parameters=True they are never reduced, and with it their "
                "gradient is averaged with zeros from those ranks. Use every parameter on "
                "every rank (the same computation, whatever the rank).",
            )
        )
    # gradient hooks on some ranks only: they change those ranks' gradients before DDP's
    # all-reduce (a tensor hook) or after it, so the ranks step on different gradients (a
    # loop that updates by hand and zeroes the gradients shows it in the weights only)
    moved = {
        leaf.parameter for leaf in (*leaves, *across) if not leaf.passed and leaf.what != "buffer"
    }
    hooked = {
        n: [r.rank for r in ranks if r.hooks.get(n, 0)]
        for n in sorted({n for r in ranks for n in r.hooks})
    }
    hooked = {
        n: rs
        for n, rs in hooked.items()
        if len({r.hooks.get(n, 0) for r in ranks}) > 1 and n in moved
    }
    if hooked:
        where = _on_ranks(hooked)
        hints.append(
            Hint(
                "hooks",
                f"gradient hooks are not the same on every rank ({where}, not on the others): "
                "a hook on some ranks only changes their gradients before DDP's all-reduce "
                "(register_hook) or after it. Register the same hooks on every rank, "
                "whatever the rank.",
            )
        )
    unexplained = [n for n in grads_apart if n not in hooked]
    if unexplained:
        if len(unexplained) >= max(1, len(trainable)) and any(r.wrapped for r in ranks):
            hints.append(
                Hint(
                    "no_sync",
                    "every gradient differs between ranks when the optimizer steps: it stepped "
                    "on gradients that were not all-reduced yet, inside a no_sync() window (or "
                    "the last micro-batch ran under no_sync()). Run the last backward of each "
                    "accumulation outside no_sync(), then step.",
                )
            )
        elif not unused:
            hints.append(
                Hint(
                    "not_reduced",
                    f"gradients of {unexplained} differ between ranks when the optimizer "
                    "steps: they were never all-reduced (a hand-written all_reduce that skips "
                    "them, a hook that runs after the reduction on some ranks). Reduce every "
                    "parameter that requires grad, or let DistributedDataParallel do it.",
                )
            )
    elif params_apart and not grads_apart:
        hints.append(
            Hint(
                "one_rank_weights",
                f"parameters {params_apart} differ between ranks although their gradients "
                "agree: the weights were changed on some ranks only (a load_state_dict or "
                "an in-place edit under `if rank == 0` after wrapping in DDP, which copies "
                "rank 0's weights only when it is built). Change them on every rank, or "
                "before wrapping.",
            )
        )
    if buffers_apart and not grads_apart and not params_apart:
        hints.append(
            Hint(
                "buffers",
                f"buffers {buffers_apart} differ between ranks (BatchNorm running statistics "
                "of each rank's shard): use SyncBatchNorm, or keep broadcast_buffers=True "
                "and read them from rank 0.",
            )
        )
    # --- agreement between ranks, disagreement with the reference
    apart = [leaf for leaf in leaves if not leaf.passed]
    if apart and not stochastic and not grads_apart:
        factor = _ratio(reference, ranks[0])
        if factor is not None and abs(factor * world - 1.0) < 1e-3:
            hints.append(
                Hint(
                    "factor",
                    f"the ranks' gradients are 1/world_size (×{factor:.4g}) of one process's "
                    "on the whole batch: the loss is summed over the batch (reduction='sum') "
                    "where DDP's average over ranks expects a mean, or it is divided by the "
                    "world size on top of DDP's averaging. Use a mean loss, undivided.",
                )
            )
        elif factor is not None and abs(factor / world - 1.0) < 1e-3:
            hints.append(
                Hint(
                    "factor",
                    f"the ranks' gradients are world_size times (×{factor:.4g}) one process's "
                    "on the whole batch: the loss is multiplied by the world size, or the "
                    "gradients are all-reduced with SUM and never divided by the world size.",
                )
            )
        elif factor is not None and abs(factor - 1.0) > 1e-3:
            hints.append(
                Hint(
                    "factor",
                    f"the ranks' gradients are ×{factor:.4g} one process's on the whole batch: "
                    "a loss scaled by the shard size or by the number of micro-batches?",
                )
            )
        bn = sorted({n for r in ranks for n in r.batchnorm})
        if bn:
            hints.append(
                Hint(
                    "batchnorm",
                    f"BatchNorm layers {bn} normalise each rank's shard, not the whole batch, "
                    "so the ranks cannot match one process: use SyncBatchNorm "
                    "(nn.SyncBatchNorm.convert_sync_batchnorm; torch runs it on GPUs only).",
                )
            )
    if apart and not hints and not stochastic:
        hints.append(
            Hint(
                "mismatch",
                "the DDP step computes another gradient than one process on the whole batch: "
                "a loss that is not a mean over samples, unequal shards, or a computation that "
                "depends on the rank.",
            )
        )
    return Comparison(
        leaves=tuple(leaves),
        across_ranks=tuple(across),
        hints=tuple(hints),
        notes=tuple(notes),
        judged_against_reference=not stochastic,
        problems=tuple(problems),
    )

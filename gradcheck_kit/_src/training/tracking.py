"""Does the optimizer update the very tensors the model uses? Which side lost which parameter.

``optimizer = SGD(net.parameters())`` keeps references to the parameter objects.
``net.fc1.weight = nn.Parameter(...)`` afterwards gives the module a new tensor
while the optimizer keeps updating the old one: training runs, that layer never
learns. Writing through ``.data``, ``copy_()`` under ``no_grad``,
``load_state_dict`` or ``model.to(dtype)`` keeps the objects and is fine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .findings import TrainingFinding

__all__ = ["tracking_findings"]


def _shape(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, {str(t.dtype).removeprefix('torch.')}"


def tracking_findings(
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    labels: Sequence[str],
    *,
    ignored: Callable[[str], bool],
    former_names: Mapping[int, str],
    replaced_at: Mapping[str, str],
    strict: bool,
) -> list[TrainingFinding]:
    """Compare the model's trainable parameters with what the optimizers hold, by identity.

    Args:
        model: the module being trained.
        optimizers: the optimizers that train it.
        labels: a display name per optimizer.
        ignored: qualified names to leave out.
        former_names: id -> qualified name, for tensors known to have been
            parameters of the model (when a watch began, or before a re-assignment).
        replaced_at: qualified name -> source line of a re-assignment seen by a watcher.
        strict: also flag optimizer tensors that were never parameters of the model
            (extra learnable tensors are fine for a watcher, not for ``assert_optimizer_tracks``).

    Returns:
        Findings of kinds ``param_replaced``, ``param_not_in_optimizer``,
        ``param_not_in_model`` and ``param_in_two_optimizers``.
    """
    named = list(model.named_parameters())
    in_model = {id(p) for _, p in named}
    holders: dict[int, list[str]] = {}
    orphans: list[tuple[str, str, torch.Tensor]] = []  # (label, where, tensor)
    for opt, label in zip(optimizers, labels, strict=True):
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                holders.setdefault(id(p), []).append(label)
                if id(p) not in in_model:
                    orphans.append((label, f"{label}.param_groups[{gi}]['params'][{pi}]", p))
    findings: list[TrainingFinding] = []
    paired: set[int] = set()
    for name, p in named:
        if not p.requires_grad or ignored(name) or id(p) in holders:
            continue
        match = next((o for o in orphans if former_names.get(id(o[2])) == name), None)
        if match is None:
            same = [
                o
                for o in orphans
                if id(o[2]) not in paired
                and o[2].shape == p.shape
                and o[2].dtype == p.dtype
                and id(o[2]) not in former_names
            ]
            match = same[0] if len(same) == 1 else None
        if match is not None:
            paired.add(id(match[2]))
            findings.append(_replaced(name, p, match, replaced_at.get(name)))
        else:
            findings.append(_not_in_optimizer(name, p, replaced_at.get(name)))
    for label, where, t in orphans:
        if id(t) in paired:
            continue
        former = former_names.get(id(t))
        if former is not None or strict:
            findings.append(_not_in_model(label, where, t, former, replaced_at.get(former or "")))
    for name, p in named:
        owners = holders.get(id(p), [])
        if len(owners) > 1 and not ignored(name):
            findings.append(
                TrainingFinding(
                    "param_in_two_optimizers",
                    name,
                    expected="each parameter is updated by one optimizer",
                    found=f"{name!r} is held by {' and '.join(owners)}: every step of each "
                    "updates it, with its own learning rate and state",
                    cause="the same parameters were passed to several optimizers (e.g. "
                    "model.parameters() to both, or overlapping parameter groups)",
                    fix="give each optimizer a disjoint set of parameters",
                )
            )
    return findings


def _replaced(
    name: str, p: torch.Tensor, orphan: tuple[str, str, torch.Tensor], site: str | None
) -> TrainingFinding:
    label, where, _ = orphan
    attr = name.rsplit(".", 1)[-1]
    return TrainingFinding(
        "param_replaced",
        name,
        expected=f"the optimizer updates the very tensor the model uses as {name!r}",
        found=f"the model's {name!r} ({_shape(p)}) is a tensor no optimizer holds, while "
        f"{label} still holds the old one ({where}), which the model no longer uses: "
        "every step updates a tensor that does not take part in training",
        cause=f"{name!r} was re-assigned with a new nn.Parameter (`module.{attr} = "
        "nn.Parameter(...)`, or load_state_dict(..., assign=True)) after the optimizer "
        "was built",
        fix=f"write the new values into the existing parameter: `model.{name}.data = new` or "
        f"`with torch.no_grad(): model.{name}.copy_(new)`; or build the optimizer after "
        "re-assigning",
        optimizer=label,
        location=site,
    )


def _not_in_optimizer(name: str, p: torch.Tensor, site: str | None) -> TrainingFinding:
    return TrainingFinding(
        "param_not_in_optimizer",
        name,
        expected="every parameter with requires_grad=True is held by an optimizer",
        found=f"{name!r} ({_shape(p)}) requires grad but no optimizer holds it: its gradient "
        "is computed at every backward pass and never applied",
        cause="the optimizer was built from part of the model (e.g. model.head.parameters()), "
        "the module or parameter was added after the optimizer, or it was re-assigned",
        fix="build the optimizer from model.parameters() (or add it with "
        "optimizer.add_param_group({'params': [...]})); if it must not learn, freeze it "
        "with requires_grad_(False)",
        location=site,
    )


def _not_in_model(
    label: str, where: str, t: torch.Tensor, former: str | None, site: str | None
) -> TrainingFinding:
    if former is not None:
        found = (
            f"{where} ({_shape(t)}) was the model's {former!r} and is no longer a parameter "
            "of the model: the optimizer updates a tensor the model does not use"
        )
    else:
        found = f"{where} ({_shape(t)}) is not a parameter of the model"
    return TrainingFinding(
        "param_not_in_model",
        former if former is not None else where,
        expected="every tensor the optimizer holds is a parameter of the model",
        found=found,
        cause="the model's parameter was re-assigned or deleted after the optimizer was "
        "built, or the optimizer was built for another model (or a copy of this one)",
        fix="build the optimizer from this model's parameters after every re-assignment; "
        "write new values through .data or copy_() to keep the same tensor",
        optimizer=label,
        location=site,
    )

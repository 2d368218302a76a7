"""The numbers a check needs on the host, copied from the device in one transfer.

On CUDA every ``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()`` or ``.cpu()``
makes the host wait until the device has run every kernel queued before it, and
a check is launch-bound: its kernels are tiny, so each such wait costs about as
much as the work it waits for. A check's decisions and messages need a few dozen
numbers; they are computed as device tensors and read here together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["read_host"]


def read_host(tensors: Sequence[torch.Tensor]) -> list[list[float]]:
    """Every tensor's values, flattened, as Python floats: one copy per device.

    Floating values come back exactly (float64 holds every float32, float16 and
    bfloat16 value), integers below 2**53 exactly, booleans as 0.0 and 1.0.

    Examples:
        >>> read_host([torch.tensor([1.5, 2.0]), torch.tensor(True), torch.tensor(7)])
        [[1.5, 2.0], [1.0], [7.0]]
    """
    out: list[list[float]] = [[] for _ in tensors]
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for members in by_device.values():
        parts = []
        for i in members:
            t = tensors[i].detach() if tensors[i].requires_grad else tensors[i]
            parts.append(t.reshape(-1))
        dtypes = {p.dtype for p in parts}
        if (
            len(dtypes) > 1
            and torch.float64 not in dtypes
            and any(d.is_floating_point for d in dtypes)
        ):
            # cat would promote int64 beside float32 to float32, losing digits
            parts = [p.to(torch.float64) for p in parts]
        # otherwise cat promotes the parts itself: one kernel, then one cast
        flat = parts[0] if len(parts) == 1 else torch.cat(parts)
        values = flat.to(torch.float64).tolist()
        offset = 0
        for i, part in zip(members, parts, strict=True):
            n = int(part.numel())
            out[i] = values[offset : offset + n]
            offset += n
    return out

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
        plain = [tensors[i].detach() if tensors[i].requires_grad else tensors[i] for i in members]
        dtypes = {t.dtype for t in plain}
        if (
            len(dtypes) > 1
            and torch.float64 not in dtypes
            and any(d.is_floating_point for d in dtypes)
        ):
            # stack and cat would promote int64 beside float32 to float32, losing digits
            plain = [t.to(torch.float64) for t in plain]
        # scalars in one stack, other tensors flattened beside them: one kernel and one
        # cast before the copy (both promote mixed dtypes themselves)
        scalars = [k for k, t in enumerate(plain) if t.dim() == 0]
        arrays = [k for k, t in enumerate(plain) if t.dim() != 0]
        pieces = [torch.stack([plain[k] for k in scalars])] if scalars else []
        pieces += [plain[k] if plain[k].dim() == 1 else plain[k].reshape(-1) for k in arrays]
        flat = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        values = flat.to(torch.float64).tolist()
        for n, k in enumerate(scalars):
            out[members[k]] = [values[n]]
        offset = len(scalars)
        for k in arrays:
            size = int(plain[k].numel())
            out[members[k]] = values[offset : offset + size]
            offset += size
    return out

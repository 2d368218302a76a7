"""What the undo log of in-place writes costs a check, with and without it: a small MLP and CNN.

Every check runs the function under test (and its backward) under a
``TorchDispatchMode`` that keeps the pre-image of each pre-existing tensor written in
place. This times ``check_module_gradients`` in fast and full mode with the log
and with it replaced by a no-op, interleaved round by round in one process, and
prints the best CPU time of each (``time.process_time``: a loaded machine moves wall
time far more than CPU time). The CNN has a BatchNorm in train mode, which cannot be
vectorised, so its full mode evaluates it once per input element.

    python benchmarks/undo_log_overhead.py [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src.engine import run as engine_run


@contextlib.contextmanager
def _no_log(**_: object) -> Iterator[None]:
    yield None


def _cases() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    cnn = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ).double()
    return {
        "mlp (8-16-4)": (mlp, torch.randn(5, 8, dtype=torch.float64)),
        "cnn (conv-bn-relu-linear)": (cnn, torch.randn(2, 2, 6, 6, dtype=torch.float64)),
    }


def _best(module: nn.Module, x: torch.Tensor, mode: str, rounds: int) -> float:
    gk.check_module_gradients(module, x, mode=mode)  # warm caches
    times = []
    for _ in range(rounds):
        start = time.process_time()
        gk.check_module_gradients(module, x, mode=mode)
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, metavar="N", help="Default: 7")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="Default: 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real = engine_run.undoing_writes
    for name, (module, x) in _cases().items():
        for mode in ("fast", "full"):
            best: dict[bool, float] = {}
            for with_log in (False, True, False, True):
                engine_run.undoing_writes = real if with_log else _no_log  # type: ignore[assignment]
                t = _best(module, x, mode, args.rounds)
                best[with_log] = min(best.get(with_log, t), t)
            engine_run.undoing_writes = real
            off, on = best[False], best[True]
            print(
                f"{name:28} {mode}: without {off * 1e3:6.1f} ms, with {on * 1e3:6.1f} ms "
                f"CPU ({(on / off - 1) * 100:+.0f}%, {(on - off) * 1e3:+.1f} ms)"
            )


if __name__ == "__main__":
    main()

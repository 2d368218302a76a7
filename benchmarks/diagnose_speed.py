"""How long diagnose() takes on a 1000 x 1000 Jacobian block (target: well under 100 ms).

Run: python benchmarks/diagnose_speed.py
"""

from __future__ import annotations

import time

import torch

from gradcheck_kit._src.engine.diagnose import Block, diagnose


def main() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(5)
    numeric = torch.randn(1000, 1000, dtype=torch.float64, generator=gen)
    x = torch.randn(1000, dtype=torch.float64, generator=gen)
    cases = {
        "factor 0.5": 0.5 * numeric,
        "random noise": numeric + torch.randn(1000, 1000, dtype=torch.float64, generator=gen),
    }
    for name, analytic in cases.items():
        block = Block(
            output="output",
            input="input",
            output_shape=(1000,),
            input_shape=(1000,),
            analytic=analytic,
            numeric=numeric,
            mismatch=(analytic - numeric).abs() > 1e-3,
            input_values=x,
        )
        times = []
        for _ in range(7):
            start = time.perf_counter()
            diagnose([block])
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"{name:>14}: median {times[3] * 1e3:.1f} ms, best {times[0] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()

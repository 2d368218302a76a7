"""Run by torchrun (or by hand with the env:// variables set): check_ddp_gradients on each rank.

Writes each rank's results to ``OUT/rank<RANK>.json``: the correct loop and a summed loss.
``--init`` makes the script join the group itself first, as a training script does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# the checkout's package and the tests' support modules, whatever is installed
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

import torch.distributed as dist  # noqa: E402

import gradcheck_kit as gk  # noqa: E402
from support import ddp_steps as s  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    if "--init" in sys.argv:
        dist.init_process_group("gloo")
    try:
        results = [
            gk.check_ddp_gradients(s.Net, s.make_batch, step=s.accumulate_clip_step),
            gk.check_ddp_gradients(s.Net, s.make_batch, step=s.summed_loss_step),
        ]
        text = json.dumps([r.to_dict() for r in results])
    except gk.errors.InvalidArgument as exc:
        text = json.dumps({"error": str(exc)})
    (out / f"rank{os.environ['RANK']}.json").write_text(text)
    if "--init" in sys.argv:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

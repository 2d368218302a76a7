"""check_ddp_gradients under torchrun: two ranks on 127.0.0.1 through the env:// rendezvous."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo in this torch build"
)
SCRIPT = Path(__file__).resolve().parent / "support" / "torchrun_ddp.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(SCRIPT),
        str(out),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _read(out: Path) -> dict[int, Any]:
    return {rank: json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)}


@pytest.mark.parametrize("init", [False, True], ids=["check joins env://", "script joins"])
def test_torchrun_ranks_are_the_ranks_and_every_rank_gets_the_same_verdict(
    tmp_path: Path, init: bool
) -> None:
    proc = _torchrun(tmp_path, *(["--init"] if init else []))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = _read(tmp_path)
    for rank in (0, 1):
        good, summed = results[rank]
        assert good["passed"] and good["world_size"] == 2 and good["compared_with_reference"]
        assert not summed["passed"]
        assert [h["kind"] for h in summed["hints"]] == ["factor"]
    # one comparison, gathered on every rank: the same records
    assert results[0][1]["leaves"] == results[1][1]["leaves"]


def test_a_master_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            **os.environ,
            "RANK": "0",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    error = json.loads((tmp_path / "rank0.json").read_text())["error"]
    assert f"MASTER_PORT={port} on MASTER_ADDR=127.0.0.1 is already in use" in error

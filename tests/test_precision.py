"""TF32 handling: a check runs float32 CUDA work in full precision and puts every switch back.

The switches are process-wide flags that exist in CPU builds too, so the
bookkeeping is tested here with the "is CUDA present" gate patched open; the
numerical effect is tested on a GPU in test_cuda_gradcheck.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import torch
from support.fingerprint import fingerprint

import gradcheck_kit as gk
from gradcheck_kit._src.engine import precision
from gradcheck_kit._src.engine.precision import Tf32Settings, full_float32_precision, tf32_note
from gradcheck_kit._src.state.modes import GlobalModes

needs_strings = pytest.mark.skipif(
    not isinstance(getattr(torch.backends.cuda.matmul, "fp32_precision", None), str),
    reason="this torch has no fp32_precision switches (torch.backends.cuda.matmul.fp32_precision)",
)

# Every way a user may have set TF32, legacy and new API, then a reading of every
# legacy getter (which raises once the APIs were mixed) and every string.
_SETUPS = [
    "pass",
    "torch.backends.cuda.matmul.allow_tf32 = True",
    "torch.backends.cudnn.allow_tf32 = False",
    "torch.set_float32_matmul_precision('medium')",
    "torch.set_float32_matmul_precision('high')",
    "torch.backends.cuda.matmul.fp32_precision = 'tf32'",
    "torch.backends.fp32_precision = 'tf32'",
    "torch.backends.cudnn.fp32_precision = 'ieee'",
    "torch.backends.cuda.matmul.allow_tf32 = True; "
    "torch.backends.cudnn.conv.fp32_precision = 'ieee'",
]

_MATRIX = """
import json, sys, torch
from gradcheck_kit._src.engine import precision
from gradcheck_kit._src.engine.precision import Tf32Settings, full_float32_precision
precision._cuda_present = lambda: True
b = torch.backends

def readings():
    out = []
    for get in (lambda: b.cuda.matmul.allow_tf32, lambda: b.cudnn.allow_tf32,
                torch.get_float32_matmul_precision):
        try:
            out.append(get())
        except RuntimeError:
            out.append("raises")
    for node in (b.cuda.matmul, b.cudnn.conv, b.cudnn.rnn, b.cudnn, b):
        out.append(node.fp32_precision)
    return out

exec(sys.argv[1])
before = readings()
enabled = Tf32Settings.capture().enabled()
try:
    with full_float32_precision() as switched:
        inside = Tf32Settings.capture().enabled()
        raise KeyError("the block fails")
except KeyError:
    pass
print(json.dumps({"before": before, "after": readings(), "enabled": enabled,
                  "switched": switched, "inside": inside}))
"""


@needs_strings
@pytest.mark.parametrize("setup", _SETUPS)
def test_switch_off_and_restore_leaves_every_reading_as_found(setup: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MATRIX), setup],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["after"] == got["before"]
    assert got["switched"] == got["enabled"]
    assert got["inside"] == []


def test_tf32_defaults_are_read_as_torch_documents_them() -> None:
    # torch's defaults: cuBLAS matmuls in full float32, cuDNN convolutions and RNNs in TF32.
    assert Tf32Settings.capture().enabled() == ["cuDNN convolutions", "cuDNN RNNs"]


@pytest.fixture
def tf32_everywhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tf32Settings]:
    """TF32 on for matmuls too, with the CUDA gate open; the original switches come back."""
    saved = Tf32Settings.capture()
    monkeypatch.setattr(precision, "_cuda_present", lambda: True)
    torch.set_float32_matmul_precision("high")
    try:
        yield Tf32Settings.capture()
    finally:
        saved.restore()


def test_without_cuda_nothing_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_cuda_present", lambda: False)
    before = Tf32Settings.capture()
    with full_float32_precision() as switched:
        assert Tf32Settings.capture() == before
    assert switched == []


def test_check_gradients_runs_fn_in_full_float32_and_restores(
    tf32_everywhere: Tf32Settings,
) -> None:
    seen: list[list[str]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(Tf32Settings.capture().enabled())
        return x @ x.T

    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(fn, x)
    assert result.passed and seen and all(s == [] for s in seen)
    assert Tf32Settings.capture() == tf32_everywhere
    # CPU tensors never run in TF32, so the result says nothing about it.
    assert not any("TF32" in note for note in result.notes)


def test_check_matches_manual_runs_in_full_float32(tf32_everywhere: Tf32Settings) -> None:
    seen: list[list[str]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(Tf32Settings.capture().enabled())
        return (x**2).sum()

    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    result = gk.check_matches_manual(fn, lambda x: 2 * x, x)
    assert result.passed and all(s == [] for s in seen)
    assert Tf32Settings.capture() == tf32_everywhere


def test_switches_come_back_when_fn_raises(tf32_everywhere: Tf32Settings) -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("user bug")

    with pytest.raises(ValueError, match="user bug"):
        gk.check_gradients(fn, torch.randn(2, dtype=torch.float64, requires_grad=True))
    assert Tf32Settings.capture() == tf32_everywhere


@needs_strings
def test_fn_that_turns_tf32_on_is_undone() -> None:
    x = torch.randn(2, dtype=torch.float64, requires_grad=True)
    before = fingerprint(x)

    def fn(x: torch.Tensor) -> torch.Tensor:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        return x * 2

    gk.check_gradients(fn, x)
    assert torch.backends.cuda.matmul.fp32_precision == "none"
    assert fingerprint(x) == before


def test_global_modes_name_a_tf32_change() -> None:
    saved = GlobalModes.capture()
    try:
        torch.set_float32_matmul_precision("high")
        diff = saved.diff(GlobalModes.capture())
    finally:
        saved.restore()
    assert len(diff) == 1 and diff[0].startswith("TF32 settings changed")
    assert GlobalModes.capture() == saved


def test_note_only_for_cuda_float32_work() -> None:
    assert tf32_note(["cuBLAS matmuls"], [torch.zeros(2)]) is None
    assert tf32_note([], [torch.zeros(2)]) is None

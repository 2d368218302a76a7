"""mypy catches a misspelled option, or a wrong mode, on every public check and assertion.

The options are declared once (``engine/options.py``'s TypedDicts, taken as
``**options: Unpack[...]``) or spelled out in the signature; nowhere does an untyped
``**kwargs`` swallow ``atoll=``. A snippet calling every ``check_*``/``assert_*`` of
``gradcheck_kit.__all__`` (and the drop-ins for torch's gradcheck) is type-checked:
each misspelled line must fail with the expected error, each correct twin must pass.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gradcheck_kit as gk

pytest.importorskip("mypy")

ROOT = Path(gk.__file__).resolve().parent.parent
PUBLIC_CHECKS = sorted(
    name
    for name in gk.__all__
    if name.startswith(("check_", "assert_"))
    or name in ("gradcheck", "gradgradcheck", "watch_training")
)
# The option each line misspells, the first that the function takes.
PREFERRED = ("mode", "atol", "msg", "eps")


def _options(fn: Any) -> set[str]:
    """Every keyword option ``fn`` takes: keyword parameters and the keys of ``Unpack[...]``."""
    found = set()
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY or (
            p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty
        ):
            found.add(p.name)
        elif p.kind is p.VAR_KEYWORD:
            match = re.fullmatch(r"Unpack\[(\w+)\]", str(p.annotation))
            assert match, f"{fn.__name__} takes untyped **{p.name}: {p.annotation}"
            declared = inspect.unwrap(fn).__globals__[match.group(1)]
            found |= declared.__required_keys__ | declared.__optional_keys__
    return found


def _call(name: str, fn: Any, keyword: str) -> str:
    args = []
    for p in inspect.signature(fn).parameters.values():
        positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        if (positional and p.default is p.empty) or p.kind is p.VAR_POSITIONAL:
            args.append("a")
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            args.append(f"{p.name}=a")
    return f"gk.{name}({', '.join([*args, keyword])})"


def _cases() -> list[tuple[str, str, str | None]]:
    """(name, source line, expected error text or None for a line that must pass)."""
    cases: list[tuple[str, str, str | None]] = []
    for name in PUBLIC_CHECKS:
        fn = getattr(gk, name)
        options = _options(fn)
        option = next(o for o in PREFERRED if o in options)
        right = {"mode": '"full"', "atol": "1e-3", "msg": '"context"', "eps": "1e-6"}[option]
        typo = option + option[-1]  # atoll, modee, msgg
        cases.append((name, _call(name, fn, f"{option}={right}"), None))
        cases.append(
            (name, _call(name, fn, f"{typo}={right}"), f'Unexpected keyword argument "{typo}"')
        )
        if "mode" in options:
            cases.append((name, _call(name, fn, 'mode="fulll"'), "Literal['fulll']"))
    return cases


def test_every_public_check_is_in_the_snippet() -> None:
    # Guards the test below against passing over an empty or partial list.
    assert {"check_gradients", "assert_gradients_close", "assert_matches_manual"} <= set(
        PUBLIC_CHECKS
    )
    assert {"gradcheck", "gradgradcheck", "assert_same_training"} <= set(PUBLIC_CHECKS)


def test_mypy_catches_a_misspelled_option_on_every_check_and_assertion(tmp_path: Path) -> None:
    cases = _cases()
    header = ["from typing import Any", "import gradcheck_kit as gk", "a: Any = None"]
    source = tmp_path / "calls.py"
    source.write_text("\n".join([*header, *(line for _, line, _ in cases)]) + "\n")
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file=",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            "--no-error-summary",
            "--show-error-codes",
            f"--cache-dir={tmp_path / 'cache'}",
            source.name,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        match = re.match(rf"{source.name}:(\d+): error: (.*)", line)
        if match:
            errors.setdefault(int(match.group(1)), []).append(match.group(2))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    missed, spurious = [], []
    for lineno, (name, line, expected) in enumerate(cases, start=len(header) + 1):
        found = errors.get(lineno, [])
        if expected is None and found:
            spurious.append(f"{line}: {found}")
        elif expected is not None and not any(expected in e for e in found):
            missed.append(f"{name}: {line} (mypy said {found or 'nothing'})")
    assert not spurious, "correct calls rejected:\n" + "\n".join(spurious)
    assert not missed, "mistakes mypy let through:\n" + "\n".join(missed)

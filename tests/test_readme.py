"""The READMEs' Python examples run as written, and the user docs speak to users.

Every ```python block of README.md and examples/README.md is run: a plain block
with ``exec`` in a fresh namespace (in a temporary working directory), a block
that defines pytest tests (``def test_...``) as a test file of its own through
``pytester`` with ``--gradcheck``. A block that raises, or a test in it that does
not pass, fails here, with the traceback pointing at the README's own line.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
READMES = [ROOT / "README.md", ROOT / "examples" / "README.md"]
USER_DOCS = [*READMES, ROOT / "CHANGELOG.md"]

_TEST_FUNCTION = re.compile(r"^def (test_\w+)\(", re.MULTILINE)

# Words that only make sense inside the project's own notes, not to a user.
_JARGON = [
    re.compile(r"\bscenarios?\s+\d", re.IGNORECASE),
    re.compile(r"\bissues?\s*#?\d", re.IGNORECASE),
    re.compile(r"shared/"),
]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the block's first code line
    source: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def tests(self) -> list[str]:
        return _TEST_FUNCTION.findall(self.source)


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, in order."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, start=1):
        if start is None and line.strip() == "```python":
            start = number + 1
        elif start is not None and line.strip() == "```":
            blocks.append(Block(path, start, "\n".join(lines[start - 1 : number - 1]) + "\n"))
            start = None
    if start is not None:
        raise AssertionError(
            f"{path.name}: the ```python block opened at line {start - 1} never closes"
        )
    return blocks


BLOCKS = [block for path in READMES for block in python_blocks(path)]
PLAIN = [block for block in BLOCKS if not block.tests]
TESTS = [block for block in BLOCKS if block.tests]


def _plugin_args() -> list[str]:
    # Installed, pytest loads the plugin from its entry point; from a source tree, name it.
    for entry_point in importlib.metadata.entry_points(group="pytest11"):
        if entry_point.value == "gradcheck_kit.pytest_plugin.plugin":
            return []
    return ["-p", "gradcheck_kit.pytest_plugin.plugin"]


def test_the_readme_has_both_kinds_of_block() -> None:
    # Guards the extraction: a changed fence style must not leave nothing to run.
    assert len(PLAIN) >= 4, [block.id for block in PLAIN]
    assert len(TESTS) >= 2, [block.id for block in TESTS]


def test_extraction_keeps_line_numbers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n\ny = 2\n```\n\n```\nshell\n```\n", "utf-8")
    (block,) = python_blocks(page)
    assert (block.line, block.source) == (4, "x = 1\n\ny = 2\n")


@pytest.mark.parametrize("block", PLAIN, ids=[block.id for block in PLAIN])
def test_plain_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Padding puts the block on its README lines, so a traceback names the README's line.
    code = compile("\n" * (block.line - 1) + block.source, str(block.path), "exec")
    rng_state = torch.get_rng_state()
    try:
        exec(code, {"__name__": "__readme__"})
    finally:
        torch.set_rng_state(rng_state)


@pytest.mark.parametrize("block", TESTS, ids=[block.id for block in TESTS])
def test_test_block_passes(block: Block, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**{"test_readme_block": block.source})
    # hypothesis's and pytest-benchmark's plugins are not needed by the blocks, and cost
    # a second per run (hypothesis) or warn under an outer xdist run (benchmark).
    result = pytester.runpytest(
        "--gradcheck",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:benchmark",
        *_plugin_args(),
    )
    result.assert_outcomes(passed=len(block.tests))


@pytest.mark.parametrize("path", USER_DOCS, ids=[str(path.relative_to(ROOT)) for path in USER_DOCS])
def test_user_docs_have_no_internal_jargon(path: Path) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r} in {line.strip()[:80]!r}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for pattern in _JARGON
        for match in pattern.finditer(line)
    ]
    assert not found, "describe the situation instead of naming internal notes:\n" + "\n".join(
        found
    )

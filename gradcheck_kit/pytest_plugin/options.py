"""The plugin's options: parsing, ini fallback, and per-test marker overrides.

No pytest hooks here (``plugin.py`` wires them) and no torch. Each
``--gradcheck-*`` option has an ini twin; the command line beats the ini file,
which beats the default. ``@pytest.mark.gradcheck(mode="full", atol=1e-5)``
beats both for one test. Two families: the check options (:class:`CheckDefaults`)
and the run's switches and output files (``--gradcheck``, ``--gradcheck-json``, ...).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "MODES",
    "DTYPES",
    "DEVICES",
    "MARKER_KWARGS",
    "DEFAULT_JSON_PATH",
    "DEFAULT_REPORT_PATH",
    "CheckDefaults",
    "RankOptions",
    "RANK_KWARGS",
    "BACKENDS",
    "gradcheck_defaults_key",
    "parse_mode",
    "parse_dtype",
    "parse_device",
    "parse_seed",
    "parse_tolerance",
    "parse_targets",
    "parse_path",
    "add_check_options",
    "add_output_options",
    "read_defaults",
    "read_path",
    "writes_no_files",
    "apply_marker",
    "apply_markers",
    "rank_options",
]

MODES = ("auto", "full", "fast")
DTYPES = ("float64", "native")
DEVICES = ("cpu", "cuda", "all")
BACKENDS = ("gloo", "nccl", "mpi")
# The marker's keywords that run the test on several ranks (not check options).
RANK_KWARGS = frozenset({"world_size", "backend", "timeout"})
# What @pytest.mark.gradcheck(...) accepts: the check options, a device list, the ranks.
MARKER_KWARGS = (
    frozenset({"mode", "dtype", "eps", "atol", "rtol", "seed", "rng", "n_probes", "devices"})
    | RANK_KWARGS
)
# run_on_ranks's default: start-up of every rank included.
DEFAULT_RANK_TIMEOUT = 120.0
DEFAULT_JSON_PATH = "reports/gradcheck.json"
DEFAULT_REPORT_PATH = "reports/gradcheck.html"


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(string: str) -> str:
        value = string.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"Could not parse value: {string!r}. Expected one of {', '.join(choices)}."
            )
        return value

    parse.__name__ = f"parse_{name}"
    return parse


parse_mode = _choice("mode", MODES)
parse_dtype = _choice("dtype", DTYPES)
parse_device = _choice("device", DEVICES)


def parse_seed(string: str) -> int:
    """An integer seed >= 0.

    Examples:
        >>> parse_seed(" 7 ")
        7
    """
    try:
        value = int(string.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected an integer >= 0."
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"Could not parse value: {string!r}. Expected >= 0.")
    return value


def parse_tolerance(string: str) -> float:
    """A finite float >= 0.

    Examples:
        >>> parse_tolerance("1e-5")
        1e-05
    """
    try:
        value = float(string.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a number such as 1e-5."
        ) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a finite number >= 0."
        )
    return value


def parse_targets(string: str) -> list[str]:
    """Comma- or blank-separated ``package.module:factory`` names.

    Examples:
        >>> parse_targets("a.b:f, c:g")
        ['a.b:f', 'c:g']
    """
    return [part for part in string.replace(",", " ").split() if part]


def parse_path(string: str) -> str:
    """A file path: the value of ``--gradcheck-json`` / ``--gradcheck-report`` and their ini keys.

    Args:
        string: The path as written by the user.

    Returns:
        ``string`` without surrounding blanks.

    Raises:
        argparse.ArgumentTypeError: The value is empty or names a folder.

    Examples:
        >>> parse_path(" out/results.json ")
        'out/results.json'
        >>> parse_path("out/")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: Could not parse value: 'out/'. Expected a file, not a folder.
    """
    value = string.strip()
    if not value:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a file path."
        )
    if value.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a file, not a folder."
        )
    return value


@dataclass(frozen=True)
class RankOptions:
    """How a test marked ``gradcheck(world_size=N)`` runs: N processes in one group.

    Examples:
        >>> RankOptions(world_size=2)
        RankOptions(world_size=2, backend='gloo', timeout=120.0)
    """

    world_size: int
    backend: str = "gloo"
    timeout: float = DEFAULT_RANK_TIMEOUT


@dataclass(frozen=True)
class CheckDefaults:
    """The run's check options after CLI > ini > default resolution.

    ``None`` means "the check's own default" (tolerances by dtype, for example).

    Examples:
        >>> CheckDefaults().as_kwargs()
        {'mode': 'auto', 'dtype': 'float64', 'seed': 0}
    """

    mode: str = "auto"
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    atol: float | None = None
    rtol: float | None = None
    targets: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``check_gradients`` (unset tolerances left out)."""
        kwargs: dict[str, Any] = {"mode": self.mode, "dtype": self.dtype, "seed": self.seed}
        if self.atol is not None:
            kwargs["atol"] = self.atol
        if self.rtol is not None:
            kwargs["rtol"] = self.rtol
        kwargs.update(self.extra)
        return kwargs

    def devices(self) -> tuple[str, ...]:
        """The devices ``--gradcheck-device`` selects, in order."""
        return ("cpu", "cuda") if self.device == "all" else (self.device,)


# option, dest, parser, metavar, default (as the ini text), help
_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str, str, str], ...] = (
    ("--gradcheck-mode", "gradcheck_mode", parse_mode, "{auto,full,fast}", "auto",
     "full Jacobians, random projections, or full when small"),
    ("--gradcheck-dtype", "gradcheck_dtype", parse_dtype, "{float64,native}", "float64",
     "check float64 copies, or the tensors' own dtype"),
    ("--gradcheck-device", "gradcheck_device", parse_device, "{cpu,cuda,all}", "cpu",
     "devices the grad_device fixture runs on; cuda skips where there is no GPU"),
    ("--gradcheck-seed", "gradcheck_seed", parse_seed, "N", "0",
     "seed of every check and of the grad_rng fixture"),
    ("--gradcheck-atol", "gradcheck_atol", parse_tolerance, "ATOL", "",
     "absolute tolerance per Jacobian entry (empty: by dtype)"),
    ("--gradcheck-rtol", "gradcheck_rtol", parse_tolerance, "RTOL", "",
     "relative tolerance per Jacobian entry (empty: by dtype)"),
    ("--gradcheck-targets", "gradcheck_targets", parse_targets, "MOD:FACTORY,...", "",
     "factories to check without writing tests, each collected as a test item"),
)  # fmt: skip


gradcheck_defaults_key = pytest.StashKey[CheckDefaults]()
"""The run's resolved check options on ``config.stash`` (always present)."""


def add_check_options(group: Any, parser: pytest.Parser) -> None:
    """Add the check options to the ``gradcheck`` group, each with its ini twin."""
    for option, dest, parse, metavar, default, text in _OPTIONS:
        parser.addini(dest, default=default, type="string", help=f"Default value for {option}")
        shown = repr(default) if default else "unset"
        group.addoption(
            option,
            dest=dest,
            type=parse,
            metavar=metavar,
            default=None,
            help=f"{text[0].upper()}{text[1:]}. Default: {shown}",
        )


def add_output_options(group: Any, parser: pytest.Parser) -> None:
    """Add ``--gradcheck``, ``--gradcheck-no-report`` and the two paths, each with an ini twin."""
    for flag, dest, text in (
        (
            "--gradcheck",
            "gradcheck",
            "Run the tests marked @pytest.mark.gradcheck, record every gradient check's "
            "result and write them to the JSON file of --gradcheck-json",
        ),
        (
            "--gradcheck-no-report",
            "gradcheck_no_report",
            "Run the checks and print the summary, but write no JSON or HTML file",
        ),
    ):
        parser.addini(dest, type="bool", default=False, help=f"Same as {flag}")
        group.addoption(
            flag,
            dest=dest,
            action="store_true",
            default=False,
            help=f"{text} (ini: {dest} = true). Default: %(default)r",
        )
    for flag, dest, default, text in (
        ("--gradcheck-json", "gradcheck_json", DEFAULT_JSON_PATH, "its results"),
        (
            "--gradcheck-report",
            "gradcheck_report",
            DEFAULT_REPORT_PATH,
            "the HTML report of the same results, one self-contained file",
        ),
    ):
        # Like _pytest/logging.py: the option defaults to None, so that an unset
        # option falls back to the ini key, which falls back to `default`.
        parser.addini(dest, default=default, type="string", help=f"Default value for {flag}")
        group.addoption(
            flag,
            dest=dest,
            default=None,
            metavar="PATH",
            type=parse_path,
            help=(
                f"Where --gradcheck writes {text} (relative to the current directory; the "
                f"ini value is relative to the rootdir). Default: {default!r} in the rootdir"
            ),
        )


def read_path(config: pytest.Config, dest: str) -> Path:
    """The absolute path of ``--gradcheck-json`` or ``--gradcheck-report`` (``dest`` names which).

    The command line (relative to the directory pytest was started in) beats the
    ini key (relative to the rootdir, ``~`` expanded), which beats the default.

    Raises:
        pytest.UsageError: the ini value does not parse; the message names the key.
    """
    cli_value: str | None = config.getoption(dest)
    if cli_value is not None:
        return Path(os.path.abspath(config.invocation_params.dir / cli_value))
    ini_value = str(config.getini(dest))
    try:
        value = parse_path(ini_value)
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"{dest} = {ini_value!r} in the ini file: {exc}") from None
    return Path(os.path.abspath(config.rootpath / os.path.expanduser(value)))


def writes_no_files(config: pytest.Config) -> bool:
    """Whether ``--gradcheck-no-report`` (or its ini key) is set."""
    return bool(config.getoption("gradcheck_no_report") or config.getini("gradcheck_no_report"))


def read_defaults(config: pytest.Config) -> CheckDefaults:
    """Resolve every check option: command line, else ini, else default.

    Raises:
        pytest.UsageError: an ini value does not parse; the message names the key.
    """
    values: dict[str, Any] = {}
    for _option, dest, parse, _metavar, _default, _text in _OPTIONS:
        cli_value = config.getoption(dest)
        if cli_value is not None:
            values[dest] = cli_value
            continue
        ini_value = str(config.getini(dest)).strip()
        if not ini_value:
            values[dest] = None
            continue
        try:
            values[dest] = parse(ini_value)
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"{dest} = {ini_value!r} in the ini file: {exc}") from None
    return CheckDefaults(
        mode=values["gradcheck_mode"] or "auto",
        dtype=values["gradcheck_dtype"] or "float64",
        device=values["gradcheck_device"] or "cpu",
        seed=values["gradcheck_seed"] if values["gradcheck_seed"] is not None else 0,
        atol=values["gradcheck_atol"],
        rtol=values["gradcheck_rtol"],
        targets=tuple(values["gradcheck_targets"] or ()),
    )


def apply_marker(defaults: CheckDefaults, marker_kwargs: Mapping[str, Any]) -> CheckDefaults:
    """The defaults with one test's ``@pytest.mark.gradcheck(...)`` overrides applied.

    Raises:
        ValueError: an unknown keyword, or a value of the wrong kind or type (named);
            never a ``TypeError``, whatever the values.

    Examples:
        >>> apply_marker(CheckDefaults(), {"mode": "full", "atol": 1e-5}).as_kwargs()
        {'mode': 'full', 'dtype': 'float64', 'seed': 0, 'atol': 1e-05}
    """
    unknown = sorted(set(marker_kwargs) - MARKER_KWARGS)
    if unknown:
        raise ValueError(
            f"gradcheck mark can't have {unknown[0]!r} keyword argument "
            f"(known: {', '.join(sorted(MARKER_KWARGS))})."
        )
    changes: dict[str, Any] = {}
    extra = dict(defaults.extra)
    for name, value in marker_kwargs.items():
        if name == "mode":
            changes["mode"] = _marker_choice(name, value, MODES)
        elif name == "dtype":
            changes["dtype"] = _marker_choice(name, value, DTYPES)
        elif name == "seed":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"gradcheck mark: seed={value!r} must be an int >= 0.")
            changes["seed"] = value
        elif name in ("atol", "rtol"):
            number = _marker_number(value)
            if number is None or not math.isfinite(number) or number < 0:
                raise ValueError(f"gradcheck mark: {name}={value!r} must be a number >= 0.")
            changes[name] = number
        elif name == "devices":
            if isinstance(value, str):
                devices: tuple[Any, ...] = (value,)
            elif isinstance(value, (list, tuple)):
                devices = tuple(value)
            else:  # devices=5: a ValueError naming it, never a TypeError from tuple(5)
                raise ValueError(
                    f"gradcheck mark: devices={value!r}; use 'cpu', 'cuda' or a list of them."
                )
            bad = [d for d in devices if not isinstance(d, str) or d not in ("cpu", "cuda")]
            if bad or not devices:
                raise ValueError(f"gradcheck mark: devices={value!r}; use 'cpu' and/or 'cuda'.")
            changes["device"] = "all" if len(set(devices)) == 2 else devices[0]
        elif name in RANK_KWARGS:  # how the test runs, not an option of its checks
            _check_rank_keyword(name, value)
        else:  # eps, rng, n_probes: validated by the check itself, with its own message
            extra[name] = value
    return replace(defaults, extra=extra, **changes)


def _check_rank_keyword(name: str, value: Any) -> None:
    if name == "world_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise ValueError(
                f"gradcheck mark: world_size={value!r} must be an int >= 2, the number of "
                "ranks (processes) the test runs on."
            )
    elif name == "backend":
        _marker_choice(name, value, BACKENDS)
    elif name == "timeout":
        number = _marker_number(value)
        if number is None or not math.isfinite(number) or number <= 0:
            raise ValueError(f"gradcheck mark: timeout={value!r} must be a number of seconds > 0.")


def rank_options(node: Any) -> RankOptions | None:
    """How ``node`` (a pytest node) runs on several ranks; ``None`` for a test in one process.

    ``world_size``, ``backend`` and ``timeout`` may come from different ``gradcheck``
    marks (a class's and a function's); the closest mark wins each keyword.

    Raises:
        ValueError: a bad value (named), or ``backend``/``timeout`` without ``world_size``.

    Examples:
        >>> from types import SimpleNamespace
        >>> mark = SimpleNamespace(kwargs={"world_size": 3, "timeout": 30})
        >>> rank_options(SimpleNamespace(iter_markers=lambda name: [mark]))
        RankOptions(world_size=3, backend='gloo', timeout=30.0)
    """
    found: dict[str, Any] = {}
    for marker in node.iter_markers("gradcheck"):  # closest first
        for name in RANK_KWARGS & set(marker.kwargs):
            value = marker.kwargs[name]
            _check_rank_keyword(name, value)
            found.setdefault(name, value)
    if "world_size" not in found:
        if found:
            given = ", ".join(f"{k}={found[k]!r}" for k in sorted(found))
            raise ValueError(
                f"gradcheck mark: {given} applies to a test on several ranks; add "
                "world_size=N (N >= 2) to run it on N processes."
            )
        return None
    return RankOptions(
        world_size=found["world_size"],
        backend=found.get("backend", "gloo"),
        timeout=float(found.get("timeout", DEFAULT_RANK_TIMEOUT)),
    )


def apply_markers(defaults: CheckDefaults, node: Any) -> CheckDefaults:
    """The defaults with every ``gradcheck`` mark of ``node`` (a pytest node) applied.

    The closest mark wins, as pytest's own marks do (a function's over its class's
    over its module's).

    Raises:
        ValueError: as :func:`apply_marker`.
    """
    for marker in reversed(list(node.iter_markers("gradcheck"))):
        defaults = apply_marker(defaults, marker.kwargs)
    return defaults


def _marker_number(value: Any) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return math.inf


def _marker_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"gradcheck mark: {name}={value!r} is not one of {', '.join(map(repr, choices))}."
        )
    return str(value)

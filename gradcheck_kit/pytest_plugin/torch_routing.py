"""``pytest --gradcheck-torch``: torch's gradcheck and gradgradcheck routed to the drop-ins.

The option (ini ``gradcheck_torch``), and a plugin object that installs the
routing of :mod:`gradcheck_kit._src.routing` in ``pytest_configure`` (before
any test module is imported, after the initial conftests, whose bindings the
routing finds in their globals), restores torch's functions when pytest ends,
even when the run crashes (``config.add_cleanup``), hands each xdist worker's
tally of calls to the controller and prints a summary line.

Imports no torch until a run asks for routing: ``plugin.py`` imports this module
in every pytest run.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gradcheck_kit._src.routing import Mode, TorchRouting

__all__ = ["TorchRoutingPlugin", "add_torch_option", "configure", "parse_torch_mode", "torch_mode"]

_MODES = ("route", "compare")
_INI_ON = ("true", "yes", "on", "1")
_INI_OFF = ("false", "no", "off", "0", "")
_WORKEROUTPUT_KEY = "gradcheck_torch_calls"
_PLUGIN_NAME = "gradcheck-torch-routing"
_plugin_key = pytest.StashKey["TorchRoutingPlugin"]()


def parse_torch_mode(string: str) -> str:
    """Check the value of ``--gradcheck-torch``: ``route`` or ``compare``.

    Raises:
        argparse.ArgumentTypeError: Any other value.

    Examples:
        >>> parse_torch_mode("compare")
        'compare'
        >>> parse_torch_mode("bogus")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: Could not parse value: 'bogus'. Expected route or compare \
(a bare --gradcheck-torch is route; put it after the test paths, or write --gradcheck-torch=route).
    """
    value = string.strip().lower()
    if value not in _MODES:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected route or compare (a bare "
            "--gradcheck-torch is route; put it after the test paths, or write "
            "--gradcheck-torch=route)."
        )
    return value


def add_torch_option(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """Add ``--gradcheck-torch[=route|compare]`` and its ini key ``gradcheck_torch``."""
    parser.addini(
        "gradcheck_torch",
        type="string",
        default="false",
        help="Same as --gradcheck-torch: true or route, compare, or false",
    )
    group.addoption(
        "--gradcheck-torch",
        dest="gradcheck_torch",
        nargs="?",
        const="route",
        default=None,
        metavar="route|compare",
        type=parse_torch_mode,
        help=(
            "Route every torch.autograd.gradcheck / gradgradcheck call of the run through "
            "gradcheck_kit's drop-in and record it (implies --gradcheck). route: the drop-in "
            "decides; compare: both run, torch's verdict decides, the record compares them. "
            "Default: %(default)r (ini: gradcheck_torch = true)"
        ),
    )


def torch_mode(config: pytest.Config) -> Mode | None:
    """The run's routing mode: the option, else the ini key; ``None`` when off.

    Raises:
        pytest.UsageError: The ini value is none of true/false/route/compare.
    """
    value = config.getoption("gradcheck_torch", None)
    if value is not None:
        return _as_mode(str(value))
    ini = str(config.getini("gradcheck_torch")).strip().lower()
    if ini in _INI_OFF:
        return None
    if ini in _INI_ON:
        return "route"
    if ini in _MODES:
        return _as_mode(ini)
    raise pytest.UsageError(
        f"gradcheck_torch = {ini!r} in the ini file: expected true, false, route or compare."
    )


def _as_mode(value: str) -> Mode:
    return "compare" if value == "compare" else "route"


class TorchRoutingPlugin:
    """Routes torch's gradcheck for one pytest run; registered by :func:`configure`.

    Args:
        config: The run's config.
        routing: The installed routing.

    Examples:
        >>> # conftest.py: how many calls did this process route?
        >>> def pytest_sessionfinish(session):
        ...     plugin = session.config.pluginmanager.get_plugin("gradcheck-torch-routing")
        ...     if plugin is not None:
        ...         print(len(plugin.calls))
    """

    def __init__(self, config: pytest.Config, routing: TorchRouting) -> None:
        self.config = config
        self.routing = routing
        self._from_workers: list[dict[str, Any]] = []

    @property
    def calls(self) -> list[dict[str, Any]]:
        """This process's routed calls, then those the xdist workers sent."""
        return [*self.routing.calls, *self._from_workers]

    def stop(self) -> None:
        """Put torch's functions back; safe to call twice."""
        self.routing.restore()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """On an xdist worker, hand the tally of calls to the controller."""
        workeroutput: dict[str, Any] | None = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[_WORKEROUTPUT_KEY] = list(self.routing.calls)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Add the tally a finished xdist worker sent."""
        workeroutput = getattr(node, "workeroutput", None) or {}
        self._from_workers.extend(workeroutput.get(_WORKEROUTPUT_KEY, ()))

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """One line: calls routed, and in compare mode agreement and both checkers' time."""
        if hasattr(self.config, "workerinput"):
            return
        for line in summary_lines(self.routing.mode, self.calls):
            terminalreporter.write_line(line)


def summary_lines(mode: str, calls: list[dict[str, Any]]) -> list[str]:
    """The terminal lines for ``calls`` (the tally of :class:`TorchRouting`).

    Examples:
        >>> calls = [{"agree": True, "torch_s": 0.5, "ours_s": 0.25, "fallback": None},
        ...          {"agree": False, "torch_s": 0.5, "ours_s": 0.25, "fallback": None}]
        >>> summary_lines("compare", calls)
        ['torch gradcheck calls routed: 2; agree 1/2; torch 1.00 s, gradcheck_kit 0.50 s']
    """
    fallbacks = [c for c in calls if c.get("fallback")]
    routed = [c for c in calls if not c.get("fallback")]
    ours_s = sum(float(c.get("ours_s") or 0.0) for c in routed)
    if mode == "compare":
        agree = sum(1 for c in routed if c.get("agree"))
        torch_s = sum(float(c.get("torch_s") or 0.0) for c in routed)
        lines = [
            f"torch gradcheck calls routed: {len(routed)}; agree {agree}/{len(routed)}; "
            f"torch {torch_s:.2f} s, gradcheck_kit {ours_s:.2f} s"
        ]
    else:
        lines = [f"torch gradcheck calls routed: {len(routed)}; gradcheck_kit {ours_s:.2f} s"]
    if fallbacks:
        lines.append(
            f"left to torch (inputs gradcheck_kit does not check): {len(fallbacks)}; first: "
            f"{fallbacks[0]['fallback']}"
        )
    return lines


def configure(config: pytest.Config) -> None:
    """With ``--gradcheck-torch``, install the routing and register the plugin object.

    torch's functions come back in ``pytest_unconfigure`` and, should a crash
    skip it, in ``config``'s cleanup, which pytest runs however the run ends.
    """
    mode = torch_mode(config)
    if mode is None:
        return
    from gradcheck_kit._src.routing import TorchRouting

    plugin = TorchRoutingPlugin(config, TorchRouting(mode))
    config.add_cleanup(plugin.stop)
    plugin.routing.install()
    config.stash[_plugin_key] = plugin
    config.pluginmanager.register(plugin, _PLUGIN_NAME)


def unconfigure(config: pytest.Config) -> None:
    """Restore torch's functions and unregister the plugin object."""
    plugin = config.stash.get(_plugin_key, None)
    if plugin is None:
        return
    del config.stash[_plugin_key]
    plugin.stop()
    config.pluginmanager.unregister(plugin)

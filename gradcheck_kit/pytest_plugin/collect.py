"""Test items for gradient-check targets (``--gradcheck-targets``, ``@gradcheck_kit.target``).

A :class:`TargetFactory` collector stands for one factory; collecting it calls
the factory (only under ``--gradcheck``) and yields one :class:`TargetCheck` item
per thing to check, so targets pass, fail and show up like ordinary tests. A
factory that cannot be resolved or raises is a collection error with a plain
message, never a crash of pytest. The checks are imported only when a target is
collected, keeping torch out of runs that have none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from gradcheck_kit.pytest_plugin.options import CheckDefaults

__all__ = ["TargetFactory", "TargetCheck", "TargetCollectionError"]


class TargetCollectionError(Exception):
    """A target factory could not be resolved or built (shown without a traceback)."""


class TargetFactory(pytest.Collector):
    """One target factory, named by ``package.module:factory`` or found in a test file."""

    def __init__(
        self,
        *,
        factory: Callable[[], Any] | None = None,
        spec: str | None = None,
        defaults: CheckDefaults,
        enabled: bool,
        skip_reason: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.factory = factory
        self.spec = spec
        self.defaults = defaults
        self.enabled = enabled
        self.skip_reason = skip_reason
        code = getattr(factory, "__code__", None)
        # 0-based, as pytest's own locations; a named target has no line of its own
        self.lineno: int = code.co_firstlineno - 1 if code is not None else 0

    def collect(self) -> Iterable[pytest.Item]:
        """One item per check the factory returns (a single skipped item when disabled)."""
        if not self.enabled:
            # Without --gradcheck the factory is not called: it may load data or build models.
            item = TargetCheck.from_parent(self, name="target", target=None, defaults=self.defaults)
            item.add_marker(pytest.mark.skip(reason=self.skip_reason))
            return [item]
        from gradcheck_kit._src.targets import TargetError, describe, load_targets, resolve_target

        try:
            factory = self.factory if self.factory is not None else resolve_target(str(self.spec))
            targets = load_targets(factory, label=self.spec or self.name)
        except TargetError as exc:
            raise TargetCollectionError(str(exc)) from exc
        return [
            TargetCheck.from_parent(self, name=label, target=target, defaults=self.defaults)
            for label, target in zip(describe(targets), targets, strict=True)
        ]

    def repr_failure(  # type: ignore[override]
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str:
        """A target error is the message alone; anything else, pytest's usual report."""
        if isinstance(excinfo.value, TargetCollectionError):
            return f"gradcheck target: {excinfo.value}"
        return str(super().repr_failure(excinfo))


class TargetCheck(pytest.Item):
    """One gradient check of a target; fails with the check's own report."""

    def __init__(self, *, target: Any, defaults: CheckDefaults, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.defaults = defaults
        self.add_marker(pytest.mark.gradcheck)

    def runtest(self) -> None:
        """Run the check with the session's options under the target's own."""
        from gradcheck_kit._src.asserts import raise_for_result
        from gradcheck_kit._src.targets import run_target

        raise_for_result(run_target(self.target, **self.defaults.as_kwargs()))

    def repr_failure(  # type: ignore[override]
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str:
        """The check's report, without a traceback into gradcheck_kit."""
        from gradcheck_kit._src.errors import GradcheckKitError

        if isinstance(excinfo.value, GradcheckKitError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int, str]:
        """Where the item comes from: the factory's line in a test file, else line 0."""
        lineno = getattr(self.parent, "lineno", 0)
        return self.path, lineno, f"gradcheck target {self.nodeid}"

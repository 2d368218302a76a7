"""Save a failed check's inputs, so that its ``Reproduce:`` line can load them.

The pytest plugin opens an :class:`InputsFolder` for the run (beside the JSON
report, ``reports/gradcheck-inputs/``); while one is open, every failed gradient
check saves its inputs there with ``torch.save`` and names the file in its
record (``inputs_file``) and in its ``Reproduce:`` line. The folder holds at
most :data:`DEFAULT_CAP_BYTES` per run: past that, a check says in a note that
its inputs were not saved. Without an open folder nothing is written.

torch is imported only when a file is written: the plugin opens the folder
in runs that never import torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from .reproduce import FunctionReference, function_reference, reproduce_statement

__all__ = [
    "DEFAULT_CAP_BYTES",
    "INPUTS_FOLDER_NAME",
    "InputsFolder",
    "Subject",
    "active_folder",
    "open_inputs_folder",
    "close_inputs_folder",
    "save_failure_inputs",
    "with_reproduction",
]

DEFAULT_CAP_BYTES: Final = 64 * 2**20
INPUTS_FOLDER_NAME: Final = "gradcheck-inputs"
_MAX_NAME_CHARS: Final = 120
_PLAIN_LEAVES: Final = (str, int, float, bool, complex, type(None))

R = TypeVar("R")


def _detached(value: Any) -> Any:
    """``value`` with every tensor detached and copied (its requires_grad kept); containers kept."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(_detached(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _detached(v)) for k, v in value.items())
    return value


def _size_and_plain(value: Any) -> tuple[int, bool]:
    """Bytes of the tensors in ``value``; whether ``torch.load``'s safe mode reads it back."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement(), True
    if isinstance(value, (tuple, list, dict)):
        items = value.values() if isinstance(value, dict) else value
        plain = type(value) in (tuple, list, dict)
        size = 0
        for item in items:
            item_size, item_plain = _size_and_plain(item)
            size += item_size
            plain = plain and item_plain
        return size, plain
    return 0, isinstance(value, _PLAIN_LEAVES)


def save_failure_inputs(inputs: Any, path: str | os.PathLike[str]) -> Path:
    """Save a check's inputs with ``torch.save``, so that ``torch.load(path)`` gives them back.

    Tensors are saved detached (their ``requires_grad`` kept), tuples, lists and
    dicts as they are. The file is written atomically: a reader never sees half
    of it. Under ``pytest --gradcheck`` a failed check does this by itself.

    Args:
        inputs: What the check was given: a tensor, a tuple/list or a dict.
        path: The file to write; its folder is created.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Examples:
        >>> import tempfile, torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> path = gk.save_failure_inputs((x, 2), tempfile.mkdtemp() + "/sin.pt")
        >>> loaded = torch.load(path)
        >>> torch.equal(loaded[0], x), loaded[0].requires_grad, loaded[1]
        (True, True, 2)
    """
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(_detached(inputs), stream)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "check"
    return name[:_MAX_NAME_CHARS]


@dataclass
class InputsFolder:
    """The folder failed checks save their inputs to during one run, and the room left.

    Args:
        folder: Where the files go (created on the first save).
        root: The project root: reproduce lines name files relative to it.
        cap_bytes: Bytes of tensors saved in all, at most; past it files are skipped.
        label: Says what is running (a test id), for the file names.

    Examples:
        >>> import tempfile, torch
        >>> folder = InputsFolder(Path(tempfile.mkdtemp()), cap_bytes=100)
        >>> folder.save("t.py::test_a", "sin", torch.zeros(4)).name   # 16 bytes
        't.py-test_a-sin.pt'
        >>> folder.save("t.py::test_a", "sin", torch.zeros(100))      # over the cap
        >>> folder.skipped
        1
    """

    folder: Path
    root: Path | None = None
    cap_bytes: int = DEFAULT_CAP_BYTES
    label: Callable[[], str | None] = lambda: None
    used_bytes: int = 0
    skipped: int = 0
    _names: set[str] = field(default_factory=set)

    def save(self, test: str | None, name: str, inputs: Any) -> Path | None:
        """Save ``inputs`` as ``<test>-<name>.pt`` (numbered when taken); ``None`` past the cap."""
        size, _ = _size_and_plain(inputs)
        if self.used_bytes + size > self.cap_bytes:
            self.skipped += 1
            return None
        stem = _safe_name(f"{test}-{name}" if test else name)
        candidate, number = stem, 1
        while candidate in self._names:
            number += 1
            candidate = f"{stem}-{number}"
        self._names.add(candidate)
        self.used_bytes += size
        return save_failure_inputs(inputs, self.folder / f"{candidate}.pt")

    def shown(self, path: Path) -> str:
        """``path`` as a reproduce line names it: relative to the root when inside it."""
        if self.root is not None:
            with contextlib.suppress(ValueError):
                return path.relative_to(self.root).as_posix()
        return str(path)


_active: list[InputsFolder] = []


def open_inputs_folder(folder: InputsFolder) -> None:
    """Make failed checks save their inputs to ``folder`` until :func:`close_inputs_folder`."""
    _active.append(folder)


def close_inputs_folder(folder: InputsFolder) -> None:
    """Stop saving to ``folder`` (a folder never opened is ignored)."""
    if folder in _active:
        _active.remove(folder)


def active_folder() -> InputsFolder | None:
    """The folder opened last and not closed yet, or ``None``."""
    return _active[-1] if _active else None


@dataclass(frozen=True)
class Subject:
    """What a check was called with, to re-run it: its subject, inputs and assert twin.

    Args:
        obj: The function (or module) checked.
        inputs: Its inputs, as given to the check.
        call: The ``assert_*`` function that re-runs the check and raises.
        binds: The name a pasted line binds ``obj`` to when it must be re-created.
        objects: Keyword arguments naming objects (``loss_fn``), referenced like ``obj``.
        literals: Keyword arguments written as literals (``wrt``).
        state: A module's ``state_dict`` to save with the inputs, else ``None``.
    """

    obj: Any
    inputs: Any
    call: str
    binds: str = "fn"
    objects: dict[str, Any] = field(default_factory=dict)
    literals: dict[str, Any] = field(default_factory=dict)
    state: Any = None


_SETTINGS: Final = ("mode", "dtype_policy", "eps", "atol", "rtol", "seed", "rng")


def _module_prelude(subject: Subject, ref: FunctionReference) -> tuple[str, ...]:
    """Statements that rebuild a module from its class and the saved ``state_dict``."""
    import inspect

    try:
        required = [
            p
            for p in inspect.signature(type(subject.obj)).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
    except (TypeError, ValueError):
        required = []
    if not ref.importable or required:
        return ()  # re-created by hand; its weights still come from the file
    return (f"module = {ref.expression}()",)


def with_reproduction(result: R, subject: Subject) -> R:
    """``result`` with its reproduce line, and its inputs saved if a folder is open.

    A passed result is returned unchanged. Saving is best effort: an input
    torch cannot save becomes a note, not an error of the check.
    """
    if getattr(result, "passed", True):
        return result
    folder = active_folder()
    notes = list(getattr(result, "notes", ()))
    root = folder.root if folder is not None else None
    is_module = subject.state is not None
    ref = function_reference(type(subject.obj) if is_module else subject.obj, root=root)
    inputs_file: str | None = None
    if folder is not None:
        payload = {"inputs": subject.inputs, "state_dict": subject.state} if is_module else None
        try:
            saved = folder.save(
                folder.label(), str(getattr(result, "name", "check")), payload or subject.inputs
            )
        except Exception as exc:  # the verdict matters more than the file
            saved = None
            notes.append(f"inputs not saved ({type(exc).__name__}: {exc})")
        else:
            if saved is None:
                notes.append(
                    f"inputs not saved: this run already saved {folder.used_bytes} bytes of "
                    f"inputs, the cap is {folder.cap_bytes} bytes"
                )
        if saved is not None:
            inputs_file = folder.shown(saved)
    settings = {key: getattr(result, key) for key in _SETTINGS if hasattr(result, key)}
    settings = {("dtype" if k == "dtype_policy" else k): v for k, v in settings.items()}
    settings.update(subject.literals)
    extra: dict[str, FunctionReference | str] = {
        key: function_reference(value, root=root, name=key)
        for key, value in subject.objects.items()
    }
    load = None
    if inputs_file is not None:
        _, plain = _size_and_plain(subject.inputs)
        load = f"torch.load({inputs_file!r}{'' if plain else ', weights_only=False'})"
    prelude: tuple[str, ...] = ()
    subject_ref = ref
    if is_module:
        # The module's class is imported and built again; its weights come from the file.
        prelude = _module_prelude(subject, ref)
        subject_ref = dataclasses.replace(ref, expression="module", importable=bool(prelude))
        if ref.importable and not prelude:
            subject_ref = dataclasses.replace(
                subject_ref, label=f"{ref.label}(...): its constructor takes arguments"
            )
        if load is not None:
            prelude += (f"saved = {load}", "module.load_state_dict(saved['state_dict'])")
            load = "saved['inputs']"
    line = reproduce_statement(
        subject.call,
        subject_ref,
        settings,
        load=load,
        extra=extra,
        binds=subject.binds,
        prelude=prelude,
    )
    return dataclasses.replace(  # type: ignore[type-var]
        result, inputs_file=inputs_file, reproduce=line, notes=tuple(notes)
    )

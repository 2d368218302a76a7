#!/usr/bin/env python
"""Peak memory a call adds, read from ``/proc`` in a worker subprocess.

The measurement needs nothing from the code under test: before the call the
worker writes ``5`` to ``/proc/self/clear_refs`` (which resets the peak resident
set size ``VmHWM`` to the current one) and reads ``VmRSS``; after it, it reads
``VmHWM``. The peak the call added is ``VmHWM - VmRSS_before``.

Freed memory must go back to the operating system between calls, or the next
call reuses it without raising the resident set size and its peak reads too
low. The worker therefore starts with ``MALLOC_MMAP_THRESHOLD_=65536`` (every
allocation of 64 KiB or more is its own mapping, unmapped on free; setting it
also switches off glibc's moving threshold) and a small ``MALLOC_TRIM_THRESHOLD_``
(the heap's free top is returned at once), and every measurement starts with
glibc's ``malloc_trim(0)`` (free pages inside the heap, between small live
objects, are returned too). ``--self-test`` checks that this works on the
machine at hand.

A runaway call cannot take the machine down: the worker caps its address space
(``RLIMIT_AS``) at what it held after start-up plus ``--memory-limit-gb``, so
allocations beyond fail (torch raises ``RuntimeError: ... can't allocate
memory``, Python ``MemoryError``). A worker that dies anyway (killed, crashed,
past the hard time limit) is recorded as such and restarted for the next call.

Protocol: the parent sends one JSON job per line on the worker's stdin; the
worker calls ``prepare(job)`` from the ``--runner`` (``module:function``; not
measured; it returns a zero-argument callable), measures the callable and
answers one JSON line on a private copy of its stdout (fd 1 itself is pointed
at stderr, so that prints of the code under test cannot garble the protocol).

Run ``python benchmarks/_peak_memory.py --self-test`` to validate the method.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent

WORKER_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "131072",
}
MIB = 1024 * 1024


# --------------------------------------------------------------------------- /proc


def read_status() -> dict[str, int]:
    """``Vm*`` lines of ``/proc/self/status``, in bytes."""
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key.startswith("Vm"):
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[key] = int(parts[0]) * 1024
    return values


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim(0)``); False if unavailable.

    Without it a large allocation can be served from a resident free hole in the
    middle of the heap (left by earlier small allocations), which raises no RSS.
    """
    if _MALLOC_TRIM is None or os.environ.get("PEAK_MEMORY_TRIM", "1") == "0":
        return False
    _MALLOC_TRIM(0)
    return True


class _Sampler:
    """Fallback where clear_refs is not available: poll VmRSS every millisecond."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, read_status().get("VmRSS", 0))
            time.sleep(0.001)

    def __enter__(self) -> _Sampler:
        self.peak = read_status().get("VmRSS", 0)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, read_status().get("VmRSS", 0))


class CallTimeout(BaseException):
    """Raised by the alarm inside the worker (a BaseException: ``except Exception`` lets it by)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with :class:`CallTimeout` (SIGALRM, main thread)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum: int, frame: object) -> None:
        raise CallTimeout(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, MemoryError) or "can't allocate memory" in text or ("out of memory" in text)
    )


def measure(call: Callable[[], Any], timeout: float = 0.0) -> dict[str, Any]:
    """Run ``call`` once and return the peak RSS it added (in this process).

    Returns a dict with ``peak_bytes``, ``rss_before``, ``hwm``, ``method``,
    ``seconds``, ``outcome`` (``ok``, ``timeout``, ``oom`` or ``error``), the
    callable's return value under ``result`` (when it is a dict), and ``message``.
    """
    gc.collect()
    trimmed = release_free_memory()
    use_clear_refs = reset_peak()
    before = read_status()
    start = time.perf_counter()
    record: dict[str, Any] = {"outcome": "ok"}
    sampler = contextlib.nullcontext() if use_clear_refs else _Sampler()
    try:
        with sampler, time_limit(timeout):
            result = call()
        if isinstance(result, Mapping):
            record["result"] = dict(result)
    except CallTimeout as exc:
        record.update(outcome="timeout", message=str(exc))
    except BaseException as exc:  # the worker must survive whatever the call raises
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        record.update(
            outcome="oom" if _is_oom(exc) else "error",
            message=f"{type(exc).__name__}: {first}",
        )
    seconds = time.perf_counter() - start
    after = read_status()
    hwm = after.get("VmHWM", 0) if use_clear_refs else sampler.peak  # type: ignore[union-attr]
    rss_before = before.get("VmRSS", 0)
    record.update(
        peak_bytes=max(0, hwm - rss_before),
        rss_before=rss_before,
        hwm=hwm,
        rss_after=after.get("VmRSS", 0),
        method=("clear_refs" if use_clear_refs else "sampled") + ("+trim" if trimmed else ""),
        seconds=round(seconds, 6),
    )
    return record


# --------------------------------------------------------------------------- worker side


def _resolve(spec: str) -> Callable[[dict[str, Any]], Callable[[], Any]]:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "prepare")


def _limit_address_space(limit_gb: float) -> int | None:
    """Cap the address space at the current size plus ``limit_gb``; the cap in bytes."""
    if limit_gb <= 0:
        return None
    size = read_status().get("VmSize", 0)
    cap = size + int(limit_gb * 1024**3)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap


def worker_main(runner: str, memory_limit_gb: float, threads: int, paths: list[str]) -> int:
    """Serve jobs from stdin until EOF (runs in the subprocess)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # prints of the code under test go to stderr
    sys.stdout = sys.stderr
    for p in paths:
        if p not in sys.path:
            sys.path.insert(0, p)
    prepare = _resolve(runner)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(threads)
    cap = _limit_address_space(memory_limit_gb)
    proto.write(json.dumps({"ready": True, "pid": os.getpid(), "as_cap": cap}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        timeout = float(job.pop("_timeout", 0) or 0)
        try:
            call = prepare(job)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            record = {
                "outcome": "oom" if _is_oom(exc) else "setup-error",
                "message": f"{type(exc).__name__}: {first}",
                "traceback": traceback.format_exc()[-2000:],
            }
        else:
            record = measure(call, timeout)
            del call
        gc.collect()
        proto.write(json.dumps(record) + "\n")
    return 0


# --------------------------------------------------------------------------- parent side


class PeakMemoryWorker:
    """A worker subprocess that measures jobs one at a time and is restarted when it dies.

    Args:
        runner: ``"module:function"``; ``function(job) -> callable`` prepares one job.
        memory_limit_gb: address-space headroom of the worker (0: no limit).
        threads: ``torch.set_num_threads`` in the worker.
        timeout: per-call limit inside the worker (SIGALRM; 0: none).
        grace: extra seconds the parent waits before it kills a worker that does not answer.
        paths: prepended to the worker's ``sys.path`` (the runner's folder is).
        log: file for the worker's stderr (default: discarded).
        warmup_job: a job sent (result discarded) after every start.
        env: extra environment variables (``WORKER_ENV`` is always set unless
            ``malloc_env=False``).
    """

    def __init__(
        self,
        runner: str,
        *,
        memory_limit_gb: float = 8.0,
        threads: int = 1,
        timeout: float = 120.0,
        grace: float = 60.0,
        paths: list[str] | None = None,
        log: str | os.PathLike[str] | None = None,
        warmup_job: dict[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        malloc_env: bool = True,
    ) -> None:
        self.runner = runner
        self.memory_limit_gb = memory_limit_gb
        self.threads = threads
        self.timeout = timeout
        self.grace = grace
        self.paths = [str(_HERE), *(paths or [])]
        self.log = log
        self.warmup_job = warmup_job
        self.env = dict(env or {})
        self.malloc_env = malloc_env
        self.starts = 0
        self.deaths: list[str] = []
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._log_fh: Any = None
        self._eof = False

    # -- lifecycle

    def _command(self) -> list[str]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--runner", self.runner]
        cmd += ["--memory-limit-gb", str(self.memory_limit_gb), "--threads", str(self.threads)]
        for p in self.paths:
            cmd += ["--path", p]
        return cmd

    def start(self) -> None:
        env = dict(os.environ)
        if self.malloc_env:
            env.update(WORKER_ENV)
        env.update(self.env)
        if self._log_fh is None and self.log is not None:
            self._log_fh = open(self.log, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_fh if self._log_fh is not None else subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the parent only
        )
        self.starts += 1
        hello = self._read(120.0)
        if hello is None or not hello.get("ready"):
            code = self._reap()
            raise RuntimeError(f"memory worker did not start ({code})")
        self.info = hello
        if self.warmup_job is not None:
            self._send(dict(self.warmup_job, _timeout=self.timeout))
            if self._read(self.timeout + self.grace) is None:
                code = self._reap()
                raise RuntimeError(f"memory worker died in its warm-up ({code})")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> PeakMemoryWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    def _send(self, job: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()

    def _read(self, wait: float) -> dict[str, Any] | None:
        """The next JSON line, or None when the worker died or did not answer in time."""
        assert self._proc is not None and self._proc.stdout is not None
        self._eof = False
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._proc.stdout], [], [], min(remaining, 1.0))
            if ready:
                line = self._proc.stdout.readline()
                if not line:
                    self._eof = True
                    return None
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(line)
            elif self._proc.poll() is not None:
                self._eof = True
                return None

    def _reap(self) -> str:
        """Stop the worker; describe how it ended."""
        proc, self._proc = self._proc, None
        if proc is None:
            return "not running"
        if self._eof:  # it closed its end: give it time to finish exiting
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            return "did not answer in time, killed"
        code = proc.returncode
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    # -- the one public call

    def measure(self, job: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Measure one job; the worker is (re)started as needed.

        The result always has ``outcome``: ``ok``, ``error``, ``setup-error``,
        ``oom``, ``timeout``, ``killed`` (the worker died, e.g. by the kernel's OOM
        killer or a signal), ``crashed`` (it exited) or ``hung`` (no answer within
        timeout + grace; killed). After the last three the worker is restarted.
        """
        limit = self.timeout if timeout is None else timeout
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                self._reap()
            self.start()
        self._send(dict(job, _timeout=limit))
        answer = self._read(limit + self.grace if limit > 0 else 1e9)
        if answer is not None:
            return answer
        how = self._reap()
        self.deaths.append(f"{json.dumps(job)}: {how}")
        if how.startswith("killed by"):
            outcome = "killed"
        elif how.startswith("did not answer"):
            outcome = "hung"
        else:
            outcome = "crashed"
        return {"outcome": outcome, "message": f"worker {how}", "peak_bytes": None}


# --------------------------------------------------------------------------- self-test


_KEEP: list[Any] = []


def _selftest_prepare(job: dict[str, Any]) -> Callable[[], Any]:
    """Runner of the self-test's jobs (imported by the worker)."""
    import torch

    kind = job["kind"]
    if kind == "noop":
        return lambda: {"done": True}
    if kind == "alloc":
        n = int(job["mb"] * MIB) // 8

        def alloc() -> dict[str, Any]:
            t = torch.ones(n, dtype=torch.float64)  # ones: every page is touched
            return {"sum": float(t[:10].sum())}

        return alloc
    if kind == "chunks":
        count, mb = int(job["count"]), float(job["mb"])

        def chunks() -> dict[str, Any]:
            keep = [torch.ones(int(mb * MIB) // 8, dtype=torch.float64) for _ in range(count)]
            return {"n": len(keep)}

        return chunks
    if kind == "fragment":
        # small tensors (under the mmap threshold: on the heap), every other one kept:
        # the heap is left full of resident free holes
        kb, count = int(job["kb"]), int(job["count"])
        tensors = [torch.ones(kb * 1024 // 8, dtype=torch.float64) for _ in range(count)]
        _KEEP.extend(tensors[::2])
        del tensors
        return lambda: {"kept": len(_KEEP)}
    if kind == "small":
        kb, count = int(job["kb"]), int(job["count"])

        def small() -> dict[str, Any]:
            keep = [torch.ones(kb * 1024 // 8, dtype=torch.float64) for _ in range(count)]
            return {"n": len(keep)}

        return small
    if kind == "kill":
        return lambda: os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exit":
        return lambda: os._exit(3)
    if kind == "sleep":
        return lambda: time.sleep(float(job["seconds"]))
    if kind == "hang":

        def hang() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(float(job["seconds"]))

        return hang
    raise ValueError(f"unknown self-test job {kind!r}")


def self_test(verbose: bool = True) -> bool:
    """Check the method on this machine; True when every check holds."""
    runner = "_peak_memory:_selftest_prepare"
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail))
        if verbose:
            print(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    def mb(rec: dict[str, Any]) -> float:
        return (rec.get("peak_bytes") or 0) / MIB

    with PeakMemoryWorker(runner, memory_limit_gb=2.0, timeout=5.0, grace=5.0) as w:
        noop = w.measure({"kind": "noop"})
        check("no-op call", noop["outcome"] == "ok" and mb(noop) < 4, f"{mb(noop):.2f} MB")
        big = w.measure({"kind": "alloc", "mb": 400})
        check("400 MB tensor", 390 <= mb(big) <= 420, f"{mb(big):.1f} MB (then freed)")
        after = w.measure({"kind": "alloc", "mb": 100})
        check(
            "100 MB tensor after the 400 MB one was freed",
            95 <= mb(after) <= 110,
            f"{mb(after):.1f} MB, RSS before {after['rss_before'] / MIB:.0f} MB "
            f"({after['method']})",
        )
        # medium chunks: glibc's default moving mmap threshold would put these on the heap
        many = w.measure({"kind": "chunks", "count": 100, "mb": 4})
        check("100 × 4 MB chunks", 390 <= mb(many) <= 420, f"{mb(many):.1f} MB")
        again = w.measure({"kind": "chunks", "count": 25, "mb": 4})
        check("25 × 4 MB chunks after those", 95 <= mb(again) <= 110, f"{mb(again):.1f} MB")
        w.measure({"kind": "fragment", "kb": 48, "count": 4000})
        holes = w.measure({"kind": "small", "kb": 40, "count": 1000})
        check(
            "1000 × 40 kB on a heap full of free 48 kB holes",
            36 <= mb(holes) <= 48,
            f"{mb(holes):.1f} MB ({holes['method']})",
        )
        oom = w.measure({"kind": "alloc", "mb": 3 * 1024})
        check(
            "3 GB with a 2 GB limit",
            oom["outcome"] == "oom",
            f"{oom['outcome']}: {oom.get('message', '')[:90]}",
        )
        slow = w.measure({"kind": "sleep", "seconds": 30})
        check("sleep past the timeout", slow["outcome"] == "timeout", slow["outcome"])
        starts = w.starts
        killed = w.measure({"kind": "kill"})
        check("worker killed by SIGKILL", killed["outcome"] == "killed", killed["message"])
        crashed = w.measure({"kind": "exit"})
        check("worker exits", crashed["outcome"] == "crashed", crashed["message"])
        hung = w.measure({"kind": "hang", "seconds": 60})
        check("worker ignores the alarm", hung["outcome"] == "hung", hung["message"])
        later = w.measure({"kind": "alloc", "mb": 100})
        check(
            "restarted worker measures again",
            later["outcome"] == "ok" and 95 <= mb(later) <= 110 and w.starts == starts + 3,
            f"{mb(later):.1f} MB, {w.starts} starts",
        )

    # informational: what the same sequences read without each precaution
    no_trim = {"PEAK_MEMORY_TRIM": "0"}
    with PeakMemoryWorker(
        runner, memory_limit_gb=2.0, timeout=10.0, malloc_env=False, env=no_trim
    ) as w:
        w.measure({"kind": "alloc", "mb": 16})
        first = w.measure({"kind": "chunks", "count": 100, "mb": 4})
        second = w.measure({"kind": "chunks", "count": 25, "mb": 4})
    with PeakMemoryWorker(runner, memory_limit_gb=2.0, timeout=10.0, env=no_trim) as w:
        w.measure({"kind": "fragment", "kb": 48, "count": 4000})
        untrimmed = w.measure({"kind": "small", "kb": 40, "count": 1000})
    if verbose:
        print(
            f"info  without {' '.join(WORKER_ENV)} and malloc_trim: "
            f"100 × 4 MB read {mb(first):.1f} MB, "
            f"25 × 4 MB after them read {mb(second):.1f} MB"
        )
        print(
            "info  without malloc_trim(0) before the measurement: 1000 × 40 kB on the "
            f"fragmented heap read {mb(untrimmed):.1f} MB"
        )
    failed = [name for name, ok, _ in results if not ok]
    if verbose:
        print(
            f"{len(results) - len(failed)}/{len(results)} checks hold"
            + (f"; failing: {', '.join(failed)}" if failed else "")
        )
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="validate the method here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runner", default="", help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit-gb", type=float, default=8.0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--path", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.runner, args.memory_limit_gb, args.threads, args.path)
    if args.self_test:
        return 0 if self_test() else 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())

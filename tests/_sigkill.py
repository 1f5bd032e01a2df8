"""Shared by the fault tests: start a child, SIGKILL it (and the processes it started) midway, report
what survived. The child's stderr is kept, so a child that failed says why in the assertion."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from emms.compute.store import Store


def sigkill_when(args: list[str], ready: Callable[[], bool], log: Path, timeout: float = 120.0) -> None:
    """Run ``python *args`` (one BLAS thread, its own process group, stderr to ``log``); SIGKILL the
    group as soon as ``ready()`` holds. Fails, quoting the child's stderr, if it never does."""
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready(), f"the child never got there (exit {child.poll()}); its stderr:\n{Path(log).read_text()[-3000:]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL


def sigkill_after_chunks(args: list[str], cache: Path, min_chunks: int = 3, timeout: float = 120.0) -> int:
    """Run ``python *args``; SIGKILL it once ``min_chunks`` chunks of an unfinished store entry in
    ``cache`` are saved. Returns the rows done of that (single, still incomplete) entry."""
    partial = Path(cache) / "emms-store-v1" / "partial"

    def ready() -> bool:
        return partial.is_dir() and sum(len(list(d.glob("*.json"))) for d in partial.iterdir()) >= min_chunks

    sigkill_when(args, ready, Path(cache).parent / "child.err", timeout)
    [entry] = Store(cache).entries()
    assert not entry["complete"]
    return entry["meta"]["rows_done"]

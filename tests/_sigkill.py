"""Shared by the fault tests: start a child that fills a store, SIGKILL it midway, report what survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from emms.store import Store


def sigkill_after_chunks(args: list[str], cache: Path, min_chunks: int = 3, timeout: float = 120.0) -> int:
    """Run ``python *args``; SIGKILL it once ``min_chunks`` chunks of an unfinished store entry in
    ``cache`` are saved. Returns the rows done of that (single, still incomplete) entry."""
    child = subprocess.Popen([sys.executable, *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = Path(cache) / "emms-store-v1" / "partial"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        if partial.is_dir() and sum(len(list(d.glob("*.json"))) for d in partial.iterdir()) >= min_chunks:
            break
        time.sleep(0.05)
    assert child.poll() is None, f"child ended before it could be killed: {child.communicate()}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    [entry] = Store(cache).entries()
    assert not entry["complete"]
    return entry["meta"]["rows_done"]

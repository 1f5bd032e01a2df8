"""benchmarks/gpu_check.py runs where there is no GPU (its CPU rows) and checks its own tolerances."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_its_cpu_rows_and_passes_its_tolerances():
    result = subprocess.run([sys.executable, str(SCRIPT), "--n", "3000", "--d", "16", "--width", "8", "--k", "2",
                             "--chunk-rows", "700", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert {"numpy, in memory (EMMS().fit)", "numpy, streamed chunks", "torch cpu float64"} <= set(rows)
    assert "FAIL" not in result.stdout

"""The CI sandbox (tests/sandbox/sitecustomize.py) really refuses reads under the forbidden folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SANDBOX = Path(__file__).parent / "sandbox"


def test_a_process_cannot_open_files_under_a_forbidden_folder(tmp_path):
    forbidden, allowed = tmp_path / "shared", tmp_path / "clone"
    for folder in (forbidden, allowed):
        folder.mkdir()
        (folder / "data.txt").write_text("x")
    code = (f"from pathlib import Path\nprint(Path(r'{allowed / 'data.txt'}').read_text())\n"
            f"Path(r'{forbidden / 'data.txt'}').read_text()")
    env = {**os.environ, "PYTHONPATH": str(SANDBOX), "EMMS_TEST_FORBIDDEN": str(forbidden)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "x"
    assert done.returncode == 1 and "test sandbox" in done.stderr and "PermissionError" in done.stderr

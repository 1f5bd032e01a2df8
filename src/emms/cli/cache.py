"""``emms cache ls`` / ``emms cache clear``: inspect and empty the feature/embedding store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from emms.cli._common import app, console, errors_as_exit, print_json

cache_app = typer.Typer(name="cache", help="Inspect or clear the cache of features and label embeddings.",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

_CACHE_HELP = "Cache directory (default $EMMS_CACHE or ~/.cache/emms)."


@cache_app.command("ls")
def ls(cache: Path = typer.Option(None, "--cache", help=_CACHE_HELP),
       as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON.")) -> None:
    """List cache entries: key, kind, shape, size, creation time and what produced them."""
    from emms.compute.store import Store

    with errors_as_exit():
        store = Store(cache)
        entries = store.entries()
        if as_json:
            print_json({"cache": str(store.root), "entries": entries})
            return
        table = Table(title=f"{store.root}: {len(entries)} entries, {_size(sum(e['bytes'] for e in entries))} "
                      "(keys shortened; --json for everything)", title_justify="left")
        for column in ("key", "kind", "shape", "size", "created", "source"):
            table.add_column(column, overflow="fold")
        for e in entries:
            meta = e["meta"]
            producer = str(meta.get("model") or meta.get("encoder") or "").split("|")[0]  # full identity: --json
            source = producer or (f"{meta['rows_done']} rows done" if "rows_done" in meta else "")
            if meta.get("data"):
                source += f" on {meta['data']}"
            table.add_row(e["key"][:12], e["kind"], "x".join(map(str, e["shape"] or [])) or "-", _size(e["bytes"]),
                          e["created"] or "-", source)
        console.print(table)


@cache_app.command("clear")
def clear(cache: Path = typer.Option(None, "--cache", help=_CACHE_HELP)) -> None:
    """Delete every cache entry (complete and unfinished)."""
    from emms.compute.store import Store

    with errors_as_exit():
        store = Store(cache)
        console.print(f"removed {store.clear()} entries from {store.root}", highlight=False)


def _size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"

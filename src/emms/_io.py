"""Small file-system helpers shared by the pipeline, the CLI and the caches: atomic writes and file hashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_HASH_BLOCK = 1 << 22
_CACHED_DIGESTS: dict[tuple[str, int, int], str] = {}


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: readers see the old
    file or the whole new one, never a partial write, and a failure leaves no file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def text_written_to(path: str | Path | None, text: str) -> str:
    """``text``, written atomically to ``path`` first if one is given (the ``to_json(path=None)`` idiom)."""
    if path is not None:
        atomic_write_text(Path(path), text)
    return text


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (64 hex) of a file's bytes, read every call (use it to verify data that may have changed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def cached_file_sha256(path: str | os.PathLike) -> str:
    """:func:`file_sha256`, memoised per process by (real path, size, mtime): a large weight file is read once."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _CACHED_DIGESTS:
        _CACHED_DIGESTS[key] = file_sha256(real)
    return _CACHED_DIGESTS[key]


def path_fingerprint(path: str | os.PathLike) -> str:
    """sha256 (first 16 hex) over the names, sizes and contents of a file or of a folder's files.

    A folder contributes every file below it (sorted, ``.cache`` folders skipped) by its relative
    name; a file by its own name. Contents are hashed with :func:`cached_file_sha256`.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    digest = hashlib.sha256()
    for file in files:
        name = file.name if file == root else str(file.relative_to(root))
        digest.update(f"{name}\0{file.stat().st_size}\0{cached_file_sha256(file)}\n".encode())
    return digest.hexdigest()[:16]

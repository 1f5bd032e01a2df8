"""F-labels: a task's labels embedded by K text encoders, with a disk cache and an .npz format.

Each distinct text is embedded once per encoder and expanded to samples by index
(:meth:`emms.flabels.kinds.FLabelTexts.expand`). With a :class:`emms.compute.store.Store`, the embeddings of a
text list are cached under ``Store.key(kind="text-embeddings", encoder=identity, texts=sha256)``
in resumable chunks, so a second call does not run the encoder at all.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emms._io import atomic_write_bytes
from emms.flabels.encoders.base import Progress, TextEncoder, check_texts
from emms.flabels.encoders.registry import encoder_names, load_encoder
from emms.errors import InputError, ResourceError
from emms.flabels.kinds import f_label_texts


@dataclass
class FLabels:
    """K label embeddings of the same N samples: ``arrays[k]`` is (N, L_k) float32 from ``encoder_ids[k]``.

    ``rows`` (N,) is the labels row whose input each sample uses (see :class:`emms.flabels.FLabelTexts`).
    """

    arrays: list[np.ndarray]
    encoder_ids: list[str]
    task: str
    rows: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.arange(self.arrays[0].shape[0] if self.arrays else 0, dtype=np.int64)

    @property
    def widths(self) -> list[int]:
        return [int(a.shape[1]) for a in self.arrays]


def embed_texts(encoder: TextEncoder, texts: Sequence[str], *, store=None, batch_size: int = 64,
                progress: Progress | None = None, chunk_rows: int = 512) -> np.ndarray:
    """(len(texts), dim) float32 embeddings; through ``store`` (cached, resumable) when given."""
    texts = check_texts(texts)
    if not texts:
        raise InputError("texts: expected at least one text, got none")
    if store is None:
        return encoder.encode(texts, batch_size=batch_size, progress=progress)
    digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()
    key = store.key(kind="text-embeddings", encoder=encoder.identity, texts=digest)
    meta = {"kind": "text-embeddings", "encoder": encoder.identity, "n_texts": len(texts)}
    return store.get_or_compute(key, len(texts), lambda a, b: encoder.encode(texts[a:b], batch_size=batch_size),
                                chunk_rows=chunk_rows, meta=meta, progress=progress)


def embed_f_labels(task: str, labels, class_names: list[str] | None = None,
                   encoders: str | Sequence[str | TextEncoder] = "offline", store=None, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None, *, batch_size: int = 64, **options) -> FLabels:
    """Embed ``labels`` of ``task`` with every encoder: K arrays (N, L_k).

    ``encoders``: a set name (``"offline"``, ``"paper"``), comma-separated names/specs, or a list of
    names, specs or loaded :class:`TextEncoder` objects. ``options`` go to
    :func:`emms.flabels.f_label_texts`. ``progress(done, total)`` counts distinct texts embedded (or
    read from the cache) over all encoders; total = n_distinct_texts * K.
    """
    flt = f_label_texts(task, labels, class_names, **options)
    loaded = resolve_encoders(encoders, device)
    total, done = len(flt.texts) * len(loaded), [0]

    def advance(n: int) -> None:
        done[0] += n
        progress(done[0], total)

    arrays = [flt.expand(embed_texts(enc, flt.texts, store=store, batch_size=batch_size,
                                     progress=None if progress is None else advance)).astype(np.float32, copy=False)
              for enc in loaded]
    return FLabels(arrays=arrays, encoder_ids=[e.identity for e in loaded], task=task, rows=flt.rows)


def resolve_encoders(encoders: str | Sequence[str | TextEncoder], device: str = "cpu") -> list[TextEncoder]:
    """Load the encoders named by a set, a comma-separated string, or a list of names/specs/encoders."""
    items = [encoders] if isinstance(encoders, str) else list(encoders)
    out: list[TextEncoder] = []
    for item in items:
        if isinstance(item, TextEncoder):
            out.append(item)
        elif not isinstance(item, str):
            raise InputError(f"encoders: expected names, specs or TextEncoder objects, got {type(item).__name__}")
        else:
            out.extend(load_encoder(name, device=device) for name in encoder_names(item))
    if not out:
        raise InputError("encoders: expected at least one encoder, e.g. 'offline'")
    return out


def save_f_labels(path: str | Path, flabels: FLabels, extra_meta: dict | None = None) -> None:
    """Write ``flabels`` to ``path`` (.npz) atomically: ``flabel_0..K-1``, ``rows`` and ``metadata``.

    ``metadata`` is a one-element string array holding JSON (task, encoder ids, widths, n_samples and
    ``extra_meta``), so the file loads with ``allow_pickle=False``.
    """
    path = Path(path)
    meta = {"format": "emms-flabels-v1", "task": flabels.task, "encoder_ids": flabels.encoder_ids,
            "widths": flabels.widths, "n_samples": int(flabels.rows.shape[0]), **(extra_meta or {})}
    buffer = io.BytesIO()
    np.savez(buffer, **{f"flabel_{k}": a for k, a in enumerate(flabels.arrays)}, rows=flabels.rows,
             metadata=np.array([json.dumps(meta)]))
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise ResourceError(f"out: cannot write {path} ({exc.strerror or exc})") from None


def load_f_labels(path: str | Path) -> FLabels:
    """Read an .npz written by :func:`save_f_labels` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"flabels: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["metadata"][0]))
            arrays = [data[f"flabel_{k}"] for k in range(len(meta["encoder_ids"]))]
            rows = data["rows"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"flabels: {path} is not an F-labels file written by 'emms embed' "
                         f"({type(exc).__name__}: {exc})") from None
    return FLabels(arrays=arrays, encoder_ids=list(meta["encoder_ids"]), task=str(meta["task"]), rows=rows)

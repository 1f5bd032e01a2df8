"""Build the bundled sample files in ``emms/resources/`` from their Debian sources.

A maintainer script, not part of the installed package: run once (the outputs are committed as
package data)::

    python benchmarks/build_samples.py --fashion-dir /usr/share/datasets/fashion-mnist \
        --fortunes-dir /usr/share/games/fortunes --out src/emms/resources

* ``fashion_mnist_sample.npz``: 500 images per class (5,000 of 28x28 uint8) drawn with seed 0 from
  the Fashion-MNIST **test** split (Debian package ``dataset-fashion-mnist``, upstream
  zalandoresearch/fashion-mnist, MIT/Expat licence), with the 10 class names and each image's
  index in the test split.
* ``text_topics.jsonl.gz``: 200 fortunes per category for six categories of the Debian
  ``fortunes`` package (BSD-style licence), each 20-300 characters long after whitespace
  normalisation, drawn with seed 0; one JSON object per line: text, label, source (category
  file and entry number).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

import numpy as np

from emms.data.fashion import FASHION_CLASSES, FASHION_MNIST_DIR, per_class_rows, read_idx

TOPICS = ("computers", "definitions", "people", "politics", "science", "work")


def fashion_sample(fashion_dir: Path, per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Stratified sample of the Fashion-MNIST test split: ``per_class`` images of each class."""
    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")
    chosen = per_class_rows(labels, per_class, seed, len(FASHION_CLASSES))
    return {"images": images[chosen], "labels": labels[chosen], "source_index": chosen.astype(np.int32),
            "class_names": np.array(FASHION_CLASSES)}


def fortune_entries(path: Path) -> list[str]:
    """The entries of one fortune file (separated by lines holding only ``%``), whitespace-normalised."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [" ".join(entry.split()) for entry in text.split("\n%\n")]


def topic_sample(fortunes_dir: Path, per_topic: int, seed: int) -> list[dict]:
    """``per_topic`` fortunes of 20-300 characters from each category in :data:`TOPICS`."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic in TOPICS:
        entries = fortune_entries(fortunes_dir / topic)
        usable = [i for i, entry in enumerate(entries) if 20 <= len(entry) <= 300]
        for i in sorted(rng.choice(usable, per_topic, replace=False).tolist()):
            rows.append({"text": entries[i], "label": topic, "source": f"fortunes/{topic}#{i}"})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-dir", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--fortunes-dir", type=Path, default=Path("/usr/share/games/fortunes"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "resources")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--per-topic", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "fashion_mnist_sample.npz", **fashion_sample(args.fashion_dir, args.per_class, args.seed))
    rows = topic_sample(args.fortunes_dir, args.per_topic, args.seed)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:  # mtime=0: byte-identical rebuilds
        handle.write(lines.encode("utf-8"))
    (args.out / "text_topics.jsonl.gz").write_bytes(buffer.getvalue())
    for name in ("fashion_mnist_sample.npz", "text_topics.jsonl.gz"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()

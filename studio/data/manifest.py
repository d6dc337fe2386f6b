"""The data manifest: what exactly was trained on, so a run can be audited and reproduced."""

from __future__ import annotations

import hashlib
from pathlib import Path

from studio.data.images import message_images
from studio.data.render import Encoded


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of every file in a directory in sorted order (a saved datasets folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def images_digest(examples) -> dict:
    """How many image files the examples name and one sha256 over their names and bytes: data.json pins the
    pictures as the dataset file's sha256 pins the text."""
    paths = sorted({p for e in examples if e.messages for p in message_images(e.messages)})
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return {"count": len(paths), "sha256": digest.hexdigest()}


def length_stats(encoded: list[Encoded]) -> dict:
    """Token-length statistics of encoded examples (after truncation)."""
    lengths = sorted(len(e.input_ids) for e in encoded)
    if not lengths:
        return {"count": 0}

    def pct(q: float) -> int:
        return lengths[min(len(lengths) - 1, int(q * (len(lengths) - 1) + 0.5))]

    return {
        "count": len(lengths),
        "min": lengths[0],
        "mean": round(sum(lengths) / len(lengths), 1),
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": lengths[-1],
        "tokens": sum(lengths),
        "trained_tokens": sum(e.trained_tokens for e in encoded),
    }

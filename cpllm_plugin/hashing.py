"""Content identity of files: one module, two hashes, chosen by what a match must prove.

- :func:`sha256_file`, the full sha256 of every byte. Use it where two files must be the
  same to the byte: model files checked against ``config.json``, the exported graphs, the
  training and evaluation manifests (a variant's ``sha256``) and the score cache keyed on it.
  Encodes are small there, and two of them can differ in a few bytes only (libx264 at CRF
  51 and 53 can give near-identical files): a sampled hash could call them the same.
- :func:`sampled_identity`, ``size:sha256`` of 16 pieces read evenly through the file. Use
  it for resume and cache keys of inputs that may be huge (a feature film): the ladder's
  probe cache and ``cpllm batch``'s resume key. It reads about 1 MiB whatever the size; the
  size and the spread pieces tell an edited or re-encoded input from the one that was seen.
  It is not proof that two files are equal: never use it to deduplicate encodes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sampled_identity(path: str | os.PathLike, chunks: int = 16, chunk: int = 1 << 16) -> str:
    """``size:sha256`` of ``chunks`` pieces read evenly through the file (fast on big files).

    Two files with the same name but other content differ; a renamed copy is the same. A file
    of at most ``chunks * chunk`` bytes is hashed whole.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        if size <= chunks * chunk:
            h.update(f.read())
        else:
            for i in range(chunks):
                f.seek((size - chunk) * i // (chunks - 1))
                h.update(f.read(chunk))
    return f"{size}:{h.hexdigest()[:32]}"

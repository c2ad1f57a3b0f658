"""What a batch runs over: the video paths named by lists, JSONL manifests, globs or the
videos themselves, and each input's content identity (resume keys on it)."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from pathlib import Path

from cpllm_plugin.errors import message
from cpllm_plugin.hashing import sampled_identity

from .errors import BatchInputError, BatchInputNotFoundError


def read_inputs(specs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Video paths named by ``specs``, in order, each once.

    Each spec is one of:

    - a text file of paths, one a line (blank lines and ``#`` comments skipped);
    - a JSONL manifest: one object a line with a ``path`` field;
    - a glob (``videos/**/*.mp4``; quote it for the shell);
    - a video file itself.

    A file is a list or a manifest when its head is text (no NUL byte, UTF-8); a manifest when
    its first entry starts with ``{``. Relative paths in a list or manifest start from the
    folder of that file.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    paths: list[str] = []
    for spec in specs:
        paths += _expand(str(spec))
    if not paths:
        raise BatchInputError(message("cpllm batch", "at least one input video",
                                      "none", "give a list, a manifest, a glob or video paths"))
    return list(dict.fromkeys(paths))


def _expand(spec: str) -> list[str]:
    p = Path(spec)
    if p.is_file():
        head = p.open("rb").read(4096)
        if b"\0" in head or not _utf8(head):
            return [spec]  # a video (binary), given directly
        return _read_list(p)
    if glob.has_magic(spec):
        found = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
        if not found:
            raise BatchInputNotFoundError(message(
                "cpllm batch", "a glob matching video files", f"{spec!r}, which matches none",
                "check the pattern (quote it so that the shell leaves it to cpllm)"))
        return found
    raise BatchInputNotFoundError(message(
        "cpllm batch", "an input list, a JSONL manifest, a glob or a video file",
        f"{spec!r}, which does not exist", "check the path"))


def _utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the head
    return True


def _read_list(p: Path) -> list[str]:
    lines = [(i, s.strip()) for i, s in enumerate(p.read_text("utf-8").splitlines(), 1)]
    lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
    manifest = bool(lines) and lines[0][1].startswith("{")
    out = []
    for i, s in lines:
        path = _manifest_path(p, i, s) if manifest else s
        out.append(path if os.path.isabs(path) else str(p.parent / path))
    return out


def _manifest_path(p: Path, line: int, text: str) -> str:
    try:
        row = json.loads(text)
    except ValueError as exc:
        raise BatchInputError(message(
            f"cpllm batch: {p}, line {line}", "a JSON object with a 'path' field",
            f"invalid JSON ({exc})", "write one JSON object per line")) from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"]:
        raise BatchInputError(message(
            f"cpllm batch: {p}, line {line}", "a JSON object with a 'path' field (a string)",
            text[:80], 'add "path": "videos/a.mp4" to every line'))
    return row["path"]


def identity(path: str) -> str:
    """The input's content identity (sampled: inputs may be huge, see
    :mod:`cpllm_plugin.hashing`); a path that cannot be read is known by its name."""
    try:
        return sampled_identity(path)
    except OSError:
        return f"path:{os.path.abspath(path)}"

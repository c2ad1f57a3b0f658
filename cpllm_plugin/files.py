"""Files in and out: the one check of an input path and the one way to write a file whole.

Every layer (runtime, integrations, training, export) uses these; the runtime holds them
because it imports from no other layer.

- :func:`check_input`: an input that is missing, a directory, not a file, empty or not
  readable raises a named error before anything opens it.
- :func:`atomic` / :func:`write_atomic`: write beside the target under a hidden temporary
  name, then rename over it (``os.replace``), so a file that exists is always complete,
  whatever interrupts the writer; :func:`replace_dir` does the same for a directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import CpllmError, VideoDecodeError, VideoNotFoundError, message

FIX_DECODE = (
    "check that the file plays (ffprobe FILE); re-mux it with `ffmpeg -i FILE -c copy "
    "fixed.mp4`, or re-encode it with `ffmpeg -i FILE -c:v libx264 -crf 18 fixed.mp4`"
)


def check_input(path: object, where: str,
                empty: type[CpllmError] = VideoDecodeError) -> str:
    """Return ``path`` as a string when it names a readable, non-empty file, or raise.

    Raises:
        VideoNotFoundError: ``path`` is not a path, does not exist, is a directory or
            something else that is not a file, or may not be read.
        ``empty`` (VideoDecodeError unless given): the file has 0 bytes.
    """
    try:
        name = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        raise VideoNotFoundError(message(
            where, "a path to a video file (str or os.PathLike)", f"a {type(path).__name__}",
            "pass the file's path, e.g. 'clip.mp4'")) from None
    if not os.path.exists(name):
        raise VideoNotFoundError(message(
            where, "an existing video file", f"{name!r}, which does not exist",
            f"check the path (relative paths start from {os.getcwd()!r})"))
    if not os.path.isfile(name):
        kind = "a directory" if os.path.isdir(name) else "something that is not a file"
        raise VideoNotFoundError(message(
            where, "a video file", f"{name!r}, which is {kind}",
            "pass the path of the video file itself"))
    if os.path.getsize(name) == 0:
        raise empty(message(where, "a video file", f"{name!r}, an empty file (0 bytes)",
                            FIX_DECODE))
    if not os.access(name, os.R_OK):
        raise VideoNotFoundError(message(
            where, "a readable video file", f"{name!r}, a file without read permission",
            "give the current user read access (chmod u+r FILE)"))
    return name


def atomic(dst: str | os.PathLike, make: Callable[[Path], object]) -> Path:
    """Run ``make(tmp)`` on a temporary file beside ``dst`` and rename it to ``dst`` only on
    success, so a ``dst`` that exists is always complete; the temporary file never stays.

    ``tmp`` exists (empty) when ``make`` is called, keeps ``dst``'s extension (ffmpeg, PyAV,
    Pillow and safetensors choose the format by it), starts with a dot (never listed as an
    output) and is unique, so concurrent writers of one ``dst`` never share it. It is made
    with the permissions of any new file (the umask's), not ``mkstemp``'s owner-only ones.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = dst.parent / f".{dst.stem}.{secrets.token_hex(4)}.part{dst.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        make(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def write_atomic(dst: str | os.PathLike, data: str | bytes | memoryview,
                 fsync: bool = False, newline: str | None = None) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``dst`` through :func:`atomic`.

    ``fsync``: flush it to the disk before the rename (a file others append to after).
    ``newline``: as for :func:`open` (``""`` writes ``\\n`` as it is on every platform).
    """
    def make(tmp: Path) -> None:
        text = isinstance(data, str)
        with open(tmp, "w" if text else "wb", encoding="utf-8" if text else None,
                  newline=newline if text else None) as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    return atomic(dst, make)


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing what is there.

    Everything is written next to the target first, so an interrupted save or export never
    leaves a half-written directory where a good one was.
    """
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)

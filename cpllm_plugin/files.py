"""Files in: the one check of an input path.

Every layer (runtime, integrations, training, export) uses these; the runtime holds them
because it imports from no other layer.

- :func:`check_input`: an input that is missing, a directory, not a file, empty or not
  readable raises a named error before anything opens it."""

from __future__ import annotations

import os

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

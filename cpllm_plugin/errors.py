"""The one error family of cpllm.

Every error a user can cause derives from :class:`CpllmError` and from the builtin
that matches it (``ValueError``, ``FileNotFoundError``, ...), so both
``except CpllmError`` and ordinary ``except ValueError`` code keep working.

Messages follow one shape, built by :func:`message`:
``<where>: expected <what>, got <what came>. Fix: <how>.``
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def message(where: str, expected: str, got: str, fix: str) -> str:
    """Compose the standard error text: where, what was expected, what came, how to fix."""
    return f"{where}: expected {expected}, got {got}. Fix: {fix}"


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a "did you mean" phrase for an unknown ``name`` (empty when nothing is close)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class CpllmError(Exception):
    """Base class of every error raised on purpose by cpllm."""


# --- frames given as arrays -------------------------------------------------------------


class FrameError(CpllmError, ValueError):
    """Frames handed to cpllm are not usable (base of the frame errors below)."""


class FrameDtypeError(FrameError, TypeError):
    """Frames have a dtype cpllm cannot read (expected uint8, or float in [0, 1])."""


class FrameShapeError(FrameError):
    """Frames do not have the shape ``(N, H, W, 3)`` / ``(H, W, 3)`` or frames differ in size."""


class EmptyInputError(FrameError):
    """No frames were given (an empty list, ``N == 0`` or a zero-sized frame)."""


class NonFiniteError(FrameError):
    """Float frames contain NaN or infinity, or values outside [0, 1]."""


# --- video files ------------------------------------------------------------------------


class VideoNotFoundError(CpllmError, FileNotFoundError):
    """A video path does not exist or is not a file."""


class NoVideoStreamError(CpllmError, ValueError):
    """A media file opened fine but holds no video stream (audio only, subtitles, ...)."""


class VideoDecodeError(CpllmError, ValueError):
    """A video file is truncated, corrupt or in a format that cannot be decoded."""


# --- models, names and installs ---------------------------------------------------------


class UnknownNameError(CpllmError, KeyError):
    """An unknown model, backbone, decoder or backend name; the message lists close names."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else ""


class MissingExtraError(CpllmError, ImportError):
    """An optional dependency is not installed; the message names the pip install."""


class ModelFileError(CpllmError, ValueError):
    """A model directory has missing, unreadable or corrupt files (checked by sha256)."""


class BackendError(CpllmError, RuntimeError):
    """A backend that was asked for explicitly cannot run here."""


def require(module: str, extra: str | None, where: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming the install that fixes it.

    ``extra`` is the cpllm-plugin extra providing the module, or None for core dependencies.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"extra {extra!r}" if extra else "a core dependency"
        fix = f"pip install 'cpllm-plugin[{extra}]'" if extra else "pip install cpllm-plugin"
        raise MissingExtraError(
            message(where, f"the Python package {module!r} ({what})", f"ImportError: {exc}", fix)
        ) from None

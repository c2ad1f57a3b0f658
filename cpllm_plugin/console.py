"""What every cpllm command prints besides its results, and how it exits.

One place for the console side of all console scripts (``cpllm``, ``cpllm-ladder``,
``cpllm batch``, ``cpllm-export``, ``cpllm-train``, ``cpllm-recipe``, the data commands):

- :func:`progress_printer`: progress lines on stderr (stdout carries results only);
- :func:`clock`: a duration as ``M:SS`` or ``H:MM:SS`` for progress bars and ETAs;
- :func:`run_command`: a command's body with the shared exit codes: 0 done, 1 a named
  error (:class:`~cpllm_plugin.errors.CpllmError`), 2 bad usage (click's, before the body
  runs), 130 interrupted (for the commands that clean up after Ctrl-C or SIGTERM).

The runtime holds it because the integrations, training and export all build on it.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from collections.abc import Callable

import click

from .errors import CpllmError

Progress = Callable[[str], None]


def progress_printer(progress: Progress | bool | None, prefix: str = "") -> Progress:
    """``True``: lines to stderr, each after ``prefix``; ``False``/None: nothing; a callable:
    itself (it gets the line without the prefix)."""
    if progress is True:
        return lambda line: print(f"{prefix}{line}", file=sys.stderr, flush=True)
    return progress or (lambda _: None)


def clock(seconds: float | None) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour; ``--:--`` for no time (None, NaN, infinity)."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60:d}:{s % 60:02d}"


def _show_warning(msg, category, *args, **kwargs) -> None:
    click.echo(f"warning: {msg}", err=True)


def run_command[T](body: Callable[[], T], *, as_json: bool = False,
                interrupted: str | None = None, stop: Callable[[], None] | None = None,
                show_warnings: bool = True) -> T:
    """Run a console command's ``body`` and exit the way every cpllm command does.

    Args:
        body: the command's work; its return value is passed on.
        as_json: a named error is printed as the NDJSON object ``{"type": "error", "error":
            <class name>, "message": ...}`` on stdout (the stream the command's rows go to)
            instead of an ``error: ...`` line on stderr.
        interrupted: the stderr line for Ctrl-C or SIGTERM, which then exit 130 (SIGTERM is
            handled as Ctrl-C while ``body`` runs). None leaves Ctrl-C to click ("Aborted!",
            exit 1) for commands with nothing to clean up.
        stop: called on SIGTERM and on Ctrl-C before the line is printed (stop child
            processes; context managers in ``body`` then remove their temporary files).
        show_warnings: print warnings as one ``warning: ...`` line on stderr, without the
            source line Python adds.

    Exits 1 on a :class:`~cpllm_plugin.errors.CpllmError`, 130 when interrupted (with
    ``interrupted``); anything else propagates (click turns its usage errors into exit 2).
    """
    if show_warnings:
        warnings.showwarning = _show_warning
    old, handled = None, interrupted is not None
    if handled:
        def term(signum, frame):
            if stop is not None:
                stop()
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, term)
    try:
        return body()
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        if stop is not None:
            stop()
        click.echo(interrupted, err=True)
        sys.exit(130)
    except CpllmError as exc:
        if as_json:
            click.echo(json.dumps({"type": "error", "error": type(exc).__name__,
                                   "message": str(exc)}))
        else:
            click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        if handled:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)

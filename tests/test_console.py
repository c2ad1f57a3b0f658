"""The console side shared by every command: exit codes, error lines, progress, clock."""

import json
import signal
import warnings

import click
import pytest
from click.testing import CliRunner

from cpllm_plugin.console import clock, progress_printer, run_command
from cpllm_plugin.errors import VideoNotFoundError


def _command(body, **kw):
    @click.command()
    def cmd():
        click.echo(f"result {run_command(body, **kw)}")

    return cmd


def _fail():
    raise VideoNotFoundError("score(): expected a file, got none. Fix: check the path")


def _interrupt():
    raise KeyboardInterrupt


def test_success_passes_the_result_on():
    r = CliRunner().invoke(_command(lambda: 42))
    assert r.exit_code == 0 and r.stdout == "result 42\n"


def test_a_named_error_is_one_stderr_line_and_exit_1():
    r = CliRunner().invoke(_command(_fail))
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == "error: score(): expected a file, got none. Fix: check the path\n"


def test_a_named_error_with_json_is_an_ndjson_object_on_stdout():
    r = CliRunner().invoke(_command(_fail, as_json=True))
    assert r.exit_code == 1 and r.stderr == ""
    assert json.loads(r.stdout) == {"type": "error", "error": "VideoNotFoundError",
                                    "message": "score(): expected a file, got none. Fix: "
                                               "check the path"}


def test_interrupted_stops_prints_the_line_exits_130_and_restores_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    stopped = []
    r = CliRunner().invoke(_command(_interrupt, interrupted="x: interrupted",
                                    stop=lambda: stopped.append(1)))
    assert r.exit_code == 130 and r.stderr == "x: interrupted\n" and stopped == [1]
    assert signal.getsignal(signal.SIGTERM) is before


def test_without_interrupted_ctrl_c_is_left_to_click():
    r = CliRunner().invoke(_command(_interrupt))
    assert r.exit_code == 1 and "Aborted!" in r.stderr


def test_usage_errors_stay_exit_2():
    def usage():
        raise click.UsageError("an LSVQ-style CSV needs --video-dir")

    assert CliRunner().invoke(_command(usage)).exit_code == 2


def test_warnings_become_one_line():
    def warn():
        warnings.warn("odd input", stacklevel=1)

    old = warnings.showwarning
    try:
        r = CliRunner().invoke(_command(warn))
    finally:
        warnings.showwarning = old
    assert r.exit_code == 0 and r.stderr == "warning: odd input\n"


def test_progress_printer(capsys):
    progress_printer(True, "cpllm batch: ")("3 to run")
    progress_printer(False)("nothing")
    progress_printer(None)("nothing")
    seen = []
    progress_printer(seen.append, "ignored: ")("line")
    assert capsys.readouterr().err == "cpllm batch: 3 to run\n" and seen == ["line"]


@pytest.mark.parametrize("seconds, text", [(None, "--:--"), (float("nan"), "--:--"),
                                           (float("inf"), "--:--"), (0, "0:00"),
                                           (42.4, "0:42"), (3599.6, "1:00:00"),
                                           (3725, "1:02:05")])
def test_clock(seconds, text):
    assert clock(seconds) == text

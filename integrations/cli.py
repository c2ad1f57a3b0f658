"""``cpllm-ladder``: pick a CRF by predicted quality, encode with it, per scene.

stdout carries results only (a table, or NDJSON with ``--json``); progress, warnings and
hints go to stderr. Exit codes: 0 done, 1 a named error (bad input, no CRF meets the
target, ffmpeg failed, ...), 2 bad usage, 130 interrupted (Ctrl-C or SIGTERM; temporary
files are removed and no partial output remains).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from cpllm_plugin.configs import DEFAULT_MODEL
from cpllm_plugin.console import progress_printer, run_command

from . import ffmpeg as ff
from . import ladder as lad


def _shipped_drop(name: str = DEFAULT_MODEL) -> str:
    """The packaged model's calibrated drop, for the help text (read, never hard-coded:
    every model version has its own)."""
    from cpllm_plugin.configs import packaged

    d = packaged(name)
    drop = lad.calibrated_drop(lad.read_calibration(d)) if d else None
    return "none shipped" if drop is None else f"{drop:.3f}"


def _kv(ctx, param, values):
    out = []
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE (e.g. --enc tune=film), got {v!r}")
        out.append((key.lstrip("-"), val))
    return tuple(out)


def _range(ctx, param, value):
    if value is None:
        return None
    lo, sep, hi = value.partition(":")
    try:
        return int(lo), int(hi)
    except ValueError:
        raise click.BadParameter(f"expected LOW:HIGH (e.g. 18:40), got {value!r}") from None


def pick_options(f):
    """The options of a pick: encoder, target, samples, model, output. Shared by every
    ``cpllm-ladder`` subcommand and by batch jobs (one definition)."""
    opts = [
        click.option("--mode", type=click.Choice(lad.MODES), help="auto: VMAF against the "
                     "input at a level set by how the input was made (95 for a master, "
                     "lower for an earlier lossy encode), capped where the model sees the encode "
                     "lose what the input had (--guard); vmaf: VMAF against the input at "
                     "--min-vmaf (ab-av1's crf-search); predict: no reference and no VMAF "
                     "runs, a CRF predicted from one probe and the input's stream (libx264, "
                     "libx265, libsvtav1: the encoders the model has a rule for); "
                     "score: the model's predicted score against a target, no reference. "
                     "Default: score with --min-score or --max-drop, vmaf with --min-vmaf, "
                     "else auto."),
        click.option("-e", "--encoder", default="libx264", show_default=True,
                     type=click.Choice(sorted(ff.ENCODERS)), help="ffmpeg video encoder."),
        click.option("--preset", help="Encoder preset (default: the encoder's usual one)."),
        click.option("--enc", "options", multiple=True, callback=_kv, metavar="KEY=VALUE",
                     help="Extra encoder option, passed as -KEY VALUE (repeatable)."),
        click.option("--pix-fmt", help="Output pixel format (default: the input's)."),
        click.option("--vfilter", help="ffmpeg filter chain (scale, crop) for probes and "
                     "the final encode alike."),
        click.option("--crf-range", callback=_range, metavar="LOW:HIGH",
                     help="CRFs searched (default: the encoder's, libx264 15:51)."),
        click.option("--min-score", type=click.FloatRange(1, 5),
                     help="Absolute target on the 1-5 scale (default: the model's score at "
                     "VMAF 95 on clean sources)."),
        click.option("--min-vmaf", type=float, help="Absolute target given as a VMAF level, "
                     "mapped to a score by the model's calibration."),
        click.option("--max-drop", type=click.FloatRange(0, 4, min_open=True),
                     help="Target at most this far below the source's own score (the "
                     "target is the lower of --min-score and source - D). Default: the "
                     "model's calibrated fall of a clean source at VMAF 95 (cpllm-lite: "
                     f"{_shipped_drop()}), else {lad.DEFAULT_MAX_DROP:g}."),
        click.option("--no-max-drop", is_flag=True, help="The target is --min-score even "
                     "for a source below it."),
        click.option("--samples", "count", type=click.IntRange(1, 100),
                     help="Samples spread over the input (default: from its length)."),
        click.option("--sample-seconds", type=click.FloatRange(0.2, min_open=False),
                     help=f"Length of each sample (default {lad.SAMPLE_SECONDS:g} s)."),
        click.option("--key-frames", type=click.IntRange(1, 64),
                     help=f"Key frames scored per sample (default {lad.KEY_FRAMES}; an input "
                     "short enough to be one sample: 4 a second; --mode predict: at most "
                     "its rule's, 5 with libx264)."),
        click.option("--pool", type=click.Choice(lad.POOLS), default="mean", show_default=True,
                     help="Pool frame scores over key frames and samples."),
        click.option("--max-probes", type=click.IntRange(2, 40), default=lad.MAX_PROBES,
                     show_default=True, help="Most probe encodes of the search."),
        click.option("--guard", type=float, metavar="D", help="--mode auto: never pick "
                     "above the CRF where the model's score falls D below its score of the "
                     f"input (default {lad.AUTO_GUARD:g}; 0 turns the cap off). Not on an "
                     f"input whose bitrate reads as an untouched master ({lad.AUTO_SPARE:g} "
                     "times the bits of its re-encode at the VMAF-95 crossing, or more)."),
        click.option("--drop-noise", is_flag=True, help="--mode auto: the input's noise is "
                     "not worth its bits (sensor noise in uploads, not a master's film grain): "
                     f"on an input that reads as noisy (luma noise {lad.AUTO_LIFT_NOISE:g} or "
                     "more) the pick goes up to where the model's score holds within "
                     f"{lad.AUTO_LIFT:g} of its score of the input, and the encode smooths the "
                     "noise away. Off by default: it takes a grainy master's grain too."),
        click.option("--keep/--no-keep", default=True, show_default=True,
                     help="Where the pick needs more bits than the input has and the input is "
                     "in a codec the tool encodes (H.264, HEVC, AV1, VP9; no --vfilter, same "
                     "--pix-fmt), keep the input: the pick says so and encode copies its "
                     "video stream."),
        click.option("--keep-any-codec/--keep-same-codec", default=True, show_default=True,
                     help="Keep an input in any of those codecs, as ab-av1's gate leaves any "
                     "input it would not shrink; --keep-same-codec: only one already in the "
                     "encoder's format, for a catalog that needs its own."),
        click.option("--max-encoded-percent", type=click.FloatRange(0, min_open=True),
                     metavar="P", help="Refuse a pick whose bitrate is more than P% of the "
                     "input's (ab-av1's flag; exit 1, nothing encoded). Default: any."),
        click.option("--vmaf", is_flag=True, help="Also measure VMAF of each probe against "
                     "the source (full reference, side by side)."),
        click.option("--json", "as_json", is_flag=True, help="NDJSON on stdout."),
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help="Model name or directory."),
        click.option("--backend", default="auto", show_default=True,
                     type=click.Choice(["auto", "onnxruntime", "tensorrt", "torch"])),
        click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
                     help=f"Probe cache folder (default {lad.default_cache()})."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the cache."),
        click.option("--ffmpeg", envvar="CPLLM_FFMPEG",
                     help="ffmpeg binary (default: imageio-ffmpeg's; env CPLLM_FFMPEG)."),
        click.option("--temp-dir", type=click.Path(path_type=Path),
                     help="Where probe encodes are made (default: the system's)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress on stderr."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _options(f):
    return click.argument("input", type=click.Path(path_type=Path))(pick_options(f))


class Run:
    """One invocation: the resolved :class:`~.ladder.Job` and how results are printed."""

    def __init__(self, kw: dict, command: str):
        self.kw = kw
        self.as_json = kw["as_json"]
        say = progress_printer(not kw["quiet"], "cpllm-ladder: ")
        self.job = lad.Job(kw["input"], lad.PickOptions.from_flags(kw), progress=say,
                           where=f"cpllm-ladder {command}")
        self.source, self.settings = self.job.source, self.job.settings

    def emit(self, obj: dict) -> None:
        if self.as_json:
            click.echo(json.dumps(obj))


def _guard(command: str):
    """Named errors -> message and exit 1 (NDJSON ``error`` with --json); SIGTERM and Ctrl-C
    -> ffmpeg stopped, temporary files removed by the context managers, exit 130."""

    def wrap(f):
        @functools.wraps(f)
        def run(**kw):
            run_command(lambda: f(**kw), as_json=kw.get("as_json", False),
                        interrupted="cpllm-ladder: interrupted; temporary files removed",
                        stop=ff.stop_all)

        return run

    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pick a video's CRF by CP-LLM's predicted quality (no reference needed)."""


def _pick(run: Run, plot: Path | None) -> lad.Pick:
    # Probes are reported also when no CRF meets the target.
    result = run.job.pick(on_probe=lambda p: run.emit(p.to_dict()))
    if plot:
        from .plot import plot_ladder

        plot_ladder(result, plot, title=run.source.path.name)
    return result


def _report(run: Run, result: lad.Pick) -> lad.Pick:
    """The pick on stdout: its NDJSON object, or the table."""
    if run.as_json:
        run.emit(result.to_dict())
    else:
        _table(run, result)
    return result


def _table(run: Run, result: lad.Pick) -> None:
    t = result.target
    note = run.job.target_note
    how = (f"VMAF {t.value:g} against the input ({t.rule})" if t.measure == "vmaf" else
           f"none, no reference ({t.rule})" if t.measure == "crf" else
           f"{t.min_score:.3f} ({note})" if t.rule == "min-score" else
           f"{t.value:.3f} = source {t.source_score:.3f} - max-drop {t.max_drop:g} "
           f"(source below {t.min_score:.3f}, {note})")
    vm = any(p.vmaf is not None for p in result.probes)
    click.echo(f"{run.source.path.name}: {' '.join(result.encoder_args)}")
    click.echo(f"source score {result.source_score:.3f}   target {how}")
    click.echo(f"{'crf':>4} {'score':>7}" + (f" {'vmaf':>6}" if vm else "")
               + f" {'kb/s':>9} {'predicted size':>15} {'time':>7}")
    for p in result.probes:
        mark = "  <- pick" if p.crf == result.crf else ""
        cached = " (cache)" if p.from_cache else ""
        if p.preset is not None:  # predict's probe, at the rule's preset, not the encode's
            cached += f" (preset {p.preset})"
        score = f"{p.score:>7.3f}" if p.score is not None else f"{'-':>7}"  # not scored
        click.echo(f"{p.crf:>4} {score}"
                   + (f" {p.vmaf:>6.2f}" if vm and p.vmaf is not None else
                      (f" {'':>6}" if vm else ""))
                   + f" {p.kbps:>9.1f} {_size(p.predicted_size):>15} {p.seconds:>6.1f}s"
                   + cached + mark)
    vmaf = f", VMAF {result.vmaf:.2f}" if result.vmaf is not None else ""
    score = f"score {result.score:.3f}{vmaf}"
    if result.crf not in {p.crf for p in result.probes}:
        # predict mode encodes its probe only: say what the numbers are of.
        score = "not encoded: size estimated from the probe, score the probe's"
    share = (f", {result.encoded_percent:g}% of the input's bitrate"
             if result.encoded_percent is not None else "")
    click.echo(f"pick: CRF {result.crf}  {score}  "
               f"~{result.predicted_kbps:g} kb/s{share}, predicted "
               f"{_size(result.predicted_size)} ({result.encodes} encodes)")
    if result.keep:
        other = run.source.codec != run.settings.table.codec
        click.echo(f"keep: the input as it is ({run.source.codec}, {result.input_kbps:g} "
                   f"kb/s): CRF {result.crf} needs more bits and keeps at most what it has; "
                   "encode copies its video (--no-keep re-encodes"
                   + (f"; --keep-same-codec re-encodes an input not in "
                      f"{run.settings.encoder}'s format)" if other else ")"))


def _target(p) -> str:
    """A shot's target as the table prints it: a score, or a VMAF level against the input."""
    return (f"{p.target:.3f}" if p.measure == "score" else
            f"CRF~{p.target:.1f}" if p.measure == "crf" else f"VMAF {p.target:g}")


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@main.command("pick")
@_options
@click.option("--full", is_flag=True, help="Probe all 20 levels (libx264: the paper's "
              "15..53), for reference and plots.")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False),
              help="PNG of score (and VMAF) against CRF with the target and the pick.")
@_guard("pick")
def pick_cmd(full, plot, **kw):
    """Choose the highest CRF whose predicted quality meets the target."""
    run = Run({**kw, "full": full}, "pick")
    _report(run, _pick(run, plot))


def _shot_options(f):
    """Shot detection options of ``encode --per-scene`` and ``scenes``."""
    f = click.option("--min-shot", type=click.FloatRange(0.1), default=1.0, show_default=True,
                     help="Shots shorter than this many seconds join a neighbour.")(f)
    return click.option("--threshold", type=click.FloatRange(0, 100), default=None,
                        help="Shot-cut threshold (ffmpeg scdet score).")(f)


@main.command("encode")
@_options
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The file to write; its extension picks the container.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--crf", type=int, help="Skip the search and encode at this CRF.")
@click.option("--per-scene", is_flag=True, help="Detect shots, pick a CRF per shot and "
              "encode with them (x264: zones in one pass; others: chunks joined).")
@click.option("--chunks", is_flag=True, help="With --per-scene and libx264: encode each shot "
              "as a chunk and join them instead of zones (each shot then gets the quality its "
              "probes measured; zones share x264's rate control across the cuts).")
@_shot_options
@_guard("encode")
def encode_cmd(output, force, crf, per_scene, chunks, threshold, min_shot, **kw):
    """Pick a CRF (or one per scene), then encode the whole input with it.

    Audio, subtitles, chapters and metadata are copied. The encode is written beside OUTPUT
    under a temporary name and renamed on success; Ctrl-C leaves no partial file.
    """
    from . import encode as enc

    enc.check_output(Path(kw["input"]), output, force)  # before minutes of probing, not after
    run = Run(kw, "encode")
    run.job.holds = enc.holds(output)
    scenes, keep = None, False
    if per_scene:
        picks = _scene_picks(run, threshold, min_shot)
        scenes = [(p.shot.start, p.shot.end, p.crf) for p in picks]
    elif crf is None:
        picked = _report(run, _pick(run, None))
        crf = None if picked.keep else picked.crf
        keep = picked.keep
    bar = None if kw["quiet"] else enc.progress_bar(sys.stderr)
    done = enc.encode_file(run.source.path, output, run.settings, crf, scenes=scenes,
                           force=force, ffmpeg=kw["ffmpeg"], progress=bar, chunks=chunks,
                           keep=keep)
    if run.as_json:
        run.emit(done.to_dict())
    else:
        what = (f"CRF {crf}" if crf is not None else "the input's video kept" if keep
                else f"{len(scenes)} scene CRFs")
        click.echo(f"wrote {done.output} ({what}): {_size(done.bytes)}, {done.kbps:g} kb/s, "
                   f"{done.seconds:.1f} s")


def _scene_picks(run: Run, threshold, min_shot):
    from . import scenes as sc

    job, o = run.job, run.job.options
    shots = sc.detect_shots(job.source.path, o.ffmpeg,
                            **({"threshold": threshold} if threshold is not None else {}),
                            min_seconds=min_shot, progress=job.say)
    job.say(f"{len(shots)} shot(s)")
    picks = sc.pick_scenes(job.source, shots, job.settings, job.scorer, job.min_score,
                           job.max_drop, o.pool, job.cache, o.ffmpeg, o.vmaf, job.say,
                           o.max_probes, job.mode, job.vmaf_level, o.guard, o.drop_noise)
    for p in picks:
        run.emit(p.to_dict())
    if o.max_encoded_percent is not None:
        from .stream import stats

        kbps = sc.summary(picks, job.settings.encoder)["predicted_kbps"]
        job.check_size(kbps, stats(job.source.path).kbps, f"{len(picks)} shot CRFs")
    return picks


@main.command("scenes")
@_options
@_shot_options
@_guard("scenes")
def scenes_cmd(threshold, min_shot, **kw):
    """Detect shots and pick a CRF per shot; print them and x264 zones."""
    from . import scenes as sc

    run = Run(kw, "scenes")
    picks = _scene_picks(run, threshold, min_shot)
    if run.as_json:
        run.emit(sc.summary(picks, run.settings.encoder))
        return
    click.echo(f"{'shot':>4} {'start':>8} {'end':>8} {'frames':>7} {'crf':>4} {'score':>7} "
               f"{'source':>7} {'target':>9} {'kb/s':>9}")
    for p in picks:
        flag = "" if p.met else "  (target not met: lowest CRF tried)"
        click.echo(f"{p.index:>4} {p.shot.start:>8.2f} {p.shot.end:>8.2f} {p.shot.frames:>7} "
                   f"{p.crf:>4} {p.score:>7.3f} {p.source_score:>7.3f} {_target(p):>9} "
                   f"{p.predicted_kbps:>9.1f}{flag}")
    click.echo(f"one CRF meeting the target in every shot: {sc.single_crf(picks)}")
    if sc.has_zones(run.settings.encoder):
        click.echo(f"x264 zones: {sc.zones(picks, run.settings.encoder)}")
    else:
        click.echo(f"{run.settings.encoder} has no CRF zones: encode --per-scene encodes "
                   "each shot as a chunk at its CRF")

if __name__ == "__main__":
    main()

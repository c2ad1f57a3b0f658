"""Per-shot CRFs against one CRF for the whole clip: bytes saved at the same minimum score.

    python bench/bench_scenes.py                       # 8 Big Buck Bunny shots, 720p, 16 s
    python bench/bench_scenes.py --clips 5 --size 640x360 --json
    python bench/bench_scenes.py --source "$(find data/full -name bbb.mp4)" --start 60 --seconds 60

The clip is real multi-shot footage. With ``--source``, a contiguous stretch of any video
(``--start``, ``--seconds``; the whole Big Buck Bunny film ships in moviepy's sdist, which
the corpus stage downloads), with the cuts as the editor made them. By default: the
corpus's 2 s Big Buck Bunny originals (``DATA/corpus/originals/bbb_*.mp4``, ``--data``
as for ``cpllm-recipe``, default ``data/recipe``; 1280x720 24 fps, about 7 Mb/s) joined into
one near-lossless file (x264 CRF 8) in a temporary folder; some of them hold cuts of their own.
Then, with the bundled cpllm-lite on ONNX Runtime, the target at the model's VMAF-95
score (its ``calibration.json``) and the CLI's default ``--max-drop`` (the calibrated drop)
for shots whose source already scores near or below it:

1. shots: :func:`~cpllm_plugin.integrations.scenes.detect_shots`;
2. picks: :func:`~cpllm_plugin.integrations.scenes.pick_scenes`, one ladder per shot;
3. three encodes of the whole clip with the ladder's settings (libx264, preset medium):
   ``single`` at :func:`single_crf` (the one CRF meeting the target in every shot),
   ``per-scene`` with each shot encoded alone at its CRF and the pieces joined
   (``-c copy``), and ``zones``: one encode with x264's zones set to the per-shot CRFs;
4. each shot's part of each encode is scored again (cut losslessly, the same key frames
   as the pick), so the claim "same minimum score, fewer bytes" is measured, not assumed:
   ``min score`` is the lowest shot score of an encode, ``min margin`` the lowest of
   (shot score - that shot's target); 0 or more means every shot meets its target.

The machine is described first; wall times of every step are printed. Progress goes to
stderr.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click
from machine import describe  # bench/ is on sys.path: these run as scripts

from cpllm_plugin.integrations import ffmpeg as ff
from cpllm_plugin.integrations.ladder import (
    DEFAULT_MAX_DROP,
    Ladder,
    Scorer,
    Settings,
    plan_samples,
    vmaf_to_score,
)
from cpllm_plugin.integrations.scenes import (
    detect_shots,
    pick_scenes,
    single_crf,
    window,
    zones,
)
from cpllm_plugin.video import probe

ROOT = Path(__file__).resolve().parents[1]
# Different scenes of the film; spikes, rodents and flower hold cuts of their own.
CLIPS = ("meadow", "butterfly", "spikes", "rock", "flower", "squirrel", "rodents", "credits",
         "burrow", "stump")


def build_clip(out: Path, files: list[Path], size: str, exe: str) -> Path:
    """Join the originals into one near-lossless clip at one size and 24 fps."""
    w, h = size.split("x")
    missing = [f for f in files if not f.is_file()]
    if missing:
        sys.exit(f"missing {missing[0]}: run cpllm-recipe --stage corpus (or pass --data)")
    # encode_args adds the last input itself; the others go before it.
    inputs = [a for path in files[:-1] for a in ("-i", str(path))]
    parts = [f"[{i}:v]scale={w}:{h}:flags=lanczos,fps=24,setsar=1,format=yuv420p[v{i}]"
             for i in range(len(files))]
    graph = ";".join(parts) + ";" + "".join(f"[v{i}]" for i in range(len(files))) + (
        f"concat=n={len(files)}:v=1[v]")
    ff.run_ffmpeg(ff.encode_args(exe, files[-1], out, 8, preset="fast", inputs=inputs,
                                 graph=graph, video="[v]", fps_mode=None),
                  "bench_scenes: building the clip")
    return out


def cut_segment(out: Path, source: Path, start: float, seconds: float, size: str,
                exe: str) -> Path:
    """A contiguous stretch of ``source`` as one near-lossless clip at one size and 24 fps."""
    w, h = size.split("x")
    ff.run_ffmpeg(ff.encode_args(
        exe, source, out, 8, preset="fast", inputs=["-ss", f"{start:g}", "-t", f"{seconds:g}"],
        streams=["-an", "-sn"], fps_mode=None,
        vfilter=f"scale={w}:{h}:flags=lanczos,fps=24,setsar=1,format=yuv420p"),
        "bench_scenes: cutting the segment")
    return out


def encode(exe: str, src: Path, out: Path, settings: Settings, crf: int,
           extra: list[str] | None = None, cut: tuple[float, float] | None = None) -> Path:
    """One encode with the ladder's settings and thread count (a whole-sample probe's)."""
    threads = ff.threads_per_job(1)
    seek = ["-ss", f"{cut[0]:.4f}", "-t", f"{cut[1] - cut[0]:.4f}"] if cut else []
    ff.run_ffmpeg(settings.command(exe, src, out, crf, threads,
                                   inputs=["-threads", str(threads), *seek], outputs=extra or []),
                  f"bench_scenes: encoding {out.name}")
    return out


def join(exe: str, parts: list[Path], out: Path) -> Path:
    """Concatenate encoded pieces without re-encoding (ffmpeg's concat demuxer)."""
    lst = out.with_suffix(".txt")
    lst.write_text("".join(f"file '{p}'\n" for p in parts))
    ff.run_ffmpeg([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f",
                   "concat", "-safe", "0", "-i", str(lst), "-c", "copy", str(out)],
                  "bench_scenes: joining the pieces")
    return out


def shot_vmaf(master: Path, path: Path, shots, exe: str) -> list[float]:
    """Each shot's VMAF of ``path`` against the joined near-lossless clip (the master a viewer
    never sees but is judged against): libvmaf per frame, averaged over the shot's frames."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-scenes-vmaf-") as tmp:
        log = Path(tmp) / "vmaf.json"
        chain = "format=yuv420p,settb=1/25,setpts=N"
        ff.run_ffmpeg([exe, "-nostdin", "-hide_banner", "-loglevel", "error",
                       "-i", str(path), "-i", str(master), "-lavfi",
                       f"[0:v]{chain}[d];[1:v]{chain}[r];[d][r]libvmaf=model=version="
                       f"{ff.VMAF_MODEL}:log_fmt=json:log_path={log}:n_threads="
                       f"{ff.cpus()}:shortest=1", "-f", "null", "-"],
                      f"bench_scenes: VMAF of {path.name}")
        frames = np.array([f["metrics"]["vmaf"] for f in json.loads(log.read_text())["frames"]])
    out, at = [], 0
    for shot in shots:
        out.append(float(frames[at:at + shot.frames].mean()))
        at += shot.frames
    return out


def shot_scores(path: Path, shots, fps: float, settings: Settings, scorer, exe: str,
                duration: float) -> list[float]:
    """Each shot's pooled score in ``path``: a ladder's source score over the shot's window."""
    out = []
    for shot in shots:
        samples = plan_samples(duration, window=window(shot, fps))
        with Ladder(path, settings, scorer, samples=samples, ffmpeg=exe) as ladder:
            out.append(ladder.source_score()[0])
    return out


@click.command()
@click.option("--clips", type=click.IntRange(2, len(CLIPS)), default=8, show_default=True,
              help="How many 2 s originals to join.")
@click.option("--size", default="1280x720", show_default=True, help="WxH of the clip.")
@click.option("--vmaf", "vmaf_level", type=float, default=95.0, show_default=True,
              help="Target: the model's score at this VMAF.")
@click.option("--max-drop", type=float, default=None,
              help="Target at most this far below a shot's own score (default: the CLI's, "
                   "the model's calibrated drop). 0: none (the target is the score at VMAF).")
@click.option("--preset", default=None, help="x264 preset (default: the ladder's, medium).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where the clip and encodes go (default: a temporary folder).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "data" / "recipe", help="The recipe's data folder (its corpus).")
@click.option("--originals", "original_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Join these videos (repeatable) instead of the Big Buck Bunny originals, "
                   "e.g. the dev masters of data/catalog/corpus/originals.")
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Cut the clip from this video (a contiguous stretch, its own "
                                 "shot changes) instead of joining corpus originals.")
@click.option("--start", type=click.FloatRange(0), default=0.0, show_default=True,
              help="With --source: where the stretch starts, in seconds.")
@click.option("--seconds", type=click.FloatRange(2), default=60.0, show_default=True,
              help="With --source: how long the stretch is.")
@click.option("--mode", type=click.Choice(["auto", "score", "vmaf"]), default="auto",
              show_default=True, help="How each shot is picked (cpllm-ladder's --mode).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object to stdout.")
def main(clips, size, vmaf_level, max_drop, preset, workdir, data, original_files, source,
         start, seconds, mode, as_json):
    """Per-shot CRFs against a single CRF on real multi-shot footage."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    import onnxruntime

    report: dict = {"machine": {**describe(), "onnxruntime": onnxruntime.__version__}}
    walls: dict[str, float] = {}
    exe = ff.find_ffmpeg()
    settings = Settings(preset=preset)
    names = list(CLIPS[:clips])
    with tempfile.TemporaryDirectory(prefix="bench-scenes-", dir=workdir) as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        if source is not None:
            names = []
            clip = cut_segment(d / "clip.mp4", source, start, seconds, size, exe)
            what = f"{source.name} from {start:g} s"
        elif original_files:
            names = [f.stem for f in original_files]
            clip = build_clip(d / "clip.mp4", list(original_files), size, exe)
            what = f"{len(names)} originals ({', '.join(names)})"
        else:
            originals = data / "corpus" / "originals"
            clip = build_clip(d / "clip.mp4", [originals / f"bbb_{n}.mp4" for n in names],
                              size, exe)
            what = f"{len(names)} Big Buck Bunny originals ({', '.join(names)})"
        walls["build_clip"] = time.perf_counter() - t
        info = probe(clip)
        say(f"clip: {what}, {info.width}x{info.height}, "
            f"{info.duration:.2f} s, {info.frame_count} frames")

        t = time.perf_counter()
        shots = detect_shots(clip, exe, progress=say)
        walls["detect_shots"] = time.perf_counter() - t

        scorer = Scorer()
        min_score = vmaf_to_score(vmaf_level, scorer.calibration())
        if max_drop is None:
            max_drop = scorer.drop() or DEFAULT_MAX_DROP
        say(f"model {scorer.id}; target {min_score:.4f} (VMAF {vmaf_level:g}), "
            f"max-drop {max_drop:g}")
        t = time.perf_counter()
        picks = pick_scenes(clip, shots, settings, scorer, min_score, max_drop or None,
                            cache=d / "cache", ffmpeg=exe, progress=say, mode=mode,
                            vmaf_level=vmaf_level)
        walls["pick_scenes"] = time.perf_counter() - t
        one = single_crf(picks)

        outs: dict[str, Path] = {}
        t = time.perf_counter()
        outs["single"] = encode(exe, clip, d / "single.mp4", settings, one)
        walls["encode_single"] = time.perf_counter() - t
        t = time.perf_counter()
        pieces = [encode(exe, clip, d / f"piece{p.index:03d}.mp4", settings, p.crf,
                         cut=window(p.shot, info.fps)) for p in picks]
        outs["per-scene"] = join(exe, pieces, d / "per_scene.mp4")
        walls["encode_per_scene"] = time.perf_counter() - t
        t = time.perf_counter()
        outs["zones"] = encode(exe, clip, d / "zones.mp4", settings, one,
                               ["-x264-params", f"zones={zones(picks, 'libx264')}"])
        walls["encode_zones"] = time.perf_counter() - t

        rows = {}
        for name, path in outs.items():
            t = time.perf_counter()
            got = probe(path)
            scores = shot_scores(path, shots, info.fps, settings, scorer, exe, got.duration)
            walls[f"rescore_{name}"] = time.perf_counter() - t
            t = time.perf_counter()
            vm = shot_vmaf(clip, path, shots, exe)
            walls[f"vmaf_{name}"] = time.perf_counter() - t
            size_b = path.stat().st_size
            rows[name] = {"bytes": size_b, "kbps": round(size_b * 8 / got.duration / 1000, 1),
                          "frames": got.frame_count, "shot_scores": [round(s, 4) for s in scores],
                          "min_score": round(min(scores), 4),
                          # Each shot against its own score target (max-drop makes them
                          # differ); score mode only.
                          "min_margin": round(min(s - p.target for s, p in
                                                  zip(scores, picks, strict=True)), 4)
                          if mode == "score" else float("nan"),
                          # The truth of bench_catalog: VMAF against the master, per shot.
                          "shot_vmaf": [round(v, 2) for v in vm], "min_vmaf": round(min(vm), 2),
                          "shots_vmaf95": sum(v >= vmaf_level for v in vm)}
        base = rows["single"]["bytes"]
        for r in rows.values():
            r["saving_pct"] = round(100 * (1 - r["bytes"] / base), 2)

    report.update({
        "clip": {"originals": names, "source": str(source) if source else None,
                 "start": start if source else None, "size": size, "duration": info.duration,
                 "frames": info.frame_count},
        "model": scorer.id, "mode": mode, "target": min_score, "vmaf_level": vmaf_level,
        "max_drop": max_drop,
        "encoder": settings.encoder, "preset": settings.preset or settings.table.preset,
        "shots": [p.to_dict() for p in picks], "single_crf": one,
        "zones": zones(picks, "libx264"), "encodes": rows,
        "wall_s": {k: round(v, 1) for k, v in walls.items()}})
    if as_json:
        click.echo(json.dumps(report))
        return
    m = report["machine"]
    click.echo(f"# {m['cpu']}, {m['cores']} cores, load {m['load_average']}, python "
               f"{m['python']}, onnxruntime {m['onnxruntime']}, threads {m['threads']}")
    click.echo(f"# mode {mode}; clip: {what}, {size}, "
               f"{info.duration:.2f} s, {info.frame_count} frames; {scorer.id}, target "
               f"{min_score:.4f} (VMAF {vmaf_level:g}), max-drop {max_drop:g}; {settings.encoder} "
               f"{report['preset']}")
    click.echo(f"{'shot':>4} {'start':>7} {'end':>7} {'frames':>6} {'crf':>4} {'score':>7} "
               f"{'source':>7} {'target':>7} {'kb/s':>8} {'probes':>6} {'met':>4} "
               f"{'single':>7} {'per-sc':>7} {'zones':>7}")
    for i, p in enumerate(picks):
        s = p.shot
        click.echo(f"{i:>4} {s.start:>7.3f} {s.end:>7.3f} {s.frames:>6} {p.crf:>4} "
                   f"{p.score:>7.4f} {p.source_score:>7.4f} {p.target:>7.4f} "
                   f"{p.predicted_kbps:>8.1f} "
                   f"{p.encodes:>6} {'yes' if p.met else 'NO':>4} "
                   f"{rows['single']['shot_scores'][i]:>7.4f} "
                   f"{rows['per-scene']['shot_scores'][i]:>7.4f} "
                   f"{rows['zones']['shot_scores'][i]:>7.4f}")
    click.echo(f"single CRF {one}; zones {report['zones']}")
    click.echo(f"{'encode':<10} {'bytes':>10} {'kb/s':>8} {'frames':>6} {'min score':>9} "
               f"{'min margin':>10} {'saving %':>8} {'min VMAF':>8} "
               f"{'shots >= ' + format(vmaf_level, 'g'):>10}")
    for name, r in rows.items():
        click.echo(f"{name:<10} {r['bytes']:>10} {r['kbps']:>8.1f} {r['frames']:>6} "
                   f"{r['min_score']:>9.4f} {r['min_margin']:>10.4f} {r['saving_pct']:>8.2f} "
                   f"{r['min_vmaf']:>8.2f} {r['shots_vmaf95']:>5}/{len(picks)}")
    click.echo("shot VMAF against the master: " + "; ".join(
        f"{name} " + " ".join(f"{v:.1f}" for v in r["shot_vmaf"]) for name, r in rows.items()))
    click.echo("wall s: " + ", ".join(f"{k} {v}" for k, v in report["wall_s"].items()))


if __name__ == "__main__":
    main()

"""VapourSynth filter speed at 1080p: frames/s with every=1 and every=24 beside decode-only.

    python bench/bench_vapoursynth.py                   # 1080p made from samples/sample.mp4
    python bench/bench_vapoursynth.py --source data/corpus/originals/pan_fog.mp4 --sweep

The source is opened with the PyPI source plugin (bestsource, else L-SMASH); without
``--source`` a 1080p H.264 file is made once in a temporary folder by scaling the bundled
360p sample up and looping it to 288 frames (12 s at 24 fps). Each row requests the frames
of one clip in order with ``core.num_threads`` frames in flight, as vspipe does:

* ``decode``: the source alone; ``decode+rgb24``: plus the filter's colour conversion;
* ``every=1`` / ``every=24``: :func:`cpllm_plugin.integrations.vapoursynth.score`.

``--sweep`` also times every=1 with 1, 2 and 4 concurrent scorers (``parallel``) and with
concurrent requests batched into one backend call (``batch=4``): the measurement behind the
filter's defaults. The machine and the threads ONNX Runtime and VapourSynth got are printed
first; results go to stdout as a table (or NDJSON with ``--json``), progress to stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from machine import describe  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.mp4"


def make_source(folder: Path) -> Path:
    """The sample scaled to 1920x1080 and looped 3 times (288 frames), H.264 CRF 18."""
    import imageio_ffmpeg

    from cpllm_plugin.integrations.ffmpeg import encode_args

    out = folder / "sample_1080p.mp4"
    subprocess.run(encode_args(imageio_ffmpeg.get_ffmpeg_exe(), SAMPLE, out, 18, preset="fast",
                               pix_fmt="yuv420p", vfilter="scale=1920:1080:flags=bicubic",
                               inputs=["-stream_loop", "2"], fps_mode=None), check=True)
    return out


def open_source(path: Path, folder: Path):
    import vapoursynth as vs

    core = vs.core
    if hasattr(core, "bs"):
        return core.bs.VideoSource(str(path), cachemode=0), "bestsource"
    if hasattr(core, "lsmas"):
        return (core.lsmas.LWLibavSource(str(path), cachefile=str(folder / "index.lwi")),
                "lsmas")
    raise SystemExit("no source plugin: pip install vapoursynth-bestsource")


def fps(clip) -> tuple[float, float]:
    """Frames per second requesting every frame in order (core.num_threads in flight)."""
    t = time.perf_counter()
    for _ in clip.frames(close=True):
        pass
    s = time.perf_counter() - t
    return clip.num_frames / s, s


@click.command()
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a 1080p video (default: the sample scaled up and looped)")
@click.option("--frames", default=48, show_default=True,
              help="frames timed with every=1 (and in the sweep)")
@click.option("--threads", default=0, show_default=True,
              help="core.num_threads (0: VapourSynth's default, one per logical core)")
@click.option("--sweep", is_flag=True, help="also time parallel=1/2/4 and batch=4")
@click.option("--json", "as_json", is_flag=True, help="NDJSON rows instead of a table")
def main(source: Path | None, frames: int, threads: int, sweep: bool, as_json: bool):
    import vapoursynth as vs

    from cpllm_plugin import DEFAULT_MODEL, load_model
    from cpllm_plugin.integrations import vapoursynth as cpllm

    core = vs.core
    if threads:
        core.num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if source is None:
            print("making a 1080p source from samples/sample.mp4 ...", file=sys.stderr)
            source = make_source(folder)
        t = time.perf_counter()
        clip, plugin = open_source(source, folder)
        opened = time.perf_counter() - t
        model = load_model(DEFAULT_MODEL)
        session = getattr(model.backend, "session", None)
        ort_threads = (session.get_session_options().intra_op_num_threads
                       if session is not None else None)
        head = {"type": "machine", **describe(),
                "vapoursynth": str(vs.__version__),
                "vs_threads": core.num_threads, "source": str(source), "plugin": plugin,
                "open_s": round(opened, 2), "clip": f"{clip.width}x{clip.height} "
                f"{clip.format.name} {clip.num_frames} frames",
                "model": model.id, "backend": model.backend.name,
                "ort_intra_op_threads": ort_threads,
                "ort_note": "0 = ONNX Runtime's default, one thread per physical core"
                if ort_threads == 0 else None,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        rows = []
        n = min(frames, clip.num_frames)
        runs = [("decode", clip, {}),
                ("decode+rgb24", cpllm.rgb24(clip), {}),
                ("every=1", None, {"every": 1, "frames": n}),
                ("every=24", None, {"every": 24})]
        if sweep:
            runs += [(f"every=1 parallel={p} batch={b}", None,
                      {"every": 1, "frames": min(24, n), "parallel": p, "batch": b})
                     for p, b in ((1, 1), (2, 1), (4, 1), (4, 4))]
        for name, c, kw in runs:
            print(f"timing {name} ...", file=sys.stderr)
            if c is None:
                length = kw.pop("frames", clip.num_frames)
                c = cpllm.score(clip[:length], **kw)
            rate, secs = fps(c)
            rows.append({"type": "result", "run": name, "frames": c.num_frames,
                         "seconds": round(secs, 2), "fps": round(rate, 2)})
    if as_json:
        for r in [head, *rows]:
            print(json.dumps(r))
        return
    for k, v in head.items():
        if k != "type" and v is not None:
            print(f"{k}: {v}")
    print(f"\n{'run':<32} {'frames':>6} {'seconds':>8} {'fps':>8}")
    for r in rows:
        print(f"{r['run']:<32} {r['frames']:>6} {r['seconds']:>8} {r['fps']:>8}")


if __name__ == "__main__":
    main()

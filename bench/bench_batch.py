"""cpllm batch: videos per minute with 1 and 2 workers, overhead against a plain loop, and
the cost of one pick of a one-minute 1080p clip (the number a cluster is sized from).

``score``: N clips (640x360, 2 s, cut from samples/sample.mp4) scored by

- a plain loop over ``cpllm_plugin.score`` in this process (ONNX Runtime on all cores);
- ``batch.run`` with 1 local worker of 2 CPUs, and with 2 workers of 1 CPU;
- the same on a local Ray instance (2 CPUs) when Ray is installed.

Overhead per video = (batch with 1 worker - loop) / N, start-up included; the steady-state
figure compares the per-input seconds batch rows record with the loop's per-video time.

``pick``: one ``cpllm batch pick`` of a 60 s 1920x1080 clip with the command's defaults
(libx264 medium, the target from the model's calibration), one worker with all cores. The
clip is 30 two-second shots of the corpus's clean 1080p originals
(``data/recipe/corpus/originals``), else the sample scaled up.

    python bench/bench_batch.py [--part score|pick] [--clips 12] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

import cpllm_plugin  # noqa: E402
from cpllm_plugin.integrations import batch  # noqa: E402
from cpllm_plugin.integrations import ffmpeg as ff  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.mp4"


def make_clips(folder: Path, n: int) -> list[Path]:
    exe = ff.find_ffmpeg()
    out = []
    for i in range(n):
        p = folder / f"clip{i:02d}.mp4"
        subprocess.run(ff.encode_args(exe, SAMPLE, p, 16 + i % 12, preset="fast",
                                      inputs=["-ss", f"{(i * 0.17) % 2:.2f}", "-t", "2"],
                                      fps_mode=None), check=True)
        out.append(p)
    return out


def timed_batch(clips: list[Path], out: Path, **kw) -> tuple[float, list[dict]]:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    s = batch.run([str(c) for c in clips], out, batch.ScoreJob(), quiet=True, **kw)
    wall = time.perf_counter() - t0
    assert s.done == len(clips), s
    return wall, [json.loads(x) for x in out.read_text().splitlines()]


def part_score(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        clips = make_clips(Path(tmp), n)
        print(f"\n## score: {n} clips, 640x360, 2 s, 24 fps, {cpllm_plugin.DEFAULT_MODEL}")
        t0 = time.perf_counter()
        cpllm_plugin.load_model()
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        for c in clips:
            cpllm_plugin.score(str(c))
        t_loop = time.perf_counter() - t0
        per = t_loop / n
        print(f"plain loop: {n * 60 / t_loop:6.1f} videos/min ({per:.2f} s/video; model "
              f"load {t_load:.2f} s before it)")
        runs = [("local, 1 worker x 2 CPUs", {"workers": 1, "num_cpus": 2}),
                ("local, 2 workers x 1 CPU", {"workers": 2, "num_cpus": 1})]
        try:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
            runs += [("Ray, 1 actor x 2 CPUs", {"workers": 1, "num_cpus": 2, "ray": "auto"}),
                     ("Ray, 2 actors x 1 CPU", {"workers": 2, "num_cpus": 1, "ray": "auto"})]
        except ImportError:
            print("(Ray not installed: local workers only)")
        first = None
        for name, kw in runs:
            wall, rows = timed_batch(clips, Path(tmp) / "out.jsonl", **kw)
            each = sum(r["batch"]["seconds"] for r in rows) / n
            print(f"{name}: {n * 60 / wall:6.1f} videos/min (wall {wall:.1f} s, start-up "
                  f"included; {each:.2f} s per input inside a worker)")
            first = first or wall
        print(f"batch overhead per video, 1 worker x 2 CPUs against the loop: "
              f"{(first - t_loop) / n:+.2f} s with start-up, {(first - t_loop - t_load) / n:+.2f}"
              f" s counting the loop's model load, on {per:.2f} s/video")
        if len(runs) > 2:
            ray.shutdown()


def one_minute_clip(out: Path, seconds: int) -> str:
    """A ``seconds`` long 1920x1080 clip: 2 s shots of the corpus's clean 1080p originals
    in turn, else the sample scaled up."""
    from cpllm_plugin.video import probe

    exe = ff.find_ffmpeg()
    corpus = ROOT / "data" / "recipe" / "corpus" / "originals"
    shots = [p for p in sorted(corpus.glob("*.mp4")) if "__" not in p.name
             and (probe(p).width, probe(p).height) == (1920, 1080)
             and probe(p).duration >= 2] if corpus.is_dir() else []
    n = seconds // 2
    if len(shots) >= 5:
        used = [shots[i % len(shots)] for i in range(n)]
        what = f"{n} two-second shots of {len(shots)} clean 1080p corpus originals"
    else:
        used = [SAMPLE] * n
        what = "the 640x360 sample scaled up, looped"
    # encode_args adds the last input itself; the others go before it.
    inputs = [a for s in used[:-1] for a in ("-i", str(s))]
    graph = "".join(f"[{i}:v]fps=24,scale=1920:1080:flags=lanczos,setsar=1,trim=duration=2,"
                    f"setpts=PTS-STARTPTS[v{i}];" for i in range(n))
    graph += "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[out]"
    subprocess.run(ff.encode_args(exe, used[-1], out, 16, preset="veryfast", inputs=inputs,
                                  graph=graph, video="[out]", fps_mode=None), check=True)
    return what


def part_pick(seconds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        clip = Path(tmp) / "minute.mp4"
        t0 = time.perf_counter()
        what = one_minute_clip(clip, seconds)
        print(f"\n## pick: {seconds} s 1920x1080 24 fps ({what}; made in "
              f"{time.perf_counter() - t0:.0f} s)")
        out = Path(tmp) / "pick.jsonl"
        t0 = time.perf_counter()
        s = batch.run([str(clip)], out, batch.PickJob.make(no_cache=True), workers=1,
                      num_cpus=ff.cpus(), quiet=True)
        wall = time.perf_counter() - t0
        row = json.loads(out.read_text().splitlines()[0])
        if row["type"] == "error":
            print(f"pick failed: {row['error']}: {row['message']}")
            return
        sec = row["batch"]["seconds"]
        scored = [p for p in row["probes"] if "frame_scores" in p]  # a VMAF search scores few
        print(f"pick: CRF {row['crf']}, score {row['score']:.3f} (target {row['target']:.3f}), "
              f"{row['encodes']} probe encodes, {len(scored)} scored, of "
              f"{len(scored[0]['frame_scores'])} key frames each")
        print(f"one pick: {sec:.1f} s on {ff.cpus()} cores = {sec * ff.cpus():.0f} core-seconds "
              f"(batch wall {wall:.1f} s with worker start-up; {s.line()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["score", "pick"], action="append")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=60)
    a = ap.parse_args()
    print("# bench_batch\nmachine:", json.dumps(describe()))
    parts = a.part or ["score", "pick"]
    if "score" in parts:
        part_score(a.clips)
    if "pick" in parts:
        part_pick(a.seconds)


if __name__ == "__main__":
    main()

"""cpllm-ladder: speed against a VMAF-driven search, encodes per pick, and accuracy on dev.

Three parts (all by default):

``speed``: a 10 s 1080p clip made from the corpus' 1080p originals (five 2 s shots). The
default mode (``auto``) runs without cache; then, at the CRFs it probed, a VMAF-driven
search on the same samples (A: what the model adds) and ffmpeg + libvmaf on the whole clip
(B: ab-av1's way on an input shorter than its samples), in turning rounds in one process.
Printed as ratios, since the shared machines drift by 25% in absolute speed.

``predict``: on the same clip, ``--mode predict`` (no reference) against the VMAF-95
search as ab-av1 runs it (no model), each on its own probes; goal: half the time or less.

``dev``: every clean dev original (no ``reference``) is picked by ``--mode score`` at its
default target (the model's score at VMAF 95) and compared with the CRF where VMAF crosses
95 on its libx264 ladder of 20 levels (VMAF measured by ``cpllm-recipe``'s ladder stage,
interpolated between levels). Goal: within 2 CRF on at least 80% of the sources. Beside
it, the share one fixed CRF reaches (the median crossing of the other sources): what a
picker must beat.

``speed`` and ``predict`` need the corpus (``cpllm-recipe --stage corpus``); ``dev`` also needs
``data/recipe/ladder-dev/manifest.jsonl`` (``--stage ladder``).

    python bench/bench_ladder.py [--part speed|predict|dev] [--data data/recipe]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from cpllm_plugin.configs import DEFAULT_MODEL  # noqa: E402
from cpllm_plugin.integrations import ffmpeg as ff  # noqa: E402
from cpllm_plugin.integrations import ladder as lad  # noqa: E402
from cpllm_plugin.training.recipe import vmaf_crossing  # noqa: E402


def _rows(data: Path) -> list[dict]:
    path = data / "ladder-dev" / "manifest.jsonl"
    if not path.is_file():
        sys.exit(f"missing {path}: run cpllm-recipe --stage corpus --stage ladder first")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _original(data: Path, row: dict) -> Path:
    return (data / "ladder-dev" / row["path"]).resolve()


def crossing_crf(points: list[tuple[int, float]], level: float = 95.0) -> float | None:
    """CRF where VMAF falls through ``level`` (the recipe's interpolation); a ladder that
    stays above it gives its last CRF, one that starts below it None."""
    pts = sorted(points)
    if pts[0][1] < level:
        return None
    cross = vmaf_crossing([(c, 0.0, v) for c, v in pts], level)
    return float(pts[-1][0]) if cross is None else cross[0]


def part_dev(data: Path, scorer: lad.Scorer, target: float) -> None:
    rows = _rows(data)
    clean = [r for r in rows if r["original"] and not r["reference"]]
    print(f"\n## dev: {len(clean)} clean dev originals, --min-score {target:.3f} (VMAF 95), "
          f"--max-drop {lad_max_drop():.3f}")
    print(f"{'source':24} {'size':>10} {'pick':>5} {'vmaf95':>7} {'diff':>6} {'encodes':>8} "
          f"{'s':>6}")
    diffs, encodes, seconds, crossings = [], [], [], []
    for r in clean:
        pts = [(x["crf"], x["vmaf"]) for x in rows
               if x["source"] == r["source"] and x["crf"] is not None and x["vmaf"] is not None]
        cross = crossing_crf(pts)
        if cross is not None:
            crossings.append(cross)
        src = _original(data, r)
        t0 = time.perf_counter()
        with lad.Ladder(src, lad.Settings(), scorer) as ladder:
            try:
                crf = lad.pick(ladder, target, lad_max_drop(), lad.MAX_PROBES).crf
            except lad.NoCrfMeetsTargetError:
                crf = None
            n = ladder.encodes
        dt = time.perf_counter() - t0
        encodes.append(n)
        seconds.append(dt)
        d = None if crf is None or cross is None else crf - cross
        if d is not None:
            diffs.append(d)
        info = ladder.source
        print(f"{r['source']:24} {info.width:>4}x{info.height:<5} {crf!s:>5} "
              f"{'-' if cross is None else f'{cross:.1f}':>7} "
              f"{'-' if d is None else f'{d:+.1f}':>6} {n:>8} {dt:>6.1f}")
    d = np.array(diffs)
    within = float(np.mean(np.abs(d) <= 2)) if len(d) else float("nan")
    print(f"\nwithin 2 CRF of the VMAF-95 crossing: {within:.0%} of {len(d)} "
          f"(goal >= 80%); median diff {np.median(d):+.1f}, mean |diff| {np.abs(d).mean():.1f}")
    hist = Counter(int(np.clip(np.round(x), -8, 8)) for x in d)
    print("distribution of pick - crossing (CRF, rounded; |x| > 8 clipped):")
    for k in range(-8, 9):
        if hist.get(k):
            print(f"  {k:+3d} {'#' * hist[k]}")
    # The baseline a picker has to beat: one fixed CRF for every source, the median crossing
    # of the other sources (leave-one-out, rounded as a user would set it).
    fixed = [abs(round(float(np.median(crossings[:i] + crossings[i + 1:]))) - c) <= 2
             for i, c in enumerate(crossings)]
    print(f"baseline, one fixed CRF (median crossing of the other sources, about "
          f"{round(float(np.median(crossings)))}): within 2 CRF on {np.mean(fixed):.0%} of "
          f"{len(fixed)}")
    print(f"encodes per pick: mean {np.mean(encodes):.2f}, max {max(encodes)}; "
          f"seconds per pick: mean {np.mean(seconds):.1f}")


_SCORER: lad.Scorer | None = None


def lad_max_drop() -> float:
    """The default --max-drop of cpllm-ladder: the model's calibrated drop, else the CLI's."""
    return (_SCORER.drop() if _SCORER else None) or lad.DEFAULT_MAX_DROP


def _ten_second_clip(data: Path, out: Path) -> Path:
    from cpllm_plugin.video import probe

    # Five clean 1920x1080 originals of the corpus (either split: this part measures speed).
    corpus = (data / "corpus" / "originals").resolve()
    shots = [p for p in sorted(corpus.glob("*.mp4")) if "__" not in p.name
             and (probe(p).width, probe(p).height) == (1920, 1080)]
    if len(shots) < 5:
        sys.exit(f"need five 1920x1080 originals in {corpus}, found {len(shots)}")
    exe = ff.find_ffmpeg()
    # encode_args adds the last input itself; the others go before it.
    inputs = [a for s in shots[:4] for a in ("-i", str(s))]
    graph = "".join(f"[{i}:v]fps=24,scale=1920:1080,setsar=1,trim=duration=2,"
                    f"setpts=PTS-STARTPTS[v{i}];" for i in range(5))
    graph += "".join(f"[v{i}]" for i in range(5)) + "concat=n=5:v=1:a=0[out]"
    subprocess.run(ff.encode_args(exe, shots[4], out, 14, preset="fast", inputs=inputs,
                                  graph=graph, video="[out]", fps_mode=None), check=True)
    return out


class NoScore:
    """Scores nothing: the VMAF baseline pays for encodes and VMAF only (ab-av1 runs no
    model)."""

    id = "none"

    def __call__(self, paths, key_frames):
        return [np.zeros(k) for k in key_frames]


def part_speed(data: Path, scorer: lad.Scorer, runs: int = 3) -> None:
    """The default mode (``auto``) against VMAF-driven searches at the same CRFs, on the same
    10 s clip: one untimed run of each first (the clip's pages, ffmpeg's and the model's first
    call), then ``runs`` timed rounds in turn; the median of each ratio."""
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as tmp:
        clip = _ten_second_clip(data, Path(tmp) / "ten.mp4")
        src = lad.inspect(clip)
        print(f"\n## speed: {src.width}x{src.height}, {src.duration:.1f} s, {src.fps:g} fps, "
              f"--mode {lad.DEFAULT_MODE}")
        exe = ff.find_ffmpeg()

        def default() -> tuple[lad.Pick, list[lad.Sample], float]:
            t0 = time.perf_counter()
            with lad.Ladder(src, lad.Settings(), scorer, vmaf=True) as ladder:
                result = lad.run_mode(ladder, lad.DEFAULT_MODE)
                return result, ladder.samples, time.perf_counter() - t0

        def same(samples: list[lad.Sample], crfs: list[int]) -> tuple[dict, float]:
            # A: the same engine, samples and CRFs, measuring VMAF and scoring nothing: what
            # the model adds to a VMAF search.
            t0 = time.perf_counter()
            with lad.Ladder(src, lad.Settings(), NoScore(), samples=samples, vmaf=True) as b:
                return {c: b.probe(c).vmaf for c in crfs}, time.perf_counter() - t0

        def whole(crfs: list[int]) -> tuple[dict, float]:
            # B: ffmpeg + libvmaf on the whole clip at each CRF, as ab-av1 runs an input
            # shorter than its 20 s samples.
            t0, out = time.perf_counter(), {}
            for c in crfs:
                enc = Path(tmp) / f"whole{c}.mkv"
                subprocess.run(lad.Settings().command(exe, clip, enc, c, ff.cpus(),
                                                      inputs=["-threads", str(ff.cpus())],
                                                      fps_mode=None), check=True)
                out[c] = ff.measure_fr(clip, enc, exe, ff.cpus(), subsample=1, psnr=False)[0]
                enc.unlink()
            return out, time.perf_counter() - t0

        result, samples, _ = default()
        crfs = [p.crf for p in result.probes]
        same(samples, crfs), whole(crfs)
        ra, rb = [], []
        for i in range(runs):
            result, samples, t_pick = default()
            crfs = [p.crf for p in result.probes]
            (va, t_a), (vb, t_b) = same(samples, crfs), whole(crfs)
            ra.append(t_pick / t_a)
            rb.append(t_pick / t_b)
            print(f"run {i + 1}: {lad.DEFAULT_MODE}: CRF {result.crf} ({result.encodes} "
                  f"encodes, CRFs {crfs}) in {t_pick:.1f} s; A. VMAF search, same samples "
                  f"and CRFs: {t_a:.1f} s (VMAF at the pick {va[result.crf]:.2f}); "
                  f"B. ffmpeg + libvmaf on the whole clip: {t_b:.1f} s (VMAF at the pick "
                  f"{vb[result.crf]:.2f}); ratios {t_pick / t_a:.2f}, {t_pick / t_b:.2f}")
        print(f"samples: {len(samples)} x {samples[0].duration:g} s, "
              f"{samples[0].key_frames} key frames each")
        print(f"{lad.DEFAULT_MODE} against A: median ratio {np.median(ra):.2f}; against B: "
              f"{np.median(rb):.2f} over {runs} runs")


def part_predict(data: Path, scorer: lad.Scorer, runs: int = 3) -> None:
    """``--mode predict`` (no reference, its probes) against the VMAF-95 search as ab-av1 runs
    it (no model), each searching on its own, neither cached, on the same 10 s clip: one
    untimed run of each first (the clip's pages, ffmpeg's and the model's first call), then
    ``runs`` timed runs in turn; the median of their ratios."""
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as tmp:
        src = lad.inspect(_ten_second_clip(data, Path(tmp) / "ten.mp4"))
        print(f"\n## predict: {src.width}x{src.height}, {src.duration:.1f} s")

        def predict() -> tuple[lad.Pick, float]:
            t0 = time.perf_counter()
            with lad.Ladder(src, lad.Settings(), scorer) as ladder:
                return lad.pick_predict(ladder), time.perf_counter() - t0

        def search() -> tuple[lad.Pick, float]:
            t0 = time.perf_counter()
            with lad.Ladder(src, lad.Settings(), NoScore(), vmaf=True) as ladder:
                return lad.pick_vmaf(ladder, lad.DEFAULT_VMAF), time.perf_counter() - t0

        predict(), search()
        ratios = []
        for i in range(runs):
            (pred, t_pred), (v95, t_v95) = predict(), search()
            ratios.append(t_pred / t_v95)
            print(f"run {i + 1}: --mode predict: CRF {pred.crf} ({pred.encodes} encodes) in "
                  f"{t_pred:.1f} s; the VMAF-95 search without the model: CRF {v95.crf} "
                  f"({v95.encodes} encodes) in {t_v95:.1f} s; ratio {t_pred / t_v95:.2f}")
        print(f"predict against the VMAF-95 search: median ratio {np.median(ratios):.2f} over "
              f"{runs} runs (goal <= 0.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["speed", "predict", "dev", "all"], default="all")
    ap.add_argument("--data", type=Path, default=Path("data/recipe"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    a = ap.parse_args()
    print(json.dumps(describe()))
    global _SCORER
    scorer = _SCORER = lad.Scorer(a.model)
    print(f"model {scorer.id}: default --max-drop {lad_max_drop():.3f}")
    target = lad.vmaf_to_score(lad.DEFAULT_VMAF, scorer.calibration())
    if a.part in ("speed", "all"):
        part_speed(a.data, scorer)
    if a.part in ("predict", "all"):
        part_predict(a.data, scorer)
    if a.part in ("dev", "all"):
        part_dev(a.data, scorer, target)


if __name__ == "__main__":
    main()

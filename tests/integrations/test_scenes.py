"""cpllm-ladder scenes: shot detection on real clips, per-shot picks, zones, the single CRF.

Clips are made here with ffmpeg at 320x180: the first two seconds of samples/sample.mp4 (a
pan over a photo) and ffmpeg's ``testsrc2`` pattern are as different as two shots get. The
picks use a stand-in scorer whose score is log2 of the encode's bytes per frame, so it is
monotone in CRF, differs by shot content, and every answer can be checked by probing.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cpllm_plugin.integrations.ladder import Ladder, LadderArgumentError, Settings, plan_samples
from cpllm_plugin.integrations.scenes import (
    Cut,
    NoZonesError,
    ScenePick,
    Shot,
    detect_shots,
    has_zones,
    merge_short,
    parse_cuts,
    parse_zones,
    pick_scenes,
    shots_from_cuts,
    single_crf,
    summary,
    window,
    zones,
)
from cpllm_plugin.video import probe

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"
FPS = 24
FAST = Settings(preset="ultrafast")


def _photo(start: float, seconds: float, label: str, src: int = 0) -> str:
    return (f"[{src}:v]trim=start={start}:duration={seconds},setpts=PTS-STARTPTS,"
            f"scale=320:180,setsar=1,format=yuv420p[{label}]")


def _pattern(seconds: float, label: str, src: int) -> str:
    return f"[{src}:v]trim=duration={seconds},setpts=PTS-STARTPTS,setsar=1,format=yuv420p[{label}]"


def _make(ffmpeg: str, out: Path, parts: list[str], labels: list[str]) -> Path:
    """Join filter-graph parts into one lossless 24 fps clip."""
    graph = ";".join(parts) + ";" + "".join(f"[{x}]" for x in labels) + (
        f"concat=n={len(labels)}:v=1[v]")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(SAMPLE), "-f", "lavfi", "-i",
                    f"testsrc2=size=320x180:rate={FPS}:duration=3", "-filter_complex", graph,
                    "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
                    str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def clips(ffmpeg_exe, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scenes")
    return {
        # photo 2 s | pattern 2 s: one cut at frame 48
        "two": _make(ffmpeg_exe, d / "two.mp4", [_photo(0, 2, "a"), _pattern(2, "b", 1)],
                     ["a", "b"]),
        # the first shot of sample.mp4 alone
        "one": _make(ffmpeg_exe, d / "one.mp4", [_photo(0, 2, "a")], ["a"]),
        # photo 2 s | pattern 0.625 s | other photo 2 s: cuts at frames 48 and 63
        "short": _make(ffmpeg_exe, d / "short.mp4",
                       [_photo(0, 2, "a"), _pattern(0.625, "b", 1), _photo(2, 2, "c")],
                       ["a", "b", "c"]),
    }


def _covers(shots: list[Shot], path: Path) -> None:
    info = probe(path)
    assert shots[0].start == 0 and shots[0].first_frame == 0
    for a, b in zip(shots, shots[1:], strict=False):
        assert a.end == b.start and a.first_frame + a.frames == b.first_frame
    assert shots[-1].end == pytest.approx(info.duration)
    assert sum(s.frames for s in shots) == info.frame_count


# --- detection ----------------------------------------------------------------------------


def test_two_shots_cut_found_at_the_frame(clips, ffmpeg_exe):
    lines = []
    shots = detect_shots(clips["two"], ffmpeg_exe, progress=lines.append)
    assert len(shots) == 2
    assert abs(shots[1].first_frame - 2 * FPS) <= 1
    assert shots[1].start == pytest.approx(shots[1].first_frame / FPS, abs=1e-3)
    _covers(shots, clips["two"])
    assert lines  # progress was reported


def test_single_shot_clip_is_one_shot(clips, ffmpeg_exe):
    shots = detect_shots(clips["one"], ffmpeg_exe)
    assert len(shots) == 1
    _covers(shots, clips["one"])


def test_short_shot_merges_into_a_neighbour(clips, ffmpeg_exe):
    every = detect_shots(clips["short"], ffmpeg_exe, min_seconds=0.5)
    assert [s.first_frame for s in every] == pytest.approx([0, 48, 63], abs=1)
    _covers(every, clips["short"])
    merged = detect_shots(clips["short"], ffmpeg_exe, min_seconds=1.0)
    assert len(merged) == 2
    assert merged[1].first_frame in {s.first_frame for s in every[1:]}
    assert all(s.duration >= 1.0 for s in merged)
    _covers(merged, clips["short"])


def test_bad_options_are_named_errors(clips, ffmpeg_exe):
    with pytest.raises(LadderArgumentError, match="--min-shot"):
        detect_shots(clips["one"], ffmpeg_exe, min_seconds=0.1)
    with pytest.raises(LadderArgumentError, match="--threshold"):
        detect_shots(clips["one"], ffmpeg_exe, threshold=0)


def test_parse_and_merge_without_ffmpeg():
    log = ("[Parsed_scdet_2 @ 0x1] lavfi.scd.score: 22.798, lavfi.scd.time: 2\n"
           "[Parsed_metadata_3 @ 0x2] frame:48   pts:24576   pts_time:2\n"
           "[Parsed_metadata_3 @ 0x2] lavfi.scd.time=2\n"
           "[Parsed_scdet_2 @ 0x1] lavfi.scd.score: 11.5, lavfi.scd.time: 2.5\n"
           "[Parsed_metadata_3 @ 0x2] frame:60   pts:30720   pts_time:2.5\n")
    cuts = parse_cuts(log)
    assert cuts == [Cut(48, 2.0, 22.798), Cut(60, 2.5, 11.5)]
    # The 0.5 s shot between them joins across the weaker cut (11.5, at 2.5 s).
    assert merge_short(cuts, 4.0, 1.0) == [cuts[0]]
    # One shot shorter than min_seconds stays (there is nothing to merge it into).
    assert merge_short([], 0.7, 1.0) == []
    shots = shots_from_cuts([cuts[0]], 96, 4.0)
    assert shots == [Shot(0.0, 2.0, 0, 48), Shot(2.0, 4.0, 48, 48)]
    lo, hi = window(shots[1], FPS)
    assert lo == pytest.approx(2 - 0.25 / FPS) and hi == pytest.approx(4 - 0.25 / FPS)


# --- picks --------------------------------------------------------------------------------


class SizeScorer:
    """log2 of bytes per frame for every key frame: more bits, higher score."""

    id = "stub-log2-bytes-per-frame"

    def __call__(self, paths, key_frames):
        out = []
        for p, k in zip(paths, key_frames, strict=True):
            per_frame = Path(p).stat().st_size / probe(p).frame_count
            out.append(np.full(k, math.log2(per_frame)))
        return out


def test_each_shot_gets_the_highest_crf_meeting_the_target(clips, ffmpeg_exe, tmp_path):
    shots = detect_shots(clips["two"], ffmpeg_exe)
    scorer, target = SizeScorer(), 10.0  # 1 KiB per frame
    lines = []
    picks = pick_scenes(clips["two"], shots, FAST, scorer, target, cache=tmp_path,
                        ffmpeg=ffmpeg_exe, progress=lines.append)
    assert [p.index for p in picks] == [0, 1] and all(p.met for p in picks)
    assert picks[0].crf != picks[1].crf  # the pattern needs more bits per CRF than the pan
    assert any(line.startswith("shot 2/2:") for line in lines)
    info = probe(clips["two"])
    for p in picks:
        samples = plan_samples(info.duration, window=window(p.shot, info.fps))
        with Ladder(clips["two"], FAST, scorer, samples=samples, cache=tmp_path,
                    ffmpeg=ffmpeg_exe) as ladder:
            assert ladder.probe(p.crf).score >= target
            assert ladder.probe(p.crf + 1).score < target
        d = p.to_dict()
        assert d["type"] == "scene" and d["crf"] == p.crf and d["met"] is True
        assert d["first_frame"] == p.shot.first_frame and d["frames"] == p.shot.frames
        assert d["target"] == target and d["predicted_kbps"] > 0 and d["encodes"] >= 1
    assert single_crf(picks) == min(p.crf for p in picks)


def test_a_shot_missing_the_target_does_not_stop_the_run(clips, ffmpeg_exe, tmp_path):
    shots = detect_shots(clips["two"], ffmpeg_exe)
    # ~7 KiB per frame: the pan reaches it near CRF 17, the pattern at no CRF of 15..51.
    picks = pick_scenes(clips["two"], shots, FAST, SizeScorer(), 12.8, cache=tmp_path,
                        ffmpeg=ffmpeg_exe)
    pan, pattern = picks
    assert pan.met and pan.score >= 12.8
    assert not pattern.met and pattern.pick is None
    assert pattern.crf == min(q.crf for q in pattern.probes)
    assert pattern.score < 12.8 and pattern.to_dict()["met"] is False
    s = summary(picks, "libx264")
    assert s["met"] is False and s["unmet"] == [1] and s["single_crf"] == pattern.crf


# --- zones --------------------------------------------------------------------------------


def _pick(i: int, shot: Shot, crf: int) -> ScenePick:
    return ScenePick(i, shot, crf, 1.0, 1.2, 0.9, 100.0, 3, True)


def test_auto_and_vmaf_pick_each_shot_by_vmaf_against_the_input(clips, ffmpeg_exe, tmp_path):
    """Per shot, ``vmaf`` keeps the level against the input; ``auto`` (these shots are
    near-lossless masters) picks the same CRFs at level 95."""
    shots = detect_shots(clips["two"], ffmpeg_exe)
    by = {}
    for mode in ("vmaf", "auto"):
        by[mode] = pick_scenes(clips["two"], shots, FAST, SizeScorer(), 0.0, cache=tmp_path,
                               ffmpeg=ffmpeg_exe, mode=mode, vmaf_level=95.0)
        for p in by[mode]:
            assert p.met and p.measure == "vmaf" and p.target == 95.0
            assert p.vmaf is not None and p.vmaf >= 95.0
            assert p.to_dict()["target_measure"] == "vmaf"
            assert "master" in p.pick.target.rule or mode == "vmaf"
    assert [p.crf for p in by["auto"]] == [p.crf for p in by["vmaf"]]


def test_zones_string_round_trips():
    shots = shots_from_cuts([Cut(48, 2.0, 20.0), Cut(120, 5.0, 30.0)], 200, 8.3)
    picks = [_pick(0, shots[0], 28), _pick(1, shots[1], 23), _pick(2, shots[2], 31)]
    text = zones(picks, "libx264")
    assert text == "0,47,crf=28/48,119,crf=23/120,199,crf=31"
    assert parse_zones(text) == [(0, 47, 28), (48, 119, 23), (120, 199, 31)]
    assert single_crf(picks) == 23
    assert summary(picks, "libx264")["zones"] == text
    with pytest.raises(LadderArgumentError):
        parse_zones("0,47,q=20")


def test_zones_refused_where_crf_zones_do_not_exist():
    picks = [_pick(0, Shot(0.0, 2.0, 0, 48), 28)]
    for enc in ("libx265", "libsvtav1", "libvpx-vp9"):
        assert not has_zones(enc)
        with pytest.raises(NoZonesError, match="per-scene"):
            zones(picks, enc)
        s = summary(picks, enc)
        assert s["zones"] is None and "per-scene" in s["note"]


def test_x264_honours_the_zones(clips, ffmpeg_exe, tmp_path):
    """The zones string as ffmpeg's libx264 takes it: CRF 51 zones shrink a CRF 15 encode."""
    shots = detect_shots(clips["two"], ffmpeg_exe)
    text = zones([_pick(i, s, 51) for i, s in enumerate(shots)], "libx264")
    sizes = []
    for extra in ([], ["-x264-params", f"zones={text}"]):
        out = tmp_path / f"z{len(extra)}.mp4"
        subprocess.run([ffmpeg_exe, "-v", "error", "-y", "-i", str(clips["two"]), "-c:v",
                        "libx264", "-preset", "ultrafast", "-crf", "15", *extra, str(out)],
                       check=True)
        sizes.append(out.stat().st_size)
    assert sizes[1] < sizes[0] / 4


def test_cli_scenes_and_per_scene_encode(clips, tmp_path, monkeypatch):
    """cpllm-ladder scenes prints a scene object per shot and the zones; encode --per-scene
    writes them into one x264 pass."""
    import json

    import numpy as np
    from click.testing import CliRunner

    from cpllm_plugin.integrations import cli
    from cpllm_plugin.integrations import ladder as lad
    from cpllm_plugin.integrations.stream import stats

    class Bytes:
        id = "stub-bytes"

        def __call__(self, paths, key_frames):
            out = []
            for p, k in zip(paths, key_frames, strict=True):
                info = probe(p)
                bpp = Path(p).stat().st_size * 8 / (info.width * info.height * info.frame_count)
                out.append(np.full(k, 1 + 4 * (1 - np.exp(-bpp / 0.05))))
            return out

    monkeypatch.setattr(lad, "Scorer", lambda model, backend: Bytes())
    common = ["--min-score", "3.6", "--no-max-drop", "--preset", "ultrafast", "--json",
              "--no-cache", "-q"]
    r = CliRunner().invoke(cli.main, ["scenes", str(clips["two"]), *common])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    shots = [x for x in rows if x["type"] == "scene"]
    assert len(shots) == 2 and rows[-1]["type"] == "scenes"
    assert rows[-1]["zones"] == zones_from(shots)
    out = tmp_path / "per_scene.mp4"
    r = CliRunner().invoke(cli.main, ["encode", str(clips["two"]), "-o", str(out),
                                      "--per-scene", *common])
    assert r.exit_code == 0, r.output
    assert f"zones={rows[-1]['zones']}".encode() in out.read_bytes()
    assert probe(out).frame_count == probe(clips["two"]).frame_count
    # --max-encoded-percent judges the shots' picks together, and encodes nothing over it.
    share = 100 * rows[-1]["predicted_kbps"] / stats(clips["two"]).kbps
    gated = tmp_path / "gated.mp4"
    r = CliRunner().invoke(cli.main, ["encode", str(clips["two"]), "-o", str(gated),
                                      "--per-scene", "--max-encoded-percent",
                                      f"{share / 2:.2f}", *common])
    assert r.exit_code == 1 and "PickTooLargeError" in r.stdout and "2 shot CRFs" in r.stdout
    assert not gated.exists()


def zones_from(shots: list[dict]) -> str:
    return "/".join(f"{s['first_frame']},{s['first_frame'] + s['frames'] - 1},crf={s['crf']}"
                    for s in shots)


class _RuledScorer:
    """Flat frame scores, a ``predict`` rule read at 3 key frames, and a note of the key
    frames of every call."""

    id = "flat-ruled"

    def __init__(self):
        self.asked = []

    def __call__(self, paths, key_frames):
        self.asked += list(key_frames)
        return [np.full(k, 3.0) for k in key_frames]

    def predictor(self, encoder="libx264"):
        from cpllm_plugin.integrations import predict

        return predict.Predictor(encoder, (43,), {"const": 30.0}, 2.0, {}, "ultrafast", 1.0, 3)


def test_predict_per_shot_scores_the_key_frames_its_rule_reads(clips, ffmpeg_exe, tmp_path):
    """Per shot, as for a whole input, ``predict`` scores its rule's key frames, not the 8 the
    plan gives each 2 s shot."""
    shots = detect_shots(clips["two"], ffmpeg_exe)
    scorer = _RuledScorer()
    picks = pick_scenes(clips["two"], shots, FAST, scorer, 0.0, ffmpeg=ffmpeg_exe,
                        mode="predict")
    assert [p.crf for p in picks] == [28, 28] and all(p.met for p in picks)
    assert scorer.asked == [3] * 4  # each shot: the input and its probe

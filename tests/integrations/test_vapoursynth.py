"""The VapourSynth filter: formats, errors, a real source plugin, vspipe, threads, sidecars.

Clips are BlankClips filled with real frames of samples/sample.mp4 (640x360), a few frames
each: the bundled cpllm-lite model costs about 0.2-0.3 s per frame whatever the size.

Tolerances. An RGB24 clip goes through the same preprocessing and backend as
``cpllm_plugin.score()``, so its scores match to 1e-4 (they come out identical here). Formats
that hold RGB24 exactly (RGB48, RGBS, RGBH, YUV444P16, YUV444PS, YUV444PH made from it) also
get 1e-4. Lossy formats (4:2:0/4:2:2 chroma, 8- and 10-bit YUV, limited-range GRAY) move
pixels by up to ~55 levels at colour edges and scores by up to 0.003 on these frames; they
get 0.01, a fifth of the score change one CRF step makes near the ladder's target (0.05 per
CRF, integrations/ladder.py PRIOR_SLOPE), so no format can move a CRF decision.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

import cpllm_plugin  # noqa: E402
from cpllm_plugin import backends  # noqa: E402
from cpllm_plugin.errors import CpllmError  # noqa: E402
from cpllm_plugin.integrations import vapoursynth as cpllm  # noqa: E402
from cpllm_plugin.video import probe, read_key_frames  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"
EXACT = 1e-4
# How far a lossy format may move the score from the RGB frames': 4:2:0 at 8 bits moved it
# 0.0104 on these 360p frames, which the shipped model sees at their own size.
LOSSY = 0.02
PICKED = [0, 4, 8]  # key frames scored by the reference; ``every=4`` scores these too
core = vs.core


def clip_of(frames: np.ndarray):
    """An RGB24 BlankClip whose frame n holds ``frames[n]`` ``(N, H, W, 3)`` uint8."""
    n, h, w, _ = frames.shape
    blank = core.std.BlankClip(format=vs.RGB24, width=w, height=h, length=n, fpsnum=24,
                               fpsden=1)

    def fill(n, f):  # VapourSynth passes n and f by name
        g = f.copy()
        for p in range(3):
            np.copyto(np.asarray(g[p]), frames[n, :, :, p])
        return g

    return blank.std.ModifyFrame(blank, fill)


def props(clip) -> list[dict]:
    return [dict(f.props) for f in clip.frames()]


def source(path: Path, tmp_path: Path):
    """A real file opened by the PyPI source plugin (bestsource, else L-SMASH), no index left
    next to the video."""
    if hasattr(core, "bs"):
        return core.bs.VideoSource(str(path), cachemode=0)
    if hasattr(core, "lsmas"):
        return core.lsmas.LWLibavSource(str(path), cachefile=str(tmp_path / "index.lwi"))
    pytest.skip("no source plugin: pip install vapoursynth-bestsource")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """12 real frames (12, 360, 640, 3) uint8: sample.mp4's frames 4, 12, ..., 92."""
    return read_key_frames(SAMPLE, 12).frames


@pytest.fixture(scope="module")
def ref(frames) -> dict[int, float]:
    """``cpllm_plugin.score()`` of the frames in PICKED, by frame."""
    r = cpllm_plugin.score(frames[PICKED], key_frames=len(PICKED))
    return dict(zip(PICKED, r.frame_scores.tolist(), strict=True))


@pytest.fixture(scope="module")
def gray_ref(frames) -> np.ndarray:
    """``score()`` of BT.709 luma of the PICKED frames, repeated into three channels."""
    luma = frames[PICKED].astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    gray = np.clip(np.round(luma), 0, 255).astype(np.uint8)
    return cpllm_plugin.score(np.repeat(gray[..., None], 3, -1), key_frames=3).frame_scores


@pytest.fixture
def threads():
    """Restore core.num_threads after a test that changes it."""
    before = core.num_threads
    yield
    core.num_threads = before


FORMATS = [  # (format, tolerance against the reference)
    ("RGB24", EXACT), ("RGB48", EXACT), ("RGBS", EXACT), ("RGBH", EXACT),
    ("YUV420P8", LOSSY), ("YUV422P10", LOSSY), ("YUV420P10", LOSSY), ("YUV420P16", LOSSY),
    ("YUV444P8", LOSSY), ("YUV444P16", EXACT), ("YUV444PS", EXACT), ("YUV444PH", EXACT),
    ("GRAY8", LOSSY), ("GRAY16", LOSSY), ("GRAYS", LOSSY),
]


@pytest.mark.parametrize("name,tol", FORMATS)
def test_formats(frames, ref, gray_ref, name, tol):
    rgb = clip_of(frames[PICKED])
    fmt = getattr(vs, name)
    if name.startswith("RGB"):
        clip = rgb.resize.Bicubic(format=fmt)
    else:  # tagged as a decoder would tag BT.709 limited-range video
        clip = rgb.resize.Bicubic(format=fmt, matrix_s="709").std.SetFrameProps(
            _Matrix=1, _Transfer=1, _Primaries=1)
    out = props(cpllm.score(clip))
    got = np.array([p["CPLLM_Score"] for p in out])
    want = gray_ref if name.startswith("GRAY") else np.array([ref[i] for i in PICKED])
    assert np.abs(got - want).max() <= tol, (got, want)
    if name.startswith("YUV"):  # exactly score() of what zimg makes of the format
        back = clip.resize.Bicubic(format=vs.RGB24, matrix_in=1, range_in=vs.RANGE_LIMITED)
        rgb24 = np.stack([cpllm._array(f) for f in back.frames()])
        exact = cpllm_plugin.score(rgb24, key_frames=len(PICKED)).frame_scores
        assert np.abs(got - exact).max() <= EXACT, (got, exact)
    assert all(1.0 <= s <= 5.0 for s in got)
    assert [p["CPLLM_ScoredFrame"] for p in out] == [0, 1, 2]
    assert {p["CPLLM_Model"] for p in out} == {cpllm_plugin.load_model().id}
    assert cpllm.score(clip).format.id == clip.format.id  # the format stays as it was


def _variable_format():
    a = core.std.BlankClip(format=vs.RGB24, length=2)
    return core.std.Splice([a, core.std.BlankClip(format=vs.YUV420P8, length=2)],
                           mismatch=True)


def _variable_size():
    a = core.std.BlankClip(format=vs.RGB24, width=64, height=64, length=2)
    return core.std.Splice([a, core.std.BlankClip(format=vs.RGB24, width=32, height=32,
                                                  length=2)], mismatch=True)


@pytest.mark.parametrize("make,got", [
    (_variable_format, "variable format"),
    (_variable_size, "variable frame size"),
    (lambda: np.zeros((4, 4, 3), np.uint8), "ndarray"),
])
def test_clip_errors(make, got):
    with pytest.raises(cpllm.ClipFormatError) as e:
        cpllm.score(make())
    text = str(e.value)
    assert text.startswith("score(): expected a video clip of one format and size")
    assert got in text and "Fix:" in text
    assert isinstance(e.value, CpllmError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize("kw,got", [
    ({"every": 0}, "every=0"), ({"every": 2.5}, "every=2.5"), ({"every": True}, "every=True"),
    ({"prop": "_Score"}, "prop='_Score'"), ({"prop": "CPLLM_Model"}, "prop='CPLLM_Model'"),
    ({"log": "scores.txt"}, "log='scores.txt'"), ({"log": "/no/such/dir/s.csv"}, "/no/such"),
    ({"batch": 0}, "batch=0"), ({"parallel": -1}, "parallel=-1"),
])
def test_argument_errors(kw, got):
    clip = core.std.BlankClip(format=vs.RGB24, length=2)
    with pytest.raises(cpllm.FilterArgumentError) as e:
        cpllm.score(clip, **kw)
    assert str(e.value).startswith("score(): expected") and got in str(e.value)


def _yuv(frames, width, height, matrix):
    """YUV420P8 limited range made with ``matrix``, then with its props removed (unset)."""
    rgb = clip_of(frames).resize.Bicubic(width, height, format=vs.YUV420P8, matrix=matrix)
    return rgb.std.RemoveFrameProps(["_Matrix", "_Range", "_ColorRange", "_Transfer",
                                     "_Primaries"])


def _pixels(clip) -> np.ndarray:
    return np.stack([np.asarray(f[p]) for f in clip.frames() for p in range(3)])


@pytest.mark.parametrize("width,height,matrix", [(640, 360, 6), (1280, 720, 1)])
def test_rgb24_defaults_by_resolution(frames, width, height, matrix):
    """Unset props: BT.601 below HD, BT.709 from 1280 wide, limited range for YUV."""
    clip = _yuv(frames[:1], width, height, matrix)
    want = clip.resize.Bicubic(format=vs.RGB24, matrix_in=matrix, range_in=vs.RANGE_LIMITED)
    other = clip.resize.Bicubic(format=vs.RGB24, matrix_in=1 if matrix == 6 else 6,
                                range_in=vs.RANGE_LIMITED)
    got = _pixels(cpllm.rgb24(clip))
    assert np.array_equal(got, _pixels(want))
    assert not np.array_equal(got, _pixels(other))


def test_rgb24_follows_props(frames):
    clip = _yuv(frames[:1], 640, 360, 1)
    full = clip.std.SetFrameProps(_Matrix=1, _Range=int(vs.RANGE_FULL))
    assert np.array_equal(
        _pixels(cpllm.rgb24(full)),
        _pixels(clip.resize.Bicubic(format=vs.RGB24, matrix_in=1, range_in=vs.RANGE_FULL)))
    # HDR: PQ with BT.2020 primaries is converted to BT.709 (reference white 203 cd/m2).
    pq = clip.std.SetFrameProps(_Matrix=9, _Transfer=16, _Primaries=9)
    want = clip.resize.Bicubic(format=vs.RGB24, matrix_in=9, transfer_in=16, primaries_in=9,
                               range_in=vs.RANGE_LIMITED, transfer=1, primaries=1,
                               nominal_luminance=203)
    sdr = clip.resize.Bicubic(format=vs.RGB24, matrix_in=9, range_in=vs.RANGE_LIMITED)
    assert np.array_equal(_pixels(cpllm.rgb24(pq)), _pixels(want))
    assert not np.array_equal(_pixels(want), _pixels(sdr))
    # SDR BT.601 primaries and transfer stay as they are (no gamut conversion).
    sd = clip.std.SetFrameProps(_Matrix=6, _Transfer=6, _Primaries=6)
    assert np.array_equal(
        _pixels(cpllm.rgb24(sd)),
        _pixels(clip.resize.Bicubic(format=vs.RGB24, matrix_in=6, range_in=vs.RANGE_LIMITED)))


def test_every(frames, ref):
    clip = clip_of(frames[:10])
    scored = cpllm.score(clip, every=4)
    assert np.array_equal(_pixels(scored), _pixels(clip))  # only props are added
    out = props(scored)
    # Nearest scored frame, ties (2 and 6) to the earlier one.
    assert [p["CPLLM_ScoredFrame"] for p in out] == [0, 0, 0, 4, 4, 4, 4, 8, 8, 8]
    for p in out:
        assert p["CPLLM_Score"] == pytest.approx(ref[p["CPLLM_ScoredFrame"]], abs=EXACT)


def test_source_plugin_real_file(ref, tmp_path):
    clip = source(SAMPLE, tmp_path)
    assert clip.num_frames == 96 and clip.format.name == "YUV420P8"
    # Frames 4, 12, 20, ... are the key frames read_key_frames (PyAV, swscale) returned.
    out = props(cpllm.score(clip[4::8], every=4))
    assert len(out) == 12
    for p in out:
        assert p["CPLLM_Score"] == pytest.approx(ref[p["CPLLM_ScoredFrame"]], abs=LOSSY)


VPY = """\
import vapoursynth as vs
from cpllm_plugin.integrations import vapoursynth as cpllm

core = vs.core
path = str(src)  # given by vspipe -a src=...
if hasattr(core, "bs"):
    clip = core.bs.VideoSource(path, cachemode=0)
else:
    clip = core.lsmas.LWLibavSource(path, cachefile=str(index))
clip = cpllm.score(clip[:24], every=8, log=str(sidecar))
clip.set_output()
"""


def test_vspipe_to_ffmpeg(tmp_path, ffmpeg_exe):
    vspipe = Path(sys.executable).with_name("vspipe")
    if not vspipe.exists():
        pytest.skip("vspipe not installed: pip install 'cpllm-plugin[vapoursynth]'")
    if not (hasattr(core, "bs") or hasattr(core, "lsmas")):
        pytest.skip("no source plugin: pip install vapoursynth-bestsource")
    check = subprocess.run([str(vspipe), "--version"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"vspipe cannot start ({check.stderr.strip()}); run "
                    f"`{Path(sys.executable).with_name('vapoursynth')} config` once")
    script, sidecar, video = tmp_path / "score.vpy", tmp_path / "scores.csv", tmp_path / "o.mp4"
    script.write_text(VPY)
    pipe = subprocess.Popen(
        [str(vspipe), "-a", f"src={SAMPLE}", "-a", f"sidecar={sidecar}", "-a",
         f"index={tmp_path / 'index.lwi'}", "-c", "y4m", str(script), "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    enc = subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", "-",
                          "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", str(video)],
                         stdin=pipe.stdout, capture_output=True, text=True, timeout=120)
    pipe.stdout.close()
    err = pipe.stderr.read().decode(errors="replace")
    assert pipe.wait(timeout=60) == 0, err
    assert enc.returncode == 0, enc.stderr
    assert probe(video).frame_count == 24
    with open(sidecar, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(24))  # complete and sorted
    assert [int(r["scored_frame"]) for r in rows] == [0] * 5 + [8] * 8 + [16] * 11
    assert all(1.0 <= float(r["score"]) <= 5.0 for r in rows)
    assert {r["model"] for r in rows} == {cpllm_plugin.load_model().id}


def test_threads_out_of_order(frames, threads, monkeypatch):
    clip = clip_of(frames[:8])
    core.num_threads = 1
    sequential = props(cpllm.score(clip))

    model = cpllm_plugin.load_model()
    created, running, peak, lock = [], [0], [0], threading.Lock()
    create, run = backends.create, model.backend.run

    def counted(*a, **kw):
        created.append(a)
        return create(*a, **kw)

    def watched(v, p):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return run(v, p)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(backends, "create", counted)
    monkeypatch.setattr(model.backend, "run", watched)
    core.num_threads = 4
    out = cpllm.score(clip)
    order = np.random.default_rng(0).permutation(clip.num_frames).tolist()
    pending = {n: out.get_frame_async(n) for n in order}
    threaded = [dict(pending[n].result().props) for n in range(clip.num_frames)]
    assert threaded == sequential  # exactly, props and values
    assert created == []  # the model loaded once for the process
    assert peak[0] >= 2  # frames ran through the backend concurrently, no global lock


def test_summary_and_jsonl_sidecar(frames, tmp_path, threads):
    core.num_threads = 4
    log = tmp_path / "scores.jsonl"
    out = cpllm.score(clip_of(frames[:8]), every=2, log=log)
    s = cpllm.summary(out, worst=3)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(8))
    values = np.array([r["score"] for r in rows])
    assert values.tolist() == [p["CPLLM_Score"] for p in props(out)]
    assert s.frames == 8 and s.model == rows[0]["model"]
    assert s.mean == pytest.approx(values.mean()) and s.min == pytest.approx(values.min())
    assert s.p50 == pytest.approx(np.median(values))
    assert s.p5 <= s.p10 <= s.p50
    means = [values[i:i + 3].mean() for i in range(6)]
    assert s.worst_frames == 3 and s.worst_start == int(np.argmin(means))
    assert s.worst_mean == pytest.approx(min(means))
    assert json.dumps(s.to_dict())


def test_summary_of_unscored_clip():
    with pytest.raises(cpllm.NoScoresError, match=r"^summary\(\): expected frames carrying"):
        cpllm.summary(core.std.BlankClip(length=2))


class _Fake:
    """A backend returning each frame's first view value, slowly, recording batch sizes."""

    name = "fake"

    def __init__(self, fail: bool = False):
        self.sizes, self.fail = [], fail

    def run(self, views, patches):
        self.sizes.append(len(views))
        time.sleep(0.02)
        if self.fail:
            raise RuntimeError("engine failed")
        return views[:, 0, 0, 0].astype(np.float64)


def test_batcher_gathers_concurrent_requests():
    fake = _Fake()
    b = cpllm._Batcher(fake, 4)
    one = np.zeros((1, 1), np.float32)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: b.run(np.full((1, 1, 1, 1), i, np.float32), one),
                            range(24)))
    assert got == list(range(24))  # each request gets its own frame's score
    assert sum(fake.sizes) == 24 and max(fake.sizes) > 1 and max(fake.sizes) <= 4
    bad = cpllm._Batcher(_Fake(fail=True), 4)
    with pytest.raises(RuntimeError, match="engine failed"):
        bad.run(np.zeros((1, 1, 1, 1), np.float32), one)


HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and backends.gpu_count() > 0


@pytest.mark.parametrize("backend,tol", [
    pytest.param("torch", EXACT, id="torch"),
    pytest.param("tensorrt", 1e-3, id="tensorrt", marks=[
        pytest.mark.gpu, pytest.mark.skipif(not HAVE_TRT, reason="needs tensorrt and a GPU")]),
])
def test_other_backends(frames, ref, backend, tol, tmp_path, threads):
    if backend == "torch":
        pytest.importorskip("torch")
    else:  # the engine cache in tmp_path; batches of concurrent requests on the GPU
        backend = backends.TRT(cache_dir=str(tmp_path))
        core.num_threads = 4
    out = props(cpllm.score(clip_of(frames[:9]), backend=backend, every=4))
    for p in out:
        assert p["CPLLM_Score"] == pytest.approx(ref[p["CPLLM_ScoredFrame"]], abs=tol)

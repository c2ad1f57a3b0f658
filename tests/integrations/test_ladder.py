"""cpllm-ladder pick: the search on real encodes with a stub scorer (known answers), the
CLI's JSON, exit codes, cache, bad input, signals; and the bundled model end to end."""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cpllm_plugin.integrations import ffmpeg as ff
from cpllm_plugin.integrations import ladder as lad

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample.mp4"
FAST = lad.Settings(preset="ultrafast")


class Bitrate:
    """A stub scorer, monotone in bits per pixel: higher CRF -> fewer bits -> lower score."""

    id = "stub-bitrate"

    def __init__(self):
        self.calls = 0

    def __call__(self, paths, key_frames):
        from cpllm_plugin.video import probe

        self.calls += 1
        out = []
        for p, k in zip(paths, key_frames, strict=True):
            info = probe(p)
            bpp = os.path.getsize(p) * 8 / (info.width * info.height * info.frame_count)
            out.append(np.full(k, 1 + 4 * (1 - math.exp(-bpp / 0.05))))
        return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clip(ffmpeg_exe, out: Path, *args, seconds: float = 2.0, size="320x180") -> Path:
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(SAMPLE),
                    "-t", str(seconds), "-vf", f"scale={size.replace('x', ':')}", *args,
                    str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def small(ffmpeg_exe, tmp_path_factory):
    return _clip(ffmpeg_exe, tmp_path_factory.mktemp("ladder") / "small.mp4",
                 "-c:v", "libx264", "-crf", "12", "-preset", "veryfast")


# --- the search without encodes -------------------------------------------------------------


class Curve(lad.Ladder):
    """A ladder whose probes read an analytic score curve instead of encoding."""

    def __init__(self, f, lo=15, hi=51, start=24):
        self.f, self.probes, self.encodes = f, {}, 0
        self.settings = lad.Settings(crf_range=(lo, hi))
        self._start = start

    def probe(self, crf, preset=None, score=True):
        if crf not in self.probes:
            self.encodes += 1
            self.probes[crf] = lad.Probe(crf, self.f(crf), [], 0, 0, 0, 0)
        return self.probes[crf]


def test_monotone_fit_never_rises_with_crf():
    fit = lad.monotone([15, 20, 25, 30], [4.8, 4.5, 4.6, 3.0])
    assert fit == pytest.approx([4.8, 4.55, 4.55, 3.0])
    assert all(a >= b for a, b in zip(fit, fit[1:], strict=False))


def test_search_lands_within_one_crf_of_the_exhaustive_answer_in_six_probes():
    rng = np.random.default_rng(0)
    misses, probes = 0, []
    for _ in range(300):
        # Convex-ish curves like the model's: flat near the top, falling faster later.
        top, knee, bend = rng.uniform(4.6, 5.0), rng.uniform(20, 44), rng.uniform(1.2, 2.6)
        scale = rng.uniform(0.02, 0.12)

        def f(c, top=top, knee=knee, bend=bend, scale=scale):
            return top - scale * max(0.0, c - 15) ** bend / max(1.0, knee - 15) ** (bend - 1)

        target = rng.uniform(3.2, 4.8)
        exhaustive = max((c for c in range(15, 52) if f(c) >= target), default=None)
        lad_ = Curve(f)
        got = lad_.search(target, max_probes=6, start=lad_._start)
        probes.append(lad_.encodes)
        assert lad_.encodes <= 6
        if exhaustive is None:
            assert got is None
        elif got is None or not exhaustive - 1 <= got <= exhaustive:
            misses += 1
        if got is not None:
            assert f(got) >= target  # a pick always meets the target
    assert misses == 0, f"{misses} of 300 curves missed by more than 1 CRF"
    assert np.mean(probes) <= 5


def test_target_rules():
    t = lad.Target.resolve(4.5, 0.25, 4.9)
    assert (t.value, t.rule) == (4.5, "min-score")
    t = lad.Target.resolve(4.5, 0.25, 3.9)  # a degraded source: stay within D of itself
    assert t.value == pytest.approx(3.65) and t.rule == "max-drop"
    assert lad.Target.resolve(4.5, None, 3.9).value == 4.5
    # Just above S the target already follows the source: no cliff at s0 = S.
    above, below = lad.Target.resolve(4.5, 0.25, 4.501), lad.Target.resolve(4.5, 0.25, 4.499)
    assert above.rule == "max-drop" and abs(above.value - below.value) < 0.003
    cal = {95.0: 4.6, 90.0: 4.5, 80.0: 4.0}
    assert lad.vmaf_to_score(95, cal) == 4.6 and lad.vmaf_to_score(85, cal) == pytest.approx(4.25)
    with pytest.raises(lad.LadderArgumentError, match="calibrated range"):
        lad.vmaf_to_score(99, cal)


def test_samples_spread_and_whole_input():
    s = lad.plan_samples(300.0)
    assert len(s) == 10 and s[0].start > 0 and s[-1].start + s[-1].duration < 300
    gaps = np.diff([x.start for x in s])
    assert np.allclose(gaps, gaps[0])
    assert lad.plan_samples(5.0) == [lad.Sample(0.0, 5.0, 15)]  # 3 x 2 s would cover most
    assert len(lad.plan_samples(20.0, window=(10.0, 20.0), count=2, seconds=1)) == 2
    with pytest.raises(lad.InputTooShortError):
        lad.plan_samples(0.1)


def test_settings_args_merge_user_params_with_the_thread_cap():
    s = lad.Settings("libx265", options=(("x265-params", "aq-mode=3"), ("tune", "grain")))
    args = s.args(28, 2)
    assert args[args.index("-x265-params") + 1] == "pools=2:log-level=error:aq-mode=3"
    assert args[-2:] == ["-tune", "grain"] and args[args.index("-crf") + 1] == "28"
    assert "-crf" not in s.public() and "pools=2" not in " ".join(s.public())


# --- real encodes with the stub scorer ------------------------------------------------------


def test_pick_on_real_encodes_matches_exhaustive_and_counts_encodes(small, tmp_path):
    stub = Bitrate()
    with lad.Ladder(small, FAST, stub, workdir=tmp_path / "w") as ladder:
        s0, _ = ladder.source_score()
        target = 3.6
        result = lad.pick(ladder, target)
        assert result.encodes == len(ladder.probes) <= 6
        assert result.score >= target and result.source_score == s0
    with lad.Ladder(small, FAST, Bitrate(), workdir=tmp_path / "w") as full:
        probes = {c: full.probe(c).score for c in range(15, 52)}
    exhaustive = max(c for c, s in probes.items() if s >= target)
    assert exhaustive - 1 <= result.crf <= exhaustive
    assert not any((tmp_path / "w").iterdir())  # working folders removed


def test_a_vmaf_search_scores_the_pick_alone_and_a_cached_probe_is_scored_when_asked(
        small, tmp_path):
    """Scoring costs more than encoding on a small machine, so a VMAF search scores the
    input and its pick only; the other probes get a score when something asks (a score
    search over the same cache re-encodes them), the same score as scored at once."""
    scorer = Bitrate()
    cache = tmp_path / "cache"
    with lad.Ladder(small, FAST, scorer, vmaf=True, cache=cache) as ladder:
        p = lad.pick_vmaf(ladder, 90)
        unscored = [q for q in p.probes if q.crf != p.crf]
        assert unscored and all(q.score is None and q.frame_scores == [] for q in unscored)
        assert scorer.calls == 2 and p.score == ladder.probes[p.crf].score is not None
        assert "score" not in unscored[0].to_dict() and "frame_scores" not in unscored[0].to_dict()
        assert len(list(ladder.dir.glob("crf*.mkv"))) == len(unscored)  # kept to be scored
        late = ladder.scored(unscored[0].crf)
        assert late.score is not None and scorer.calls == 3
        folder = ladder.dir
    assert not folder.exists()
    with lad.Ladder(small, FAST, Bitrate(), vmaf=True) as fresh:
        assert fresh.probe(late.crf).score == pytest.approx(late.score, abs=1e-9)

    # The cache holds the rest unscored: a score search reads them, encodes them again to
    # score them, and counts those encodes.
    rest = [q.crf for q in unscored[1:]]
    with lad.Ladder(small, FAST, Bitrate(), vmaf=True, cache=cache) as again:
        for c in [late.crf, *rest]:
            again.probe(c, score=False)
        assert again.encodes == 0 and again.probes[late.crf].score == late.score
        values = again.values("score")
        assert all(v is not None for v in values.values()) and again.encodes == len(rest)
    with lad.Ladder(small, FAST, Bitrate(), vmaf=True, cache=cache) as third:
        assert all(third.probe(c).from_cache and third.encodes == 0 for c in rest)


def test_raw_references_hold_the_lossless_frames_and_fall_back_past_the_budget(
        small, tmp_path, monkeypatch):
    import av

    def frames(path):
        with av.open(str(path)) as f:
            st = f.streams.video[0]
            return st.codec_context.name, [fr.to_ndarray() for fr in f.decode(st)]

    got = {}
    for budget in (lad.RAW_BUDGET, 0):
        monkeypatch.setattr(lad, "RAW_BUDGET", budget)
        with lad.Ladder(small, FAST, Bitrate(), workdir=tmp_path / "w") as ladder:
            assert ladder.raw_bytes() >= 320 * 180 * 1.5 * 48  # never below the real size
            (ref,) = ladder.references()
            got[budget] = (*frames(ref), ladder.probe(30).bytes)
    (raw_codec, raw, raw_bytes), (ll_codec, ll, ll_bytes) = got.values()
    assert (raw_codec, ll_codec) == ("rawvideo", "h264")
    assert len(raw) == len(ll) == 48
    assert all(np.array_equal(a, b) for a, b in zip(raw, ll, strict=True))
    assert raw_bytes == ll_bytes  # the encoder saw the same frames


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "cpllm_plugin.integrations.cli", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          **kw)


def test_cli_json_schema_exit_codes_and_cache(small, tmp_path, monkeypatch):
    """In-process CLI with the stub scorer: NDJSON lines, a cache hit, the input untouched."""
    from click.testing import CliRunner

    from cpllm_plugin.integrations import cli

    monkeypatch.setattr(lad, "Scorer", lambda model, backend: Bitrate())
    before = _sha(small)
    args = ["pick", str(small), "--min-score", "3.6", "--preset", "ultrafast", "--json",
            "--cache", str(tmp_path / "cache"), "-q"]
    r = CliRunner().invoke(cli.main, args)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    probes = [x for x in lines if x["type"] == "probe"]
    pick = lines[-1]
    assert pick["type"] == "pick" and len(probes) == pick["encodes"] >= 2
    for p in probes:
        assert {"crf", "score", "frame_scores", "bytes", "kbps", "predicted_size", "seconds",
                "from_cache"} <= set(p) and not p["from_cache"]
    assert {"crf", "score", "source_score", "target", "predicted_size", "predicted_kbps",
            "encodes", "model", "encoder", "encoder_args"} <= set(pick)
    assert pick["model"] == "stub-bitrate" and pick["encoder"] == "libx264"

    calls = []
    real = ff.run_ffmpeg
    monkeypatch.setattr(ff, "run_ffmpeg", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = CliRunner().invoke(cli.main, args)
    lines2 = [json.loads(x) for x in again.stdout.splitlines()]
    assert all(x["from_cache"] for x in lines2 if x["type"] == "probe")
    assert lines2[-1]["crf"] == pick["crf"] and lines2[-1]["encodes"] == 0
    assert calls == []  # no ffmpeg at all: source score and probes came from the cache
    assert _sha(small) == before

    # No CRF can reach 5.0: named error with the best CRF tried, exit 1, NDJSON error.
    r = CliRunner().invoke(cli.main, [*args[:2], "--min-score", "5", "--no-max-drop",
                                      *args[4:]])
    err = json.loads(r.stdout.splitlines()[-1])
    assert r.exit_code == 1 and err["type"] == "error"
    assert err["error"] == "NoCrfMeetsTargetError" and "best CRF tried is 15" in err["message"]


def test_cli_vmaf_side_by_side(small, tmp_path, monkeypatch):
    """--vmaf: every probe and the pick carry VMAF against the reference samples, which
    falls as the CRF rises and agrees with libvmaf run directly on the same pair."""
    from click.testing import CliRunner

    from cpllm_plugin.integrations import cli

    monkeypatch.setattr(lad, "Scorer", lambda model, backend: Bitrate())
    r = CliRunner().invoke(cli.main, ["pick", str(small), "--min-score", "3.6", "--preset",
                                      "ultrafast", "--json", "--no-cache", "-q", "--vmaf"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    probes = sorted((x for x in lines if x["type"] == "probe"), key=lambda x: x["crf"])
    vmafs = [p["vmaf"] for p in probes]
    assert all(0 <= v <= 100 for v in vmafs) and vmafs == sorted(vmafs, reverse=True)
    pick = lines[-1]
    assert pick["vmaf"] == next(p["vmaf"] for p in probes if p["crf"] == pick["crf"])

    # The same number by hand: the whole 2 s clip is the one sample.
    out = tmp_path / "pick.mkv"
    subprocess.run([ff.find_ffmpeg(), "-loglevel", "error", "-i", str(small),
                    *FAST.args(pick["crf"], 2), str(out)], check=True)
    assert ff.measure_fr(small, out, psnr=False)[0] == pytest.approx(pick["vmaf"], abs=0.05)


def test_cli_bad_input_is_named(tmp_path, ffmpeg_exe):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    audio = tmp_path / "audio.m4a"
    subprocess.run([ffmpeg_exe, "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1",
                    "-c:a", "aac", str(audio)], check=True)
    cut = tmp_path / "cut.mp4"
    data = SAMPLE.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    for path, name in ((tmp_path / "missing.mp4", "VideoNotFoundError"),
                       (empty, "EmptyInputError"), (junk, "VideoDecodeError"),
                       (audio, "NoVideoStreamError"), (cut, "VideoDecodeError")):
        r = _cli("pick", path, "--json", "--min-score", "4", "--no-cache", "-q")
        assert r.returncode == 1, (path, r.stdout, r.stderr)
        err = json.loads(r.stdout.splitlines()[-1])
        assert err["error"] == name and "Traceback" not in r.stderr, (path, err)
    r = _cli("pick", SAMPLE, "--encoder", "x264")
    assert r.returncode == 2 and "x264" in r.stderr
    r = _cli("pick", SAMPLE, "--crf-range", "40:20", "--min-score", "4", "--no-cache", "-q")
    assert r.returncode == 1 and "crf-range" in r.stderr


def test_ten_bit_input_keeps_its_depth_and_hdr_warns(ffmpeg_exe, tmp_path):
    src = _clip(ffmpeg_exe, tmp_path / "hdr10.mkv", "-c:v", "libx265", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p10le", "-x265-params",
                "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc",
                seconds=1)
    from cpllm_plugin.video import probe

    depths = []

    class Depth(Bitrate):
        def __call__(self, paths, key_frames):
            depths.extend(probe(p).bit_depth for p in paths)
            return super().__call__(paths, key_frames)

    with lad.Ladder(src, FAST, Depth(), workdir=tmp_path / "w") as ladder:
        assert ladder.source.bit_depth == 10 and ladder.source.hdr
        with pytest.warns(UserWarning, match="HDR"):
            lad.pick(ladder, 3.0, max_probes=2)
    assert depths and set(depths) == {10}


def test_source_names_the_codec_not_its_decoder(ffmpeg_exe, tmp_path):
    # PyAV reads AV1 with libdav1d; keep compares the input's format with the encoder's.
    av1 = _clip(ffmpeg_exe, tmp_path / "av1.mp4", "-c:v", "libsvtav1", "-preset", "12",
                seconds=0.5, size="160x96")
    assert lad.inspect(av1).codec == ff.get_encoder("libsvtav1").codec == "av1"
    assert lad.inspect(SAMPLE).codec == ff.get_encoder("libx264").codec == "h264"


def test_interlaced_input_warns_unless_the_filter_deinterlaces(ffmpeg_exe, small, tmp_path):
    # -vf interlace weaves frame pairs into top-field-first frames, coded as interlaced.
    src = tmp_path / "interlaced.mp4"
    subprocess.run([ffmpeg_exe, "-loglevel", "error", "-i", str(SAMPLE), "-t", "2", "-vf",
                    "scale=320:180,interlace", "-c:v", "libx264", "-preset", "ultrafast",
                    "-flags", "+ildct+ilme", str(src)], check=True)
    assert lad.inspect(small).fields is None
    with lad.Ladder(src, FAST, Bitrate(), workdir=tmp_path / "w") as ladder:
        assert ladder.source.fields == "top field first"
        with pytest.warns(UserWarning, match=r"interlaced \(top field first\).*--vfilter bwdif"):
            lad.pick(ladder, 3.0, max_probes=2)
    deinterlaced = replace(FAST, vfilter="bwdif")
    with lad.Ladder(src, deinterlaced, Bitrate(), workdir=tmp_path / "d") as ladder:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lad.pick(ladder, 3.0, max_probes=2)


def test_variable_frame_rate_input(ffmpeg_exe, tmp_path):
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([ffmpeg_exe, "-loglevel", "error", "-i", str(SAMPLE), "-t", "2", "-vf",
                    "scale=320:180,setpts='N/24/TB+0.02*sin(N)/TB'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-preset", "ultrafast", str(vfr)], check=True)
    with lad.Ladder(vfr, FAST, Bitrate(), workdir=tmp_path / "w") as ladder:
        assert lad.pick(ladder, 3.6).crf >= 15


def _default_sigint():
    # A shell without job control starts background jobs with SIGINT ignored, and Python
    # keeps an inherited SIG_IGN: give the child the SIGINT a terminal's Ctrl-C would meet.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_leaves_no_temporary_files(ffmpeg_exe, tmp_path):
    long = tmp_path / "long.mp4"
    subprocess.run([ffmpeg_exe, "-loglevel", "error", "-stream_loop", "6", "-i", str(SAMPLE),
                    "-c:v", "libx264", "-preset", "ultrafast", str(long)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpllm_plugin.integrations.cli", "pick", str(long),
         "--min-score", "4", "--no-cache", "--temp-dir", str(work), "--preset", "medium"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    t0 = time.time()
    while not any(work.iterdir()) and time.time() - t0 < 120:  # a probe is under way
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert list(work.iterdir()) == [] and "Traceback" not in err


@pytest.mark.slow
def test_bundled_model_end_to_end(tmp_path):
    """The real default model through the CLI on the bundled sample (what make demo runs)."""
    r = _cli("pick", SAMPLE, "--json", "--cache", tmp_path / "c", "--plot", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    pick = lines[-1]
    assert pick["model"].startswith("cpllm-lite@") and 15 <= pick["crf"] <= 51
    # The default mode is auto: VMAF against the input, at 95 for a clean clip like this one.
    assert pick["target_measure"] == "vmaf" and pick["target"] == 95
    assert pick["vmaf"] >= pick["target"] and pick["encodes"] <= 6
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_cli_encode_writes_the_picked_crf(small, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cpllm_plugin.integrations import cli
    from cpllm_plugin.video import read_key_frames

    monkeypatch.setattr(lad, "Scorer", lambda model, backend: Bitrate())
    out = tmp_path / "out.mp4"
    args = ["encode", str(small), "-o", str(out), "--min-score", "3.6", "--preset",
            "ultrafast", "--json", "--no-cache", "-q"]
    r = CliRunner().invoke(cli.main, args)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    pick = next(x for x in lines if x["type"] == "pick")
    assert lines[-1]["type"] == "encode"
    assert f"crf={pick['crf']}.0".encode() in out.read_bytes()  # x264's settings SEI
    assert read_key_frames(out, 3).frames.shape[0] == 3  # it plays
    again = CliRunner().invoke(cli.main, args)
    err = json.loads(again.stdout.splitlines()[-1])
    assert again.exit_code == 1 and err["error"] == "OutputExistsError"


def test_tiny_model_end_to_end(small, tmp_path):
    """A real (untrained, tiny) model through the whole CLI: torch backend, key frames read
    from the probe encodes, pooled, searched."""
    r = _cli("pick", small, "--model", "cpllm-tiny", "--backend", "torch", "--min-score", "1",
             "--preset", "ultrafast", "--json", "--no-cache", "--pool", "p10")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    pick = rows[-1]
    assert pick["type"] == "pick" and pick["model"].startswith("cpllm-tiny@")
    assert all(len(x["frame_scores"]) == 8 for x in rows[:-1])  # 2 s clip: one 8-frame sample
    assert "untrained" in r.stderr  # the tiny model says its scores mean nothing

"""cpllm-ladder --mode predict: a CRF from its probe and the input's stream, no reference
and no VMAF. Its rule file, its features, its errors, and the mode end to end on a clip and
on an earlier encode of it."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from cpllm_plugin.integrations import ladder as lad
from cpllm_plugin.integrations import predict

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"


def _rule(**kw):
    return predict.Predictor(kw.pop("encoder", "libx264"), (27, 39),
                             kw.pop("weights", {"const": 18.0, "reencoded": 1.0}),
                             kw.pop("margin", 1.0))


def test_features_read_an_earlier_encode_noise_and_size():
    x = predict.features(30.0, 9.0, 0.05, 720, 4.5, [4.4, 3.9])
    assert x["const"] == 1 and x["reencoded"] == pytest.approx(10.0)
    assert x["noisy"] == pytest.approx(5.0)
    assert x["bits"] == pytest.approx(-4.3219, abs=1e-4)
    assert x["height"] == pytest.approx(9.49, 0.01)
    assert x["drop_lo"] == pytest.approx(-0.1) and x["drop_hi"] == pytest.approx(-0.6)
    assert predict.features(30.0, 9.0, 0.05, 720, 4.5, [4.2])["drop_hi"] == pytest.approx(-0.3)
    # A master's bitrate reads below the hinge; unknown reads as a master; a tiny upload's
    # extrapolated CRF 114 is capped.
    for e, want in ((8.0, 0), (None, 0), (114.0, 31)):
        assert predict.features(e, 1.0, 0.1, 720, 4, [4])["reencoded"] == want
    assert predict.features(None, 2.0, 0.1, 720, 4, [4])["noisy"] == 0


def test_equivalent_crf_from_one_probe_or_two():
    # 800 kb/s at CRF 30; the input at 1600 kb/s is one halving (6 CRF) below it.
    assert predict.equivalent_crf({30: 800.0}, 1600.0) == pytest.approx(24.0)
    assert predict.equivalent_crf({30: 800.0}, 0.0) is None
    two = {c: 800 * 2 ** (-(c - 30) / 5) for c in (30, 40)}  # 5 CRF a halving here
    assert predict.equivalent_crf(two, 1600.0) == pytest.approx(25.0)


def test_rule_estimates_clips_and_round_trips(tmp_path):
    r = _rule()
    x = predict.features(30.0, 1.0, 0.1, 720, 4, [4, 4])
    assert r.estimate(x) == pytest.approx(28.0)
    assert r.crf(x, 15, 51) == 27 and r.crf(x, 15, 24) == 24
    predict.save(r, tmp_path)
    assert predict.load(tmp_path) == r
    assert predict.load(tmp_path / "nowhere") is None


@pytest.mark.parametrize("bad, match", [
    ({"format": "other"}, "format"),
    ({"format": predict.FORMAT, "probes": [27, 39], "weights": {"colour": 1.0}}, "weights"),
    ({"format": predict.FORMAT, "probes": [39, 27], "weights": {"const": 1.0}}, "probe"),
    ({"format": predict.FORMAT, "probes": [], "weights": {"const": 1.0}}, "probe"),
    ([1, 2], "JSON object"),
])
def test_bad_rule_files_are_named(tmp_path, bad, match):
    (tmp_path / predict.PREDICT_FILE).write_text(json.dumps(bad))
    with pytest.raises(predict.PredictFileError, match=match) as e:
        predict.load(tmp_path)
    assert "cpllm_plugin.training.picker" in str(e.value)
    (tmp_path / predict.PREDICT_FILE).write_text("{not json")
    with pytest.raises(predict.PredictFileError, match="readable JSON"):
        predict.load(tmp_path)


def test_predict_takes_no_target_and_no_full():
    for kw in ({"min_score": 4.0}, {"min_vmaf": 93.0}):
        with pytest.raises(lad.LadderArgumentError, match="--mode predict"):
            lad.Job(SAMPLE, lad.PickOptions(mode="predict", **kw), scorer=object())
    with pytest.raises(lad.LadderArgumentError, match="--full"):
        lad.Job(SAMPLE, lad.PickOptions(mode="predict", full=True), scorer=object())


class _Stub:
    """A scorer with rules of its own (or none) that fails if anything is scored."""

    id = "stub"

    def __init__(self, *rules):
        self.rules = {r.encoder: r for r in rules}

    def predictor(self, encoder="libx264"):
        return self.rules.get(encoder)

    def predict_encoders(self):
        return sorted(self.rules)

    def __call__(self, paths, key_frames):
        raise AssertionError("scored before the rule was checked")


@pytest.mark.parametrize("rules, opts, match", [
    ((), {}, "a fitted predict rule"),
    ((_rule(),), {"encoder": "libx265"}, r"has a rule for \(libx264;.*--codec libx265"),
])
def test_predict_needs_a_rule_for_its_encoder(tmp_path, rules, opts, match):
    job = lad.Job(SAMPLE, lad.PickOptions(mode="predict", no_cache=True, temp_dir=tmp_path,
                                          **opts), scorer=_Stub(*rules))
    with pytest.raises(lad.LadderArgumentError, match=match) as e:
        job.pick()
    assert "--mode auto" in str(e.value)


def test_each_encoder_has_its_own_rule_file(tmp_path):
    x264, x265 = _rule(), _rule(encoder="libx265")
    assert predict.save(x264, tmp_path).name == "predict.json"
    assert predict.save(x265, tmp_path).name == "predict-libx265.json"
    assert predict.encoders(tmp_path) == ["libx264", "libx265"]
    assert predict.load(tmp_path, "libx265") == x265 and predict.load(tmp_path) == x264
    assert predict.load(tmp_path, "libsvtav1") is None
    # A file under one encoder's name holding another's rule is refused, not used.
    (tmp_path / "predict-libsvtav1.json").write_text(json.dumps(x265.to_dict()))
    with pytest.raises(predict.PredictFileError, match="a rule for libsvtav1"):
        predict.load(tmp_path, "libsvtav1")


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["libx264", "libx265", "libsvtav1"])
def test_predict_runs_its_probe_and_no_vmaf(master_and_upload, tmp_path, encoder):
    """Each shipped rule on a lossless master and on a CRF 40 encode of it: its probe encodes
    alone, with its encoder, no VMAF measured, and the earlier encode, whose own CRF caps what
    a re-encode can keep, gets the higher CRF."""
    master, upload = master_and_upload
    scorer = lad.Scorer()
    opts = {"mode": "predict", "no_cache": True, "temp_dir": tmp_path, "encoder": encoder}
    on_master = lad.pick_file(master, lad.PickOptions(**opts), scorer)
    on_upload = lad.pick_file(upload, lad.PickOptions(**opts), scorer)
    rule = scorer.predictor(encoder)
    assert rule.encoder == encoder == on_master.encoder
    lo, hi = lad.PickOptions(encoder=encoder).settings().search
    for p in (on_master, on_upload):
        assert p.encodes == len(rule.probes) and [q.crf for q in p.probes] == list(rule.probes)
        assert all(q.vmaf is None for q in p.probes) and p.vmaf is None
        assert p.target.measure == "crf" and lo <= p.crf <= hi
        # The pick's bitrate is read off the probe: more bits below its CRF, fewer above.
        first = p.probes[0]
        # a 2 s input: one sample of 8 key frames by the plan, or the rule's fewer
        assert len(first.frame_scores) == min(rule.key_frames or 8, 8)
        assert (p.predicted_kbps > first.kbps) == (p.crf < first.crf)
    # x264's CRF 40 reads as an earlier encode on every encoder's own CRF scale
    seen = re.search(r"reads as CRF ([\d.]+)", on_upload.target.rule)
    assert "master" in on_master.target.rule and seen
    assert float(seen.group(1)) > predict.scale(encoder).start + 10
    assert on_upload.crf > on_master.crf


@pytest.mark.slow
def test_predict_on_the_command_line(tmp_path):
    """The table says the pick was not encoded; --json carries the probe and the estimate."""
    from click.testing import CliRunner

    from cpllm_plugin.integrations.cli import main

    args = ["pick", str(SAMPLE), "--mode", "predict", "--cache", str(tmp_path / "c"), "-q"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "not encoded" in out.output and "no reference" in out.output
    # The probe ran at the rule's own preset, not the encode's, and the table says so.
    assert f"(preset {lad.Scorer().predictor().preset})" in out.output
    rows = [json.loads(x) for x in CliRunner().invoke(main, [*args, "--json"]).output.split("\n")
            if x.strip()]
    pick = rows[-1]
    assert pick["type"] == "pick" and pick["target_measure"] == "crf"
    assert pick["crf"] < pick["target"] and "vmaf" not in pick
    probes = rows[:-1]  # from the cache the second time: no encode, the same probe
    assert pick["encodes"] == 0 and probes and all(
        r["type"] == "probe" and r["from_cache"] and "vmaf" not in r for r in probes)


def test_each_encoder_reads_on_its_own_crf_scale():
    # One probe: x264 halves its bitrate every 6 CRF, SVT-AV1 (CRF to 63) more slowly.
    x264, svt = predict.scale("libx264"), predict.scale("libsvtav1")
    assert predict.equivalent_crf({35: 400.0}, 800.0) == pytest.approx(35 - x264.halving)
    assert predict.equivalent_crf({50: 400.0}, 800.0, "libsvtav1") == pytest.approx(
        50 - svt.halving)
    # The same equivalent CRF is well past x264's masters and short of SVT-AV1's.
    assert predict.features(36.0, 1, 0.1, 720, 4, [4], "libx264")["reencoded"] > 0
    assert predict.features(36.0, 1, 0.1, 720, 4, [4], "libsvtav1")["reencoded"] == 0
    assert predict.scale("libvpx-vp9") == x264  # no scale of its own: x264's


@pytest.mark.slow
def test_input_noise_is_read_off_the_reference_samples(master_and_upload, ffmpeg_exe, tmp_path):
    """``predict`` reads the input's noise off the reference samples it cuts for its probes
    (the input's own frames) instead of decoding the input again: it agrees with decoding the
    input at the same windows, a noisy copy reads noisier, and with ``--vfilter`` (filtered
    references) the input itself is read."""
    import subprocess

    from cpllm_plugin.integrations.stream import noise

    master, _ = master_and_upload
    noisy = tmp_path / "noisy.mkv"
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(master),
                    "-vf", "noise=alls=16:allf=t", "-c:v", "libx264", "-qp", "0", "-preset",
                    "ultrafast", str(noisy)], check=True)
    read = {}
    for name, path in (("master", master), ("noisy", noisy)):
        with lad.Ladder(path, lad.Settings(), scorer=None, workdir=tmp_path) as ladder:
            windows = [(s.start, s.duration) for s in ladder.samples]
            read[name] = ladder.input_noise()
            assert ladder._refs is not None  # read off the references, cut here
            assert read[name] == pytest.approx(noise(path, windows), rel=0.1, abs=0.1)
    assert read["noisy"] > read["master"] + 2
    with lad.Ladder(noisy, lad.Settings(vfilter="scale=iw/2:-2"), scorer=None,
                    workdir=tmp_path) as ladder:
        windows = [(s.start, s.duration) for s in ladder.samples]
        assert ladder.input_noise() == noise(noisy, windows) and ladder._refs is None


def test_a_rule_with_a_probe_preset_round_trips_and_is_checked(tmp_path):
    r = predict.Predictor("libx264", (43,), {"const": 30.0}, 3.0, {}, "veryfast", 1.25)
    predict.save(r, tmp_path)
    assert predict.load(tmp_path) == r
    assert "preset" not in _rule().to_dict()  # probes at the pick's own preset
    r = replace(r, key_frames=5)
    predict.save(r, tmp_path)
    assert predict.load(tmp_path) == r and predict.load(tmp_path).key_frames == 5
    assert "key_frames" not in _rule().to_dict()  # the sample plan's
    for bad, match in (({"preset": 7}, "preset name"), ({"rate_scale": 0}, "rate_scale"),
                       ({"key_frames": 0}, "key_frames"), ({"key_frames": 2.5}, "key_frames"),
                       ({"size": {"offset": 0.0}}, "size"),
                       ({"size": {"offset": 0.0, "slope": {"loud": 1.0},
                                  "bounds": [0.1, 0.2]}}, "size"),
                       ({"size": {"offset": 0.0, "slope": {"const": 0.2}}}, "bounds"),
                       ({"size": {"offset": 0.0, "slope": {"const": 0.2},
                                  "bounds": [0.3, 0.1]}}, "bounds")):
        (tmp_path / predict.PREDICT_FILE).write_text(json.dumps({**r.to_dict(), **bad}))
        with pytest.raises(predict.PredictFileError, match=match):
            predict.load(tmp_path)


def test_a_rule_sizes_its_pick_by_its_size_model_else_by_the_line(tmp_path):
    x = {"const": 1.0, "noisy": 3.0}
    size = predict.Size(-0.5, {"const": 0.15, "noisy": 0.05}, (0.1, 0.4))
    r = predict.Predictor("libx264", (43,), {"const": 30.0}, 3.0, {}, "fast", 1.0, 5, size)
    # 13 CRF below the probe at 0.15 + 3 * 0.05 = 0.3 doublings a CRF, less half a doubling.
    assert r.rate({43: 100.0}, 30.0, x) == pytest.approx(100.0 * 2 ** (13 * 0.3 - 0.5))
    # Noise far beyond any training input's (detail that reads as noise 90): the slope stops
    # at the steepest the fit saw.
    loud = {"const": 1.0, "noisy": 86.0}
    assert r.rate({43: 100.0}, 30.0, loud) == pytest.approx(100.0 * 2 ** (13 * 0.4 - 0.5))
    predict.save(r, tmp_path)
    assert predict.load(tmp_path) == r
    old = replace(r, size=None, rate_scale=0.8)  # a rule fitted before size models
    assert old.rate({43: 100.0}, 31.0, x) == pytest.approx(100.0 * 2 ** (12 / 6) * 0.8)
    assert "size" not in old.to_dict()


def test_line_rate_follows_the_probes_line():
    assert predict.line_rate({30: 800.0}, 24.0) == pytest.approx(1600.0)
    assert predict.line_rate({30: 800.0, 40: 200.0}, 35.0) == pytest.approx(400.0)
    assert predict.line_rate({50: 400.0}, 50 - 13.0, "libsvtav1") == pytest.approx(800.0)


class _Flat:
    """A scorer that scores every frame 3."""

    id = "flat"

    def __call__(self, paths, key_frames):
        import numpy as np

        return [np.full(k, 3.0) for k in key_frames]


class _Recording(_Flat):
    """A flat scorer with a ``predict`` rule read at 3 key frames, which notes the key
    frames of every call."""

    def __init__(self):
        self.asked = []

    def __call__(self, paths, key_frames):
        self.asked += list(key_frames)
        return super().__call__(paths, key_frames)

    def predictor(self, encoder="libx264"):
        return predict.Predictor(encoder, (43,), {"const": 30.0, "drop_lo": 1.0}, 2.0, {},
                                 "ultrafast", 1.0, 3)


def test_predict_scores_the_key_frames_its_rule_reads(tmp_path):
    """On the real sample (4 s: one whole-input sample, 15 key frames by the plan),
    ``predict`` scores the input and its probe at the 3 key frames its rule reads; another
    mode, or --key-frames given, keeps the plan."""
    opts = {"no_cache": True, "temp_dir": tmp_path}
    scorer = _Recording()
    pick = lad.pick_file(SAMPLE, lad.PickOptions(mode="predict", **opts), scorer)
    assert scorer.asked == [3, 3] and len(pick.probes[0].frame_scores) == 3
    assert pick.crf == 28  # 30 + a drop of 0, less the margin of 2
    for mode, kf, plan in (("score", None, 15), ("predict", 4, 12)):
        target = {"min_score": 3.0} if mode == "score" else {}
        job = lad.Job(SAMPLE, lad.PickOptions(mode=mode, key_frames=kf, **target, **opts),
                      scorer)
        with job.ladder() as ladder:
            assert [s.key_frames for s in ladder.samples] == [plan]


def test_a_probe_at_its_own_preset_is_encoded_and_cached_apart(tmp_path):
    """``predict``'s probes run at the rule's preset whatever the pick's is: encoded at it
    (another size), marked with it, and cached apart from a probe at the pick's preset."""
    opts = lad.PickOptions(mode="predict", cache=tmp_path / "c", temp_dir=tmp_path)
    with lad.Job(SAMPLE, opts, scorer=_Flat()).ladder() as ladder:
        own = ladder.probe(35, "ultrafast")
    with lad.Job(SAMPLE, opts, scorer=_Flat()).ladder() as ladder:
        pick = ladder.probe(35)
    assert own.preset == "ultrafast" and pick.preset is None and not pick.from_cache
    assert own.bytes != pick.bytes
    assert own.to_dict()["preset"] == "ultrafast" and "preset" not in pick.to_dict()
    with lad.Job(SAMPLE, opts, scorer=_Flat()).ladder() as ladder:
        again = ladder.probe(35, "ultrafast")
    assert again.from_cache and again.bytes == own.bytes and again.preset == "ultrafast"

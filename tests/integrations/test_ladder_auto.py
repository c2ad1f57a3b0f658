"""cpllm-ladder --mode auto: VMAF against the input at a level set by how the input was made.
Unit tests of its pieces, and end to end on a clip and on an earlier encode of it, judged
against the clip itself (the master)."""

import math
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cpllm_plugin.integrations import ffmpeg as ff
from cpllm_plugin.integrations import ladder as lad

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"


def _assert_keeps_what_it_had(master, upload, crf, ffmpeg_exe, tmp_path):
    """The upload encoded whole at ``crf`` keeps what it had against the master: VMAF >=
    min(95, T - 5), T its own VMAF against the master (the benchmark's truth)."""
    t = ff.measure_fr(master, upload, ffmpeg_exe, subsample=1, psnr=False)[0]
    out = tmp_path / "final.mp4"
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(upload),
                    *lad.Settings().args(crf, 2), str(out)], check=True)
    kept = ff.measure_fr(master, out, ffmpeg_exe, subsample=1, psnr=False)[0]
    assert kept >= min(95.0, t - 5.0), (crf, t, kept)


def test_equivalent_crf_reads_the_input_off_the_bitrate_line():
    # Bitrate halves every 6 CRF: 800 kb/s at CRF 20 ({crf: kb/s}, as the probes give it).
    probes = {c: 800 * 2 ** (-(c - 20) / 6) for c in (20, 26, 29)}
    assert lad.equivalent_crf(probes, 800) == pytest.approx(20)
    assert lad.equivalent_crf(probes, 200) == pytest.approx(32)  # beyond the probes: the line
    assert lad.equivalent_crf({20: probes[20]}, 800) is None  # one probe: no line
    assert lad.equivalent_crf(probes, 0) is None


def test_auto_level_keeps_masters_and_lowers_earlier_encodes():
    assert lad.auto_level(None) == lad.AUTO_LEVEL == 95
    assert lad.auto_level(-10) == lad.auto_level(lad.AUTO_GAP) == 95
    beyond = lad.auto_level(lad.AUTO_GAP + 1)
    assert lad.AUTO_FLOOR <= beyond < 95
    assert lad.auto_level(100) == lad.AUTO_FLOOR
    levels = [lad.auto_level(lad.AUTO_GAP + g / 2) for g in range(40)]
    assert all(a >= b for a, b in zip(levels, levels[1:], strict=False))
    # No CRF in the range keeps VMAF 95 against the input: the floor, however it reads.
    for gap in (None, 0, lad.AUTO_GAP + 1, 100):
        assert lad.auto_level(gap, reached=False) == lad.AUTO_FLOOR


def test_auto_takes_no_target_of_its_own(tmp_path):
    for kw in ({"min_score": 4.0}, {"min_vmaf": 93.0}):
        with pytest.raises(lad.LadderArgumentError, match="--mode auto"):
            lad.Job(SAMPLE, lad.PickOptions(mode="auto", **kw), scorer=object())


@pytest.mark.slow
def test_auto_spends_fewer_bits_on_an_earlier_encode_and_keeps_it(master_and_upload, tmp_path,
                                                                  ffmpeg_exe):
    """The copy gets a higher CRF than the VMAF-95 search against it, and the encode still
    keeps what the copy had against the master: VMAF >= min(95, T - 5)."""
    master, upload = master_and_upload
    # One probe cache: the VMAF-95 search is auto's first stage, so its probes are reused.
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w"}
    scorer = lad.Scorer()
    on_master = lad.pick_file(master, lad.PickOptions(mode="auto", **opts), scorer)
    on_master_vmaf = lad.pick_file(master, lad.PickOptions(mode="vmaf", **opts), scorer)
    assert on_master.crf == on_master_vmaf.crf  # a master keeps VMAF 95 against itself
    assert on_master.target.value == 95 and "master" in on_master.target.rule
    auto = lad.pick_file(upload, lad.PickOptions(mode="auto", **opts), scorer)
    vmaf95 = lad.pick_file(upload, lad.PickOptions(mode="vmaf", **opts), scorer)
    assert "earlier encode" in auto.target.rule and auto.target.value < 95
    assert auto.crf > vmaf95.crf
    _assert_keeps_what_it_had(master, upload, auto.crf, ffmpeg_exe, tmp_path)


@pytest.mark.slow
def test_auto_keeps_the_floor_when_no_crf_keeps_95(master_and_upload, tmp_path):
    """A range where no CRF keeps VMAF 95 against the input (the sample's crossing is near
    CRF 28): auto searches again at the floor and picks, where the VMAF-95 search stops with
    the named error; where not even the floor is kept, auto takes the range's lowest CRF."""
    master, _ = master_and_upload
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w", "crf_range": (31, 45)}
    scorer = lad.Scorer()
    p = lad.pick_file(master, lad.PickOptions(mode="auto", **opts), scorer)
    assert p.target.value == lad.AUTO_FLOOR and "no CRF in the range" in p.target.rule
    assert 31 <= p.crf <= 45 and p.vmaf >= lad.AUTO_FLOOR
    with pytest.raises(lad.NoCrfMeetsTargetError):
        lad.pick_file(master, lad.PickOptions(mode="vmaf", **opts), scorer)
    # Not even the floor in a range of high CRFs: the range's lowest CRF, and the rule says so.
    low = lad.pick_file(master, lad.PickOptions(mode="auto", **{**opts, "crf_range": (46, 51)}),
                        scorer)
    assert low.crf == 46 and low.vmaf < lad.AUTO_FLOOR and "lowest CRF" in low.target.rule


@pytest.fixture(scope="module")
def soft_copy(master_and_upload, ffmpeg_exe, tmp_path_factory):
    """The master scaled 4x down and back up, kept at CRF 16: a soft copy of a small original
    (the sample is sharper than most footage, so a 2x copy of it still reads sharp)."""
    master, _ = master_and_upload
    out = tmp_path_factory.mktemp("soft") / "soft.mp4"
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(master),
                    "-vf", "scale=iw/4:ih/4:flags=bicubic,scale=iw*4:ih*4:flags=bicubic",
                    "-c:v", "libx264", "-crf", "16", str(out)], check=True)
    return out


def test_auto_level_lowers_a_soft_copy_only_under_the_threshold():
    detail, level = lad.AUTO_SOFT
    assert lad.auto_level(None, detail=detail - 0.01) == level < 95
    assert lad.auto_level(None, detail=detail) == lad.auto_level(None, detail=None) == 95
    # An earlier encode already searched lower keeps the lower level; the floor still wins
    # where nothing keeps VMAF 95.
    assert lad.auto_level(100, detail=0.0) == min(lad.AUTO_FLOOR, level)
    assert lad.auto_level(None, reached=False, detail=0.0) == lad.AUTO_FLOOR
    assert lad.auto_level(None, detail=0.0, soft=None) == 95


@pytest.mark.slow
def test_auto_searches_a_soft_copy_lower_and_keeps_what_it_had(master_and_upload, soft_copy,
                                                               tmp_path, ffmpeg_exe):
    """A soft copy carries a master's bits, so its bitrate reads as a master's; its fine
    detail does not, and auto goes above the VMAF-95 search against it while the encode still
    keeps what the copy had against the master (VMAF >= min(95, T - 5)). The master itself
    reads sharp and keeps VMAF 95."""
    from cpllm_plugin.integrations import stream

    master, _ = master_and_upload
    assert stream.detail(soft_copy) < lad.AUTO_SOFT[0] < stream.detail(master)
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w"}
    scorer = lad.Scorer()
    auto = lad.pick_file(soft_copy, lad.PickOptions(mode="auto", **opts), scorer)
    vmaf95 = lad.pick_file(soft_copy, lad.PickOptions(mode="vmaf", **opts), scorer)
    assert "soft copy" in auto.target.rule and auto.target.value == lad.AUTO_SOFT[1]
    assert auto.crf > vmaf95.crf
    _assert_keeps_what_it_had(master, soft_copy, auto.crf, ffmpeg_exe, tmp_path)
    # Fitted on x264 ladders only: another encoder keeps VMAF 95 against the copy.
    x265 = lad.pick_file(soft_copy, lad.PickOptions(mode="auto", encoder="libx265", **opts),
                         scorer)
    assert "soft copy" not in x265.target.rule and x265.target.value == 95


@pytest.fixture(scope="module")
def noisy_copy(master_and_upload, ffmpeg_exe, tmp_path_factory):
    """The master with temporal luma noise of sigma 10 kept at CRF 16: the benchmark's noisy
    upload (:func:`~cpllm_plugin.training.catalog.make_upload`)."""
    from cpllm_plugin.training.catalog import make_upload
    from cpllm_plugin.video import probe

    master, _ = master_and_upload
    out = tmp_path_factory.mktemp("noisy") / "noisy.mp4"
    info = probe(str(master))
    return make_upload(master, out, {"id": "noisy", "kind": "noisy",
                                     "spec": {"noise": 10, "crf": 16}},
                       info.width, info.height, ffmpeg_exe)


@pytest.mark.slow
def test_drop_noise_lifts_a_noisy_copy_above_the_vmaf_search_and_keeps_it(master_and_upload,
                                                                          noisy_copy, tmp_path,
                                                                          ffmpeg_exe):
    """VMAF against a noisy copy asks for its noise; the model's score holds while a re-encode
    smooths it away, so ``auto --drop-noise`` goes above the VMAF-95 search, and the encode
    still keeps what the copy had against the master: VMAF >= min(95, T - 5). The default does
    not lift."""
    master, _ = master_and_upload
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w"}
    scorer = lad.Scorer()
    auto = lad.pick_file(noisy_copy, lad.PickOptions(mode="auto", drop_noise=True, **opts),
                         scorer)
    vmaf95 = lad.pick_file(noisy_copy, lad.PickOptions(mode="vmaf", **opts), scorer)
    assert "noisy" in auto.target.rule and "lifted to CRF" in auto.target.rule, auto.target.rule
    assert auto.crf > vmaf95.crf and auto.score >= auto.source_score - lad.AUTO_LIFT
    assert auto.predicted_kbps < vmaf95.predicted_kbps
    _assert_keeps_what_it_had(master, noisy_copy, auto.crf, ffmpeg_exe, tmp_path)
    default = lad.pick_file(noisy_copy, lad.PickOptions(mode="auto", **opts), scorer)
    assert default.crf <= vmaf95.crf and "lifted" not in default.target.rule
    with pytest.raises(lad.LadderArgumentError, match="--drop-noise with --mode vmaf"):
        lad.Job(noisy_copy, lad.PickOptions(mode="vmaf", drop_noise=True, **opts), scorer)
    # Fitted on x264 ladders: with another encoder the user is warned, not refused.
    with pytest.warns(UserWarning, match="fitted on libx264 ladders; with libx265"):
        lad.Job(noisy_copy, lad.PickOptions(mode="auto", drop_noise=True, encoder="libx265",
                                            **opts), scorer)


class StepScorer:
    """4 for a picture coded with at least ``kbps``, 3 below: a model that sees no loss while
    a re-encode keeps that many bits, and a plain one below them."""

    def __init__(self, kbps: float):
        self.kbps = kbps
        self.id = f"stub-step-at-{kbps:.1f}-kbps"  # the probe cache keys on it

    def __call__(self, paths, key_frames):
        from cpllm_plugin.video import probe

        out = []
        for p, k in zip(paths, key_frames, strict=True):
            v = probe(p)
            kbps = Path(p).stat().st_size * 8 / (v.frame_count / v.fps) / 1000
            out.append([4.0 if kbps >= self.kbps else 3.0] * k)
        return out


@pytest.mark.slow
def test_the_lift_stops_at_the_highest_crf_where_the_score_holds(noisy_copy, tmp_path,
                                                                 monkeypatch):
    """A stand-in model whose score holds down to the bitrate between CRF p + 3 and p + 4,
    where p is the VMAF-95 pick on the noisy copy: with --drop-noise the lift's search goes up
    from p and stops at p + 3, with the guard or without it (--guard 0: the lift is not the
    guard). Not without --drop-noise, not on an input under AUTO_LIFT_NOISE, nor on one the
    guard spares."""
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w"}
    p = lad.pick_file(noisy_copy, lad.PickOptions(mode="vmaf", **opts), _Flat()).crf
    with lad.Job(noisy_copy, lad.PickOptions(**opts), _Flat()).ladder() as ladder:
        k3, k4 = ladder.probe(p + 3).kbps, ladder.probe(p + 4).kbps
    scorer = StepScorer(math.sqrt(k3 * k4))
    lift = lad.PickOptions(mode="auto", drop_noise=True, **opts)
    auto = lad.pick_file(noisy_copy, lift, scorer)
    assert auto.crf == p + 3 and "lifted to CRF" in auto.target.rule, auto.target.rule
    unguarded = lad.pick_file(noisy_copy, replace(lift, guard=0), scorer)
    assert unguarded.crf == p + 3 and "capped" not in unguarded.target.rule
    assert lad.pick_file(noisy_copy, lad.PickOptions(mode="auto", **opts), scorer).crf == p
    with monkeypatch.context() as m:
        m.setattr(lad, "AUTO_LIFT_NOISE", 99.0)  # the copy no longer reads as noisy
        assert lad.pick_file(noisy_copy, lift, scorer).crf == p
    monkeypatch.setattr(lad, "AUTO_SPARE", 0.01)
    spared = lad.pick_file(noisy_copy, lift, scorer)
    assert spared.crf == p and "spared" in spared.target.rule


class CappedBytesScorer:
    """log2 of bytes per frame, capped at ``cap``: the lossless reference and the encodes
    with more bits score ``cap``, and the score falls 1/6 a CRF above them (x264's bitrate
    halves every 6 CRF), so the guard's crossing sits where the test puts it."""

    def __init__(self, cap: float):
        self.cap = cap
        self.id = f"stub-log2-bytes-capped-at-{cap:.4f}"  # the probe cache keys on it

    def __call__(self, paths, key_frames):
        import numpy as np

        from cpllm_plugin.video import probe

        return [np.full(k, min(self.cap, math.log2(Path(p).stat().st_size
                                                   / probe(p).frame_count)))
                for p, k in zip(paths, key_frames, strict=True)]


def _capped_at_the_vmaf_pick(path, opts):
    """The VMAF-95 pick on ``path`` and a stand-in scorer that falls more than the guard
    below its score of ``path`` from about 4 CRF under that pick up."""
    vmaf = lad.pick_file(path, lad.PickOptions(mode="vmaf", **opts), CappedBytesScorer(99.0))
    at = vmaf.probes[[p.crf for p in vmaf.probes].index(vmaf.crf)]
    fps = lad.inspect(path).fps
    cap = math.log2(at.kbps * 1000 / 8 / fps) + 1.0  # the encode 6 CRF below p scores the cap
    return vmaf, cap


def test_guard_caps_auto_where_the_model_sees_the_input_lose(tmp_path, ffmpeg_exe):
    """An input at about a transparent re-encode's bitrate (the sample at CRF 22: it reads as
    a master by its level, but not as an untouched one): VMAF against it allows CRF p; the
    stand-in model's score falls more than the guard below its score of the input from about
    p - 4 up, so ``--guard`` caps auto's pick below p, says so, and keeps the model's score
    within the guard (the default's); with ``--guard 0`` auto keeps the VMAF-95 pick."""
    copy = tmp_path / "crf22.mp4"
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(SAMPLE),
                    "-an", "-c:v", "libx264", "-crf", "22", "-preset", "fast", str(copy)],
                   check=True)
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w"}
    vmaf, cap = _capped_at_the_vmaf_pick(copy, opts)
    scorer = CappedBytesScorer(cap)
    auto = lad.pick_file(copy, lad.PickOptions(mode="auto", **opts), scorer)
    assert lad.AUTO_GUARD == 0.175 and auto.source_score == pytest.approx(cap)
    assert "master" in auto.target.rule and "spared" not in auto.target.rule
    assert auto.crf < vmaf.crf and "capped at CRF" in auto.target.rule, auto.target.rule
    assert auto.score >= cap - 0.175
    assert vmaf.crf - 7 <= auto.crf <= vmaf.crf - 3
    free = lad.pick_file(copy, lad.PickOptions(mode="auto", guard=0, **opts), scorer)
    assert free.crf == vmaf.crf and "capped" not in free.target.rule


def test_guard_spares_an_input_with_an_untouched_masters_bitrate(tmp_path, monkeypatch):
    """The sample itself holds over six times the bits of its re-encode at the VMAF-95
    crossing: VMAF against it is VMAF against the master, so auto keeps the VMAF-95 pick though
    the stand-in model's score falls as far as on the copy above, and says why. Sparing
    nothing, the guard caps it as it would the copy."""
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w"}
    vmaf, cap = _capped_at_the_vmaf_pick(SAMPLE, opts)
    scorer = CappedBytesScorer(cap)
    auto = lad.pick_file(SAMPLE, lad.PickOptions(mode="auto", **opts), scorer)
    assert lad.AUTO_SPARE == 4.0
    assert auto.crf == vmaf.crf and "guard spared" in auto.target.rule, auto.target.rule
    monkeypatch.setattr(lad, "AUTO_SPARE", None)
    capped = lad.pick_file(SAMPLE, lad.PickOptions(mode="auto", **opts), scorer)
    assert capped.crf < vmaf.crf and "capped at CRF" in capped.target.rule


def test_the_guards_fall_on_the_logit_is_the_same_at_any_score():
    """A fall F on the "logit" scale is F on logit((score - 1) / 4): on the 1-5 score it is
    small near 5, where the head's sigmoid squeezes it, and larger in the middle; at the
    range's edge (a mean of frame scores can sit there) it stays finite and at or below the
    input. The shipped scale is the score itself; another is refused by name."""
    def logit(s):
        return math.log((s - 1) / (5 - s))

    for s0 in (1.5, 2.5, 3.5, 4.5, 4.85):
        assert logit(s0) - logit(lad.guard_floor(s0, 0.7, "logit")) == pytest.approx(0.7)
    low, high = 3.5 - lad.guard_floor(3.5, 0.7, "logit"), 4.85 - lad.guard_floor(4.85, 0.7, "logit")
    assert high < 0.15 < 0.6 < low
    assert lad.guard_floor(2.5, 0.0, "logit") == pytest.approx(2.5)
    assert 4.99 < lad.guard_floor(5.0, 0.7, "logit") < 5.0
    assert lad.guard_floor(1.0, 0.7, "logit") == 1.0
    assert lad.guard_floor(4.85, lad.GUARD_MAX["logit"], "logit") < 1.01
    assert lad.guard_floor(4.0, 0.175, "score") == pytest.approx(3.825)
    assert lad.AUTO_GUARD_SCALE == "score" and lad.guard_floor(4.0, 0.175) == 4.0 - 0.175
    with pytest.raises(lad.LadderArgumentError, match="'score' or 'logit'"):
        lad.guard_floor(4.0, 0.7, "probit")


class _Scores(lad.Ladder):
    """Probes made but not scored; ``scored`` reads a given score and notes the CRF."""

    def __init__(self, scores: dict[int, float]):
        self.truth, self.asked = scores, []
        self.probes = {c: lad.Probe(c, None, [], 0, 0, 0, 0) for c in scores}

    def scored(self, crf):
        p = self.probes[crf]
        if p.score is None:
            p.score = self.truth[crf]
            self.asked.append(crf)
        return p


def test_guard_scores_no_probe_above_a_pick_that_holds_and_decides_as_on_every_score(
        monkeypatch):
    """The guard judges the pick on the probes at and below it first (the monotone fit there
    is a lower bound on the fit over all): on noisy curves it caps exactly where reading
    every probe's score caps, and where the pick holds it leaves the probes above unscored."""
    import numpy as np

    monkeypatch.setattr(lad, "score_holds", lambda *a: "searched down")
    rng = np.random.default_rng(0)
    spared = 0
    for _ in range(3000):
        crfs = sorted(rng.choice(np.arange(15, 52), size=rng.integers(2, 7), replace=False))
        noise = rng.choice([0.0, 0.03, 0.1])
        scores = {int(c): 4.8 - 0.04 * (c - 15) + rng.normal(0, noise) for c in crfs}
        pick = int(rng.choice(crfs))
        s0 = 4.8 + rng.normal(0, 0.3)
        ladder = _Scores(scores)
        got = lad.guard_crf(ladder, s0, pick, False, 0.175)
        held = lad.best_passing(scores, s0 - 0.175)
        assert got == (None if held is not None and held >= pick else "searched down")
        if got is None and any(c > pick for c in crfs):
            assert all(c <= pick for c in ladder.asked)
            spared += 1
    assert spared > 300


def test_spared_needs_a_known_bitrate_several_times_the_crossings():
    assert lad.spared(4.0, 4.0) and lad.spared(9.0, 4.0)
    assert not lad.spared(3.9, 4.0) and not lad.spared(0.5, 4.0)
    assert not lad.spared(None, 4.0) and not lad.spared(30.0, None)


def test_guard_is_for_auto_and_a_fall_on_the_score_scale():
    for kw, what in (({"mode": "vmaf", "guard": 0.2}, "--mode vmaf"),
                     ({"guard": 0.2, "min_score": 4.0}, "--mode score"),
                     ({"mode": "auto", "guard": -0.1}, "in \\[0, 4\\]"),
                     ({"mode": "auto", "guard": 5.0}, "in \\[0, 4\\]")):
        with pytest.raises(lad.LadderArgumentError, match=what):
            lad.Job(SAMPLE, lad.PickOptions(**kw), scorer=object())


class _Flat:
    """A stand-in scorer with one score for every picture: the VMAF search decides alone."""

    id = "stub-flat"

    def __call__(self, paths, key_frames):
        return [[4.0] * k for k in key_frames]


def test_max_encoded_percent_refuses_a_reencode_that_saves_nothing(master_and_upload, tmp_path):
    """The VMAF-95 search against an earlier CRF 40 encode keeps its artifacts at a lower CRF,
    so its pick costs more bits than the upload has; ab-av1's gate refuses it, and says so."""
    master, upload = master_and_upload
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w", "mode": "vmaf",
            "keep": False}
    on_master = lad.pick_file(master, lad.PickOptions(**opts), _Flat())
    assert on_master.encoded_percent < 10  # a lossless master: a re-encode saves nearly all
    p = lad.pick_file(upload, lad.PickOptions(**opts), _Flat())
    assert p.input_kbps > 0 and p.encoded_percent > 100
    assert p.to_dict()["encoded_percent"] == p.encoded_percent
    with pytest.raises(lad.PickTooLargeError, match=r"at most 80% of the input's bitrate") as e:
        lad.pick_file(upload, lad.PickOptions(max_encoded_percent=80, **opts), _Flat())
    assert e.value.pick.crf == p.crf and f"{p.encoded_percent:g}%" in str(e.value)
    kept = lad.pick_file(upload, lad.PickOptions(max_encoded_percent=p.encoded_percent, **opts),
                         _Flat())
    assert kept.crf == p.crf
    with pytest.raises(lad.LadderArgumentError, match="above 0"):
        lad.Job(upload, lad.PickOptions(max_encoded_percent=0, **opts), _Flat())


def test_an_input_the_pick_would_outgrow_is_kept(master_and_upload, tmp_path):
    master, upload = master_and_upload  # an H.264 upload at CRF 40
    opts = {"cache": tmp_path / "cache", "temp_dir": tmp_path / "w", "mode": "vmaf"}
    p = lad.pick_file(upload, lad.PickOptions(**opts), _Flat())
    assert p.encoded_percent > lad.KEEP_PERCENT and p.keep and p.to_dict()["keep"] is True
    # The gate has nothing to refuse: a kept input is not re-encoded.
    assert lad.pick_file(upload, lad.PickOptions(max_encoded_percent=80, **opts), _Flat()).keep
    assert not lad.pick_file(master, lad.PickOptions(**opts), _Flat()).keep
    # In another codec the tool encodes it is kept too, as ab-av1's gate leaves it: x265
    # would outgrow the H.264 upload as x264 does.
    x265 = {"encoder": "libx265", "preset": "ultrafast"}
    r = lad.pick_file(upload, lad.PickOptions(**opts, **x265), _Flat())
    assert r.encoded_percent > lad.KEEP_PERCENT and r.keep
    assert "h264" in lad.KEEP_CODECS and "mpeg2video" not in lad.KEEP_CODECS
    # Not kept: asked not to, another format with --keep-same-codec, a filter, another pixel
    # format.
    for other in ({"keep": False}, {**x265, "keep_any_codec": False},
                  {"vfilter": "scale=320:-2"}, {"pix_fmt": "yuv444p"}):
        r = lad.pick_file(upload, lad.PickOptions(**opts, **other), _Flat())
        assert not r.keep and r.to_dict()["keep"] is False, other
    said = []
    r = lad.pick_file(upload, lad.PickOptions(**opts, **x265, keep_any_codec=False), _Flat(),
                      progress=said.append)
    assert "not in libx265's format (--keep-same-codec): re-encoded" in said[-1]  # told why
    # Where the output cannot hold the input's codec (a WebM takes VP9 and AV1), it is
    # re-encoded, and the user is told so.
    job = lad.Job(upload, lad.PickOptions(**opts, **x265), _Flat(), progress=said.append)
    job.holds = frozenset({"vp9", "av1"})
    assert not job.pick().keep and "container cannot hold it: re-encoded" in said[-1]


def test_encode_copies_a_kept_inputs_video(master_and_upload, tmp_path, monkeypatch):
    import json

    import av
    from click.testing import CliRunner

    from cpllm_plugin.integrations import cli

    _, upload = master_and_upload
    monkeypatch.setattr(lad, "Scorer", lambda model, backend: _Flat())
    out = tmp_path / "out.mkv"
    r = CliRunner().invoke(cli.main, ["encode", str(upload), "-o", str(out), "--mode", "vmaf",
                                      "--json", "-q", "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    pick, done = rows[-2], rows[-1]
    assert pick["keep"] and done["kept"] and done["crf"] is None

    def packets(path):
        with av.open(str(path)) as c:
            return [bytes(k) for k in c.demux(c.streams.video[0]) if k.size]

    assert packets(out) == packets(upload)  # the same coded pictures, not a re-encode
    again = tmp_path / "again.mkv"
    r = CliRunner().invoke(cli.main, ["encode", str(upload), "-o", str(again), "--mode", "vmaf",
                                      "--json", "-q", "--no-keep",
                                      "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout.splitlines()[-1])
    assert not done["kept"] and done["crf"] == pick["crf"] and packets(again) != packets(upload)
    # Kept in another codec than the encoder's, where the container takes the input's.
    x265 = ["-e", "libx265", "--preset", "ultrafast"]
    mp4 = tmp_path / "out.mp4"
    r = CliRunner().invoke(cli.main, ["encode", str(upload), "-o", str(mp4), "--mode", "vmaf",
                                      "--json", "-q", *x265, "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["kept"] and packets(mp4) == packets(upload)
    r = CliRunner().invoke(cli.main, ["pick", str(upload), "--mode", "vmaf", "-q", *x265,
                                      "--cache", str(tmp_path / "cache")])
    keep = next(x for x in r.stdout.splitlines() if x.startswith("keep:"))
    assert "(h264," in keep and "--keep-same-codec re-encodes" in keep  # the table says how
    same = tmp_path / "same.mp4"  # a catalog that needs its own format re-encodes it
    r = CliRunner().invoke(cli.main, ["encode", str(upload), "-o", str(same), "--mode", "vmaf",
                                      "--json", "-q", *x265, "--keep-same-codec",
                                      "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert not json.loads(r.stdout.splitlines()[-1])["kept"] and packets(same) != packets(upload)
    # A WebM cannot hold H.264: the pick says it is re-encoded, and it is, in AV1.
    webm = tmp_path / "out.webm"
    r = CliRunner().invoke(cli.main, ["encode", str(upload), "-o", str(webm), "--mode", "vmaf",
                                      "--json", "-e", "libsvtav1", "--preset", "12",
                                      "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    pick, done = (json.loads(x) for x in r.stdout.splitlines()[-2:])
    assert not pick["keep"] and not done["kept"] and done["crf"] == pick["crf"]
    assert "container cannot hold it: re-encoded" in r.stderr
    with av.open(str(webm)) as c:
        assert c.streams.video[0].codec_context.name in ("libdav1d", "av1", "libaom-av1")


def test_a_probe_reads_its_bitrate_as_the_inputs_is_read(master_and_upload, tmp_path,
                                                         ffmpeg_exe):
    """keep and auto hold a probe's bitrate against the input's, which is read from its video
    packets; so is the probe's. A 2 s input is one sample, so its probe at a CRF codes the same
    frames as an encode of the whole input: the same bits, not those plus a Matroska file's
    container and x265's 2 kB of headers (half as much again here, when the file counted)."""
    from cpllm_plugin.integrations.stream import video_bytes

    master, _ = master_and_upload
    opts = lad.PickOptions(encoder="libx265", preset="ultrafast", no_cache=True,
                           temp_dir=tmp_path / "w")
    with lad.Job(master, opts, _Flat()).ladder() as ladder:
        assert len(ladder.samples) == 1
        probe = ladder.probe(40)
    out = tmp_path / "whole.mp4"
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(master),
                    *opts.settings().args(40, 1), str(out)], check=True)
    whole = video_bytes(out)
    assert whole < 0.9 * out.stat().st_size  # the file is a tenth container and headers
    assert probe.bytes == pytest.approx(whole, rel=0.02)

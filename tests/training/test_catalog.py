"""The catalog benchmark's truth, costs and policies on a synthetic catalog with known answers."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cpllm_plugin.training import catalog as cat


def _ladder(id_, vm, vi, score, kbps0=1000.0):
    """Rows at the catalog's levels from functions of CRF; size halves every 6 CRF."""
    return [{"id": id_, "crf": c, "bytes": kbps0 * 2 ** (-(c - 15) / 6),
             "vmaf_master": vm(c), "vmaf_input": vi(c), "frame_scores": [score(c)] * 4}
            for c in cat.LEVELS]


def _input(id_, kind, t, s0):
    return {"id": id_, "kind": kind, "source": id_.split("~")[0], "vmaf_master": t,
            "frame_scores": [s0] * 4, "width": 1920, "height": 1080, "frames": 50,
            "bytes": 1, "codec": "h264"}


@pytest.fixture
def catalog():
    # A master: VMAF falls 1 per CRF from 100 at CRF 15 (crosses 95 at CRF 20).
    master = (_input("m", "master", 100.0, 4.6),
              _ladder("m", lambda c: 100 - (c - 15), lambda c: 100 - (c - 15),
                      lambda c: 4.6 - 0.05 * (c - 15)))
    # An earlier encode with T = 80 (needs VMAF 75 against the master): against the master
    # it loses 0.5 per CRF from 80, against itself 1.5 per CRF from 100. Cheapest success:
    # CRF 25; a VMAF-95 search against the input picks CRF 18 (three CRF, more bits).
    upload = (_input("u~x264_36", "x264", 80.0, 3.9),
              _ladder("u~x264_36", lambda c: 80 - 0.5 * (c - 15),
                      lambda c: 100 - 1.5 * (c - 15), lambda c: 3.9 - 0.02 * (c - 15)))
    # Nothing on its ladder reaches 95 against the master.
    lost = (_input("d", "master", 100.0, 3.0),
            _ladder("d", lambda c: 90 - (c - 15), lambda c: 90 - (c - 15), lambda c: 3.0))
    inputs = [master[0], upload[0], lost[0]]
    rows = master[1] + upload[1] + lost[1]
    return {c.id: c for c in cat.curves(inputs, rows)}


def test_truth_and_cost_follow_the_master(catalog):
    m, u, lost = catalog["m"], catalog["u~x264_36"], catalog["d"]
    assert m.required == 95 and u.required == 75
    assert m.success(20) and not m.success(21)
    assert u.success(25) and not u.success(26)
    assert m.cost(20) == pytest.approx(1.0) and u.cost(25) == pytest.approx(1.0)
    assert m.cost(14 + 1) == pytest.approx(2 ** (5 / 6))  # CRF 15 against CRF 20
    # Interpolated between levels 4 CRF apart: sizes in log, VMAF linearly.
    assert u.bytes[u.at(17)] == pytest.approx(1000 * 2 ** (-2 / 6))
    assert not lost.reachable and m.reachable
    with pytest.raises(cat.CatalogError, match="keeps what the input had"):
        _ = lost.cheapest


def test_policies_are_judged_against_the_master(catalog):
    cs = [catalog["m"], catalog["u~x264_36"]]
    v95 = cat.judge("vmaf 95", cat.vmaf_search(95), cs)
    assert v95.picks == {"m": 20, "u~x264_36": 18}
    assert v95.success == 1.0
    assert v95.cost == pytest.approx((1.0 + 2 ** (7 / 6)) / 2)  # overspends on the upload
    # A fixed CRF 25 keeps the upload but loses the master.
    f25 = cat.judge("fixed 25", cat.fixed(25), cs)
    assert f25.success == 0.5 and f25.picks["u~x264_36"] == 25
    best = cat.cheapest_fixed(cs, 1.0)
    assert best.name == "fixed CRF 20" and best.success == 1.0
    assert cat.cheapest_fixed(cs, 0.5).name == "fixed CRF 25"
    # The score rule: the lower of 4.35 and s0 - 0.2.
    r = cat.judge("score", cat.score_rule(4.35, 0.2), cs)
    assert r.picks == {"m": 20, "u~x264_36": 25}
    # A policy that finds nothing fails, at the cost of the lowest CRF.
    none = cat.judge("none", lambda c: None, cs)
    assert none.success == 0 and none.cost == pytest.approx(
        (2 ** (5 / 6) + 2 ** (10 / 6)) / 2)


def test_keeping_the_input_succeeds_at_the_inputs_own_size(catalog):
    m, u = catalog["m"], catalog["u~x264_36"]
    m.info["bytes"], u.info["bytes"] = 20000.0, 600.0  # a big master, a small upload
    # The VMAF-95 search picks CRF 18 on the upload: 1000 * 2^(-1/2) = 707 bytes, 118% of it.
    assert u.percent(18) == pytest.approx(100 * 1000 * 2 ** (-0.5) / 600)
    gated = cat.judge("gated", cat.keep_input(cat.vmaf_search(95), 100), [m, u])
    assert gated.picks == {"m": 20, "u~x264_36": cat.KEEP} and gated.success == 1.0
    # Kept, the upload costs its own 600 bytes over the cheapest success (CRF 25).
    cheapest = 1000 * 2 ** (-10 / 6)
    assert gated.cost == pytest.approx((1.0 + 600 / cheapest) / 2)
    assert cat.judge("", cat.keep_input(cat.vmaf_search(95), 120), [u]).picks == {
        "u~x264_36": 18}  # under the gate: re-encoded as before
    assert cat.judge("", cat.keep_input(lambda c: None, 50), [u]).success == 0
    # Only an input in the codecs given is kept (the tool's keep, and --keep-same-codec).
    u.info["codec"] = "hevc"
    assert cat.judge("", cat.keep_input(cat.vmaf_search(95), 100, "h264"), [u]).picks == {
        "u~x264_36": 18}
    assert cat.judge("", cat.keep_input(cat.vmaf_search(95), 100, ("h264", "hevc")),
                     [u]).picks == {"u~x264_36": cat.KEEP}


def test_auto_searches_at_the_floor_when_nothing_keeps_95_against_an_earlier_encode():
    """An input whose bitrate reads 5.5 CRF above the lowest CRF and which keeps VMAF 95
    against itself nowhere: its earlier-encode level (94) is out of reach too, so ``auto``
    searches at the floor (92, CRF 21) and keeps what it had (T 90: VMAF 85, up to CRF 25)."""
    inp = {**_input("u~down_2_26", "down", 90.0, 3.5), "bytes": 1000 * 2 ** (-5.5 / 6)}
    rows = _ladder("u~down_2_26", lambda c: 90 - 0.5 * (c - 15), lambda c: 93.5 - 0.25 * (c - 15),
                   lambda c: 3.5)
    c = cat.curves([inp], rows)[0]
    c95, gap = cat.input_gap(c)
    assert c95 is None and gap == pytest.approx(5.5)
    assert cat.auto_rule()(c) == 21 and c.success(21)


def test_auto_takes_the_lowest_crf_where_not_even_the_floor_is_kept():
    """A noisy input that keeps VMAF 92 against itself nowhere on its ladder: ``auto`` takes
    the ladder's lowest CRF, which keeps what it had against the master (T 80: VMAF 75)."""
    inp = _input("n~noisy_16_16", "noisy", 80.0, 4.6)
    rows = _ladder("n~noisy_16_16", lambda c: 80 - 0.5 * (c - 15), lambda c: 90 - (c - 15),
                   lambda c: 4.6)
    c = cat.curves([inp], rows)[0]
    assert cat.highest_meeting(c.crfs, c.vi, 92) is None
    assert cat.auto_rule()(c) == 15 and c.success(15)


def test_auto_searches_a_soft_copy_at_its_level_and_a_sharp_one_at_95():
    """A soft copy with a master's bits (its bitrate reads at the VMAF-95 crossing, CRF 20):
    read sharp, ``auto`` keeps VMAF 95 against it (CRF 20); read soft (fine detail under
    ``AUTO_SOFT[0]``), it searches at ``AUTO_SOFT[1]``, a higher CRF that still keeps what the
    copy had (T 75: VMAF 70 against the master, to CRF 25)."""
    from cpllm_plugin.integrations import ladder as lad

    detail, level = lad.AUTO_SOFT
    inp = {**_input("s~soft_2_16", "soft", 75.0, 3.5), "bytes": 1000 * 2 ** (-5 / 6)}
    rows = _ladder("s~soft_2_16", lambda c: 75 - 0.5 * (c - 15), lambda c: 100 - (c - 15),
                   lambda c: 3.5)
    sharp, soft = (cat.curves([{**inp, "detail": d}], rows)[0] for d in (0.6, detail - 0.01))
    assert cat.auto_rule(guard=None)(sharp) == 20
    assert cat.auto_rule(guard=None)(soft) == int(100 - level + 15) and soft.success(
        int(100 - level + 15))
    # Another encoder's ladder keeps 95 unless a sweep sets the rule.
    (svt,) = cat.curves([{**inp, "detail": detail - 0.01}], rows, "libsvtav1")
    assert cat.auto_rule(guard=None)(svt) == 20
    assert cat.level_pick(svt, {"soft": lad.AUTO_SOFT}) == int(100 - level + 15)


def test_readings_are_added_once_to_a_catalog_without_them(tmp_path):
    from cpllm_plugin.integrations import stream

    sample = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"
    (tmp_path / "inputs.jsonl").write_text(json.dumps({"id": "a", "path": str(sample),
                                                       "noise": 1.0}) + "\n")
    rows = cat.with_readings(tmp_path)
    assert rows[0]["noise"] == 1.0  # kept as measured
    assert rows[0]["detail"] == pytest.approx(stream.detail(sample), abs=1e-3)
    assert rows[0]["detail"] > 0.4
    assert cat.read_jsonl(tmp_path / "inputs.jsonl") == rows


def test_groups_split_masters_and_uploads(catalog):
    g = cat.groups(list(catalog.values()))
    assert [c.id for c in g["master"]] == ["m", "d"]
    assert [c.id for c in g["x264"]] == ["u~x264_36"] == [c.id for c in g["uploads"]]
    assert len(g["catalog"]) == 3 and "soft" not in g


def test_highest_meeting_uses_the_monotone_fit():
    crfs = np.arange(15, 22)
    v = np.array([97, 96, 94, 95.5, 93, 92, 91.0])  # a bump back above 95 at CRF 18
    assert cat.highest_meeting(crfs, v, 95) == 16
    assert cat.highest_meeting(crfs, v, 99) is None


def test_upload_plan_covers_every_kind_from_big_masters_only():
    masters = [{"source": f"s{i}", "width": 1920 if i < 5 else 640,
                "height": 1080 if i < 5 else 360} for i in range(8)]
    plan = cat.upload_plan(masters)
    assert len(plan) == 5 * cat.PER_SOURCE
    assert {p["source"] for p in plan} == {f"s{i}" for i in range(5)}
    assert {p["kind"] for p in plan} == set(cat.KINDS)
    assert len({p["id"] for p in plan}) == len(plan)
    for p in plan:
        if p["kind"] in ("x264", "x265"):
            assert p["spec"]["codec"] == "lib" + p["kind"]
            assert 30 <= p["spec"]["crf"] <= 40
    assert all(not math.isnan(p["spec"]["crf"]) for p in plan)


class _BytesScorer:
    """A stand-in model: log2 of a file's bytes per frame, so an encode at a higher CRF
    scores lower and the input itself highest."""

    id = "stub/log2 bytes"

    def __init__(self):
        self.calls = 0

    def __call__(self, paths, key_frames):
        from pathlib import Path

        from cpllm_plugin.video import probe

        self.calls += len(paths)
        return [np.full(k, math.log2(Path(p).stat().st_size / probe(p).frame_count))
                for p, k in zip(paths, key_frames, strict=True)]


def test_rescore_scores_the_ladders_again_and_keeps_sizes_and_vmaf(tmp_path):
    """Another model's scores for a built catalog, of the kept sources only, without any
    VMAF run; a rule reads them in place of the catalog's, and only for inputs they cover."""
    import json

    from media import pan_frames, write_video

    inputs, rows = [], []
    for src in ("a", "b"):
        path = write_video(tmp_path / f"{src}.mp4", pan_frames(24, 72, 128), crf=10)
        inputs.append({**_input(src, "master", 100.0, 9.9), "source": src, "path": str(path)})
        rows += _ladder(src, lambda c: 100 - (c - 15), lambda c: 100 - (c - 15),
                        lambda c: 9.9)
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps(i) + "\n" for i in inputs))
    (tmp_path / "ladder.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scorer = _BytesScorer()
    path = cat.rescore(tmp_path, scorer, keep=lambda s: s == "a", progress=False)
    assert path.name == "scores-stub_log2_bytes.jsonl"
    got = cat.read_jsonl(path)
    assert len(got) == 1 + len(cat.LEVELS) and {r["id"] for r in got} == {"a"}
    assert not list((tmp_path / "work" / "rescore").iterdir())  # encodes removed
    ins, rs = cat.with_scores(inputs, rows, [path])
    assert [i["id"] for i in ins] == ["a"] and len(rs) == len(cat.LEVELS)
    (c,) = cat.curves(ins, rs)
    assert np.all(np.diff(c.score[:: 6]) < 0) and c.s0 > c.score[0]  # the new model's
    assert c.vm[0] == 100 and c.bytes[0] == pytest.approx(1000.0)  # the catalog's own
    # A second run finds everything done and scores nothing.
    calls = scorer.calls
    cat.rescore(tmp_path, scorer, keep=lambda s: s == "a", progress=False)
    assert scorer.calls == calls


def test_pin_bisects_between_the_rungs_around_the_cheapest_success(catalog):
    """Rungs 4 CRF apart leave the cheapest success read off a line between them; the next
    CRF to measure halves the gap above the last measured success, until it is one CRF."""
    m = catalog["m"]  # crosses VMAF 95 at CRF 20, between the rungs at 19 and 23
    assert cat.pin_crf(m) == 21
    inp = _input("m", "master", 100.0, 4.6)
    rows = _ladder("m", lambda c: 100 - (c - 15), lambda c: 100 - (c - 15), lambda c: 4.6)
    # Measured, the encode at 21 keeps 95 (the straight line said 94): the gap is 21-23.
    size = {c: 1000.0 * 2 ** (-(c - 15) / 6) for c in (21, 22)}  # as _ladder's
    rows.append({**rows[0], "crf": 21, "bytes": size[21], "vmaf_master": 95.5,
                 "vmaf_input": 95.5})
    (m,) = cat.curves([inp], rows)
    assert m.success(21) and cat.pin_crf(m) == 22
    rows.append({**rows[0], "crf": 22, "bytes": size[22], "vmaf_master": 94.0,
                 "vmaf_input": 94.0})
    (m,) = cat.curves([inp], rows)
    assert cat.pin_crf(m) is None and m.cost(21) == pytest.approx(1.0)
    # Nothing keeps what the input had, or nothing measured above fails: nothing to pin.
    assert cat.pin_crf(catalog["d"]) is None
    (flat,) = cat.curves([inp], _ladder("m", lambda c: 99, lambda c: 99, lambda c: 4.6))
    assert cat.pin_crf(flat) is None


def test_pin_measures_real_encodes_until_every_cheapest_success_is_one_crf_wide(tmp_path):
    """On a real clip whose ladder holds only CRF 15 (kept) and 51 (lost), pin encodes and
    measures by bisection, adds the rows to the ladder file, leaves no encode behind, and
    resumes with nothing to do."""
    from media import pan_frames, write_video

    path = write_video(tmp_path / "a.mp4", pan_frames(12, 96, 128), crf=8)
    inp = {**_input("a", "master", 100.0, 9.9), "source": "a", "path": str(path),
           "master": str(path)}
    (tmp_path / "inputs.jsonl").write_text(json.dumps(inp) + "\n")
    ends = [{"id": "a", "crf": c, "bytes": b, "vmaf_master": v, "vmaf_input": v,
             "frame_scores": [9.9]} for c, b, v in ((15, 9e4, 100.0), (51, 1e3, 0.0))]
    (tmp_path / "ladder.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ends))
    scorer = _BytesScorer()
    n = cat.pin(tmp_path, scorer, progress=False)
    rows = cat.read_jsonl(tmp_path / "ladder.jsonl")
    added = sorted((r for r in rows[2:]), key=lambda r: r["crf"])
    assert n == len(added) >= 5 and all(15 < r["crf"] < 51 for r in added)  # log2(36) rounds
    assert all(r["vmaf_master"] == r["vmaf_input"] for r in added)  # a master: one VMAF run
    assert added[0]["vmaf_master"] > added[-1]["vmaf_master"]  # measured, not interpolated
    assert added[0]["bytes"] > added[-1]["bytes"]
    (c,) = cat.curves(cat.with_readings(tmp_path), rows)
    ok = [k for k in sorted(c.rungs) if c.success(k)]
    assert ok[-1] + 1 in c.rungs and not c.success(ok[-1] + 1)  # pinned to one CRF
    assert not [f for f in (tmp_path / "work").iterdir() if f.suffix == ".mp4"]
    calls = scorer.calls
    assert cat.pin(tmp_path, scorer, progress=False) == 0 and scorer.calls == calls
    # A search at another level crosses elsewhere: its pick and the CRF above get encodes.
    v80 = cat.vmaf_search(80)
    assert cat.pin(tmp_path, scorer, progress=False, searches=[v80]) >= 1
    (c,) = cat.curves(cat.with_readings(tmp_path), cat.read_jsonl(tmp_path / "ladder.jsonl"))
    k = v80(c)
    assert {k, k + 1} <= set(c.rungs) and c.vi[c.at(k)] >= 80 > c.vi[c.at(k + 1)]
    assert cat.pin(tmp_path, scorer, progress=False, searches=[v80]) == 0


def test_pin_pick_measures_a_search_until_it_picks_on_encodes():
    """VMAF against the input bends down with CRF, so a line between rungs 4 apart reads it
    low and a replayed search picks under the real tool's; measuring the pick and the CRF
    above it, round by round, moves the pick to the measured crossing."""
    vi = lambda c: 100 - 0.05 * (c - 15) ** 2  # noqa: E731  95.0 at CRF 25, 93.95 at 26
    inp = _input("m", "master", 100.0, 4.6)
    rows = _ladder("m", vi, vi, lambda c: 4.6)
    v95 = cat.vmaf_search(95)
    (m,) = cat.curves([inp], rows)
    assert v95(m) == 24  # the line from 23 (96.8) to 27 (92.8) crosses 95 at 24.45
    added = []
    while (k := cat.pin_pick(m, v95)) is not None:
        added.append(k)
        rows.append({**rows[0], "crf": k, "bytes": 1000.0 * 2 ** (-(k - 15) / 6),
                     "vmaf_master": vi(k), "vmaf_input": vi(k)})
        (m,) = cat.curves([inp], rows)
    assert added == [24, 25, 26] and v95(m) == 25
    # Nothing to measure for a pick that keeps the input, finds nothing, or tops the ladder.
    for policy in (lambda c: cat.KEEP, lambda c: None, lambda c: 51):
        assert cat.pin_pick(m, policy) is None


def test_fast_probes_encode_at_their_preset_and_resume(tmp_path):
    """A rule's probes at a faster preset than the ladders': each kept input encoded at that
    preset and scored, its size kept; a rule reads them beside the ladder, and an input
    without one is left out, never read off the ladder instead."""
    import json

    from media import pan_frames, write_video

    inputs = []
    for src in ("a", "b"):
        path = write_video(tmp_path / f"{src}.mp4", pan_frames(24, 128, 96), crf=10)
        inputs.append({**_input(src, "master", 100.0, 9.9), "source": src, "path": str(path)})
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps(i) + "\n" for i in inputs))
    scorer = _BytesScorer()
    sizes = {}
    for preset in ("ultrafast", "medium"):
        path = cat.fast_probes(tmp_path, scorer, "libx264", preset, (35,),
                               keep=lambda s: s == "a", progress=False)
        assert path.name == f"probes-libx264-{preset}-stub_log2_bytes.jsonl"
        (row,) = cat.read_jsonl(path)
        assert (row["id"], row["crf"], row["preset"]) == ("a", 35, preset)
        sizes[preset] = row["bytes"]
    assert sizes["ultrafast"] != sizes["medium"]  # really encoded at each preset
    assert not list((tmp_path / "work" / "probes").iterdir())
    calls = scorer.calls
    cat.fast_probes(tmp_path, scorer, "libx264", "ultrafast", (35,), keep=lambda s: s == "a",
                    progress=False)
    assert scorer.calls == calls  # resumed: nothing to do
    files = [tmp_path / "probes-libx264-ultrafast-stub_log2_bytes.jsonl"]
    (a,) = cat.with_probes(inputs, files, "libx264", "ultrafast")
    assert a["id"] == "a" and a["probes"][35][0] == sizes["ultrafast"]
    assert cat.with_probes(inputs, files, "libx264", "medium") == []
    rows = _ladder("a", lambda c: 100 - (c - 15), lambda c: 100 - (c - 15), lambda c: 4.0)
    (c,) = cat.curves([a], rows)
    assert cat.probe_reads(c, (35,), fast=True) == ({35: a["probes"][35][0]},
                                                    [np.mean(a["probes"][35][1])])
    assert cat.probe_reads(c, (35,))[0] == {35: pytest.approx(1000.0 * 2 ** (-20 / 6))}
    with pytest.raises(cat.CatalogError, match="fast probes at CRF"):
        cat.probe_reads(c, (43,), fast=True)


def test_a_rule_reads_its_scores_at_its_key_frames():
    """A rule read at fewer key frames than the catalog scored reads those the tool would
    score, spread over the input as the tool spreads them, for the input and its fast probe
    alike. Off the ladder, a measured rung keeps its frames and is read so too; between rungs
    the score is interpolated from pooled means, so a probe there is refused."""
    frames = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert cat.mean_at(frames) == cat.mean_at(frames, 8) == cat.mean_at(frames, 20) == 4.5
    assert cat.mean_at(frames, 5) == pytest.approx(np.mean([1, 3, 5, 6, 8]))  # 0,2,4,5,7
    assert cat.mean_at(frames, 1) == 5.0 and cat.mean_at(3.25, 5) == 3.25
    inp = {**_input("a", "master", 100.0, 0.0), "frame_scores": [4.0] * 4 + [3.0] * 4,
           "noise": 1.0, "probes": {43: (500.0, [3.5] * 4 + [1.5] * 4)}}
    rows = _ladder("a", lambda c: 100 - (c - 15), lambda c: 100 - (c - 15), lambda c: 4.0)
    (c,) = cat.curves([inp], rows)
    assert cat.predict_features(c, (43,), fast=True)["drop_lo"] == pytest.approx(2.5 - 3.5)
    # 3 of 8 are frames 1, 4 and 6: 4, 3, 3 of the input and 3.5, 1.5, 1.5 of the probe
    x = cat.predict_features(c, (43,), fast=True, key_frames=3)
    assert x["drop_lo"] == pytest.approx(np.mean([3.5, 1.5, 1.5]) - np.mean([4, 3, 3]))
    rows = [{**r, "frame_scores": [3.0] * 4 + [1.0] * 4} if r["crf"] == 43 else r
            for r in rows]
    (c,) = cat.curves([inp], rows)
    assert cat.predict_features(c, (43,))["drop_lo"] == pytest.approx(2.0 - 3.5)
    x = cat.predict_features(c, (43,), key_frames=3)  # the rung's frames 1, 4, 6: 3, 1, 1
    assert x["drop_lo"] == pytest.approx(np.mean([3, 1, 1]) - np.mean([4, 3, 3]))
    assert cat.probe_reads(c, (43,), key_frames=8) == cat.probe_reads(c, (43,))
    with pytest.raises(cat.CatalogError, match="3 key frames") as e:
        cat.predict_features(c, (41,), key_frames=3)  # between rungs 39 and 43
    assert "rungs at [15, 19" in str(e.value) and "--levels" in str(e.value)

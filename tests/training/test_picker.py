"""predict mode's rule fitted on a synthetic training catalog with a known answer, and
replayed as the catalog benchmark replays it."""

from dataclasses import replace

import numpy as np
import pytest

from cpllm_plugin.errors import CpllmError
from cpllm_plugin.integrations import ladder as lad
from cpllm_plugin.integrations import predict
from cpllm_plugin.training import catalog as cat
from cpllm_plugin.training import picker

LEVELS = (15, 21, 27, 33, 39, 45, 51)


def _size(c):
    return 1e5 * 2 ** (-(c - 15) / 6)  # the bitrate halves every 6 CRF


def _curve_pair(i, e):
    """A master whose VMAF-95 crossing is CRF 18, and an earlier encode of it at equivalent
    CRF ``e`` whose highest success is ``e - 2``: the answer is ``18 + max(e - 20, 0)``."""
    src = f"s{i}"
    rows, inputs = [], []
    for id_, kind, t, top, size in ((src, "master", 100.0, 18, _size(3)),
                                    (f"{src}~x264", "x264", 90.0, e - 2, _size(e))):
        need = min(95.0, t - 5.0)
        inputs.append({"id": id_, "kind": kind, "source": src, "vmaf_master": t,
                       "frame_scores": [4.0], "width": 1280, "height": 720, "frames": 48,
                       "bytes": size, "codec": "h264", "noise": 1.0})
        rows += [{"id": id_, "crf": c, "bytes": _size(c), "vmaf_master": need - (c - top),
                  "vmaf_input": 99.0, "frame_scores": [4.0 - 0.02 * c]} for c in LEVELS]
    return inputs, rows


@pytest.fixture
def curves():
    inputs, rows = [], []
    for i, e in enumerate(np.linspace(24, 40, 20)):
        a, b = _curve_pair(i, float(round(e)))
        inputs += a
        rows += b
    return cat.curves(inputs, rows)


def test_fit_finds_the_rule_and_a_small_margin(curves):
    rule, table = picker.fit(curves, share=0.9)
    one_probe = [f for f in picker.SETS if "drop_hi" not in f]
    assert len(table) == len(picker.PROBE_SETS) * len(one_probe) * len(picker.LAMBDAS)
    assert rule.encoder == "libx264" and rule.probes in picker.PROBE_SETS
    assert rule.margin <= 1.0
    for c in curves:
        est = rule.estimate(cat.predict_features(c, rule.probes))
        assert est == pytest.approx(cat.cheapest_success_crf(c), abs=0.6), c.id
    r = cat.judge("predict", cat.predict_rule(rule), curves)
    assert r.success >= 0.9 and r.median <= 2 ** (2 / 6)
    # The file the tool reads holds the same rule.
    assert predict.from_dict(rule.to_dict()) == rule


def test_replay_reads_the_equivalent_crf_off_the_ladder(curves):
    up = next(c for c in curves if c.id == "s0~x264")
    x = cat.predict_features(up, (27, 39))
    assert x["reencoded"] == pytest.approx(4.0, abs=1e-6)  # equivalent CRF 24
    master = next(c for c in curves if c.id == "s0")
    assert cat.predict_features(master, (27, 39))["reencoded"] == 0
    # One probe reads the same equivalent CRF off a line of 6 CRF a halving.
    assert cat.predict_features(up, (33,))["reencoded"] == pytest.approx(4.0, abs=1e-6)
    assert cat.cheapest_success_crf(up) == 22 and cat.cheapest_success_crf(master) == 18


def _auto_catalog(at=3.0, step=1.0, floor=85.0):
    """Masters whose VMAF against themselves falls 1 a CRF (crossing 95 at CRF 20), and
    earlier encodes of them at equivalent CRF ``e`` whose highest success is exactly where
    ``auto`` with (``at``, ``step``, ``floor``) would pick: the fit must find that setting."""
    inputs, rows = [], []
    for i, e in enumerate(range(22, 42)):
        src = f"s{i}"
        gap = e - 20
        level = 95.0 if gap <= at else max(floor, 95.0 - step * (gap - at))
        for id_, kind, t, top, size in ((src, "master", 100.0, 20, _size(3)),
                                        (f"{src}~x264", "x264", 90.0,
                                         int(np.floor(115 - level + 1e-9)), _size(e))):
            need = min(95.0, t - 5.0)
            inputs.append({"id": id_, "kind": kind, "source": src, "vmaf_master": t,
                           "frame_scores": [4.0], "width": 1280, "height": 720, "frames": 48,
                           "bytes": size, "codec": "h264", "noise": 1.0})
            rows += [{"id": id_, "crf": c, "bytes": _size(c),
                      "vmaf_master": need - (c - top), "vmaf_input": 100.0 - (c - 15),
                      "frame_scores": [4.0]} for c in LEVELS]
    return cat.curves(inputs, rows)


def test_fit_auto_finds_the_setting_that_keeps_every_input_at_the_least_cost():
    cs = _auto_catalog()
    grid = {"gap": (1.5, 3.0, 4.5), "step": (0.5, 1.0), "floor": (85.0, 90.0)}
    best, rows = picker.fit_auto(cs, grid)
    assert best == {"gap": 3.0, "step": 1.0, "floor": 85.0}
    assert len(rows) == 3 * 2 * 2
    top = rows[0]
    assert top["success"] == 1.0 and top["median"] == pytest.approx(1.0)
    # A setting that lowers the level sooner loses uploads; one that lowers it later keeps
    # them at more bits.
    sooner = next(r for r in rows if (r["gap"], r["step"], r["floor"]) == (1.5, 1.0, 85.0))
    later = next(r for r in rows if (r["gap"], r["step"], r["floor"]) == (4.5, 1.0, 85.0))
    assert sooner["uploads_success"] < 1.0
    assert later["uploads_success"] == 1.0 and later["uploads_median"] > 1.0
    # Judged with the tool's keep: every earlier encode here is smaller than any re-encode
    # that keeps what it had, so every setting keeps it, at its own size, and all tie.
    _, kept = picker.fit_auto(cs, grid, keep=lad.KEEP_CODECS)
    assert all(r["success"] == 1.0 for r in kept)
    assert kept[0]["uploads_median"] < 1.0
    assert all(r["uploads_median"] == pytest.approx(kept[0]["uploads_median"]) for r in kept)


def _pairs(master: dict, upload: dict, n: int = 20) -> list[cat.Curve]:
    """``n`` sources, each a master and one upload, every ladder read off the functions of CRF
    that ``master`` and ``upload`` give: ``vm`` (VMAF against the master), ``vi`` (against the
    input) and ``score``; with the input's ``kind``, ``t`` (its VMAF against the master),
    ``bytes``, ``noise`` (1 if not given) and ``s0``, its model score (4 if not given)."""
    inputs, rows = [], []
    for i in range(n):
        src = f"s{i}"
        for spec in (master, upload):
            id_ = src if spec["kind"] == "master" else f"{src}~{spec['kind']}"
            inputs.append({"id": id_, "kind": spec["kind"], "source": src,
                           "vmaf_master": spec["t"], "frame_scores": [spec.get("s0", 4.0)],
                           "width": 1280, "height": 720, "frames": 48, "bytes": spec["bytes"],
                           "codec": "h264", "noise": spec.get("noise", 1.0)})
            rows += [{"id": id_, "crf": c, "bytes": _size(c), "vmaf_master": spec["vm"](c),
                      "vmaf_input": spec["vi"](c), "frame_scores": [spec["score"](c)]}
                     for c in LEVELS]
    return cat.curves(inputs, rows)


# A master that keeps VMAF 95 against itself, and against the master, up to CRF 20.
MASTER = {"kind": "master", "t": 100.0, "bytes": _size(3), "vm": lambda c: 95.0 - (c - 20),
          "vi": lambda c: 100.0 - (c - 15), "score": lambda c: 4.0}
# A soft upload that reads as a master (VMAF 95 against itself up to CRF 30) but keeps what it
# had against its master (85) only up to CRF 28, where the model's score starts to fall 0.1 a
# CRF below its score of the upload.
SOFT = {"kind": "soft", "t": 90.0, "bytes": _size(3), "vm": lambda c: 85.0 - (c - 28),
        "vi": lambda c: 100.0 - (c - 15) / 3, "score": lambda c: 4.0 - 0.1 * max(c - 27, 0)}


def _guard_catalog():
    """:data:`MASTER` s, whose model score never falls, and :data:`SOFT` uploads: only the
    model's guard saves the uploads."""
    return _pairs(MASTER, SOFT)


def test_auto_rule_guard_caps_the_pick_where_the_score_falls():
    up = next(c for c in _guard_catalog() if c.id == "s0~soft")
    assert cat.auto_rule(guard=None)(up) == 30  # VMAF 95 against the upload
    # These uploads carry a master's bitrate: the shipped guard spares them (see below).
    assert cat.auto_rule(guard=0.15)(up) == 30
    assert cat.auto_rule(guard=0.15, spare=None)(up) == 28  # fallen 0.1 at 28, 0.2 at 29
    assert cat.auto_rule(guard=0.05, spare=None)(up) == 27
    assert not up.success(30) and up.success(28)


def test_fit_auto_takes_the_cheapest_guard_that_reaches_the_goals():
    cs = _guard_catalog()
    grid = {"gap": (4.5,), "step": (1.0,), "floor": (90.0,),
            "guard": (None, 0.05, 0.15)}
    best, rows = picker.fit_auto(cs, grid)
    assert best["guard"] == 0.15 and rows[0]["met"]
    by = {r["guard"]: r for r in rows}
    assert by[None]["uploads_success"] == 0.0 and not by[None]["met"]
    assert by[0.05]["met"] and by[0.05]["uploads_median"] > by[0.15]["uploads_median"] == 1.0
    # Goals no setting reaches: the most inputs kept, then the least cost.
    best, rows = picker.fit_auto(cs, grid, {"whole": 1.01})
    assert best["guard"] == 0.15 and not rows[0]["met"]


def _scale_catalog():
    """Masters scored 4.8 that keep what they had up to CRF 20 though VMAF against them
    allows 24, their score falling 0.05 a CRF; and soft uploads scored 3.0 that keep it up to
    30 though VMAF against them allows 33, their score falling 0.25 a CRF from 27. On the 1-5
    score the masters need a fall in [0.25, 0.3) and the uploads one in [0.75, 1.0); on the
    head's logit the two ranges meet (0.88-0.99 and 0.79-1.10)."""
    return _pairs({**MASTER, "s0": 4.8, "vi": lambda c: 100.0 - (c - 15) * 5 / 9,
                   "score": lambda c: 4.8 - 0.05 * (c - 15)},
                  {**SOFT, "s0": 3.0, "vm": lambda c: 85.0 - (c - 30),
                   "vi": lambda c: 100.0 - (c - 15) / 3.6,
                   "score": lambda c: 3.0 - 0.25 * max(c - 27, 0)})


def test_fit_auto_reads_the_guard_on_the_scale_where_both_kinds_fit():
    cs = _scale_catalog()
    master = next(c for c in cs if c.id == "s0")
    up = next(c for c in cs if c.id == "s0~soft")
    assert cat.auto_rule(guard=None, spare=None)(master) == 24 and not master.success(24)
    assert cat.auto_rule(guard=None, spare=None)(up) == 33 and not up.success(33)
    assert cat.auto_rule(guard=0.9, spare=None, guard_scale="logit")(master) == 20
    assert cat.auto_rule(guard=0.9, spare=None, guard_scale="logit")(up) == 30
    assert cat.auto_rule(guard=0.25, spare=None, guard_scale="score")(up) == 28 < 30
    grid = {"gap": (4.5,), "step": (1.0,), "floor": (90.0,), "spare": (None,),
            "guard": (None, 0.25, 0.8, ("logit", 0.5), ("logit", 0.9))}
    best, rows = picker.fit_auto(cs, grid)
    assert best["guard"] == ("logit", 0.9) and rows[0]["met"] and rows[0]["median"] == 1.0
    by = {r["guard"]: r for r in rows}
    # On the 1-5 score a fall either caps the uploads below what they keep (more bits) or
    # lets the masters past theirs; a smaller fall on the logit caps both below.
    assert by[0.25]["success"] == 1.0 and by[0.25]["uploads_median"] > 1.2
    assert by[0.8]["masters_success"] == 0.0
    assert by[("logit", 0.5)]["success"] == 1.0 and by[("logit", 0.5)]["median"] > 1.2


def _spare_catalog():
    """Rich masters (the bitrate of CRF 3 against a VMAF-95 crossing at 20: 2**(17/6), 7.1
    times its bits) whose model score falls 0.1 a CRF from CRF 18 up though VMAF keeps them to
    20; and the soft uploads of :func:`_guard_catalog` at about a transparent re-encode's
    bitrate (CRF 25 against a crossing at 30: 1.8 times). The guard must hold the uploads and
    spare the masters."""
    return _pairs({**MASTER, "score": lambda c: 4.0 - 0.1 * max(c - 17, 0)},
                  {**SOFT, "bytes": _size(25)})


def test_auto_rule_guard_spares_an_input_with_an_untouched_masters_bitrate():
    cs = _spare_catalog()
    master = next(c for c in cs if c.id == "s0")
    up = next(c for c in cs if c.id == "s0~soft")
    assert cat.input_gap(master) == (20, pytest.approx(-17.0, abs=1e-6))
    assert cat.richness(master) == pytest.approx(2 ** (17 / 6))
    assert cat.richness(up) == pytest.approx(2 ** (5 / 6))
    # The score, interpolated between the rungs at 15 and 21, has fallen 0.13 at 17, 0.2 at 18.
    assert cat.auto_rule(guard=0.15, spare=None)(master) == 17 and master.cost(17) > 1.3
    assert cat.auto_rule(guard=0.15, spare=4.0)(master) == 20 and master.cost(20) == 1.0
    assert cat.auto_rule(guard=0.15, spare=4.0)(up) == 28 and up.success(28)
    assert cat.auto_rule(guard=0.15, spare=1.5)(up) == 30 and not up.success(30)


def test_fit_auto_spares_the_masters_and_not_the_uploads():
    grid = {"gap": (4.5,), "step": (1.0,), "floor": (90.0,),
            "guard": (None, 0.15), "spare": (None, 1.5, 4.0)}
    best, rows = picker.fit_auto(_spare_catalog(), grid)
    assert (best["guard"], best["spare"]) == (0.15, 4.0) and rows[0]["met"]
    assert rows[0]["median"] == pytest.approx(1.0) and rows[0]["masters_mean"] == 1.0
    by = {(r["guard"], r["spare"]): r for r in rows}
    assert by[(0.15, None)]["met"] and by[(0.15, None)]["masters_mean"] > 1.0
    assert not by[(0.15, 1.5)]["met"] and by[(0.15, 1.5)]["uploads_success"] == 0.0


def _lift_catalog():
    """Grainy masters (luma noise 5) that keep VMAF 95 against themselves, and against the
    master, up to CRF 20, where the model's score still holds (it falls 0.05 a CRF from 21);
    and noisy uploads (luma noise 10) whose VMAF against themselves also crosses 95 at 20,
    though they keep what they had against their master up to 28, where the model's score
    starts to fall 0.1 a CRF. Neither is spared (1.4 times the crossing's bits). A lift that
    takes the uploads and not the masters keeps every input at the cheapest success."""
    return _pairs({**MASTER, "bytes": _size(17), "noise": 5.0,
                   "score": lambda c: 4.0 - 0.05 * max(c - 21, 0)},
                  {**SOFT, "kind": "noisy", "bytes": _size(17), "noise": 10.0,
                   "vi": MASTER["vi"]})


def test_auto_rule_lifts_a_noisy_input_up_to_where_the_models_score_holds():
    cs = _lift_catalog()
    master = next(c for c in cs if c.id == "s0")
    up = next(c for c in cs if c.id == "s0~noisy")
    on = {"guard": 0.3, "spare": None}
    assert cat.auto_rule(**on)(up) == 20  # VMAF 95 against the upload: the default
    assert cat.auto_rule(lift=(8.0, 0.12), **on)(up) == 28 and up.cost(28) == 1.0
    assert up.success(28) and not up.success(29) and up.cost(20) > 2.5
    assert cat.auto_rule(lift=(8.0, 0.12), **on)(master) == 20  # not noisy enough
    # A lift that takes the masters' grain too: the score, 3.9 at 23, still holds there.
    assert cat.auto_rule(lift=(4.0, 0.12), **on)(master) == 23 and not master.success(23)
    # The lift stands without the guard (--guard 0), and spares what the guard spares.
    assert cat.auto_rule(lift=(8.0, 0.12), **{**on, "guard": None})(up) == 28
    assert cat.auto_rule(**{**on, "guard": None})(up) == 20
    assert cat.auto_rule(lift=(8.0, 0.12), **{**on, "spare": 1.0})(up) == 20


def test_fit_auto_lifts_the_noisy_uploads_and_not_the_grainy_masters():
    grid = {"gap": (4.5,), "step": (1.0,), "floor": (90.0,), "guard": (0.3,),
            "spare": (None,), "lift": (None, (4.0, 0.12), (8.0, 0.12))}
    best, rows = picker.fit_auto(_lift_catalog(), grid)
    assert best["lift"] == (8.0, 0.12) and rows[0]["met"]
    assert rows[0]["uploads_median"] == pytest.approx(1.0)
    by = {r["lift"]: r for r in rows}
    assert by[None]["met"] and by[None]["uploads_median"] > 2.5
    assert not by[(4.0, 0.12)]["met"] and by[(4.0, 0.12)]["masters_success"] == 0.0
    # Without a guard the fit replays the lift as the tool makes it: on its own.
    best, rows = picker.fit_auto(_lift_catalog(), {**grid, "guard": (None,)})
    assert best["lift"] == (8.0, 0.12) and rows[0]["uploads_median"] == pytest.approx(1.0)


def test_fit_lift_takes_the_cheapest_lift_that_keeps_every_upload_the_default_keeps():
    """--drop-noise counts noise as worth nothing, so the masters' grain does not count; a
    fall that lets the uploads go past their cheapest success does."""
    cs = _lift_catalog()
    best = {"gap": 4.5, "step": 1.0, "floor": 90.0, "guard": 0.3, "spare": None, "lift": None}
    lift, rows = picker.fit_lift(cs, best, [(4.0, 0.12), (8.0, 0.12), (8.0, 0.25)])
    by = {r["lift"]: r for r in rows}
    # Both 0.12 lifts take the uploads to their cheapest success; 4.0 takes the masters'
    # grain too, so the one that keeps more inputs wins.
    assert lift["lift"] == (8.0, 0.12) and rows[0]["uploads_median"] == 1.0
    assert by[(4.0, 0.12)]["masters_success"] == 0.0 and by[(4.0, 0.12)]["met"]
    # A fall of 0.25 lifts the uploads to 29, past what they had.
    assert by[(8.0, 0.25)]["uploads_success"] == 0.0 and not by[(8.0, 0.25)]["met"]
    assert by[None]["met"] and by[None]["uploads_median"] > 2.5


def test_fit_reads_fast_probes_and_sizes_the_pick_from_them(curves):
    """A rule fitted on probes at a preset of its own reads them, not the ladder's rungs at
    the same CRF, and its size model carries the probe's bitrate to the ladders'."""
    for c in curves:  # a fast preset spends 20% more bits at the same CRF than the ladders
        c.info["probes"] = {43: (float(c.bytes[c.at(43)]) * 1.2, float(c.score[c.at(43)]))}
    rule, table = picker.fit(curves, share=0.9, encoder="libx264", preset="veryfast")
    assert rule.preset == "veryfast" and rule.probes == (43,)
    assert {tuple(r["probes"]) for r in table} == {(43,)}
    assert rule.size.offset == pytest.approx(-np.log2(1.2), abs=1e-3)
    assert rule.size.slope["const"] == pytest.approx(1 / 6, abs=1e-3)
    assert np.allclose(cat.predict_sizes(rule, curves), 1.0, atol=0.01)
    r = cat.judge("predict", cat.predict_rule(rule), curves)
    assert r.success >= 0.9
    assert predict.from_dict(rule.to_dict()) == rule
    # The same CRF read off the ladders gives another equivalent CRF, so the rule is not
    # replayed on them: an input without its fast probe is refused.
    del curves[0].info["probes"]
    with pytest.raises(cat.CatalogError, match="fast probes"):
        cat.predict_rule(rule)(curves[0])


def _noisy_catalog():
    """Half the sources noisy (luma noise 10): their bitrate halves every 4 CRF, where the
    clean ones' halves every 6, as an encoder starts to keep the noise."""
    inputs, rows = [], []
    for i, e in enumerate(np.linspace(24, 40, 24)):
        a, b = _curve_pair(i, float(round(e)))
        if i % 2:
            a = [x | {"noise": 10.0} for x in a]
            b = [r | {"bytes": 1e5 * 2 ** (-(r["crf"] - 15) / 4)} for r in b]
        inputs += a
        rows += b
    return cat.curves(inputs, rows)


def test_size_model_learns_that_a_noisy_inputs_bitrate_climbs_faster():
    """The pick's size off one probe: a line of a fixed CRF per halving reads a noisy
    input's size several times too small below the probe; the fitted size model reads each
    input's own slope from its noise."""
    cs = _noisy_catalog()
    rule, _ = picker.fit(cs, share=0.9)
    assert "noisy" in rule.size.slope
    got = cat.predict_sizes(rule, cs)
    assert np.allclose(got, 1.0, atol=0.02)
    line = cat.predict_sizes(replace(rule, size=None), cs)
    assert min(line) < 0.7  # the old line reads the noisy inputs too small
    e = cat.size_errors(got)
    assert e["within_30"] == 1.0 and e["median"] == pytest.approx(1.0, abs=0.02)
    size, table = picker.fit_size(cs, rule)
    assert size == rule.size and table[0]["features"] == ["const"]
    # The slopes seen bound it: the clean inputs' 1/6 doubling a CRF, the noisy ones' 1/4.
    assert size.bounds == pytest.approx((1 / 6, 1 / 4), abs=1e-4)
    assert min(r["log2_sd"] for r in table) == pytest.approx(
        next(r["log2_sd"] for r in table if tuple(r["features"]) == tuple(size.slope)))
    assert table[0]["log2_sd"] > 0.3  # the slope without the noise misses


def test_size_model_needs_rungs_below_the_probe(curves):
    rule, _ = picker.fit(curves, share=0.9)
    high = [replace(c, rungs={k: v for k, v in c.rungs.items() if k >= rule.probes[0]})
            for c in curves]
    with pytest.raises(cat.CatalogError, match="rungs below the probe"):
        picker.fit_size(high, rule)


def test_fit_reads_scores_at_its_key_frames(curves):
    """A rule fitted at fewer key frames reads the input's and the probe's scores at those
    (spread as the tool spreads them) and says so in its file: here frames 1 and 3 of each
    probe's 4 hold the drop that tells the answer, frames 0 and 2 noise."""
    rng = np.random.default_rng(0)
    for c in curves:
        drop = (cat.cheapest_success_crf(c) - 30.0) / 10.0
        junk = rng.normal(0.0, 2.0, 2)
        c.info["probes"] = {43: (float(c.bytes[c.at(43)]),
                                 [junk[0], 4.0 + drop, junk[1], 4.0 + drop])}
    rule, table = picker.fit(curves, share=0.9, preset="veryfast", key_frames=2)
    assert rule.key_frames == 2 and predict.from_dict(rule.to_dict()) == rule
    assert min(r["oof_sd"] for r in table) < 0.1
    for c in curves:
        x = cat.predict_features(c, rule.probes, fast=True, key_frames=2)
        assert x["drop_lo"] == pytest.approx((cat.cheapest_success_crf(c) - 30.0) / 10.0)
        assert rule.estimate(x) == pytest.approx(cat.cheapest_success_crf(c), abs=0.3)
        every = cat.predict_features(c, rule.probes, fast=True)["drop_lo"]
        assert abs(every - x["drop_lo"]) > 1e-3  # all four frames read the noise too
    # Off the ladders' rungs (no probe preset) the fit reads their pooled scores, which is
    # all it has between rungs, and the rule still names the key frames it reads at run time.
    pooled, _ = picker.fit(curves, share=0.9, key_frames=2)
    plain, _ = picker.fit(curves, share=0.9)
    assert pooled.key_frames == 2 and plain.key_frames is None
    assert pooled.weights == plain.weights and pooled.probes == plain.probes
    assert "pooled" in pooled.provenance["key_frames"] and "key_frames" not in plain.provenance


def test_refit_size_keeps_a_shipped_rules_weights_and_adds_its_size(tmp_path, monkeypatch):
    """``--size`` on a rule fitted before size models: its weights, margin and probes stay,
    the size model replaces its rate_scale, and the file says where the size came from."""
    cs = _noisy_catalog()
    old = predict.Predictor("libx264", (43,), {"const": 25.0, "noisy": 0.5}, 2.0,
                            {"fitted": "earlier", "rate_scale": "the median"}, None, 0.8)
    predict.save(old, tmp_path)
    monkeypatch.setattr(picker, "read", lambda *a, **k: cs)
    new = picker.refit_size(tmp_path / "catalog", tmp_path, "libx264")
    assert predict.load(tmp_path) == new
    assert (new.weights, new.margin, new.probes, new.key_frames) == (
        old.weights, old.margin, old.probes, old.key_frames)
    assert new.rate_scale == 1.0 and "noisy" in new.size.slope
    assert "rate_scale" not in new.provenance and "48 inputs of 24" in new.provenance["size"]
    assert np.allclose(cat.predict_sizes(new, cs), 1.0, atol=0.02)
    with pytest.raises(CpllmError, match="with a libx265 rule"):
        picker.refit_size(tmp_path / "catalog", tmp_path, "libx265")


def test_read_names_a_folder_that_holds_no_catalog(tmp_path):
    with pytest.raises(cat.CatalogError, match=r"inputs\.jsonl.*--build"):
        picker.read(tmp_path / "catalog-train")


def test_fit_soft_takes_the_level_that_keeps_the_soft_copies_and_spares_the_masters():
    """Soft copies with a master's bitrate (read as masters: VMAF 95 against themselves at
    CRF 25) keep what they had up to CRF 27, where their VMAF against themselves is 94; the
    masters' fine detail reads 0.5, the copies' 0.3."""
    copy = {"kind": "soft", "t": 80.0, "bytes": _size(3), "vm": lambda c: 75.0 - (c - 27),
            "vi": lambda c: 100.0 - (c - 15) / 2, "score": lambda c: 4.0}
    cs = _pairs(MASTER, copy)
    for c in cs:
        c.info["detail"] = 0.5 if c.kind == "master" else 0.3
    best = {"gap": 4.5, "step": 1.0, "floor": 90.0, "guard": None, "spare": None}
    soft, rows = picker.fit_soft(cs, best, [(0.32, 90.0), (0.32, 93.0), (0.32, 94.0),
                                            (0.6, 94.0)])
    by = {r["soft"]: r for r in rows}
    assert soft["soft"] == (0.32, 94.0) and by[(0.32, 94.0)]["uploads_median"] == 1.0
    assert by[None]["met"] and by[None]["uploads_median"] > 1.0  # VMAF 95: CRF 25
    # Lower levels take the copies past what they had; a threshold over the masters' detail
    # searches them at 94 too.
    assert not by[(0.32, 93.0)]["met"] and by[(0.32, 93.0)]["uploads_success"] == 0.0
    assert not by[(0.6, 94.0)]["met"] and by[(0.6, 94.0)]["masters_success"] == 0.0

"""Fit the ladder's pickers on a catalog of training sources, never on dev: ``--mode
predict``'s rule (``predict.json``) and ``--mode auto``'s constants (``--auto``).

One command rebuilds it (the catalog resumes; 36 min on 2 cores, the fit seconds)::

    python -m cpllm_plugin.training.picker --catalog data/catalog-train --build \\
        --out cpllm_plugin/models/cpllm-lite

(the recipe's ``picker`` stage runs the same). ``--build`` makes the training catalog
(:func:`cpllm_plugin.training.catalog.build` with ``split="train"``) from :data:`SOURCES`
at :data:`LEVELS`: their masters, the uploads made from them and their degraded originals.
``--codec libx265`` (or ``libsvtav1``, at its own :func:`levels`) builds that encoder's
ladders of the same inputs and fits its own rule (``predict-CODEC.json``).

What it fits (:mod:`cpllm_plugin.integrations.predict`): a ridge regression of each training
input's highest CRF that keeps what it had against its clean master
(:func:`~cpllm_plugin.training.catalog.cheapest_success_crf`) on the features of one probe
and its stream. The probe's CRF, the feature set and the ridge strength are chosen by
cross-validation grouped by source (an upload is never scored by a rule fitted on its own
master), by the least out-of-fold residual spread; the margin is the smallest that reaches
``--share`` success out of fold, so it carries the rule's real error, not its fit to itself.
Each rule also carries a size model (:func:`fit_size`): the pick's bitrate from its probe's,
which ``predict`` reports without encoding the pick. ``--size --out MODEL`` fits only that
for a rule already there, its weights and margin kept.

``--auto`` replays ``auto`` mode (:func:`~cpllm_plugin.training.catalog.auto_rule`) on every
input of a catalog of all training sources (``python bench/bench_catalog.py --split train
--data data/catalog-train --levels 15,21,27,33,39,45,51 --build-only``, about 70 min on 2
cores) for each setting of :data:`AUTO_GRID` and prints the one :func:`fit_auto`
chooses: among the settings that reach the success of :data:`AUTO_GOALS` on the whole
catalog, its uploads and its masters, the lowest median cost on the whole catalog, then on
the uploads, then their mean cost, then the masters' mean cost (when none reaches them, the
most inputs kept first).
``integrations/ladder.py`` ships that setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cpllm_plugin.configs import DEFAULT_MODEL
from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.integrations import predict

from . import catalog as cat
from .manifest import fold_of, parse_fold, read_manifest

# One probe: the mode must take at most half the time of a VMAF search, which probes about
# three times (a second probe bought no out-of-fold accuracy worth its encode:
# docs/experiments.md).
# The CRFs tried lie near the range's usual answers and above them, up to the top rung (the
# fit chose the highest one offered while they stopped at 39).
PROBE_SETS = ((27,), (31,), (33,), (35,), (39,), (41,), (43,), (45,), (48,), (51,))
LEVELS = (15, 21, 27, 33, 39, 45, 51)  # 6 CRF apart: half the dev catalog's encodes
# SVT-AV1's CRF runs to 63 and its masters cross VMAF 95 about 19 CRF above x264's on the
# training catalog: its own ladder (the dev catalog's SVT-AV1 levels) and probes, up to its
# top rung (a probe there encodes fastest, and the fit chose the highest one offered).
LEVELS_OF = {"libsvtav1": (20, 26, 32, 38, 44, 50, 56, 62)}
PROBE_SETS_OF = {"libsvtav1": ((38,), (44,), (47,), (50,), (56,), (59,), (62,))}


# The probes' own preset: on a short input the probe's encode is half of ``predict``'s time,
# and these presets halve it while the rule reads them as well out of fold (x264's veryfast
# and x265's veryfast read worse: docs/experiments.md, "A faster preset for predict's
# probe"); x265 keeps its default, its ladders' own, pinned so that a slower --preset
# neither slows the probe nor moves the bitrate the rule reads. The probes are measured at
# the preset (:func:`~.catalog.fast_probes`) at the CRFs of FAST_PROBE_SETS only.
PROBE_PRESETS = {"libx264": "fast", "libx265": "fast", "libsvtav1": "10"}
FAST_PROBE_SETS = {"libx264": ((43,),), "libsvtav1": ((62,),)}


# Key frames a sample that a rule reads: the paper's M. On a 2 s input the plan scores 8, and
# the two scorings are most of ``predict``'s time (docs/experiments.md, "Fewer key frames for
# predict"). A fit reads them off fast probes, which keep their frame scores; a rule that
# reads the ladders' rungs (--probe-preset none) is fitted on their pooled scores (the
# training ladders' rungs lie 6 CRF apart, and between them only a pooled score is known) and
# reads M at run time.
PREDICT_KEY_FRAMES = {"libx264": 5, "libx265": 5, "libsvtav1": 5}


def fast_probe_sets(codec: str) -> tuple[tuple[int, ...], ...]:
    """The probe sets fitted at a probe preset of its own (another encoder: x264's)."""
    return FAST_PROBE_SETS.get(codec, FAST_PROBE_SETS["libx264"])


def levels(codec: str) -> tuple[int, ...]:
    """The CRFs of ``codec``'s training ladders."""
    return LEVELS_OF.get(codec, LEVELS)
# Training sources of every kind: 28 masters of 540p and up (two uploads each) and 7 small
# camera, CGI and game clips (masters only).
SOURCES = ("ball", "anakreon", "janus_slides", "birds", "bbb_meadow", "bbb_flower",
           "bbb_rodents", "bbb_credits", "pan_elephants", "pan_raindrops", "pan_dune",
           "pan_garden", "pan_ladybird", "pan_storm", "pan_aitzgorri", "pan_dogs", "pan_bridge",
           "pan_kleiber", "pan_fog", "pan_nightsky", "grain_picos_light", "grain_flowers",
           "lowlight_room", "screen_code", "screen_terminal", "pixel_sprites", "slides_closeups",
           "slides_landscapes", "bikes", "carphone", "tree", "coin", "launch", "megamind",
           "blupi")
SHARE = 0.85
CODECS = ("libx264", "libx265", "libsvtav1")  # the encoders the shipped model has a rule for
# Candidates are ranked by their out-of-fold residual spread (CRF), which every input informs;
# their success and cost at one share hinge on the few inputs near the margin. The costs at
# these shares are printed beside it.
JUDGED_AT = (0.8, 0.85, 0.9)
FOLDS = 5
LAMBDAS = (0.3, 3.0, 30.0)
MARGINS = np.arange(-4.0, 12.01, 0.25)
# Candidate feature sets, smallest first (a tie goes to the smaller); ``drop_hi`` needs a
# second probe.
SETS = (("const", "reencoded", "noisy"),
        ("const", "reencoded", "noisy", "bits"),
        ("const", "reencoded", "noisy", "bits", "height"),
        ("const", "reencoded", "noisy", "drop_lo"),
        ("const", "reencoded", "noisy", "bits", "drop_lo"),
        ("const", "reencoded", "noisy", "drop_lo", "drop_hi"),
        ("const", "reencoded", "noisy", "bits", "drop_lo", "drop_hi"),
        ("const", "reencoded", "noisy", "bits", "height", "drop_lo", "drop_hi"))


def _fit(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    pen = lam * np.eye(X.shape[1])
    pen[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(X.T @ X + pen, X.T @ y)


def _fold(source: str) -> int:
    return fold_of(source, FOLDS)


def outcome(cs: Sequence[cat.Curve], est: np.ndarray, margin: float) -> tuple[float, float]:
    """Success share and median cost of picking ``floor(est - margin)`` on each input."""
    wins, costs = [], []
    for c, e in zip(cs, est, strict=True):
        crf = predict.below(e, margin, int(c.crfs[0]), int(c.crfs[-1]))
        wins.append(c.success(crf))
        costs.append(c.cost(crf))
    return float(np.mean(wins)), float(np.median(costs))


def margin_for(cs: Sequence[cat.Curve], est: np.ndarray, share: float) -> float:
    """The smallest margin at which ``share`` of ``cs`` succeed."""
    for m in MARGINS:
        if outcome(cs, est, float(m))[0] >= share - 1e-9:
            return float(m)
    return float(MARGINS[-1])


def fit(cs: Sequence[cat.Curve], share: float = SHARE,
        probe_sets: Sequence[tuple[int, ...]] | None = None,
        encoder: str = "libx264", preset: str | None = None,
        key_frames: int | None = None) -> tuple[predict.Predictor, list[dict]]:
    """Choose the probe, features and ridge strength by grouped cross-validation (the least
    out-of-fold residual spread), refit on all of ``cs``, and set the margin from the
    out-of-fold estimates at ``share``; returns the rule and a row per candidate (its spread,
    and its median cost at each share of :data:`JUDGED_AT`, averaged). ``encoder``: the
    one whose ladders ``cs`` are; ``preset``: the probes' own (read off the inputs'
    :func:`~.catalog.fast_probes`; None: the ladders' rungs); ``key_frames``: the key frames
    per sample the rule reads the input's and its probes' scores at (None: all of the
    catalog's, :data:`~.catalog.KEY_FRAMES`), fitted at those off fast probes and at all
    the catalog's off the rungs."""
    fast = preset is not None
    read_at = key_frames if fast else None
    probe_sets = probe_sets or (fast_probe_sets(encoder) if fast else
                                PROBE_SETS_OF.get(encoder, PROBE_SETS))
    y = np.array([cat.cheapest_success_crf(c) for c in cs], dtype=np.float64)
    folds = np.array([_fold(c.source) for c in cs])
    rows, best = [], None
    for probes in probe_sets:
        x = [cat.predict_features(c, probes, encoder, fast, read_at) for c in cs]
        for names in SETS:
            if "drop_hi" in names and len(probes) < 2:
                continue
            X = np.array([[f[n] for n in names] for f in x])
            for lam in LAMBDAS:
                oof = np.empty(len(cs))
                for k in range(FOLDS):
                    train, test = folds != k, folds == k
                    if test.any():
                        oof[test] = X[test] @ _fit(X[train], y[train], lam)
                at = {s: outcome(cs, oof, margin_for(cs, oof, s)) for s in JUDGED_AT}
                m = margin_for(cs, oof, share)
                ok, med = outcome(cs, oof, m)
                row = {"probes": list(probes), "features": list(names), "lambda": lam,
                       "oof_sd": float(np.std(y - oof)), "margin": m, "success": ok,
                       "median_cost": med,
                       "judged": float(np.mean([c for _, c in at.values()]))}
                rows.append(row)
                if best is None or row["oof_sd"] < best[0]["oof_sd"] - 1e-9:
                    best = (row, X)
    row, X = best
    w = _fit(X, y, row["lambda"])
    rule = predict.Predictor(encoder, tuple(row["probes"]),
                             dict(zip(row["features"], map(float, w), strict=True)),
                             row["margin"], {
                                 "fitted": time.strftime("%Y-%m-%d"),
                                 "inputs": len(cs),
                                 "sources": len({c.source for c in cs}),
                                 "share": share,
                                 "lambda": row["lambda"],
                                 "out_of_fold": {k: round(row[k], 4) for k in
                                                 ("oof_sd", "success", "median_cost",
                                                  "judged")},
                                 **({"key_frames": f"{key_frames} a sample; fitted on the "
                                     "ladders' pooled scores (all their key frames)"}
                                    if key_frames and not fast else {}),
                             }, preset, key_frames=key_frames)
    size, _ = fit_size(cs, rule)
    return replace(rule, size=size), rows


# Candidate features of the size model's slope, smallest first (a tie goes to the smaller).
SIZE_SETS = (("const",), ("const", "noisy"), ("const", "noisy", "reencoded"),
             ("const", "noisy", "bits"), ("const", "noisy", "bits", "reencoded"))


def fit_size(cs: Sequence[cat.Curve], rule: predict.Predictor
             ) -> tuple[predict.Size, list[dict]]:
    """``rule``'s :class:`~cpllm_plugin.integrations.predict.Size`: least squares of each
    measured rung's bitrate below the first probe against the probe's (as ``rule`` reads
    it: off its fast probes when it has a preset), the slope's features chosen by grouped
    cross-validation, judged where sizes are reported, at each input's answer
    (:func:`~.catalog.cheapest_success_crf`), by the out-of-fold spread of the log error;
    returns the size model and a row per candidate (:func:`~.catalog.size_errors` of its
    out-of-fold estimates)."""
    fast, p0 = rule.preset is not None, rule.probes[0]
    # The features the size reads come off the stream and the probe's bitrate: the pooled
    # scores do (a rule reading rungs may lack frame scores at its probe's CRF).
    xs = [cat.predict_features(c, rule.probes, rule.encoder, fast) for c in cs]
    base = [cat.probe_reads(c, rule.probes, fast)[0][p0] for c in cs]
    fit_rows = [(i, p0 - crf, np.log2(float(c.bytes[c.at(crf)]) / base[i]))
                for i, c in enumerate(cs) for crf in sorted(c.rungs) if crf < p0]
    below = len({i for i, *_ in fit_rows})
    if below < MIN_INPUTS // 3:
        raise cat.CatalogError(message(
            f"{rule.encoder}'s size model", f"ladders with rungs below the probe at CRF {p0} "
            f"on at least {MIN_INPUTS // 3} inputs", str(below),
            "build the catalog's ladders with lower --levels"))
    who = np.array([i for i, *_ in fit_rows])
    d = np.array([r[1] for r in fit_rows], dtype=np.float64)
    t = np.array([r[2] for r in fit_rows])
    folds = np.array([_fold(c.source) for c in cs])
    answer = np.array([cat.cheapest_success_crf(c) for c in cs], dtype=np.float64)

    def design(names, ids, dist):
        return np.column_stack([np.ones(len(ids))] + [dist * np.array([xs[i][f] for i in ids])
                                                      for f in names])

    rows, best = [], None
    everyone = np.arange(len(cs))
    for names in SIZE_SETS:
        est = np.empty(len(cs))
        for k in range(FOLDS):
            train, test = folds[who] != k, folds == k
            if test.any():
                w, *_ = np.linalg.lstsq(design(names, who[train], d[train]), t[train],
                                        rcond=None)
                est[test] = design(names, everyone[test], p0 - answer[test]) @ w
        ratio = 2 ** est * np.array(base) / np.array([c.bytes[c.at(a)] for c, a in
                                                      zip(cs, answer, strict=True)])
        row = {"features": list(names), **cat.size_errors(ratio)}
        rows.append(row)
        if best is None or row["log2_sd"] < best["log2_sd"] - 1e-9:
            best = row
    names = tuple(best["features"])
    w, *_ = np.linalg.lstsq(design(names, who, d), t, rcond=None)
    slope = {f: round(float(v), 5) for f, v in zip(names, w[1:], strict=True)}
    seen = [sum(v * x[f] for f, v in slope.items()) for x in xs]
    return predict.Size(round(float(w[0]), 4), slope,
                        (round(min(seen), 5), round(max(seen), 5))), rows


# auto's constants: the gap (CRF above the VMAF-95 crossing) where an input starts to read as
# re-encoded, the VMAF given up per CRF beyond it, the lowest level.
AUTO_GRID = {"gap": (0.5, 1.5, 2.5, 3.5, 4.5, 6.0, 8.0), "step": (0.25, 0.5, 0.75, 1.0),
             "floor": (85.0, 88.0, 90.0, 92.0),
             # The model's guard: the fall of its score below the input's where the pick stops
             # (None: none); a number is a fall on the shipped scale, a pair (scale, fall) one
             # on that scale (ladder.guard_floor: the score itself or the head's logit of it).
             # Fitted fairly only with --scores from models trained without the sources they
             # score: the shipped model's scores of training sources are in-sample
             # (it was trained on their variants), so the guard looks cheaper on them than on
             # new footage.
             "guard": (None, 0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4,
                       *(("logit", f) for f in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))),
             # Times the bits of its re-encode at the VMAF-95 crossing where an input reads as
             # an untouched master, which the guard spares (None: it spares none).
             "spare": (None, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
             # The model's lift on a noisy input (--drop-noise, off by default): (the luma
             # noise from which an input reads as noisy, the fall of the score where the lift
             # stops); None: no lift. Fitted apart: see fit_lift.
             "lift": (None,)}
# The lift's settings, fitted with the other constants held at the default's (fit_lift).
LIFT_GRID = tuple((n, f) for n in (4.0, 5.0, 5.5, 6.0, 7.0, 9.0) for f in (0.05, 0.1, 0.15))
# The success the default must reach (issue 36's goals 1-3): on the whole catalog, on the
# uploads, on the masters. Among the settings that reach all three, the cheapest wins.
AUTO_GOALS = {"whole": 0.95, "uploads": 0.90, "masters": 0.95}
# When none reaches them: the most inputs kept, where one input (half a percent of the training
# catalog) is within what another draw of the same kinds of uploads would move, so settings
# that keep one fewer than the best count as tied.
AUTO_TIE = 1


def guard_of(g: float | tuple[str, float] | None) -> tuple[float | None, str | None]:
    """``(fall, scale)`` of a guard of :data:`AUTO_GRID` (scale None: the shipped one)."""
    return (g[1], g[0]) if isinstance(g, tuple) else (g, None)


def fit_auto(cs: Sequence[cat.Curve], grid: dict = AUTO_GRID,
             goals: dict = AUTO_GOALS, keep: Sequence[str] = ()
             ) -> tuple[dict, list[dict]]:
    """The setting of ``grid`` that reaches ``goals`` on ``cs`` at the lowest cost (median
    over all, median then mean over the uploads); when none does, the one that keeps the most
    (within :data:`AUTO_TIE` inputs) at the lowest cost. Returns it and every setting's row,
    best first.

    ``keep``: judge every setting with the tool's keep of an input in these codecs (e.g.
    :data:`~cpllm_plugin.integrations.ladder.KEEP_CODECS`). The fit judges the pick rule
    alone by default: keep takes the place of a pick only where it would outgrow the input,
    whichever rule picked, so with it most settings tie at the median and the fit's choice
    rests on its tie-breaks (docs/experiments.md)."""
    import itertools

    from cpllm_plugin.integrations import ladder as lad

    model = ("guard", "spare", "lift")  # read off the model's scores, after the level
    levels = [k for k in grid if k not in model]
    guards, spares = grid.get("guard", (None,)), grid.get("spare", (None,))
    lifts = grid.get("lift", (None,))
    groups = {"whole": list(cs), "uploads": [c for c in cs if c.kind != "master"],
              "masters": [c for c in cs if c.kind == "master"]}
    held = {g: {c.id: cat.guard_held(c, *guard_of(g)) for c in cs} for g in guards}
    # The lift's fall is on the 1-5 score itself (fitted so), not the guard's logit.
    raised = {f: {c.id: cat.held_at(c, c.s0 - f) for c in cs}
              for f in {lf[1] for lf in lifts if lf}}
    rich = {c.id: cat.richness(c) for c in cs}
    noise = {c.id: c.info.get("noise") for c in cs}
    rows = []
    for values in itertools.product(*(grid[k] for k in levels)):
        s = dict(zip(levels, values, strict=True))
        over = {k: v for k, v in (("at", s["gap"]), ("step", s["step"]),
                                  ("floor", s["floor"]))}
        if "soft" in s:
            over["soft"] = s["soft"]
        base = {c.id: cat.level_pick(c, over) for c in cs}  # the model moves only these
        for g, sp, lf in itertools.product(guards, spares, lifts):
            def pol(c, g=g, sp=sp, lf=lf, base=base):  # cat.auto_rule, each read once
                k = base[c.id]
                if k is None or not (g or lf) or lad.spared(rich[c.id], sp):
                    return k
                n = noise[c.id]
                if lf and n is not None and n >= lf[0] and raised[lf[1]][c.id] is not None:
                    k = max(k, raised[lf[1]][c.id])
                h = held[g][c.id]
                return k if h is None else min(k, h)
            judged = cat.keep_input(pol, lad.KEEP_PERCENT, keep) if keep else pol
            r = {name: cat.judge("", judged, group) for name, group in groups.items() if group}
            rows.append({**s, "guard": g, "spare": sp, "lift": lf,
                         "kept": round(r["whole"].success * len(cs)),
                         "met": all(r[k].success >= v - 1e-9 for k, v in goals.items()
                                    if k in r),
                         "success": r["whole"].success, "median": r["whole"].median,
                         "uploads_success": r["uploads"].success if "uploads" in r else 1.0,
                         "uploads_median": r["uploads"].median if "uploads" in r else 1.0,
                         "uploads_mean": r["uploads"].cost if "uploads" in r else 1.0,
                         "masters_success": r["masters"].success if "masters" in r else 1.0,
                         "masters_mean": r["masters"].cost if "masters" in r else 1.0})
    most = max(r["kept"] for r in rows)
    met = any(r["met"] for r in rows)
    rows.sort(key=lambda r: (not r["met"] if met else r["kept"] < most - AUTO_TIE,
                             r["median"], r["uploads_median"], r["uploads_mean"],
                             r["masters_mean"], -r["kept"]))
    return {k: rows[0][k] for k in grid}, rows


def fit_lift(cs: Sequence[cat.Curve], best: dict,
             lifts: Sequence[tuple[float, float]] = LIFT_GRID) -> tuple[dict, list[dict]]:
    """``--drop-noise``'s lift: with ``best``'s other constants (the shipped ones), the setting
    of ``lifts`` that keeps every upload the default keeps at the lowest median cost on the
    uploads, then the one that keeps the most inputs (the masters whose grain it takes count
    here), then the lowest mean cost on the uploads, where the noisy copies' costs show."""
    base = {k: (v,) for k, v in best.items() if k != "lift"}
    _, rows = fit_auto(cs, {**base, "lift": (None, *lifts)}, {})
    off = next(r for r in rows if r["lift"] is None)["uploads_success"]
    for r in rows:
        r["met"] = r["uploads_success"] >= off - 1e-9
    rows.sort(key=lambda r: (not r["met"], round(r["uploads_median"], 2), -r["kept"],
                             r["uploads_mean"]))
    return {k: rows[0][k] for k in (*base, "lift")}, rows


# auto's soft-copy rule: (the fine detail under which an input reads as a soft copy, the
# level it is searched at); None: off. Fitted apart, with the other constants held (fit_soft).
SOFT_GRID = tuple((round(float(t), 2), lv) for t in np.arange(0.30, 0.541, 0.02)
                  for lv in (90.0, 91.0, 92.0, 93.0, 94.0))


def fit_soft(cs: Sequence[cat.Curve], best: dict, softs: Sequence = SOFT_GRID,
             keep: Sequence[str] | None = None) -> tuple[dict, list[dict]]:
    """``auto``'s soft-copy rule: with ``best``'s other constants (the shipped ones), the
    setting of ``softs`` that keeps as many inputs as the default without it (masters and
    uploads alike), at the lowest median then mean cost on the uploads; among equals the
    lowest threshold and the highest level, which move the fewest picks. Judged with the
    tool's keep (``keep``: its codecs; None: :data:`~cpllm_plugin.integrations.ladder.
    KEEP_CODECS`), which decides what a soft copy costs: one the re-encode would outgrow
    is kept whatever the level."""
    from cpllm_plugin.integrations import ladder as lad

    base = {k: (v,) for k, v in best.items() if k != "soft"}
    _, rows = fit_auto(cs, {**base, "soft": (None, *softs)}, {},
                       lad.KEEP_CODECS if keep is None else keep)
    off = next(r for r in rows if r["soft"] is None)
    for r in rows:
        r["met"] = all(r[k] >= off[k] - 1e-9 for k in ("success", "uploads_success",
                                                        "masters_success"))
    # The mean breaks the median's ties: keep puts most uploads' median at 1.00 whatever the
    # rule, and the soft copies the rule moves show in the mean (the noisy copies that set
    # its size read sharp, so no setting moves them).
    rows.sort(key=lambda r: (not r["met"], round(r["uploads_median"], 2), r["uploads_mean"],
                             *((r["soft"][0], -r["soft"][1]) if r["soft"] else (0, 0))))
    return {k: rows[0][k] for k in (*base, "soft")}, rows


def probe_files(catalog: Path, codec: str, preset: str,
                scores: Sequence[Path] = ()) -> list[Path]:
    """The catalog's :func:`~.catalog.fast_probes` files of ``codec`` at ``preset``: of the
    models of the ``scores`` files when given (their out-of-sample scores), else of all."""
    stem = cat.probes_file(codec, preset, "").removesuffix(".jsonl")
    files = sorted(Path(catalog).glob(f"{stem}*.jsonl"))
    if scores:
        models = {Path(f).name.removeprefix("scores-") for f in scores}
        files = [f for f in files if f.name.removeprefix(stem) in models]
    return files


def read(catalog: Path, only: Sequence[str] | None = SOURCES,
         codec: str = "libx264", scores: Sequence[Path] = (),
         preset: str | None = None) -> list[cat.Curve]:
    """The training catalog's ``codec`` curves of the inputs made from ``only`` (None: all);
    refuses a catalog that holds any dev source. ``scores``: :func:`~.catalog.rescore` files
    whose model scores replace the catalog's (the inputs they lack are left out).
    ``preset``: with every input's fast probes at it (:func:`probe_files` of the same
    models; the inputs without are left out)."""
    from .corpus import read_split

    inputs = cat.with_readings(catalog)
    if not inputs:
        raise cat.CatalogError(message(
            str(catalog), "a training catalog (its inputs.jsonl)", "none there",
            "build one with --build, or pass the folder it was built in"))
    split = read_split()
    dev = sorted({i["source"] for i in inputs if split.get(i["source"]) != "train"})
    if dev:
        raise cat.CatalogError(message(
            str(catalog), "a catalog of training sources (built with split='train')",
            f"one holding {', '.join(dev[:3])}", "build one with --build; a rule fitted on "
            "dev would be graded on its own answers"))
    rows = cat.read_jsonl(catalog / cat.ladder_file(codec))
    if only is not None:  # a folder may hold more of the split than the rule is fitted on
        inputs = [i for i in inputs if i["source"] in set(only)]
    if scores:
        inputs, rows = cat.with_scores(inputs, rows, scores, codec)
    if preset is not None:
        files = probe_files(catalog, codec, preset, scores)
        if not files:
            raise cat.CatalogError(message(
                str(catalog), f"{codec} probes at preset {preset} "
                f"({cat.probes_file(codec, preset, 'MODEL')})", "none",
                f"measure them with --probes MODEL --probe-preset {preset}"))
        inputs = cat.with_probes(inputs, files, codec, preset)
    return [c for c in cat.curves(inputs, rows, codec) if c.reachable]


def _scorer(model):
    from cpllm_plugin.integrations.ladder import Scorer

    return Scorer(str(model))


def measure_probes(catalog: Path, scorer, codec: str, preset: str | None = None,
                   keep=None, progress=True) -> Path | None:
    """The catalog's fast probes of ``codec`` (at ``preset``, default
    :data:`PROBE_PRESETS`'; none for an encoder without one) scored by ``scorer``, of the
    sources ``keep`` takes (None: all)."""
    preset = preset or PROBE_PRESETS.get(codec)
    if preset is None:
        return None
    crfs = sorted({c for ps in fast_probe_sets(codec) for c in ps})
    return cat.fast_probes(catalog, scorer, codec, preset, crfs, keep, progress=progress)


MIN_INPUTS = 30  # fewer training inputs cannot rank candidates out of fold


def build_catalog(catalog: Path, model: str | Path, corpus: Path | None = None,
                  progress=True, codec: str = "libx264") -> tuple[str, ...] | None:
    """Build (or finish) the training catalog's ``codec`` ladders with ``model``'s scores,
    from :data:`SOURCES` found in ``corpus`` (default: a corpus of its own under
    ``catalog``); returns the sources a rule is fitted on. None when the corpus holds too
    few of them to fit on (a test corpus, a user's own footage)."""
    only = SOURCES
    if corpus is not None:
        have = {i.source for i in read_manifest(Path(corpus) / "sources.jsonl")}
        only = tuple(s for s in SOURCES if s in have)
        if not only:
            return None
    cat.build(catalog, _scorer(model), levels(codec), only=only, split="train",
              progress=progress, corpus=corpus, codec=codec)
    return only if len(read(catalog, only, codec)) >= MIN_INPUTS else None


def fit_rule(catalog: Path, only: Sequence[str], out: Path | None = None,
             share: float = SHARE, codec: str = "libx264",
             scores: Sequence[Path] = (), preset: str | None = None,
             key_frames: int | None = None) -> tuple[predict.Predictor, list[dict]]:
    """Fit ``codec``'s rule on a built catalog (``scores``: :func:`~.catalog.rescore` files
    of held-out models, whose scores it reads instead of the catalog's; ``preset``: the
    probes' own, read off the catalog's fast probes of the same models) and write it into
    ``out`` when given."""
    rule, table = fit(read(catalog, only, codec, scores, preset), share, encoder=codec,
                      preset=preset, key_frames=key_frames)
    if scores:  # the model's scores the rule read were out of sample
        rule.provenance["scores"] = [Path(f).name for f in scores]
    if out is not None:
        predict.save(rule, out)
    return rule, table


def rebuild(catalog: Path, model: str | Path, out: Path | None = None,
            share: float = SHARE, corpus: Path | None = None, progress=True,
            codec: str = "libx264") -> tuple[predict.Predictor, list[dict]] | None:
    """:func:`build_catalog`, then :func:`fit_rule` on the model's own scores; None when
    the corpus holds too few of :data:`SOURCES`."""
    only = build_catalog(catalog, model, corpus, progress, codec)
    return None if only is None else fit_rule(catalog, only, out, share, codec)


def refit_size(catalog: Path, out: Path | None, codec: str, scores: Sequence[Path] = (),
               preset: str | None = None) -> predict.Predictor:
    """Fit the size model of the rule for ``codec`` in the model directory ``out`` on the
    training catalog and write it back, its weights, margin and probes kept. ``preset``:
    read the probes measured at it instead of the rule's own reads (for a rule that reads
    the ladders' rungs, their own preset: a measured probe where the ladders have no rung
    at its CRF)."""
    rule = None if out is None else predict.load(out, codec)
    if rule is None:
        got = "no --out" if out is None else str(out)
        raise CpllmError(message("--size", f"--out, a model directory with a {codec} rule "
                                 f"({predict.rule_file(codec)})", got,
                                 "fit the rule first (without --size)"))
    read_as = rule if preset is None else replace(rule, preset=preset)
    cs = read(catalog, SOURCES, codec, scores, read_as.preset)
    size, table = fit_size(cs, read_as)
    for r in table:
        print(f"size slope {'+'.join(r['features']):32} out of fold at the answers: median "
              f"{r['median']:.2f}, log2 spread {r['log2_sd']:.3f}, 10-90% {r['p10']:.2f}-"
              f"{r['p90']:.2f}, within 30% {r['within_30']:.0%}")
    chosen = next(r for r in table if tuple(r["features"]) == tuple(size.slope))
    rule = replace(rule, size=size, rate_scale=1.0, provenance={
        **{k: v for k, v in rule.provenance.items() if k != "rate_scale"},
        "size": f"fitted {time.strftime('%Y-%m-%d')} by --size on {len(cs)} inputs of "
        f"{len({c.source for c in cs})} training sources"
        f"{f', probes measured at preset {preset}' if preset else ''}; out of fold at each "
        f"input's answer: median {chosen['median']:.2f} of the ladder's size, within 30% on "
        f"{chosen['within_30']:.0%}, 10-90% {chosen['p10']:.2f}-{chosen['p90']:.2f}"})
    print(json.dumps(rule.to_dict()["size"]))
    print(f"wrote {predict.save(rule, out)}")
    return rule


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True,
                    help="The training catalog's folder (outside git).")
    ap.add_argument("--build", action="store_true",
                    help="Build (or finish) the catalog first, scored by --model.")
    ap.add_argument("--model", default=None,
                    help="The model whose scores the rule reads (default: --out).")
    ap.add_argument("--out", type=Path, help="Model directory to write predict.json into.")
    ap.add_argument("--share", type=float, default=SHARE,
                    help="Success share the margin is set for, out of fold.")
    ap.add_argument("--codec", default="libx264",
                    help="The encoder whose ladders the rule is fitted on (its file: "
                    "predict.json for libx264, predict-CODEC.json for another).")
    ap.add_argument("--rescore", metavar="MODEL",
                    help="Score the catalog's inputs and ladders again with MODEL (sizes and "
                    "VMAF kept; with --fold, only that fold's sources) and exit.")
    ap.add_argument("--fold", metavar="K/N",
                    help="With --rescore: the sources of fold K of N (the fold a model "
                    "trained with cpllm-recipe --hold-out K/N never saw).")
    ap.add_argument("--scores", type=Path, action="append", default=[],
                    help="A --rescore file whose scores the fit reads instead of the "
                    "catalog's (repeatable: one per fold's model).")
    ap.add_argument("--probe-preset", metavar="P",
                    help="The probes' own preset (default: PROBE_PRESETS' for --codec; "
                    "'none': the ladders' own, read off their rungs).")
    ap.add_argument("--key-frames", type=int, metavar="M",
                    help="Key frames a sample the rule reads its scores at: fitted at them "
                    "with a probe preset, at all the catalog's off the ladders' rungs "
                    f"(default: PREDICT_KEY_FRAMES' for --codec, {PREDICT_KEY_FRAMES}; "
                    "0: all the catalog scored).")
    ap.add_argument("--probes", metavar="MODEL",
                    help="Measure the catalog's fast probes (--codec at --probe-preset, at "
                    "the CRFs of FAST_PROBE_SETS) with MODEL's scores (with --fold, only "
                    "that fold's sources) and exit.")
    ap.add_argument("--size", action="store_true",
                    help="Fit only the size model of --out's rule for --codec (its weights "
                    "kept) and write it back; with --probe-preset, reads the probes measured "
                    "at that preset (for a rule that reads rungs: the ladders' own preset).")
    ap.add_argument("--auto", action="store_true",
                    help="Fit auto mode's constants on every input of the catalog with "
                    "--codec ladders instead (printed; integrations/ladder.py ships the "
                    "libx264 fit).")
    a = ap.parse_args(argv)
    preset = (PROBE_PRESETS.get(a.codec) if a.probe_preset is None else
              None if a.probe_preset == "none" else a.probe_preset)
    if a.key_frames is not None and a.key_frames < 0:
        raise SystemExit(f"cpllm_plugin.training.picker: --key-frames: expected a number of "
                         f"key frames (0: all), got {a.key_frames}")
    key_frames = PREDICT_KEY_FRAMES.get(a.codec) if a.key_frames is None \
        else a.key_frames or None
    if a.rescore or a.probes:
        try:
            fold = parse_fold(a.fold) if a.fold else None
        except ValueError as e:
            raise SystemExit(f"cpllm_plugin.training.picker: --fold: {e}") from None

        def keep(source: str) -> bool:
            return fold is None or fold_of(source, fold[1]) == fold[0]

        try:
            if a.probes:
                if preset is None:
                    raise SystemExit(f"cpllm_plugin.training.picker: --probes: {a.codec}'s "
                                     "rule probes at the ladders' own preset (none in "
                                     "PROBE_PRESETS, or --probe-preset none), read off "
                                     "their rungs; pass --probe-preset P to measure probes "
                                     "at P")
                path = measure_probes(a.catalog, _scorer(a.probes), a.codec, preset, keep)
            else:
                path = cat.rescore(a.catalog, _scorer(a.rescore), a.codec, keep)
        except CpllmError as e:
            raise SystemExit(f"cpllm_plugin.training.picker: {e}") from None
        print(f"wrote {path}")
        return
    if a.size:
        try:
            refit_size(a.catalog, a.out, a.codec, a.scores,
                       preset if a.probe_preset is not None else None)
        except CpllmError as e:
            raise SystemExit(f"cpllm_plugin.training.picker: {e}") from None
        return
    if a.auto:
        try:
            cs = read(a.catalog, only=None, codec=a.codec, scores=a.scores)
        except CpllmError as e:
            raise SystemExit(f"cpllm_plugin.training.picker: {e}") from None
        if not a.scores:
            print("note: the guard is fitted on the model's own scores of the sources it was "
                  "trained on; pass --scores (one file per held-out fold, see --rescore) for "
                  "out-of-sample scores", file=sys.stderr)
        best, rows = fit_auto(cs)
        top = rows[:10]
        goals = "reach" if top[0]["met"] else "none reaches"
        print(f"{a.codec}: {len(cs)} inputs from {len({c.source for c in cs})} training "
              f"sources; {goals} the goals {json.dumps(AUTO_GOALS)}; the ten best settings "
              "(success, median cost; masters: success; uploads: success, median, mean):")
        def off(v):
            fall, scale = guard_of(v)
            return "off" if fall is None else f"{fall:g}" + (f" on the {scale}" if scale else "")

        def lift_name(lf):
            return "off" if not lf else f"from noise {lf[0]:g} to a fall of {lf[1]:g}"

        for r in top:
            print(f"  gap {r['gap']:g} step {r['step']:g} floor {r['floor']:g} guard "
                  f"{off(r.get('guard'))} spare {off(r.get('spare'))} lift "
                  f"{lift_name(r.get('lift'))}: {r['success']:.1%} "
                  f"{r['median']:.2f}; {r['masters_success']:.0%}; "
                  f"{r['uploads_success']:.0%} {r['uploads_median']:.2f} "
                  f"{r['uploads_mean']:.2f}")
        print("chosen:", json.dumps(best))
        from cpllm_plugin.integrations import ladder as lad

        shipped = {"gap": lad.AUTO_GAP, "step": lad.AUTO_STEP, "floor": lad.AUTO_FLOOR,
                   "guard": lad.AUTO_GUARD, "spare": lad.AUTO_SPARE}
        lift, rows = fit_lift(cs, shipped)
        print("--drop-noise, the lift on the shipped constants (success, median; masters: "
              "success; uploads: success, median, mean):")
        for r in rows[:6]:
            print(f"  {lift_name(r['lift'])}: {r['success']:.1%} {r['median']:.2f}; "
                  f"{r['masters_success']:.0%}; {r['uploads_success']:.0%} "
                  f"{r['uploads_median']:.2f} {r['uploads_mean']:.2f}")
        print("chosen for --drop-noise:", json.dumps(lift["lift"]))
        soft, rows = fit_soft(cs, shipped)
        print("the soft-copy rule on the shipped constants, judged with keep (success, "
              "median; masters: success; uploads: success, median, mean):")
        for r in rows[:8]:
            name = "off" if r["soft"] is None else \
                f"fine detail under {r['soft'][0]:g}: level {r['soft'][1]:g}"
            print(f"  {name}: {r['success']:.1%} {r['median']:.2f}; "
                  f"{r['masters_success']:.0%}; {r['uploads_success']:.0%} "
                  f"{r['uploads_median']:.2f} {r['uploads_mean']:.2f}")
        print("chosen for AUTO_SOFT:", json.dumps(soft["soft"]))
        return
    try:
        if a.build:
            cat.build(a.catalog, _scorer(a.model or a.out or DEFAULT_MODEL), levels(a.codec),
                      only=SOURCES, split="train", codec=a.codec)
        rule, table = fit_rule(a.catalog, SOURCES, None, a.share, a.codec, a.scores, preset,
                               key_frames)
    except CpllmError as e:
        raise SystemExit(f"cpllm_plugin.training.picker: {e}") from None
    for r in table:
        print(f"probes {','.join(map(str, r['probes'])):6} {'+'.join(r['features'][1:]):44} "
              f"lambda {r['lambda']:<5g} out-of-fold sd {r['oof_sd']:.2f} CRF, margin "
              f"{r['margin']:+.2f}: {r['success']:.0%} at a median cost of "
              f"{r['median_cost']:.2f}; at {'/'.join(f'{s:.0%}' for s in JUDGED_AT)}: "
              f"{r['judged']:.3f}")
    print(json.dumps(rule.to_dict(), indent=1))
    if a.out:
        print(f"wrote {predict.save(rule, a.out)}")


if __name__ == "__main__":
    main()

"""cpllm-ladder against the clean master: a catalog benchmark of CRF pickers.

Builds (or finishes: every step resumes) the dev catalog of :mod:`cpllm_plugin.training.catalog`
and replays the pickers on its ladders: one fixed CRF, a VMAF search against the input (ab-av1's
crf-search), ``cpllm-ladder pick``'s modes. Prints success share and bit cost for clean
masters, each upload kind and the whole catalog, and draws success against bits.

    python bench/bench_catalog.py [--data data/catalog] [--plot docs/ladder-catalog.png]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ladder import NoScore  # noqa: E402
from machine import describe  # noqa: E402

from cpllm_plugin.configs import DEFAULT_MODEL  # noqa: E402
from cpllm_plugin.integrations import ffmpeg as ff  # noqa: E402
from cpllm_plugin.integrations import ladder as lad  # noqa: E402
from cpllm_plugin.training import catalog as cat  # noqa: E402

MEASURE_FR = ff.measure_fr  # the ab-av1 arm swaps the ladder's measure and calls through this


def abav1_measure(ref, dist, ffmpeg=None, threads=None, subsample=1, psnr=False):
    """VMAF as ab-av1's crf-search measures it by default (``--vmaf-scale auto``): both
    pictures scaled so that one side reaches 1920x1080 when the distorted one is smaller than
    1728x972, for libvmaf's 1080p model. The ladder compares at the reference's own size,
    which costs less on small inputs; this prices the search a user of ab-av1 waits for."""
    from cpllm_plugin.video import probe

    info = probe(dist)
    w, h = info.width, info.height
    size = None
    if w < 1728 and h < 972:  # ab-av1's rule for the 1k model; sizes kept even for 4:2:0
        k = 1080 / h if h / 1080 > w / 1920 else 1920 / w
        size = (2 * round(w * k / 2), 2 * round(h * k / 2))
    return MEASURE_FR(ref, dist, ffmpeg, threads, subsample, psnr, size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/catalog"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--codec", default="libx264",
                    help="The ladders' encoder (libx264, libx265, libsvtav1); same inputs.")
    ap.add_argument("--levels", help="The ladders' CRFs, comma-separated (default: "
                    f"{','.join(map(str, cat.LEVELS))}); the report keeps the inputs whose "
                    "ladder has every one of them.")
    ap.add_argument("--only", help="Source ids, comma-separated: their masters, uploads "
                    "and degraded originals alone (a subset for a slow encoder).")
    ap.add_argument("--split", default="dev", choices=("dev", "train"),
                    help="dev: the benchmark; train: the same kinds of inputs from training "
                    "sources, to fit a picker's constants on (never on dev).")
    ap.add_argument("--corpus", type=Path,
                    help="An existing corpus folder (the recipe's, with its sources.jsonl) to "
                    "take the originals from, instead of building one under DATA/corpus.")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--pin", action="store_true",
                    help="After the build, measure more CRFs until every input's cheapest "
                    "success is pinned to one CRF (by bisection) and the table's searches "
                    "pick on measured encodes (their pick and the CRF above it), instead of "
                    "reading VMAF off a line between the ladder's rungs.")
    ap.add_argument("--report-only", action="store_true",
                    help="Report on what is measured so far; build nothing.")
    ap.add_argument("--plot", type=Path, help="PNG of success share against bit cost.")
    ap.add_argument("--guard", type=float, metavar="D",
                    help="With --real: also run auto with --guard D (0: without the "
                    "model's guard).")
    ap.add_argument("--real-ids", metavar="ID,ID",
                    help="With --real: these inputs (catalog ids) instead of one per kind.")
    ap.add_argument("--real", type=int, default=0, metavar="N",
                    help="Also run the real tool on N inputs (spread over the kinds) in each "
                    "mode and compare its picks with the replayed ones.")
    ap.add_argument("--real-modes", metavar="MODE,MODE",
                    help="With --real: only these of the modes (e.g. \"auto,vmaf,vmaf, no "
                    "model\": a comma and a space belong to a name), not every one; times are "
                    "then compared among them alone.")
    ap.add_argument("--keep-same-codec", action="store_true",
                    help="With --real: the tool keeps only an input in the encoder's format, "
                    "and the replay's keep does the same.")
    ap.add_argument("--inputs", action="store_true",
                    help="Also list every input by its cost under the default: its kind, the "
                    "default's pick, ab-av1's gated search's, the cheapest success's CRF.")
    ap.add_argument("--rounds", type=int, default=1, metavar="R",
                    help="With --real: run every mode R times on each input, in a turning "
                    "order, and time each by its median (picks come from the first round).")
    a = ap.parse_args()
    if a.pin and a.report_only:
        ap.error("--pin measures more encodes; it cannot go with --report-only")
    print(json.dumps(describe()))
    scorer = lad.Scorer(a.model)
    levels = tuple(int(v) for v in a.levels.split(",")) if a.levels else cat.LEVELS
    only = a.only.split(",") if a.only else None
    t0 = time.perf_counter()
    if a.report_only:
        inputs, rows = cat.with_readings(a.data), cat.read_jsonl(a.data / cat.ladder_file(a.codec))
    else:
        inputs, rows = cat.build(a.data, scorer, levels, jobs=a.jobs, only=only,
                                 codec=a.codec, split=a.split, corpus=a.corpus)
    print(f"catalog built in {time.perf_counter() - t0:.0f} s: {len(inputs)} inputs, "
          f"{len(rows)} {a.codec} ladder rows")
    if a.pin:
        t1 = time.perf_counter()
        cat.pin(a.data, scorer, a.codec, jobs=a.jobs, only=only, searches=searches())
        rows = cat.read_jsonl(a.data / cat.ladder_file(a.codec))
        print(f"cheapest successes and searches' picks pinned in "
              f"{time.perf_counter() - t1:.0f} s")
    if a.build_only:
        return
    if only:
        inputs = [i for i in inputs if i["source"] in only]
    have: dict[str, set] = {}
    for r in rows:
        have.setdefault(r["id"], set()).add(r["crf"])
    inputs = [i for i in inputs if set(levels) <= have.get(i["id"], set())]
    if not inputs:
        measured = sorted(set().union(*have.values())) if have else []
        raise SystemExit(f"bench_catalog: no input of {a.data} has a ladder at every CRF of "
                         f"{','.join(map(str, levels))}; its ladders hold "
                         f"{','.join(map(str, measured)) or 'nothing'}: pass those as --levels")
    inputs = with_fast_probes(inputs, scorer, a)
    cs = cat.curves(inputs, rows, a.codec)
    lost = [c for c in cs if not c.reachable]
    cs = [c for c in cs if c.reachable]
    for c in lost:
        print(f"left out: {c.id} ({c.kind}): no CRF from {c.crfs[0]} keeps VMAF "
              f"{c.required:.1f} against the master (best {c.vm.max():.1f})")
    # one fixed CRF is swept over the ladder's own span (SVT-AV1's runs to 63)
    report(cs, scorer, a.plot, range(min(levels), max(levels) + 1), a.codec)
    if a.inputs:
        per_input(cs, a.codec)
    if a.real:
        real_tool(cs, scorer, a.real, a.codec, a.guard,
                  a.real_ids.split(",") if a.real_ids else None, a.rounds, not a.keep_same_codec,
                  re.split(r",(?! )", a.real_modes) if a.real_modes else None)


def with_fast_probes(inputs: list[dict], scorer, a) -> list[dict]:
    """``inputs`` with their fast probes when the model's ``predict`` rule probes at a preset
    of its own (measured here unless --report-only, as a ladder is)."""
    rule = scorer.predictor(a.codec)
    if rule is None or rule.preset is None:
        return inputs
    if not a.report_only:
        cat.fast_probes(a.data, scorer, a.codec, rule.preset, rule.probes, jobs=a.jobs)
    name = cat.probes_file(a.codec, rule.preset, scorer.id)
    got = cat.with_probes(inputs, [a.data / name], a.codec, rule.preset)
    if len(got) < len(inputs):
        raise SystemExit(f"bench_catalog: {len(inputs) - len(got)} of {len(inputs)} inputs "
                         f"lack predict's fast probes in {a.data / name}; run without "
                         "--report-only to measure them")
    return got


def searches() -> list[cat.Policy]:
    """The table's searches, whose picks --pin measures: without the keep, which reads the
    size at the pick they would make."""
    return [cat.auto_rule(), cat.auto_rule(spare=None), cat.auto_rule(drop_noise=True),
            cat.auto_rule(guard=None), cat.vmaf_search(95)]


def keeper(codec: str, any_codec: bool = True):
    """The tool's keep as a wrapper of policies: an input in any of the tool's codecs is
    kept where the pick would be bigger (every mode does it by default, and ab-av1's gate
    does it whatever the input's codec; a fixed CRF is judged with it too, so that the
    comparison is of the CRFs alone); without ``any_codec`` (``--keep-same-codec``) only an
    input already in ``codec``'s format."""
    fmt = lad.KEEP_CODECS if any_codec else ff.get_encoder(codec).codec
    return lambda policy, percent=lad.KEEP_PERCENT: cat.keep_input(policy, percent, fmt)


def cross_floor(codec: str, floor: float) -> cat.Policy:
    """``auto`` with its level's floor at ``floor`` for an input in one of the tool's codecs
    other than ``codec``'s format (an x264 upload re-encoded with x265 or SVT-AV1 needs less
    VMAF against itself than one re-encoded with x264; tried, not shipped: experiments.md)."""
    fmt = ff.get_encoder(codec).codec
    plain, lowered = cat.auto_rule(), cat.auto_rule(floor=floor)
    return lambda c: (lowered(c) if c.info.get("codec") in lad.KEEP_CODECS
                      and c.info.get("codec") != fmt else plain(c))


def policies(scorer, crfs: range = range(15, 52), codec: str = "libx264",
             frames: bool = False) -> tuple[dict, dict]:
    """The policies of the tables (name -> policy) and the swept ones (name -> points);
    ``frames``: every input's probes keep their frame scores, so ``predict`` is swept over
    the key frames it reads."""
    cal = scorer.calibration()
    s95 = lad.vmaf_to_score(95, cal)
    drop = scorer.drop() or lad.DEFAULT_MAX_DROP
    rule = scorer.predictor(codec)
    keep, keep_same = keeper(codec), keeper(codec, any_codec=False)
    table = {
        f"auto (default, guard {lad.AUTO_GUARD:g})": keep(cat.auto_rule()),
        "auto, guard sparing no input": keep(cat.auto_rule(spare=None)),
        "auto --drop-noise": keep(cat.auto_rule(drop_noise=True)),
        "auto --no-keep": cat.auto_rule(),
        "auto --keep-same-codec": keep_same(cat.auto_rule()),
        "auto --guard 0 (no model guard)": keep(cat.auto_rule(guard=None)),
        "VMAF-95 search (ab-av1)": cat.vmaf_search(95),
        "VMAF-95, ab-av1's gate (80%)": keep(cat.vmaf_search(95), 80),
        **({f"predict (margin {rule.margin:g})": keep(cat.predict_rule(rule))} if rule else {}),
        f"score (min-score {s95:.3f}, max-drop {drop:.3f})": cat.score_rule(s95, drop),
    }
    sweeps = {
        "auto": [(f"gap {g:g}", cat.auto_rule(gap=g)) for g in (0, 1.5, 3, 4.5, 6, 8)],
        "auto --drop-noise, the lift from luma noise N to a fall F of the score": [
            ("off (the default)", keep(cat.auto_rule()))]
            + [(f"N {n:g} F {f:g}" + (" (shipped)" if (n, f) == (lad.AUTO_LIFT_NOISE,
                                                                  lad.AUTO_LIFT) else ""),
                keep(cat.auto_rule(lift=(n, f))))
               for n in (0, 4, 5, 5.5, 6, 7, 9) for f in (0.05, 0.1, 0.15)],
        "auto, model guard (--guard D)": [("0 (off)", cat.auto_rule(guard=None))]
                                         + [(f"{d:g}" + (" (shipped)" if d == lad.AUTO_GUARD
                                                         else ""), cat.auto_rule(guard=d))
                                            for d in (0.1, 0.15, 0.175, 0.2, 0.25, 0.3)],
        "auto, the guard's fall D on the head's logit (not shipped)": [
            (f"{d:g}", cat.auto_rule(guard=d, guard_scale="logit"))
            for d in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)],
        "auto, the guard spares inputs with S times the bits at their VMAF-95 crossing": [
            ("never", keep(cat.auto_rule(spare=None)))]
            + [(f"{sp:g}" + (" (shipped)" if sp == lad.AUTO_SPARE else ""),
                keep(cat.auto_rule(spare=sp))) for sp in (2, 2.5, 3, 4, 5, 6, 8)],
        "auto, a floor F for an earlier encode in another codec than the encoder's": [
            (f"{fl:g}" + (" (shipped)" if fl == lad.AUTO_FLOOR else ""),
             keep(cross_floor(codec, fl))) for fl in (80, 84, 88, 90, lad.AUTO_FLOOR)],
        "auto, keep the input over P% (100: shipped)": [
            ("never", cat.auto_rule())] + [(f"{p:g}", keep(cat.auto_rule(), p))
                                            for p in (50, 70, 80, 90, 100, 120)],
        "auto, keep the input over P% only in the encoder's format (--keep-same-codec)": [
            (f"{p:g}", keep_same(cat.auto_rule(), p)) for p in (80, 100)],
        "VMAF-95 search, keep the input over P%": [
            (f"{p:g}", keep(cat.vmaf_search(95), p)) for p in (50, 80, 100)],
        "fixed CRF (keeping)": [(f"{c}", keep(cat.fixed(c))) for c in crfs],
        "VMAF search": [(f"{v:g}", cat.vmaf_search(v))
                        for v in (80, 84, 87, 89, 91, 92, 93, 94, 95, 96, 97, 98)],
        "score mode": [(f"VMAF {v:g}, drop x{k:g}",
                        cat.score_rule(lad.vmaf_to_score(v, cal), drop * k))
                       for v in (95,) for k in (0.5, 1, 1.5, 2, 3, 4)]
                      + [(f"VMAF {v:g}", cat.score_rule(lad.vmaf_to_score(v, cal), drop))
                         for v in (85, 90, 93)],
        "score mode, drop in VMAF units": [(f"margin {m:g}",
                                            cat.score_linear(cal, 95, m, drop))
                                           for m in (0, 0.5, 1, 2, 3, 5, 8, 12, 16)],
        "score mode, stricter": [(f"min-score {m:.2f} drop {d:g}", cat.score_rule(m, d))
                                 for m in (4.6, 4.7, 4.8) for d in (0.01, 0.03, 0.06)],
    }
    if rule:
        sweeps["predict, margin (keeping)"] = [(f"{m:g}", keep(cat.predict_rule(rule, m)))
                                     for m in (-1, 0, 1, 2, 3, 4, 5, 6, 8)]
    if rule and frames:
        sweeps["predict, key frames a sample"] = [
            (f"{k or cat.KEY_FRAMES}" + (" (shipped)" if k == rule.key_frames else ""),
             cat.predict_rule(replace(rule, key_frames=k))) for k in (None, 6, 5, 4, 3, 2)]
    return table, sweeps


def report(cs: list, scorer, plot: Path | None, crfs: range = range(15, 52),
           codec: str = "libx264") -> None:
    rule = scorer.predictor(codec)
    frames = rule is not None and all(cat.frames_kept(c, rule.probes, rule.preset is not None)
                                      for c in cs)
    table, sweeps = policies(scorer, crfs, codec, frames)
    by = cat.groups(cs)
    print(f"\n{len(cs)} inputs: " + ", ".join(f"{k} {len(v)}" for k, v in by.items()))
    keep = keeper(codec)
    fixed95 = cat.cheapest_fixed(cs, 0.95, crfs, keep)
    if fixed95 is not None:
        table = {f"fixed CRF (cheapest at 95%: {fixed95.name[10:]})":
                 keep(cat.fixed(int(fixed95.name.split()[-1]))), **table}
    names = list(table)
    print("\nsuccess share / mean cost / median cost (cost: bits over the cheapest success "
          "on the input's ladder)")
    print(f"{'inputs':10} {'n':>3} " + " ".join(f"{n[:26]:>26}" for n in names))
    for g, sub in by.items():
        cells = []
        for pol in table.values():
            r = cat.judge("", pol, sub)
            cells.append(f"{r.success:>8.0%} {r.cost:>7.2f} {r.median:>7.2f}   ")
        print(f"{g:10} {len(sub):>3} " + " ".join(cells))
    print("\nwhole catalog, swept (success / mean cost / median cost):")
    curves_ = {}
    for name, points in sweeps.items():
        res = [(label, cat.judge(label, pol, cs)) for label, pol in points]
        # The plot uses the median cost: the mean is set by a few noisy inputs (tens of times
        # the cheapest success for any policy that keeps the noise) and hides the rest.
        curves_[name] = [(r.median, r.success) for _, r in res]
        print(f"  {name}: " + "; ".join(f"{label} {r.success:.0%}/{r.cost:.2f}/{r.median:.2f}"
                                          for label, r in res))
    pred = next((p for k, p in table.items() if k.startswith("predict")), None)
    if pred is not None:
        r = cat.judge("predict", pred, cs)
        f = cat.cheapest_fixed(cs, r.success, crfs, keep)
        if f is not None:
            print(f"  predict: {r.success:.0%} / {r.cost:.2f} / {r.median:.2f}; the cheapest "
                  f"fixed CRF as often, {f.name[10:]}: {f.success:.0%} / {f.cost:.2f} / "
                  f"{f.median:.2f} (predict's bits against it: mean {r.cost / f.cost:.2f}, "
                  f"median {r.median / f.median:.2f})")
    if rule is not None:  # predict does not encode its pick: how close is the size it reports
        e = cat.size_errors(cat.predict_sizes(rule, cs))
        print(f"  predict's reported size over the encode's at its pick: median "
              f"{e['median']:.2f}, 10-90% {e['p10']:.2f}-{e['p90']:.2f}, within 30% on "
              f"{e['within_30']:.0%}")
    for share in (0.8, 0.9, 0.95):
        f = cat.cheapest_fixed(cs, share, crfs, keep)
        print(f"  cheapest fixed CRF at {share:.0%} success: "
              + (f"{f.name[10:]} ({f.success:.0%}, cost {f.cost:.2f}, median {f.median:.2f})"
                 if f else "none"))
    if plot:
        cat.plot_tradeoff(curves_, plot, f"{len(cs)} dev inputs against the clean master")
        print(f"plot: {plot}")


def per_input(cs: list, codec: str = "libx264") -> None:
    """Every input by its cost under the default (where a goal's median sits, and what each
    input that fails or overspends reads as), beside ab-av1's gated VMAF-95 search."""
    keep = keeper(codec)
    default, gate = keep(cat.auto_rule()), keep(cat.vmaf_search(95), 80)
    rows = []
    for c in cs:
        pick, won, cost = cat.outcome(default, c)
        gpick, gwon, gcost = cat.outcome(gate, c)
        rows.append((cost, c, pick, won, gpick, gwon, gcost))
    print(f"\nevery input by its cost under auto (default); cheapest: the cheapest success's "
          f"CRF; T: its VMAF against the master\n{'input':36} {'kind':8} {'T':>5} "
          f"{'cheapest':>8} {'auto':>5} {'cost':>7} {'gate':>5} {'cost':>7}")
    for cost, c, pick, won, gpick, gwon, gcost in sorted(rows, key=lambda r: r[0]):
        print(f"{c.id:36} {c.kind:8} {c.t:5.1f} {cat.cheapest_success_crf(c):>8} {pick!s:>5} "
              f"{cost:6.2f}{' ' if won else '!'} {gpick!s:>5} {gcost:6.2f}{' ' if gwon else '!'}")
    print("(!: not a success)")


def real_tool(cs: list, scorer, n: int, codec: str = "libx264",
              guard: float | None = None, ids: list[str] | None = None,
              rounds: int = 1, any_codec: bool = True,
              modes: list[str] | None = None) -> None:
    """The real ``pick_file`` on ``n`` inputs (every kind in turn) in each mode (``modes``:
    those alone), encoding with the ladders' ``codec``, against the replay of the same
    policy on the catalog's ladders (interpolated between their measured rungs, which
    --pin adds where the replayed searches pick); without
    ``any_codec`` both keep only an input in the encoder's format (``--keep-same-codec``)."""
    table, _ = policies(scorer, codec=codec)
    replay = {"auto": cat.auto_rule(), "auto --drop-noise": cat.auto_rule(drop_noise=True),
              "vmaf": cat.vmaf_search(95),
              "score": next(p for k, p in table.items() if k.startswith("score"))}
    rule = scorer.predictor(codec)
    if rule is not None:
        replay["predict"] = cat.predict_rule(rule)
        if rule.key_frames is not None:  # its key frames against the plan's, A/B
            replay["predict, plan's key frames"] = cat.predict_rule(
                replace(rule, key_frames=None))
    if guard is not None:
        replay[f"auto --guard {guard:g}"] = cat.auto_rule(guard=guard)
    by = cat.groups(cs)
    chosen, i = [], 0
    kinds = [g for g in cat.GROUPS if g in by]
    if ids:
        chosen = [c for c in cs if c.id in ids]
        missing = sorted(set(ids) - {c.id for c in chosen})
        if missing:
            raise SystemExit(f"bench_catalog.py --real-ids: not in the report: {missing}")
    while len(chosen) < min(n, len(cs)):
        g = by[kinds[i % len(kinds)]]
        c = g[(i // len(kinds)) % len(g)]
        if c not in chosen:
            chosen.append(c)
        i += 1
    print(f"\nreal tool against the replay, {len(chosen)} inputs, {rounds} round(s):")
    print(f"{'input':34} {'mode':27} {'real':>5} {'replay':>6} {'encodes':>7} {'s':>6} "
          f"{'success (real)':>14} {'keep: real/replay':>17}")
    keep = keeper(codec, any_codec)
    kept = []
    # ab-av1's crf-search runs no model: the VMAF search timed with a stand-in that scores
    # nothing is the baseline a no-reference mode's time is held against.
    arms = [*replay, "vmaf, no model", "vmaf, ab-av1's scale"]
    if modes:
        unknown = sorted(set(modes) - set(arms))
        if unknown:
            raise SystemExit(f"bench_catalog.py --real-modes: {unknown} are not among "
                             f"{arms}")
        arms = [m for m in arms if m in modes]
    times: dict[tuple[str, str], list[float]] = {}
    encodes: dict[str, list[int]] = {m: [] for m in arms}
    diffs = []
    for r in range(rounds):
        for n, c in enumerate(chosen):
            # Each input's modes start one further along each round: the machine's drift
            # and a mode's effect on the next (page cache, CPU clocks) fall on every mode.
            k = (r + n) % len(arms) if rounds > 1 else 0
            for mode in arms[k:] + arms[:k]:
                t0 = time.perf_counter()
                model = not mode.startswith("vmaf,")
                if mode == "vmaf, ab-av1's scale":
                    ff.measure_fr = abav1_measure  # one mode at a time: nothing else measures
                try:
                    # No cache: each mode pays for its own probes, so the times compare.
                    # --key-frames given (the plan's default) keeps predict off its rule's
                    p = lad.pick_file(c.info["path"], lad.PickOptions(
                        mode=mode.split()[0].rstrip(","), no_cache=True, encoder=codec,
                        keep_any_codec=any_codec,
                        guard=guard if "--guard" in mode else None,
                        drop_noise="--drop-noise" in mode,
                        key_frames=lad.KEY_FRAMES if "plan's key frames" in mode else None),
                        scorer if model else NoScore())
                    crf, enc, held = p.crf, p.encodes, p.keep
                except lad.NoCrfMeetsTargetError:
                    crf, enc, held = None, None, False
                finally:
                    ff.measure_fr = MEASURE_FR
                times.setdefault((mode, c.id), []).append(time.perf_counter() - t0)
                if r:
                    continue  # the picks are the same every round; one row each
                if enc is not None:
                    encodes[mode].append(enc)
                if not model:
                    continue
                sim = replay[mode](c)
                if crf is not None and sim is not None:
                    diffs.append(crf - sim)
                ok = "-" if crf is None else str(c.success(crf))
                # The replay keeps on the ladder's whole-file size at the tool's own pick.
                held_sim = crf is not None and keep(lambda _c, crf=crf: crf)(c) == cat.KEEP
                kept.append(held == held_sim)
                print(f"{c.id[:34]:34} {mode:27} {crf!s:>5} {sim!s:>6} {enc!s:>7} "
                      f"{times[mode, c.id][-1]:>6.1f} {ok:>14} {held!s:>8}/{held_sim!s:<8}")
    import numpy as np

    # Per input the median over rounds, then summed over inputs: one slow round (the
    # first inference of the process, a burst of other load) does not set the ratio.
    med = {m: np.array([np.median(times[m, c.id]) for c in chosen]) for m in arms}
    base = {"vmaf": "vmaf", "vmaf, no model": "vmaf without the model",
            "vmaf, ab-av1's scale": "it at ab-av1's VMAF scale"}
    for mode in arms:
        against = ", ".join(f"against {name} {med[mode].sum() / med[b].sum():.2f}"
                            for b, name in base.items() if b in med)
        print(f"{mode}: {med[mode].mean():.1f} s a pick, "
              f"{np.mean(encodes[mode]) if encodes.get(mode) else float('nan'):.1f} encodes"
              + (f"; time {against}" if against else ""))
    for mode in (m for m in arms if rounds > 1 and m.startswith("predict")
                 and "vmaf, no model" in arms):
        ratios = [sum(times[mode, c.id][r] for c in chosen)
                  / sum(times["vmaf, no model", c.id][r] for c in chosen) for r in range(rounds)]
        print(f"{mode} against vmaf without the model, round by round: "
              + ", ".join(f"{v:.2f}" for v in ratios))
    if kept:
        print(f"keep: the tool and the replay agree on {sum(kept)} of {len(kept)} picks")
    if diffs:
        d = np.abs(diffs)
        print(f"real - replay: within 1 CRF {np.mean(d <= 1):.0%}, within 2 "
              f"{np.mean(d <= 2):.0%}, mean |diff| {d.mean():.2f} over {len(d)} picks")


if __name__ == "__main__":
    main()

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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from cpllm_plugin.integrations import ladder as lad  # noqa: E402
from cpllm_plugin.training import catalog as cat  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/catalog"))
    ap.add_argument("--model", default="cpllm-lite")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--plot", type=Path, help="PNG of success share against bit cost.")
    a = ap.parse_args()
    print(json.dumps(describe()))
    scorer = lad.Scorer(a.model)
    t0 = time.perf_counter()
    inputs, rows = cat.build(a.data, scorer, jobs=a.jobs)
    print(f"catalog built in {time.perf_counter() - t0:.0f} s: {len(inputs)} inputs, "
          f"{len(rows)} ladder rows")
    if a.build_only:
        return
    cs = cat.curves(inputs, rows)
    lost = [c for c in cs if not c.reachable]
    cs = [c for c in cs if c.reachable]
    for c in lost:
        print(f"left out: {c.id} ({c.kind}): no CRF from {c.crfs[0]} keeps VMAF "
              f"{c.required:.1f} against the master (best {c.vm.max():.1f})")
    report(cs, scorer, a.plot)


def policies(scorer) -> tuple[dict, dict]:
    """The policies of the tables (name -> policy) and the swept ones (name -> points)."""
    cal = scorer.calibration()
    s95 = lad.vmaf_to_score(95, cal)
    drop = scorer.drop() or lad.DEFAULT_MAX_DROP
    table = {
        "VMAF-95 search (ab-av1)": cat.vmaf_search(95),
        f"score mode (min-score {s95:.3f}, max-drop {drop:.3f})": cat.score_rule(s95, drop),
    }
    sweeps = {
        "fixed CRF": [(f"{c}", cat.fixed(c)) for c in range(15, 52)],
        "VMAF search": [(f"{v:g}", cat.vmaf_search(v))
                        for v in (80, 84, 87, 89, 91, 92, 93, 94, 95, 96, 97, 98)],
        "score mode": [(f"VMAF {v:g}, drop x{k:g}",
                        cat.score_rule(lad.vmaf_to_score(v, cal), drop * k))
                       for v in (95,) for k in (0.5, 1, 1.5, 2, 3, 4)]
                      + [(f"VMAF {v:g}", cat.score_rule(lad.vmaf_to_score(v, cal), drop))
                         for v in (85, 90, 93)],
    }
    return table, sweeps


def report(cs: list, scorer, plot: Path | None) -> None:
    table, sweeps = policies(scorer)
    by = cat.groups(cs)
    print(f"\n{len(cs)} inputs: " + ", ".join(f"{k} {len(v)}" for k, v in by.items()))
    fixed95 = cat.cheapest_fixed(cs, 0.95)
    if fixed95 is not None:
        table = {f"fixed CRF (cheapest at 95%: {fixed95.name[10:]})":
                 cat.fixed(int(fixed95.name.split()[-1])), **table}
    print(f"\n{'policy':52} " + " ".join(f"{g[:9]:>15}" for g in by))
    print(f"{'':52} " + " ".join(f"{'success  cost':>15}" for _ in by))
    for name, pol in table.items():
        cells = []
        for g in by.values():
            r = cat.judge(name, pol, g)
            cells.append(f"{r.success:>7.0%} {r.cost:>6.2f} ")
        print(f"{name[:52]:52} " + " ".join(cells))
    print("\nwhole catalog, swept (success, cost):")
    curves_ = {}
    for name, points in sweeps.items():
        res = [(label, cat.judge(label, pol, cs)) for label, pol in points]
        curves_[name] = [(r.cost, r.success) for _, r in res]
        print(f"  {name}: " + "; ".join(f"{label} {r.success:.0%}/{r.cost:.2f}"
                                          for label, r in res))
    for share in (0.8, 0.9, 0.95):
        f = cat.cheapest_fixed(cs, share)
        print(f"  cheapest fixed CRF at {share:.0%} success: "
              + (f"{f.name[10:]} ({f.success:.0%}, cost {f.cost:.2f})" if f else "none"))
    if plot:
        cat.plot_tradeoff(curves_, plot, f"{len(cs)} dev inputs against the clean master")
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()

"""The ladder's search math, with no ffmpeg in it: targets, the monotone fit of a measure
against CRF, where to probe next, and where the fit crosses a target.

Every function takes ``{crf: value}`` of one measure, higher is better (a predicted score or a
VMAF), so the no-reference pick and the VMAF search share one search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Score lost per CRF step on clean dev sources near the VMAF-95 region: the first guess of
# the curve's slope, before two probes measure it.
PRIOR_SLOPE = -0.05


@dataclass(frozen=True)
class Target:
    """What a pick must reach, and why: ``value`` of ``measure`` (``score``, or ``vmaf``
    against the input), by ``rule`` (``min-score`` or ``max-drop`` for scores; for VMAF the
    mode that set the level)."""

    value: float
    min_score: float | None
    max_drop: float | None
    source_score: float
    rule: str
    measure: str = "score"

    @staticmethod
    def resolve(min_score: float, max_drop: float | None, source_score: float) -> Target:
        # The lower of the two, so the target moves smoothly with the source's score: a
        # source just above S is not asked to stay within a hair of itself (near-lossless
        # bitrates) while one just below S may lose all of D.
        if max_drop is not None and source_score - max_drop < min_score:
            return Target(source_score - max_drop, min_score, max_drop, source_score,
                          "max-drop")
        return Target(min_score, min_score, max_drop, source_score, "min-score")




def monotone(crfs: Sequence[int], scores: Sequence[float]) -> list[float]:
    """Non-increasing least-squares fit of scores over increasing CRFs (pool adjacent
    violators): a higher CRF never predicts a better picture."""
    order = np.argsort(crfs)
    blocks: list[list[float]] = []  # [sum, count]
    for i in order:
        blocks.append([float(scores[i]), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    fit = np.empty(len(crfs))
    at = 0
    for s, n in blocks:
        fit[order[at:at + int(n)]] = s / n
        at += int(n)
    return [float(v) for v in fit]


def best_passing(values: dict[int, float], target: float) -> int | None:
    """Highest probed CRF that meets the target both raw and on the monotone fit."""
    crfs = sorted(values)
    fit = monotone(crfs, [values[c] for c in crfs])
    ok = [c for c, f in zip(crfs, fit, strict=True) if f >= target and values[c] >= target]
    return max(ok) if ok else None


def next_crf(values: dict[int, float], target: float, lo: int, hi: int,
             prior: float = PRIOR_SLOPE) -> int | None:
    """Where to probe next, or None when the answer is pinned to within one CRF.

    ``prior``: the measure's change per CRF assumed until two probes measure it.
    """
    crfs = sorted(values)
    fit = dict(zip(crfs, monotone(crfs, [values[c] for c in crfs]), strict=True))
    good = best_passing(values, target)
    bad = min((c for c in crfs if fit[c] < target and (good is None or c > good)), default=None)
    if good is not None and bad is not None:
        if bad - good <= 1:
            return None
        # An estimate right next to the passing end is checked by probing good + 1: if
        # that fails, the answer is pinned; a curve flatter than it looked moves on.
        x = _crossing(crfs, fit, good, bad, target)
        return int(min(max(round(x), good + 1), bad - 1))
    slope = _slope(crfs, fit, prior)
    if good is None:  # everything probed fails: go to better quality
        c0 = min(crfs)
        if c0 <= lo:
            return None
        jump = (target - fit[c0]) / -slope
        return int(max(lo, c0 - min(max(math.ceil(jump), 2), 12)))
    c0 = max(crfs)  # everything probed passes: go to fewer bits
    if c0 >= hi:
        return None
    jump = (fit[c0] - target) / -slope
    return int(min(hi, c0 + min(max(math.floor(jump), 2), 12)))


def _crossing(crfs: list[int], fit: dict[int, float], good: int, bad: int,
              target: float) -> float:
    """Where the fitted curve crosses ``target`` between the bracket ends ``good < bad``.

    Score against CRF bends down (quality falls faster at high CRF), so a straight line
    between far-apart bracket ends lands short; with a third probe next to the bracket a
    parabola through the three follows the bend. Falls back to the straight line when the
    parabola is not monotone over the bracket.
    """
    f0, f1 = fit[good], fit[bad]
    line = good + (bad - good) * (f0 - target) / (f0 - f1) if f0 > f1 else (good + bad) / 2
    others = sorted((c for c in crfs if c not in (good, bad)),
                    key=lambda c: min(abs(c - good), abs(c - bad)))
    if not others or f0 <= f1:
        return line
    xs = np.array([good, bad, others[0]], dtype=np.float64)
    a, b, c = np.polyfit(xs - good, [fit[int(x)] for x in xs], 2)
    grid = np.linspace(0, bad - good, 64)
    curve = a * grid ** 2 + b * grid + c
    if np.any(np.diff(curve) > 1e-9):
        return line
    roots = [r.real for r in np.roots([a, b, c - target])
             if abs(r.imag) < 1e-9 and 0 <= r.real <= bad - good]
    return good + min(roots) if roots else line


def _slope(crfs: list[int], fit: list[float] | dict, prior: float = PRIOR_SLOPE) -> float:
    """Change per CRF from the two outermost probes, never flatter than a tenth of the prior."""
    f = fit if isinstance(fit, dict) else dict(zip(crfs, fit, strict=True))
    if len(crfs) >= 2 and crfs[-1] > crfs[0]:
        s = (f[crfs[-1]] - f[crfs[0]]) / (crfs[-1] - crfs[0])
        return min(s, prior / 10)
    return prior

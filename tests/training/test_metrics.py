"""SRCC, PLCC and flip rate on toy data with known answers; the manifest round trip."""

import math

import numpy as np
import pytest

from cpllm_plugin.training import manifest as mf
from cpllm_plugin.training.metrics import flip_rate, plcc, srcc


def test_correlations_known_values():
    assert srcc([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert srcc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert srcc([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]) == pytest.approx(0.9)  # 1 - 6*2/(5*24)
    assert srcc([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)  # average ranks
    assert plcc([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    assert math.isnan(plcc([1, 1, 1], [1, 2, 3]))


def test_flip_rate_counts_by_crf_difference():
    # scores fall with CRF except 19 and 21 are swapped and 23 ties 25
    g = [(15, 5.0, "a"), (17, 4.8, "b"), (19, 4.0, "c"), (21, 4.5, "d"),
         (23, 3.0, "e"), (25, 3.0, "f")]
    fr = flip_rate([g])
    assert fr["pairs_d2"] == 5 and fr["d2"] == pytest.approx(2 / 5)  # 19/21 flip, 23/25 tie
    assert fr["pairs_d4"] == 4 and fr["d4"] == 0.0
    assert fr["pairs_d10"] == 1 and fr["d10"] == 0.0
    assert math.isnan(fr["d20"]) and fr["pairs_d20"] == 0
    assert fr["pairs"] == 15 and fr["overall"] == pytest.approx(2 / 15)


def test_flip_rate_skips_identical_files_and_pools_sources():
    clamp = [(49, 1.6, "x"), (51, 1.5, "y"), (53, 1.5, "y")]  # CRF 53 == CRF 51 byte for byte
    fr = flip_rate([clamp, [(15, 2.0, None), (35, 3.0, None)]])
    assert fr["pairs_d2"] == 1 and fr["d2"] == 0.0
    assert fr["pairs_d4"] == 1 and fr["d4"] == 0.0
    assert fr["pairs_d20"] == 1 and fr["d20"] == 1.0
    assert fr["pairs"] == 3 and fr["overall"] == pytest.approx(1 / 3)


def test_manifest_round_trip_and_split_check(tmp_path):
    items = [mf.Item("a.mp4", "a", mos_raw=80.0, mos_scale=(0, 100),
                     mos=mf.map_scale(80.0, (0, 100))),
             mf.Item("v/a_23.mp4", "a", original=False, codec="libx264", crf=23, pseudo=4.1)]
    path = mf.write_manifest(tmp_path / "m.jsonl", items)
    back = mf.read_manifest(path)
    assert back == items and back[0].target == pytest.approx(4.2) and back[1].target == 4.1
    assert mf.resolve(path, back[1]) == tmp_path / "v" / "a_23.mp4"
    assert mf.CRF_LEVELS[0] == 15 and mf.CRF_LEVELS[-1] == 53 and len(mf.CRF_LEVELS) == 20
    items[1].split = "dev"
    with pytest.raises(mf.ManifestError, match="split by source"):
        mf.write_manifest(tmp_path / "bad.jsonl", items)
    (tmp_path / "broken.jsonl").write_text('{"path": "a.mp4"}\n')
    with pytest.raises(mf.ManifestError, match="'path' and 'source'"):
        mf.read_manifest(tmp_path / "broken.jsonl")

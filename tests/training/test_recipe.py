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


def test_hold_out_trains_without_one_fold_of_sources(tmp_path, monkeypatch):
    """``--hold-out K/N`` leaves the training sources of fold K out of the rows the cache
    and training read (so the model's scores of them are out of sample), in a run folder of
    its own, and never ships over the packaged model."""
    from click.testing import CliRunner

    from cpllm_plugin.training import recipe as rc
    from cpllm_plugin.training.manifest import Item, fold_of, write_manifest

    sources = [f"s{i}" for i in range(12)]
    items = []
    for s in sources:
        items.append(Item(f"{s}.mp4", s, split="train", original=True))
        items.append(Item(f"{s}_18.mp4", s, split="train", original=False, codec="libx264",
                          crf=18))
    man = write_manifest(tmp_path / "manifest.jsonl", items)
    r = rc.Recipe(data=tmp_path, out=tmp_path / "model", hold_out=(1, 3))
    kept = {i.source for i in r.rows(man)}
    assert kept == {s for s in sources if fold_of(s, 3) != 1} and 0 < len(kept) < 12
    assert {i.source for i in r.rows(man, train=False)} == set(sources)
    assert {i.source for i in rc.Recipe(data=tmp_path).rows(man)} == set(sources)
    assert r.run.name == rc.Recipe(data=tmp_path).run.name + "-without-1of3"
    with pytest.raises(rc.RecipeError, match="fold K of N"):
        rc.Recipe(data=tmp_path, out=tmp_path / "model", hold_out=(3, 3))
    with pytest.raises(rc.RecipeError, match="an --out of its own"):
        rc.Recipe(data=tmp_path, hold_out=(0, 2))
    seen = []
    monkeypatch.setattr(rc, "run", lambda r, stages: seen.append(r.hold_out))
    res = CliRunner().invoke(rc.main, ["--data", str(tmp_path), "--out", str(tmp_path / "m"),
                                       "--hold-out", "0/2"])
    assert res.exit_code == 0, res.output
    assert seen == [(0, 2)]
    res = CliRunner().invoke(rc.main, ["--data", str(tmp_path), "--hold-out", "half"])
    assert res.exit_code == 2 and "K/N" in res.output

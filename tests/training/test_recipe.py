"""The recipe's calibration: VMAF anchors and the source drop the ladder's defaults read."""

from pathlib import Path

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


def test_picker_stage_fits_predict_on_held_out_models_scores(tmp_path, monkeypatch):
    """The picker stage trains one model per fold without that fold's sources (never over
    the package), has each rescore its own fold of the catalog for every codec, and fits
    every codec's rule on those files; ``folds=0`` fits on the model's own scores."""
    from cpllm_plugin.training import catalog as cat
    from cpllm_plugin.training import picker
    from cpllm_plugin.training import recipe as rc

    subs, rescored, fitted = [], [], {}
    monkeypatch.setattr(picker, "build_catalog", lambda *a, **k: ("s0", "s1"))
    monkeypatch.setattr(picker, "_scorer", lambda model: model)
    monkeypatch.setattr(rc, "run", lambda r, stages, say=None: subs.append((r, stages)))

    def rescore(catalog, model, codec, keep, progress=None):
        rescored.append((model, codec, [s for s in ("a", "b", "c", "d") if keep(s)]))
        return tmp_path / f"scores-{Path(model).name}.jsonl"

    class Rule:
        probes, weights, margin = (35,), {"const": 1.0}, 2.0

        def __init__(self, scores):
            self.provenance = {"scores": [f.name for f in scores]} if scores else {}

    def fit_rule(catalog, only, out, share=0.85, codec="libx264", scores=(), preset=None,
                 key_frames=None):
        fitted[codec] = list(scores)
        presets[codec] = preset
        read_at[codec] = key_frames
        return Rule(scores), []

    probed, presets, read_at = [], {}, {}

    def fast_probes(catalog, model, codec, preset, crfs, keep=None, progress=None):
        probed.append((Path(str(model)).name, codec, preset, tuple(crfs),
                       [s for s in ("a", "b", "c", "d") if keep is None or keep(s)]))
        return tmp_path / "probes.jsonl"

    monkeypatch.setattr(cat, "rescore", rescore)
    monkeypatch.setattr(cat, "fast_probes", fast_probes)
    monkeypatch.setattr(picker, "fit_rule", fit_rule)
    r = rc.Recipe(data=tmp_path, out=tmp_path / "model")
    res = rc.stage_picker(r, lambda m: None)
    assert [(s.hold_out, st) for s, st in subs] == [((0, 2), ("cache", "train", "ship")),
                                                     ((1, 2), ("cache", "train", "ship"))]
    assert all(s.out != r.out and s.out.parent == tmp_path for s, _ in subs)
    # each fold's model scores its own fold's sources only, for every codec
    assert [(m.name, c) for m, c, _ in rescored] == [
        (f"fold-{k}-of-2", c) for k in (0, 1) for c in picker.CODECS]
    folds = [set(s) for _, c, s in rescored if c == "libx264"]
    assert folds[0].isdisjoint(folds[1]) and folds[0] | folds[1] == {"a", "b", "c", "d"}
    files = [tmp_path / "scores-fold-0-of-2.jsonl", tmp_path / "scores-fold-1-of-2.jsonl"]
    assert fitted == {c: files for c in picker.CODECS}
    assert res["libx264"]["scores"] == [f.name for f in files]
    # ... and measures that fold's fast probes at each codec's probe preset, which the fit reads
    assert presets == {c: picker.PROBE_PRESETS.get(c) for c in picker.CODECS}
    # ... at the key frames each rule reads
    assert read_at == {c: picker.PREDICT_KEY_FRAMES.get(c) for c in picker.CODECS}
    assert read_at["libx264"] == 5
    fast = [c for c in picker.CODECS if c in picker.PROBE_PRESETS]
    assert fast and [(m, c, p) for m, c, p, _, _ in probed] == [
        (f"fold-{k}-of-2", c, picker.PROBE_PRESETS[c]) for k in (0, 1) for c in fast]
    assert [set(s) for _, c, _, _, s in probed if c == "libx264"] == folds
    subs.clear()
    probed.clear()
    res = rc.stage_picker(rc.Recipe(data=tmp_path, out=tmp_path / "model", folds=0),
                          lambda m: None)
    assert subs == [] and fitted["libx264"] == [] and res["libx264"]["scores"] == "in-sample"
    assert [(m, c) for m, c, _, _, _ in probed] == [("model", c) for c in fast]
    with pytest.raises(rc.RecipeError, match="2 and more"):
        rc.Recipe(data=tmp_path, folds=1)

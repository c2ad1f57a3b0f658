"""Training the kind-of-footage head: classes from the corpus tags, grouped folds, the fit,
the threshold, and one whole (tiny) build that resumes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from media import pan_frames, write_video

from cpllm_plugin import footage
from cpllm_plugin.training import corpus as cp
from cpllm_plugin.training import kinds
from cpllm_plugin.training.manifest import Item, write_manifest


def test_every_corpus_source_has_a_kind_and_every_kind_has_dev_sources():
    split, rec = cp.read_split(), cp.recipe()
    got = {s.id: kinds.kind_of_tag(s.tag) for s in rec.values()}
    assert None not in got.values()
    assert set(got.values()) == set(footage.KINDS)
    for k in footage.KINDS:
        assert any(split[i] == "dev" for i, v in got.items() if v == k), k
    assert got["bigbuckbunny"] == "animation" and got["pan_elephants"] == "still"
    assert got["slides_party"] == "slideshow" and got["screen_ui"] == "screen"
    assert kinds.kind_of_tag("a cat") is None and kinds.kind_of_tag(None) is None


def test_content_groups_join_a_photo_shared_by_pans_slideshows_and_degraded_copies():
    g = kinds.content_groups([s for s in cp.recipe()])
    assert g["pan_coffee__blur2"] == g["pan_coffee"] == g["slides_holiday"] == g["pan_twowings"]
    assert g["slides_skimage"] == g["pan_astronaut"] == g["pan_rocket"]
    assert g["vtest"] != g["city"] and g["bbb_flower"] != g["bbb_rock"]
    assert g["fillets_space"] == g["fillets_room"]  # two cuts of one file
    assert g["meca_bike_a"] == g["meca_bike_b"] != g["clm_webcam_a"] == g["clm_webcam_b"]
    assert g["meca_bike_a"] != g["meca_classroom"] != g["ball"]  # one scene, two takes


def test_folds_keep_groups_whole_and_spread_each_class():
    groups = [f"g{i // 3}" for i in range(60)]
    y = np.array([(i // 3) % 2 for i in range(60)])
    f = kinds.folds(groups, y, k=5)
    for g in set(groups):
        assert len({f[i] for i in range(60) if groups[i] == g}) == 1
    for c in (0, 1):
        assert len(set(f[y == c])) == 5


def test_class_weights_balance_classes_and_sources():
    y = np.array([0] * 8 + [1] * 2)
    groups = ["a"] * 4 + ["b"] * 4 + ["c", "d"]
    w = kinds.class_weights(y, groups, 2)
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())
    assert w[:4].sum() == pytest.approx(w[4:8].sum())


def test_the_fit_separates_classes_and_the_threshold_buys_precision():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 10))
    X[:, 0] += 2.0 * (y == 1) - 2.0 * (y == 2)  # classes 1 and 2 are easy, 0 sits between
    groups = [f"s{i // 3}" for i in range(n)]
    P = kinds.out_of_fold(X, y, groups, 3, lam=1.0)
    assert (P.argmax(axis=1) == y).mean() > 0.6
    w = kinds.class_weights(y, groups, 3)
    t, named, right = kinds.choose_threshold(P, y, w, target=0.9)
    assert right >= 0.9 and 0 < named < 1 and t > P.max(axis=1).min()
    table = kinds.summary(P, y, ["camera", "still", "screen"], t)
    assert table["all"]["named"] == pytest.approx(((P.max(axis=1) >= t)).mean())
    assert table["all"]["right"] >= 0.9


def test_a_tiny_build_writes_kind_json_and_resumes(tmp_path, monkeypatch):
    """Three pans and three slideshows through the whole recipe (originals only, 3 folds):
    kind.json lands in the model directory, its sha256 in config.json, and a second run
    reads every feature from the cache."""
    monkeypatch.setattr(kinds, "TRAIN_VARIANTS", (("orig", None, 1), ("crf35", 35, 1)))
    monkeypatch.setattr(kinds, "FOLDS", 2)
    monkeypatch.setattr(kinds, "LAMBDAS", (10.0,))
    corpus = tmp_path / "corpus"
    (corpus / "originals").mkdir(parents=True)
    rows = []
    import skimage.data

    for i, photo in enumerate(("coffee", "astronaut", "rocket")):
        p = write_video(corpus / "originals" / f"pan{i}.mp4",
                        pan_frames(10, 90, 160, photo), fps=10)
        rows.append(Item(p.relative_to(corpus).as_posix(), f"pan{i}", split="train",
                         original=True, tag="photo pan: a photo"))
        stills = [getattr(skimage.data, n)() for n in ("coffee", "astronaut", "rocket")]
        stills = stills[i:] + stills[:i]
        s = write_video(corpus / "originals" / f"show{i}.mp4",
                        cp.slideshow_frames(stills, (160, 90), 10), fps=10)
        rows.append(Item(s.relative_to(corpus).as_posix(), f"show{i}", split="train",
                         original=True, tag="slideshow: three photos"))
    rows.append(Item(rows[0].path, "devpan", split="dev", original=True, tag="photo pan: x"))
    write_manifest(corpus / "sources.jsonl", rows)
    model = tmp_path / "model"
    shutil.copytree(footage_model_dir(), model, ignore=shutil.ignore_patterns(
        "*.onnx", "manifest.json", "adapter", "kind.json"))
    conf = json.loads((model / "config.json").read_text())
    conf["files"] = {k: v for k, v in conf["files"].items() if (model / k).is_file()}
    (model / "config.json").write_text(json.dumps(conf))
    lines = []
    rep = kinds.build(corpus, model, model="cpllm-lite", progress=lines.append)
    head = footage.load_head(model)
    assert head.classes == ("still", "slideshow") and 0 <= head.threshold <= 1
    assert "kind.json" in json.loads((model / "config.json").read_text())["files"]
    assert set(rep["cost_s"]) == {"variants", "features", "fit"}
    assert any("features: 12 videos" in line for line in lines)
    assert len(list((corpus / "kinds" / "features").rglob("*.ctx.npy"))) == 12  # no dev
    lines.clear()
    kinds.build(corpus, model, model="cpllm-lite", progress=lines.append)
    assert not any(line.startswith("features: ") for line in lines)  # all cached
    assert any("0 encoded" in line for line in lines)


def footage_model_dir():
    from cpllm_plugin.configs import packaged

    return packaged("cpllm-lite")


def test_an_empty_corpus_is_named(tmp_path):
    write_manifest(tmp_path / "sources.jsonl", [])
    with pytest.raises(kinds.KindsError, match="build the corpus first"):
        kinds.plan(tmp_path, tmp_path / "kinds")


def test_the_recipe_stage_skips_a_corpus_of_one_kind(tmp_path):
    from cpllm_plugin.training import recipe as rc

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_manifest(corpus / "sources.jsonl", [
        Item("originals/a.mp4", "a", split="train", original=True, tag="photo pan: a"),
        Item("originals/b.mp4", "b", split="train", original=True, tag="photo pan: b")])
    lines = []
    out = rc.stage_kinds(rc.Recipe(data=tmp_path, out=tmp_path / "model"), lines.append)
    assert "two kinds of footage" in out["skipped"] and not (tmp_path / "model").exists()
    assert "kinds" in rc.STAGES and rc.STAGES.index("kinds") > rc.STAGES.index("ship")


def test_plan_adds_the_sources_of_the_kind_head_only(tmp_path):
    """kind_sources.jsonl (Clip.kinds_only: camera clips the scorer never sees) joins the
    train videos of sources.jsonl; without it the plan is sources.jsonl's alone."""
    write_manifest(tmp_path / "sources.jsonl", [
        Item("originals/a.mp4", "pan_coffee", split="dev", original=True, tag="photo pan: a"),
        Item("originals/b.mp4", "bikes", split="train", original=True, tag="camera: b")])
    before = kinds.plan(tmp_path, tmp_path / "kinds")
    write_manifest(tmp_path / cp.KIND_MANIFEST, [
        Item("originals/c.mp4", "meca_bike_a", split="train", original=True, tag="camera: c"),
        Item("originals/d.mp4", "meca_bike_b", split="train", original=True, tag="camera: d")])
    after = kinds.plan(tmp_path, tmp_path / "kinds")
    assert after[:len(before)] == before
    extra = after[len(before):]
    assert {v.source for v in extra} == {"meca_bike_a", "meca_bike_b"}
    assert {v.kind for v in extra} == {"camera"} and {v.split for v in extra} == {"train"}
    assert len({v.group for v in extra}) == 1  # two takes of one scene: one group
    assert len(extra) == 2 * len(kinds.TRAIN_VARIANTS)

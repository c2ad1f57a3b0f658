"""cpllm-eval on a tiny real ladder with cpllm-tiny: structure of the JSON, markdown and PNG,
the full-reference baselines, the score cache and named errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner
from media import pan_frames, write_video

from cpllm_plugin.training import evaluate as ev
from cpllm_plugin.training.cli import eval_main, variants_main
from cpllm_plugin.training.manifest import Item, read_manifest, write_manifest
from cpllm_plugin.training.metrics import srcc
from cpllm_plugin.training.variants import make_variants

CRFS = (15, 17, 21, 25, 35, 45, 51, 53)  # pairs at every difference of Table 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    pytest.importorskip("imageio_ffmpeg")
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("eval")
    sources = []
    for photo, split in (("coffee", "dev"), ("astronaut", "dev"), ("rocket", "train")):
        path = write_video(d / f"{photo}.mp4", pan_frames(16, 144, 256, photo), crf=10)
        sources.append(Item(str(path), photo, split=split))
    make_variants(sources, d / "ladder", crfs=CRFS, jobs=2, progress=False)
    return d / "ladder" / "manifest.jsonl"


@pytest.fixture(scope="module")
def result(manifest):
    return ev.evaluate("cpllm-tiny", manifest, key_frames=2, split="dev",
                       cache=manifest.parent / "cache.json", progress=False)


def test_result_structure(result):
    assert result["type"] == "evaluation" and result["split"] == "dev"
    assert result["model"].startswith("cpllm-tiny@") and result["backend"] == "torch"
    assert result["truth"] == "vmaf" and result["key_frames"] == 2
    assert result["sources"] == 2 and result["videos_n"] == 2 * (1 + len(CRFS))
    assert {v["source"] for v in result["videos"]} == {"coffee", "astronaut"}  # dev only
    assert [r["name"] for r in result["rows"]] == [result["model"], "VMAF", "PSNR"]
    for r in result["rows"]:
        f = r["flip"]
        assert set(f) == {*(f"d{d}" for d in (2, 4, 6, 8, 10, 20)), "overall",
                          *(f"pairs_d{d}" for d in (2, 4, 6, 8, 10, 20)), "pairs"}
        assert all(f[f"pairs_d{d}"] > 0 for d in (2, 4, 6, 8, 10, 20))
        assert all(0.0 <= f[k] <= 1.0 for k in f if not k.startswith("pairs"))
        # 8 CRFs give 28 pairs per source; CRF 53 = 51 removes one: 27 each
        assert f["pairs"] == 2 * 27
    json.dumps(result, allow_nan=False)  # strictly valid JSON: no NaN anywhere
    assert [g["name"] for g in result["by_resolution"]] == ["<=480p", "540p", "720p", "1080p"]
    assert result["by_resolution"][0]["sources"] == 2 and result["by_resolution"][3]["sources"] == 0
    assert result["by_resolution"][0]["flip"] == result["rows"][0]["flip"]  # all are 144p
    assert [g["name"] for g in result["by_codec"]] == ["libx264"]
    w = result["srcc_vs_vmaf"]
    assert w["codec"] == "libx264" and w["model"]["sources"] == 2 and w["model"]["n"] == 14
    assert set(result["ties"]) == {"count", "pairs"}
    assert result["ties"]["pairs"] == 2 * 28  # 8 distinct files a source (53 = 51)
    assert result["degraded_originals"]["count"] == 0


def test_full_reference_baselines_rank_a_real_ladder(result):
    vmaf, psnr = result["rows"][1], result["rows"][2]
    assert vmaf["flip"]["overall"] < 0.1 and vmaf["flip"]["d20"] == 0.0
    assert psnr["flip"]["overall"] < 0.1 and psnr["flip"]["d20"] == 0.0
    assert vmaf["srcc"] is None and "reference" in vmaf["note"]  # VMAF is the truth here
    assert psnr["srcc"] > 0.5 and psnr["n"] == 2 * (len(CRFS) - 1)  # 53 = 51 counted once


def test_report_files(result, tmp_path):
    from PIL import Image

    paths = ev.write_report(result, tmp_path)
    assert json.loads(paths["json"].read_text())["rows"] == result["rows"]
    md = paths["markdown"].read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0].startswith("| model | SRCC | PLCC | FR d=2 |") and len(table[:5]) == 5
    assert "| <=480p | 2 | 54 |" in md and "| libx264 | 2 | 54 |" in md
    assert "SRCC against VMAF within a source (libx264)" in md and "Ties:" in md
    assert "VMAF (full reference)" in md and "against VMAF" in md
    with Image.open(paths["plot"]) as im:
        im.load()
        assert im.format == "PNG" and im.size == (960, 560) and im.mode == "RGB"
        assert len(im.getcolors(1 << 16)) > 10  # lines, text and grid, not a blank canvas


def test_scores_are_cached_by_hash(manifest, result, monkeypatch):
    import cpllm_plugin

    def boom(*a, **k):
        raise AssertionError("scored again despite the cache")

    m = cpllm_plugin.load_model("cpllm-tiny")
    monkeypatch.setattr(type(m), "score", boom)
    again = ev.evaluate("cpllm-tiny", manifest, key_frames=2, split="dev",
                        cache=manifest.parent / "cache.json", progress=False)
    assert again["rows"] == result["rows"]


def test_mos_is_the_truth_when_present(manifest, tmp_path, result):
    rows = [replace(i, mos=2.0 + n) if i.original else i
            for n, i in enumerate(read_manifest(manifest))]
    with_mos = manifest.parent / "with_mos.jsonl"
    write_manifest(with_mos, rows)
    r = ev.evaluate("cpllm-tiny", with_mos, key_frames=2, split="all",
                    cache=manifest.parent / "cache.json", progress=False)
    assert r["truth"] == "mos" and r["rows"][0]["n"] == 3 and r["split"] == "all"
    assert r["rows"][1]["n"] == 0 and r["rows"][1]["srcc"] is None  # originals have no VMAF


def test_empty_split_is_a_named_error(manifest):
    with pytest.raises(ev.EvaluationError, match=r"split 'test'.*\['dev', 'train'\]"):
        ev.evaluate("cpllm-tiny", manifest, split="test", progress=False)


def test_cli_json_and_markdown(manifest, tmp_path):
    runner = CliRunner()
    res = runner.invoke(eval_main, ["cpllm-tiny", str(manifest), "--out", str(tmp_path),
                                    "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["split"] == "dev" and (tmp_path / "scores_vs_crf.png").is_file()
    assert (tmp_path / "eval.json").is_file() and (tmp_path / ev.CACHE_NAME).is_file()
    res = runner.invoke(eval_main, ["cpllm-tiny", str(manifest), "--out", str(tmp_path),
                                    "-k", "2"])
    assert res.exit_code == 0 and "| VMAF (full reference) |" in res.stdout
    res = runner.invoke(eval_main, ["cpllm-tiny", str(manifest), "--out", str(tmp_path),
                                    "-k", "2", "--json", "--within-codec", "all"])
    assert res.exit_code == 0 and json.loads(res.stdout)["srcc_vs_vmaf"]["codec"] is None


@pytest.mark.parametrize("args, code, text", [
    (["cpllm-tiny", "missing.jsonl"], 1, "error: read_manifest"),
    (["cpllm-tinny", "MANIFEST"], 1, "Did you mean"),
    (["cpllm-tiny", "MANIFEST", "--split", "nope"], 1, "error: evaluate()"),
    (["cpllm-tiny", "MANIFEST", "-k", "0"], 2, "Invalid value"),
    (["cpllm-tiny", "MANIFEST", "-b", "torch", "-p", "int8"], 1, "cpllm-eval --precision"),
])
def test_cli_errors(manifest, tmp_path, args, code, text):
    args = [str(manifest) if a == "MANIFEST" else a for a in args]
    res = CliRunner().invoke(eval_main, args + ["--out", str(tmp_path)])
    assert res.exit_code == code and text in res.output


def test_corrupt_video_in_manifest_is_a_named_error(manifest, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    write_manifest(tmp_path / "m.jsonl", [Item(str(bad), "bad", split="dev")])
    res = CliRunner().invoke(eval_main, ["cpllm-tiny", str(tmp_path / "m.jsonl"),
                                         "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "error:" in res.output and "bad.mp4" in res.output


def test_variants_cli_on_a_manifest(manifest, tmp_path):
    originals = [replace(i, path=str(manifest.parent / i.path))
                 for i in read_manifest(manifest) if i.original and i.source == "coffee"]
    write_manifest(tmp_path / "sources.jsonl", originals)
    res = CliRunner().invoke(variants_main, [str(tmp_path / "sources.jsonl"),
                                             str(tmp_path / "v"), "--crfs", "20,40",
                                             "-j", "1", "--no-labels"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(tmp_path / "v" / "manifest.jsonl")
    assert [r.crf for r in rows] == [None, 20, 40]
    assert all(r.description_generated and "CRF" not in r.description for r in rows[1:])
    assert all(r.height == 144 for r in rows)
    res = CliRunner().invoke(variants_main, [str(tmp_path / "sources.jsonl"),
                                             str(tmp_path / "v"), "--codec", "libsvtav1",
                                             "--crfs", "63", "--vmaf-subsample", "2",
                                             "--no-describe"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(tmp_path / "v" / "manifest.jsonl")  # the libx264 rows are kept
    assert [(r.codec, r.crf) for r in rows] == [(None, None), ("libsvtav1", 63),
                                                ("libx264", 20), ("libx264", 40)]
    bad = CliRunner().invoke(variants_main, [str(tmp_path / "sources.jsonl"),
                                             str(tmp_path / "v"), "--crfs", "a,b"])
    assert bad.exit_code == 2 and "comma-separated" in bad.output


# --- the statistics, from hand-made rows and scores (no model) ----------------------------


def _v(source: str, crf: int, vmaf: float, codec: str = "libx264", **kw) -> Item:
    return Item(f"{source}/{codec}_{crf}.mp4", source, original=False, codec=codec, crf=crf,
                vmaf=vmaf, psnr=20 + vmaf / 5, sha256=f"{source}-{codec}-{crf}", **kw)


def _o(source: str, height: int | None, **kw) -> Item:
    return Item(f"{source}.mp4", source, sha256=source, height=height, **kw)


def test_statistics_by_resolution_codec_and_within_source():
    rows = [_o("sd", 360), _v("sd", 15, 95.0), _v("sd", 25, 80.0), _v("sd", 35, 50.0),
            _o("hd", 1080), _v("hd", 15, 97.0), _v("hd", 25, 85.0), _v("hd", 35, 40.0),
            _v("hd", 20, 90.0, "libx265"), _v("hd", 40, 60.0, "libx265"),
            _o("q", 540), _v("q", 15, 90.0), _v("q", 25, 70.0)]
    scores = [4.9, 4.5, 4.0, 2.0,       # sd: right
              4.8, 3.0, 4.0, 1.5,       # hd: 15 < 25 (one flip of three)
              4.2, 3.0,                 # hd libx265: right
              4.0, 3.5, 3.5]            # q: a tie, which is a flip
    st = ev.statistics(rows, scores, "m")
    res = {g["name"]: g for g in st["by_resolution"]}
    assert list(res) == ["<=480p", "540p", "720p", "1080p"]
    assert (res["<=480p"]["sources"], res["<=480p"]["flip"]["overall"]) == (1, 0.0)
    assert res["540p"]["flip"]["pairs"] == 1 and res["540p"]["flip"]["overall"] == 1.0
    assert res["720p"]["sources"] == 0 and res["720p"]["flip"]["pairs"] == 0
    # classes compare the libx264 ladders; with every codec, hd's libx265 pair joins
    assert res["1080p"]["flip"]["pairs"] == 3 and res["1080p"]["flip"]["overall"] == \
        pytest.approx(1 / 3)
    every = {g["name"]: g for g in ev.statistics(rows, scores, within_codec=None)["by_resolution"]}
    assert every["1080p"]["flip"]["pairs"] == 3 + 1 and every["1080p"]["flip"]["overall"] == 0.25
    codec = {g["name"]: g for g in st["by_codec"]}
    assert list(codec) == ["libx264", "libx265"]
    assert codec["libx264"]["flip"]["pairs"] == 7 and codec["libx264"]["flip"]["overall"] == \
        pytest.approx(2 / 7)
    assert codec["libx265"]["sources"] == 1 and codec["libx265"]["flip"]["overall"] == 0.0
    assert st["rows"][0]["flip"]["pairs"] == 8 and st["rows"][0]["name"] == "m"
    w = st["srcc_vs_vmaf"]["model"]
    # libx264 only: sd ranks right, hd half right, q gives both variants one score (counts 0)
    assert w["per_source"] == pytest.approx({"sd": 1.0, "hd": 0.5, "q": 0.0})
    assert w["within_source"] == pytest.approx(0.5) and w["sources"] == 3
    assert w["n"] == 8 and w["pooled"] == pytest.approx(
        srcc([4.5, 4.0, 2.0, 3.0, 4.0, 1.5, 3.5, 3.5], [95, 80, 50, 97, 85, 40, 90, 70]))
    assert st["srcc_vs_vmaf"]["psnr"]["within_source"] == pytest.approx(1.0)  # PSNR ~ VMAF
    every = ev.statistics(rows, scores, within_codec=None)["srcc_vs_vmaf"]["model"]
    assert every["per_source"]["hd"] == pytest.approx(srcc([3.0, 4.0, 1.5, 4.2, 3.0],
                                                           [97, 85, 40, 90, 60]))
    assert every["n"] == 10 and every["pooled"] == pytest.approx(
        srcc([4.5, 4.0, 2.0, 3.0, 4.0, 1.5, 4.2, 3.0, 3.5, 3.5],
             [95, 80, 50, 97, 85, 40, 90, 60, 90, 70]))
    # equal scores of distinct files of one source: q's two variants, and hd's x264 CRF 15
    # with its x265 CRF 40; pairs: 4 files of sd, 6 of hd, 3 of q
    assert st["ties"] == {"count": 2, "pairs": 6 + 15 + 3}
    assert st["degraded_originals"]["count"] == 0 and st["truth"] == "vmaf"


def test_statistics_degraded_originals_and_unknown_heights():
    rows = [_o("clean", 720), _v("clean", 20, 95.0),
            _o("blur", None, reference="clean.mp4", vmaf=70.0),
            _o("noisy", None, reference="./clean.mp4", vmaf=60.0),
            _o("orphan", 480, reference="elsewhere/parent.mp4", vmaf=50.0)]
    st = ev.statistics(rows, [4.0, 3.8, 3.1, 4.0, 2.0])
    d = st["degraded_originals"]
    assert (d["count"], d["below_parent"], d["rate"], d["missing_parent"]) == (2, 1, 0.5, 1)
    assert [(p["source"], p["parent"], p["below"]) for p in d["pairs"]] == [
        ("blur", "clean", True), ("noisy", "clean", False)]  # a tie is not below
    res = {g["name"]: g["sources"] for g in st["by_resolution"]}
    assert res == {"<=480p": 1, "540p": 0, "720p": 1, "1080p": 0, "unknown": 2}
    assert ev.resolution_class(576) == "540p" and ev.resolution_class(577) == "720p"
    assert ev.resolution_class(900) == "720p" and ev.resolution_class(901) == "1080p"
    with pytest.raises(ev.EvaluationError, match="one score per row"):
        ev.statistics(rows, [1.0])


def test_scale_pools_clean_sources_and_degraded_originals_apart():
    # the clean ladder is ranked right; the degraded original's ladder is scored backwards
    rows = [_o("a", 720), _o("a__blur", 720, reference="a.mp4", vmaf=60.0)]
    scores = [4.9, 4.0]
    for crf, v, s in ((15, 98.0, 4.8), (30, 80.0, 4.0), (45, 40.0, 2.0)):
        rows.append(_v("a", crf, v, pseudo=1 + 4 * v / 100))
        scores.append(s)
    for crf, v, s in ((15, 58.0, 2.5), (30, 50.0, 3.0), (45, 30.0, 3.5)):
        rows.append(_v("a__blur", crf, v, pseudo=1 + 4 * v / 100))
        scores.append(s)
    sc = ev.statistics(rows, scores)["scale"]
    assert sc["pooled_clean"] == pytest.approx(1.0)
    assert sc["pooled_degraded"] == pytest.approx(-1.0)
    assert sc["pooled_clean"] > sc["pooled"] > sc["pooled_degraded"]
    md = ev.markdown_table({"split": "dev", "manifest": "m.jsonl", "sources": 2,
                            "videos_n": len(rows), "key_frames": 3, "backend": "torch",
                            "flip_diffs": [2, 4], **ev.statistics(rows, scores)})
    assert "Pooled apart: clean sources 1.000, degraded originals -1.000" in md
    # without degraded originals there is nothing to pool apart
    plain = ev.statistics(rows[:1] + rows[2:5], scores[:1] + scores[2:5])["scale"]
    assert plain["pooled_degraded"] is None and plain["pooled_clean"] == pytest.approx(1.0)


def test_markdown_of_hand_made_statistics():
    rows = [_o("sd", 360), _v("sd", 15, 95.0), _v("sd", 35, 50.0),
            _o("low", 360, reference="sd.mp4", vmaf=60.0)]
    result = {"split": "dev", "manifest": "m.jsonl", "sources": 2, "videos_n": 4,
              "key_frames": 3, "backend": "torch", "flip_diffs": [2, 4, 6, 8, 10, 20],
              **ev.statistics(rows, [4.5, 4.0, 3.0, 4.6], "m")}
    md = ev.markdown_table(result)
    assert "| <=480p | 2 | 1 |" in md and "| 720p |" not in md  # empty classes are left out
    assert "| libx264 | 1 | 1 |" in md
    assert "below their clean parent: 0 of 1 (0.0%)" in md
    assert "Ties: 0 of 3 pairs" in md
    json.dumps(ev._clean(result), allow_nan=False)


def test_scale_by_source_finds_a_source_placed_too_low():
    # both ladders are ranked right, but "dark" sits 1.5 below its targets, "clean" on them
    rows = [_o("clean", 720), _o("dark", 720)]
    scores = [4.9, 3.0]
    for v, s in ((98.0, 4.9), (90.0, 4.6), (60.0, 3.4)):
        rows.append(_v("clean", int(100 - v), v, pseudo=1 + 4 * v / 100))
        scores.append(s)
    for v, s in ((97.0, 3.4), (85.0, 2.9), (55.0, 1.7)):
        rows.append(_v("dark", int(101 - v), v, pseudo=1 + 4 * v / 100))
        scores.append(s)
    rows.append(_v("dark", 50, 40.0, codec="libx265", pseudo=2.6))  # another codec: left out
    scores.append(4.9)
    st = ev.statistics(rows, scores)
    sc = st["scale"]
    assert list(sc["per_source"]) == ["dark", "clean"]  # lowest first
    dark, clean = sc["per_source"]["dark"], sc["per_source"]["clean"]
    assert dark["n"] == 3 and dark["bias"] == pytest.approx(
        ((3.4 - 4.88) + (2.9 - 4.4) + (1.7 - 3.2)) / 3)
    assert abs(clean["bias"]) < 0.05
    assert sc["spread"] == pytest.approx(abs(dark["bias"] - clean["bias"]) / 2)
    assert st["srcc_vs_vmaf"]["model"]["within_source"] == pytest.approx(1.0)
    assert sc["pooled"] == st["srcc_vs_vmaf"]["model"]["pooled"] < 0.9
    # one source left: its own ladder, ranked right
    assert dark["without"] == pytest.approx(1.0) and clean["without"] == pytest.approx(1.0)
    md = ev.markdown_table({"split": "dev", "manifest": "m.jsonl", "sources": 2,
                            "videos_n": len(rows), "key_frames": 3, "backend": "torch",
                            "flip_diffs": [2, 4], **st})
    assert "lowest and highest: dark -1.49, clean" in md
    assert "with one source left out, at most 1.000 (without" in md


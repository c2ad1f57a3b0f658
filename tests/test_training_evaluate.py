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
    assert table[0].startswith("| model | SRCC | PLCC | FR d=2 |") and len(table) == 2 + 3
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
    assert all(r.description_generated and "CRF" in r.description for r in rows[1:])
    bad = CliRunner().invoke(variants_main, [str(tmp_path / "sources.jsonl"),
                                             str(tmp_path / "v"), "--crfs", "a,b"])
    assert bad.exit_code == 2 and "comma-separated" in bad.output

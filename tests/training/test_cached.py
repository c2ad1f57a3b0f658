"""Training on frozen features: the split encoder, the feature cache (equal to the inference
path), resumable training of the scoring path and of the LoRA, float16 storage, and the whole
recipe on a two-source corpus made in the test."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cpllm_plugin.configs import FACTS_PROMPT, get_config, quality_word
from cpllm_plugin.model import io
from cpllm_plugin.training import recipe as rc
from cpllm_plugin.training.cached import (
    CachedConfig,
    CachedSet,
    CachedTrainingError,
    TextConfig,
    decoder_visuals,
    load_state,
    report,
    train_scorer,
    train_text,
)
from cpllm_plugin.training.frozen import FROZEN_BLOCKS, FeatureCache, frozen_parameters
from cpllm_plugin.training.manifest import Item, read_manifest
from cpllm_plugin.training.train import model_config
from cpllm_plugin.training.variants import make_variants

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """The sample at CRF 18, 30 and 42 with VMAF: a real ladder of one source."""
    out = tmp_path_factory.mktemp("ladder")
    make_variants([Item(str(SAMPLE), "sample", split="train")], out, crfs=[18, 30, 42],
                  progress=False)
    return out / "manifest.jsonl"


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return io.build(model_config("cpllm-lite", {"low_input": "native",
                                                "decoder": "tiny-gemma"}), with_decoder=True)


@pytest.fixture(scope="module")
def cached(ladder, lite, tmp_path_factory):
    cache = FeatureCache(lite.scorer, lite.config, tmp_path_factory.mktemp("cache"))
    stats = cache.build(ladder, read_manifest(ladder), progress=False)
    return cache, stats


def test_split_encoder_equals_the_whole():
    scorer = io.build("cpllm-lite", with_decoder=False).scorer.eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        whole = scorer.low(x)
        for b in (0, 8, FROZEN_BLOCKS, 16):
            torch.testing.assert_close(scorer.low.rest(scorer.low.stem(x, b), b), whole)
        mid = scorer.low.advance(scorer.low.stem(x, 8), 8, 11)
        torch.testing.assert_close(mid, scorer.low.stem(x, 11))


def test_cache_scores_equal_the_inference_path(ladder, lite, cached):
    cache, stats = cached
    items = read_manifest(ladder)
    assert stats["videos"] == len(items) == 4 and cache.build(ladder, items, False)["videos"] == 0
    data = CachedSet(ladder, items, cache)
    f = cache.get(items[1].sha256)
    assert f.stem.shape == (5, 8, 112, 14, 14) and f.stem.dtype == np.float16
    assert f.ctx.shape == (5, 1280) and f.tokens.shape == (196, 1280)
    # the cache scores as at inference even from a scorer left in train mode (BatchNorm on
    # batch statistics and drop-connect would otherwise change every score)
    from_cache = data.score_all(lite.scorer.train())
    assert lite.scorer.training
    lite.scorer.eval()
    from cpllm_plugin.preprocess import prepare
    from cpllm_plugin.video import read_key_frames

    for n, it in enumerate(items):
        k = read_key_frames(ladder.parent / it.path, 5)
        x = prepare(k.frames, lite.config)
        with torch.no_grad():
            full = lite.scorer(torch.from_numpy(x.views), torch.from_numpy(x.patches)).mean()
        assert abs(from_cache[n] - float(full)) < 2e-3  # float16 storage of the features
    # freezing more blocks runs the extra ones once, on load, as at inference
    lite.scorer.train()
    deeper = CachedSet(ladder, items, cache, blocks=13)
    assert deeper.stem.shape[3:] == (192, 7, 7)
    np.testing.assert_allclose(deeper.score_all(lite.scorer), from_cache, atol=2e-3)
    # the decoder's visual tokens too (the text stage trains on them)
    every = decoder_visuals(lite.scorer, data)
    torch.testing.assert_close(every, decoder_visuals(lite.scorer.eval(), data))
    # the text stage computes only the rows its steps draw: the same tokens
    torch.testing.assert_close(decoder_visuals(lite.scorer, data, [3, 0]), every[[3, 0]],
                               atol=1e-5, rtol=1e-5)


def test_detail_placement_has_its_own_cache_and_run_and_scores_as_at_inference(
        ladder, lite, cached, tmp_path):
    from cpllm_plugin.preprocess import prepare
    from cpllm_plugin.training.frozen import cache_key
    from cpllm_plugin.video import read_key_frames

    detail = dataclasses.replace(lite.config, placement="detail")
    grid_key = cache_key(lite.scorer, lite.config, FROZEN_BLOCKS, 5)
    assert grid_key == cached[0].key and grid_key.startswith("native-b11-m5-")  # as before
    assert cache_key(lite.scorer, detail, FROZEN_BLOCKS, 5).startswith("native-detail-b11-m5-")
    cache = FeatureCache(lite.scorer, detail, tmp_path)
    items = read_manifest(ladder)
    cache.build(ladder, items, progress=False)
    scores = CachedSet(ladder, items, cache).score_all(lite.scorer.eval())
    for n, it in enumerate(items):
        x = prepare(read_key_frames(ladder.parent / it.path, 5).frames, detail)
        with torch.no_grad():
            full = lite.scorer(torch.from_numpy(x.views), torch.from_numpy(x.patches)).mean()
        assert abs(scores[n] - float(full)) < 2e-3
    assert rc.Recipe().run.name == "run-pixels-detail-b11-libx265-libsvtav1"
    assert rc.Recipe(placement="grid").run.name == "run-pixels-b11-libx265-libsvtav1"


@pytest.mark.parametrize("extra", [{}, {"schedule": "cosine", "margin": 0.1}])
def test_scorer_training_moves_only_the_trainable_part_and_resumes_exactly(
        ladder, cached, tmp_path, extra):
    cache, _ = cached
    items = read_manifest(ladder)
    data = CachedSet(ladder, items, cache)

    def fresh():
        torch.manual_seed(0)
        return io.build(model_config("cpllm-lite", {"low_input": "native"}),
                        with_decoder=False).scorer

    cfg = CachedConfig(steps=4, pairs=3, log_every=1, checkpoint_every=2, dev_every=2, **extra)
    a = fresh()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    res = train_scorer(a, data, tmp_path / "a", cfg, dev=data, progress=False)
    assert res["step"] == 4 and len(res["dev"]) == 2
    # trained channels-last, handed back in the default layout (export and ONNX expect it)
    assert all(p.is_contiguous() for p in a.parameters())
    frozen = set(frozen_parameters(a, FROZEN_BLOCKS))
    after = a.state_dict()
    for name, _ in a.named_parameters():
        moved = not torch.equal(before[name], after[name])
        if name in frozen:
            assert not moved, name
    assert not torch.equal(before["head.0.weight"], after["head.0.weight"])
    assert not torch.equal(before["low.net._conv_head.weight"],
                           after["low.net._conv_head.weight"])
    for k in before:  # BatchNorm statistics stay the pretrained ones (eval mode)
        if "running" in k:
            assert torch.equal(before[k], after[k]), k
    rows = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert rows[0] == "step,l1,l2,total,seconds" and len(rows) == 5

    b = fresh()
    # a session's time budget runs out after one step (a schedule counts to cfg.steps)
    train_scorer(b, data, tmp_path / "b", CachedConfig(**{**vars(cfg), "minutes": 1e-9}),
                 progress=False)
    c = fresh()
    assert load_state(tmp_path / "b", c)["step"] == 1
    train_scorer(c, data, tmp_path / "b", cfg, progress=False)  # resumes at 1, runs to 4
    for k, v in a.state_dict().items():
        torch.testing.assert_close(c.state_dict()[k], v, atol=1e-6, rtol=1e-5)


def test_cosine_schedule_decays_from_the_initial_rate():
    cfg = CachedConfig(steps=10, schedule="cosine")
    assert [round(cfg.lr_at(s) / cfg.lr, 4) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert all(cfg.lr_at(s) > cfg.lr_at(s + 1) for s in range(10))
    assert CachedConfig(steps=10).lr_at(9) == CachedConfig().lr
    with pytest.raises(CachedTrainingError, match="constant or cosine"):
        CachedConfig(schedule="linear")


def test_dev_report_counts_an_identical_file_once_as_the_evaluation_does():
    """libx264 clamps CRF 53 to 51: the two files are one, so they must not weigh twice in the
    pooled SRCC (counting them twice once lifted it from 0.778 to 0.802 on dev)."""
    from cpllm_plugin.training.evaluate import statistics

    rows, scores = [], []
    for src, top in (("a", 4.9), ("b", 3.0)):
        for k, crf in enumerate((15, 31, 47, 51, 53)):
            sha = f"{src}{min(crf, 51)}"
            rows.append(Item(f"{src}{crf}.mp4", src, original=False, codec="libx264", crf=crf,
                             sha256=sha,
                             vmaf=[98.0, 90.0, 60.0, 20.0, 20.0][k] - (src == "b") * 15,
                             split="dev", height=360))
            scores.append(top - 0.3 * k if crf < 53 else top - 0.9)
    r = report(rows, np.array(scores))
    ev = statistics(rows, scores)["srcc_vs_vmaf"]["model"]
    assert r["srcc_vmaf"] == pytest.approx(ev["pooled"])
    assert r["srcc_within"] == pytest.approx(ev["within_source"])
    assert ev["within_source"] == pytest.approx(1.0)
    assert ev["n"] == 8
    assert r["flip"]["pairs_d2"] == 0 and r["flip"]["pairs"] == 2 * 9  # 10 pairs less 51-53


def test_cross_source_pairs_rank_two_sources_by_their_scores(ladder, cached):
    cache, _ = cached
    items = read_manifest(ladder)
    # the CRF 42 variant stands in for a second source
    items = [dataclasses.replace(it, source="other") if it.crf == 42 else it for it in items]
    data = CachedSet(ladder, items, cache)
    other = next(i for i, it in enumerate(items) if it.source == "other")
    rng = np.random.default_rng(0)
    first, second, gap, _ = data.sample(rng, 64, cross=1.0)
    crossed = 0
    for i, j, g in zip(first, second, gap, strict=True):
        if np.isnan(data.target[i]):  # no score to rank by: a variant of its own source
            assert items[j].source == items[i].source
            continue
        assert j == other and g == pytest.approx(data.target[i] - data.target[other])
        crossed += 1
    assert crossed > 0
    first, second, _, _ = data.sample(np.random.default_rng(0), 64, cross=0.0)
    assert all(items[i].source == items[j].source for i, j in zip(first, second, strict=True))


def test_text_training_states_the_facts(ladder, lite, cached, tmp_path):
    """With a config facts_prompt, each prompt also states the item's format and the ImageNet
    names EfficientNet-Lite0's own head gives its cached key frame."""
    from dataclasses import replace

    cache, _ = cached
    items = [replace(it, description="A picture. It is a test. Its technical quality is good.")
             for it in read_manifest(ladder)]
    data = CachedSet(ladder, items, cache)
    plain = lite.config
    lite.config = replace(plain, facts_prompt=FACTS_PROMPT)
    prompts = []
    prefix = lite.prefix
    lite.prefix = lambda a, b, p: prompts.extend(p) or prefix(a, b, p)
    try:
        train_text(lite, data, tmp_path, TextConfig(steps=1, batch=2), progress=False)
    finally:
        del lite.prefix
        lite.config = plain
    said = [re.search(r"out of 5 \(\w+\)\. The frames are (.+); an image classifier sees "
                      r"(an? .+ or an? .+)\.$", p).groups() for p in prompts]
    assert len(said) == 2 and {s[0] for s in said} == {"low-resolution landscape"}  # 640x360


def test_text_training_moves_only_lora(ladder, lite, cached, tmp_path):
    from dataclasses import replace

    cache, _ = cached
    items = [replace(it, description="A picture. It is a test. Its technical quality is good.")
             for it in read_manifest(ladder)]
    data = CachedSet(ladder, items, cache)
    head = lite.scorer.head[0].weight.clone()
    init = {n: p.detach().clone() for n, p in lite.decoder.named_parameters() if "lora" in n}
    lora = {n: p for n, p in init.items() if "lora_B" in n}
    prompts = []
    prefix = lite.prefix
    lite.prefix = lambda a, b, p: prompts.extend(p) or prefix(a, b, p)
    try:
        res = train_text(lite, data, tmp_path, TextConfig(steps=2, batch=2, log_every=1),
                         progress=False)
    finally:
        del lite.prefix
    # cpllm-lite's prompt carries the score (config score_prompt): each item's pseudo-score
    targets = {(f"{it.target:.2f}", quality_word(it.target)) for it in items
               if it.target is not None}
    said = {re.search(r"score is (\d\.\d\d) out of 5 \((\w+)\)\.$", p).groups()
            for p in prompts}
    assert len(prompts) == 4 and said <= targets
    # The unrated original (no pseudo-score) is left out: "not rated" says nothing visible.
    rated = sum(it.target is not None for it in items)
    assert rated == len(items) - 1
    assert res == {"step": 2, "seconds": res["seconds"], "samples": rated}
    assert torch.equal(lite.scorer.head[0].weight, head)
    assert any(not torch.equal(p, lora[n]) for n, p in lite.decoder.named_parameters()
               if "lora_B" in n)
    assert (tmp_path / "text_state.safetensors").is_file()
    assert len((tmp_path / "text_log.csv").read_text().splitlines()) == 3
    # resumed for a third step, the LoRA ends where three steps in one go end
    train_text(lite, data, tmp_path, TextConfig(steps=3, batch=2), progress=False)
    resumed = {n: p.clone() for n, p in lite.decoder.named_parameters() if "lora" in n}
    for n, p in lite.decoder.named_parameters():
        if n in init:
            p.data.copy_(init[n])
    train_text(lite, data, tmp_path / "one", TextConfig(steps=3, batch=2), progress=False)
    for n, p in lite.decoder.named_parameters():
        if n in init:
            torch.testing.assert_close(p, resumed[n], atol=1e-6, rtol=1e-5)


def test_half_storage_keeps_the_model_id_and_leaves_out_the_packaged_encoder(tmp_path):
    from safetensors import safe_open

    m = io.build(get_config("cpllm-lite"), with_decoder=False)
    with torch.no_grad():
        for t in [*m.scorer.parameters(), *m.scorer.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    io.save(m, tmp_path / "m", half=True)
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert not any(k.startswith("high.") for k in keys)
        assert f.get_tensor("head.0.weight").dtype == torch.float16
    back = io.load(tmp_path / "m", with_decoder=False)
    assert back.config.weights_half and io.model_id(back) == io.model_id(m)


def test_recipe_cache_stops_where_training_starts(lite, tmp_path):
    # fewer frozen blocks than the default need a cache that stops earlier; more are run
    # once on load from the default cache
    for frozen, blocks in ((8, 8), (FROZEN_BLOCKS, FROZEN_BLOCKS), (13, FROZEN_BLOCKS)):
        cache = rc._cache(rc.Recipe(data=tmp_path, frozen_blocks=frozen), lite)
        assert cache.blocks == blocks and f"-b{blocks}-" in cache.key


def test_recipe_end_to_end_on_two_sources(tmp_path):
    """corpus (given) -> ladders -> descriptions -> cache -> train -> text -> ship -> eval."""
    from media import pan_frames, write_video

    corpus = tmp_path / "data" / "corpus"
    (corpus / "originals").mkdir(parents=True)
    shutil.copy(SAMPLE, corpus / "originals" / "a.mp4")
    write_video(corpus / "originals" / "b.mp4", pan_frames(48, 360, 640, "astronaut"), crf=8)
    rows = [Item("originals/a.mp4", "a", split="train", tag="photo pan: coffee and a rocket"),
            Item("originals/b.mp4", "b", split="dev", tag="photo pan: an astronaut")]
    (corpus / "sources.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    r = rc.Recipe(data=tmp_path / "data", out=tmp_path / "model", steps=3, pairs=2,
                  text_steps=1, train_crfs=(18, 34, 46), dev_crfs=(18, 26, 34, 42),
                  dev_codecs={}, train_codecs=(), decoder="tiny-gemma")
    costs = rc.run(r, rc.STAGES[1:], progress=False)
    assert set(costs) == set(rc.STAGES[1:])
    assert all(c["wall_s"] >= 0 and c["peak_rss_gb"] > 0 for c in costs.values())
    book = json.loads((tmp_path / "data" / "stages.json").read_text())
    assert set(book) == set(rc.STAGES[1:])
    assert book["train"][0]["run"] == "run-pixels-detail-b11" and "run" not in book["ladder"][0]
    train = read_manifest(r.train_manifest)
    # the training ladder is made from a 1 s lossless cut of the original; dev stays whole
    assert r.train_manifest.parent.name == "ladder-train-1s"
    from cpllm_plugin.video import probe
    cut = next(i for i in train if i.original)
    assert cut.path == "cuts/a.mkv" and probe(r.train_manifest.parent / cut.path).duration == 1
    assert {probe(r.train_manifest.parent / i.path).frame_count for i in train} == {24}
    assert probe(r.dev_manifest.parent / read_manifest(r.dev_manifest)[1].path).frame_count == 48
    # dev keeps its whole original, as a raw copy that its 20 encodes and VMAF runs decode
    dev_original = next(i for i in read_manifest(r.dev_manifest) if i.original)
    assert dev_original.path == "copies/b.mkv"
    assert probe(r.dev_manifest.parent / dev_original.path).frame_count == 48
    assert all(i.description and "CRF" not in i.description for i in train)
    man = json.loads((r.out / "manifest.json").read_text())
    assert man["precisions"]["fp32"]["passed"]
    assert man["precisions"]["fp32"]["weights_stored"].startswith("float16")
    conf = json.loads((r.out / "config.json").read_text())
    assert conf["trained"] and conf["low_input"] == "pixels" and conf["frozen_blocks"] == 11
    assert conf["placement"] == "detail" and conf["facts_prompt"] == ""
    assert costs["eval"]["flip"]["pairs"] == 6
    text = json.loads((tmp_path / "data" / "eval" / "describe.json").read_text())
    assert text["n"] == 4 and 0 <= text["rate"] <= 1  # the four dev variants
    assert text["tagged"] == 4 and 0 <= text["kind"] <= 4 and 0 <= text["format"] <= 4
    assert all(e["format"] and len(e["labels"]) == 2 for e in text["examples"])
    cal = json.loads((r.out / "calibration.json").read_text())["vmaf"]
    assert set(cal) == {str(a) for a in rc.ANCHORS}
    assert io.load(r.out, with_decoder=False).config.trained  # hashes still verify


def test_recipe_trains_on_other_codecs_in_a_run_of_its_own(tmp_path):
    from media import pan_frames, write_video

    corpus = tmp_path / "data" / "corpus"
    (corpus / "originals").mkdir(parents=True)
    rows = []
    for name, split, photo in (("a", "train", "coffee"), ("b", "dev", "astronaut")):
        write_video(corpus / "originals" / f"{name}.mp4", pan_frames(48, 180, 320, photo), crf=8)
        rows.append(Item(f"originals/{name}.mp4", name, split=split, tag=f"photo pan: {photo}"))
    (corpus / "sources.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    r = rc.Recipe(data=tmp_path / "data", train_crfs=(18, 34), dev_crfs=(18,),
                  dev_codecs={"libx265": (29, 47)}, train_codecs=("libx265",))
    rc.run(r, ("ladder",), progress=False)
    rows = r.rows(r.train_manifest)
    assert sorted((i.codec, i.crf) for i in rows if not i.original) == [
        ("libx264", 18), ("libx264", 34), ("libx265", 29), ("libx265", 47)]
    assert all(i.vmaf is not None for i in rows if not i.original)
    x264_only = rc.Recipe(data=r.data, train_codecs=())
    assert {i.codec for i in x264_only.rows(r.train_manifest)} == {None, "libx264"}
    assert not any(i.codec == "libx265" for i in r.rows(r.train_manifest, train=False))
    assert r.run.name == "run-pixels-detail-b11-libx265"
    assert x264_only.run.name == "run-pixels-detail-b11"


def test_recipe_stops_when_training_ran_out_of_time(tmp_path, monkeypatch):
    """A stage that stopped early (its minutes spent) ends the run before ship, not after."""
    ran = []
    monkeypatch.setitem(rc.RUN, "train", lambda r, say: ran.append("train") or {"step": 7})
    monkeypatch.setitem(rc.RUN, "ship", lambda r, say: ran.append("ship") or {})
    r = rc.Recipe(data=tmp_path / "data", steps=600)
    with pytest.raises(rc.RecipeError, match=r"600 steps.*7.*run the recipe again"):
        rc.run(r, ("train", "ship"), progress=False)
    assert ran == ["train"]
    monkeypatch.setitem(rc.RUN, "train", lambda r, say: ran.append("train") or {"step": 600})
    rc.run(r, ("train", "ship"), progress=False)
    assert ran == ["train", "train", "ship"]


def test_recipe_cli_trains_on_libx264_alone_when_asked(tmp_path, monkeypatch):
    """The default trains on x265 and SVT-AV1 ladders too; ``--train-codec libx264`` alone
    is the x264-only recipe; a codec without dev CRFs is refused by name."""
    from click.testing import CliRunner

    seen = []
    monkeypatch.setattr(rc, "run", lambda r, stages: seen.append(r.train_codecs))
    runner = CliRunner()
    for args, want in (([], ("libx265", "libsvtav1")), (["--train-codec", "libx264"], ()),
                       (["--train-codec", "libx265"], ("libx265",))):
        res = runner.invoke(rc.main, ["--data", str(tmp_path), *args])
        assert res.exit_code == 0, res.output
        assert seen[-1] == want
    with pytest.raises(rc.RecipeError, match="train_codecs among dev_codecs"):
        rc.Recipe(data=tmp_path, dev_codecs={"libx265": (29,)})


def test_recipe_facts_option_keeps_its_own_text_state(tmp_path):
    plain, facts = rc.Recipe(data=tmp_path), rc.Recipe(data=tmp_path, facts=True)
    assert plain.text_dir == plain.run and facts.text_dir == plain.run / "facts"
    assert rc._model(facts).config.facts_prompt == FACTS_PROMPT
    assert rc._model(plain).config.facts_prompt == ""

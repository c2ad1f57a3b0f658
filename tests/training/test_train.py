"""The training loop on cpllm-tiny with compression ladders made here from real photo pans."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from media import write_ladder
from safetensors.torch import load_file

from cpllm_plugin.model import io
from cpllm_plugin.preprocess import prepare
from cpllm_plugin.training.dataset import PairSampler
from cpllm_plugin.training.manifest import Item, read_manifest, resolve, write_manifest
from cpllm_plugin.training.metrics import flip_rate
from cpllm_plugin.training.train import (
    TrainConfigError,
    build_model,
    load_config,
    main,
    train,
)
from cpllm_plugin.video import read_key_frames

TINY = Path(__file__).parents[2] / "training" / "configs" / "tiny.toml"
PHOTOS = ("coffee", "rocket", "astronaut")
CRFS = (15, 27, 39, 51)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory) -> Path:
    """3 sources x 4 CRFs of 90x160 pans (8 frames), with descriptions; returns the manifest."""
    return write_ladder(tmp_path_factory.mktemp("ladder"), PHOTOS, CRFS, 8, 90, 160,
                        "A slow pan across a {photo} photo. CRF {crf}.")


def _config(manifest: Path, out: Path, *sets: str):
    return load_config(TINY, [f"manifest={manifest}", f"out={out}", *sets])


def _flip(model, manifest: Path) -> float:
    groups: dict[str, list] = {}
    model.eval()
    with torch.no_grad():
        for it in read_manifest(manifest):
            k = read_key_frames(resolve(manifest, it), 2)
            x = prepare(k.frames, model.config)
            s = model.scorer(torch.from_numpy(x.views), torch.from_numpy(x.patches)).mean()
            groups.setdefault(it.source, []).append((it.crf, float(s), it.sha256))
    return flip_rate(groups.values())["overall"]


def test_one_step_changes_exactly_the_trainable_groups(ladder, tmp_path):
    cfg = _config(ladder, tmp_path / "run", "steps=1", "pair_ratio=0.5")
    before = build_model(cfg)
    trainable = {n for n, p in before.named_parameters() if p.requires_grad}
    assert not any(n.startswith("scorer.high.") for n in trainable)
    assert all("lora_" in n for n in trainable if n.startswith("decoder."))
    train(cfg)
    after = io.load(tmp_path / "run" / "last")
    assert after.config.trained
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert set(a) == set(b)
    changed = {n for n in a if not torch.equal(a[n], b[n])}
    assert changed <= trainable  # frozen: high encoder, base decoder, lora_A (B starts at 0)
    groups = ("scorer.low.", "scorer.high_proj.", "scorer.low_proj.", "scorer.low_norm.",
              "scorer.head.")
    for g in groups:
        assert any(n.startswith(g) for n in changed), g
    assert any("lora_B" in n for n in changed)  # L3 reached the decoder
    assert not any(n.startswith("scorer.high.") for n in changed)


def _one_step_prompts(ladder, tmp_path, monkeypatch, **config) -> tuple[list, Path, list]:
    """One training step of cpllm-tiny (with ``config`` fields) on rated variants of the
    ladder: the rated rows, their manifest, and every prompt L3 saw."""
    from dataclasses import replace

    from cpllm_plugin import configs
    from cpllm_plugin.model.cpllm import CPLLM

    rated = [replace(it, mos=1.0 + i / 4) for i, it in enumerate(read_manifest(ladder))]
    manifest = write_manifest(ladder.parent / "rated.jsonl", rated)
    monkeypatch.setitem(configs.MODELS, "cpllm-tiny",
                        replace(configs.MODELS["cpllm-tiny"], **config))
    prompts = []
    prefix = CPLLM.prefix
    monkeypatch.setattr(CPLLM, "prefix", lambda self, a, b, p: prompts.append(p) or
                        prefix(self, a, b, p))
    train(_config(manifest, tmp_path / "run", "steps=1"))
    assert prompts and all(isinstance(p, list) for p in prompts)
    return rated, manifest, [x for p in prompts for x in p]


def test_score_prompt_carries_each_rated_items_score(ladder, tmp_path, monkeypatch):
    """With a config score_prompt, L3 sees each first item's score in its prompt."""
    from cpllm_plugin import configs

    rated, _, said = _one_step_prompts(ladder, tmp_path, monkeypatch,
                                       score_prompt=configs.SCORE_PROMPT)
    assert said
    ends = {f"score is {it.mos:.2f} out of 5 ({configs.quality_word(it.mos)})." for it in rated}
    assert all(any(x.endswith(e) for e in ends) for x in said)


def test_facts_prompt_states_each_first_items_format(ladder, tmp_path, monkeypatch):
    """With a config facts_prompt, L3's prompts also state each first video's format."""
    from cpllm_plugin import configs
    from cpllm_plugin.training.manifest import resolve
    from cpllm_plugin.video import probe

    rated, manifest, said = _one_step_prompts(ladder, tmp_path, monkeypatch,
                                              score_prompt=configs.SCORE_PROMPT,
                                              facts_prompt=configs.FACTS_PROMPT)
    formats = {configs.frame_format(i.width, i.height)
               for i in (probe(resolve(manifest, it)) for it in rated)}
    assert said and all(any(x.endswith(f"The frames are {f}; an image classifier sees nothing "
                                       "it can name.") for f in formats) for x in said)


def _spy_autocast(monkeypatch) -> list:
    """Records (device type, dtype, enabled) of every torch.autocast the loop opens."""
    from cpllm_plugin.training import train as train_module

    seen = []
    real = torch.autocast

    def spy(*args, **kw):
        seen.append((args[0], kw.get("dtype"), kw.get("enabled")))
        return real(*args, **kw)

    monkeypatch.setattr(train_module.torch, "autocast", spy)
    return seen


def test_bf16_autocast_steps_train_in_fp32_weights(ladder, tmp_path, monkeypatch):
    # The CUDA path autocasts to bf16; no GPU here, so CPU autocast runs the same dtype
    # handling (scorer, Prefix-LM mask, text loss) through all three losses.
    from cpllm_plugin.training import train as train_module

    monkeypatch.setattr(train_module, "_autocast", lambda dev, cfg: cfg.bf16)
    seen = _spy_autocast(monkeypatch)
    summary = train(_config(ladder, tmp_path / "run", "steps=2", "pair_ratio=0.5", "bf16=true"))
    assert seen and all(s == ("cpu", torch.bfloat16, True) for s in seen)
    assert all(np.isfinite(summary[k]) for k in ("l1", "l2", "l3", "total"))
    assert summary["l3"] > 0  # the decoder's text loss ran under autocast too
    weights = load_file(tmp_path / "run" / "last" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_micro_batches_accumulate_the_gradients_of_the_whole_batch(ladder):
    from dataclasses import replace

    from cpllm_plugin.training.dataset import ContextCache, TrainingData, high_encoder_id
    from cpllm_plugin.training.losses import LossWeights
    from cpllm_plugin.training.train import Step, accumulate

    rated = [replace(it, mos=1.0 + i / 4) for i, it in enumerate(read_manifest(ladder))]
    manifest = write_manifest(ladder.parent / "rated-micro.jsonl", rated)
    model = build_model(_config(manifest, ladder.parent / "unused")).train()
    cache = ContextCache(high_encoder_id(model.scorer, model.config))
    data = TrainingData(manifest, model.config, "train", 2, True, cache)
    samples = PairSampler(data.items, 6, 0.5, seed=1).batch(0, 0)
    cpu = torch.device("cpu")

    def grads(size):
        model.zero_grad(set_to_none=True)
        parts = [data.batch(samples[j:j + size], model.scorer, (0, 0, 0), model.tokenizer, 64,
                            cpu) for j in range(0, len(samples), size)]
        losses = accumulate(Step(model), parts, LossWeights(1.0, 1.0, 1.0), cpu, False)
        return losses, {n: p.grad.clone() for n, p in model.named_parameters()
                        if p.grad is not None}

    whole, g = grads(6)
    split, g3 = grads(2)  # three micro-batches with different numbers of pairs and tokens
    assert all(x > 0 for x in whole[:3])  # all three losses take part
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)
    assert g.keys() == g3.keys() and any("lora_B" in n for n in g)
    for n in g:
        torch.testing.assert_close(g3[n], g[n], atol=1e-6, rtol=1e-4, msg=n)


def test_training_lowers_flip_rate(ladder, tmp_path):
    cfg = _config(ladder, tmp_path / "run", "steps=16", "lr=2e-3", "decoder=false")
    before = _flip(build_model(cfg), ladder)
    summary = train(cfg)
    after = _flip(io.load(tmp_path / "run" / "last", with_decoder=False), ladder)
    assert after < before, (before, after)
    assert summary["cache_misses"] == len(CRFS) * len(PHOTOS)  # high encoder ran once a video
    assert summary["cache_hits"] > 0


def test_resume_continues_exactly(ladder, tmp_path):
    sets = ("lr=1e-3", "batch_size=3", "pair_ratio=0.5")
    whole = train(_config(ladder, tmp_path / "a", "steps=4", *sets))
    cache = f"cache_dir={tmp_path / 'cache'}"  # the resumed run reads high tokens from disk
    first = train(_config(ladder, tmp_path / "b", "steps=2", cache, *sets))  # stops at step 2
    on_disk = list((tmp_path / "cache").glob("*/*.safetensors"))
    assert len(on_disk) == first["cache_misses"] > 0
    resumed = train(_config(ladder, tmp_path / "b", "steps=4", cache, *sets), resume=True)
    seen = len(list((tmp_path / "cache").glob("*/*.safetensors")))
    assert resumed["cache_misses"] == seen - len(on_disk)  # only videos new to the cache
    assert resumed["steps"] == whole["steps"] == 4
    with (tmp_path / "b" / "log.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4]
    wa = load_file(tmp_path / "a" / "last" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "last" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    la = load_file(tmp_path / "a" / "last" / "adapter" / "adapter_model.safetensors")
    lb = load_file(tmp_path / "b" / "last" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert resumed["total"] == pytest.approx(whole["total"], abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == [
        "step_000002", "step_000004"]


def test_sampler_pairs_same_source_never_identical():
    items = [Item(path=f"{s}{c}", source=s, original=False, codec="libx264", crf=c,
                  sha256=f"{s}{min(c, 51)}") for s in "ab" for c in (15, 51, 53)]
    sampler = PairSampler(items, batch_size=2, pair_ratio=1.0, seed=3, rank=0, world=2)
    other = PairSampler(items, batch_size=2, pair_ratio=1.0, seed=3, rank=1, world=2)
    seen = sampler.batch(0, 0) + other.batch(0, 0)
    assert seen == sampler.epoch(0)[:4]  # ranks split one global batch
    for s in sampler.epoch(0) + sampler.epoch(1):
        a = items[s.first]
        assert s.second is not None  # every item here has a partner
        b = items[s.second]
        assert a.source == b.source and a.sha256 != b.sha256
        assert np.sign(s.gap) == (1 if a.crf < b.crf else -1)
    mixed = PairSampler(items * 20, batch_size=4, pair_ratio=0.5, seed=0).epoch(0)
    share = np.mean([s.second is not None for s in mixed])
    assert 0.35 < share < 0.65


def test_config_errors(tmp_path, ladder):
    with pytest.raises(TrainConfigError, match="Did you mean 'batch_size'"):
        load_config(TINY, ["batchsize=3"])
    with pytest.raises(TrainConfigError, match="steps"):
        load_config(TINY, ["steps=many"])
    with pytest.raises(TrainConfigError, match="pair_ratio"):
        load_config(TINY, ["pair_ratio=1.5"])
    bad = tmp_path / "bad.toml"
    bad.write_text('manifest = "m.jsonl"\nseeds = 1\n')
    with pytest.raises(TrainConfigError, match="Did you mean 'seed'"):
        load_config(bad)
    with pytest.raises(TrainConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    y = tmp_path / "c.yaml"
    y.write_text(f"manifest: {ladder}\nsteps: 3\nmodel_overrides: {{key_frames: 3}}\n")
    cfg = load_config(y, ["model_overrides.head_hidden=16", "bf16=false"])
    assert cfg.steps == 3 and cfg.model_overrides == {"key_frames": 3, "head_hidden": 16}
    assert cfg.bf16 is False
    with pytest.raises(TrainConfigError, match="ModelConfig fields"):
        build_model(load_config(TINY, ["model_overrides.keyframes=3"]))


def test_cli_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(TINY), "--set", f"manifest={tmp_path / 'none.jsonl'}",
              "--set", f"out={tmp_path / 'o'}"])
    assert exc.value.code == 1
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(TINY), "--set", "nope=1"])
    assert exc.value.code == 1
    with pytest.raises(SystemExit) as exc:
        main([str(TINY), "--bogus"])
    assert exc.value.code == 2


def test_torchrun_two_processes(ladder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "cpllm_plugin.training.train", str(TINY), "--set", f"manifest={ladder}",
           "--set", f"out={out}", "--set", "steps=3", "--set", "batch_size=2",
           "--set", "micro_batch=1"]  # accumulation syncs gradients on the last micro-batch
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000003"]
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # only rank 0 writes
    assert io.load(out / "last").config.trained


@pytest.mark.gpu
def test_cuda_trains_all_three_losses_under_bf16_autocast(ladder, tmp_path, monkeypatch):
    seen = _spy_autocast(monkeypatch)
    cfg = _config(ladder, tmp_path / "run", "steps=2", "pair_ratio=0.5", "bf16=true",
                  "device=cuda")
    summary = train(cfg)
    # One bf16 region per step; transformers opens disabled ones inside it (rotary, norms).
    on = [s for s in seen if s[2]]
    assert len(on) == 2 and all(s == ("cuda", torch.bfloat16, True) for s in on), seen
    assert all(np.isfinite(summary[k]) for k in ("l1", "l2", "l3", "total"))
    assert summary["l3"] > 0
    weights = load_file(tmp_path / "run" / "last" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    model = io.load(tmp_path / "run" / "last")  # a GPU checkpoint loads on the CPU
    assert model.config.trained and np.isfinite(_flip(model, ladder))


@pytest.mark.gpu
def test_torchrun_nccl_on_one_gpu(ladder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
           "-m", "cpllm_plugin.training.train", str(TINY), "--set", f"manifest={ladder}",
           "--set", f"out={out}", "--set", "steps=3", "--set", "batch_size=2",
           "--set", "device=cuda", "--set", "bf16=true", "--set", "micro_batch=1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world 1 (nccl), device cuda:0, bf16 True" in r.stderr, r.stderr[-2000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000003"]
    with (out / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert io.load(out / "last").config.trained

"""Training the scoring path on frozen features (:mod:`cpllm_plugin.training.frozen`).

The trainable part is what the paper trains on the scoring side: the pixel encoder (here its
blocks after the frozen ones), both projections, the LayerNorm and the MLP head, with the
paper's L1 (pairwise hinge) and L2 (squared error) at equal weights and Adam at 1e-4.

How it departs from :mod:`cpllm_plugin.training.train` (the general trainer), and why:

- The first ``frozen_blocks`` blocks of the pixel encoder keep their ImageNet weights, and
  every BatchNorm keeps its statistics (eval mode): the cached features then equal what
  inference computes, and a step costs a sixth of a full one on a CPU.
- A sample is one key frame of a pair of variants of one source: both variants at the same
  frame and the same patch positions, so the pair differs only by its compression. Half the
  pairs are neighbours on the source's CRF ladder (the hardest, d = 2..4), half any two of
  its videos. L2 applies to every frame of the batch that has a target; the frame is scored
  against its video's (pseudo-)score.
- Text (L3) is trained afterwards on the frozen scoring path (:func:`train_text`): on two
  CPU cores a Gemma step costs seconds per sample, which the scoring path cannot wait for.

Everything random is a function of ``(seed, step)``, and ``out/`` holds the trainable state,
Adam's moments and the step, so ``resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..console import progress_printer
from ..errors import CpllmError, message
from ..files import atomic
from ..model.cpllm import ScoringPath
from .evaluate import flip_groups, srcc_vs_vmaf
from .frozen import FeatureCache, frozen_parameters
from .losses import pair_gap, rank_loss, score_loss
from .manifest import Item, resolve
from .metrics import flip_rate


class CachedTrainingError(CpllmError, ValueError):
    """The cached training data or state is unusable."""


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """``module`` in eval mode inside the block, its own mode restored after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


@contextlib.contextmanager
def channels_last(module: torch.nn.Module):
    """Convolution weights in channels-last layout for the block; the default layout after.

    On CPU this runs the trained EfficientNet stages' forward and backward faster (oneDNN's
    depthwise kernels want NHWC; docs/experiments.md, "What the recipe cost, run by run"),
    with the same results to float rounding. Parameters keep their identity, so an
    optimiser built inside the block stays valid; checkpoints are written contiguous.
    """
    module.to(memory_format=torch.channels_last)
    try:
        yield module
    finally:
        module.to(memory_format=torch.contiguous_format)


def frame_scores(scorer: ScoringPath, blocks: int, stem: torch.Tensor, ctx: torch.Tensor
                 ) -> torch.Tensor:
    """Scores ``(B,)`` of key frames from frozen features.

    Args:
        scorer: the scoring path.
        blocks: frozen blocks (where ``stem`` stops).
        stem: ``(B, K, C, h, w)`` float32 patch features after the frozen blocks.
        ctx: ``(B, Ch)`` token means of the frozen high-level encoder.
    """
    u = scorer.high_proj(ctx)[:, None]  # the mean of the projected tokens (linear)
    return scorer.head_score(u, _pixels(scorer, blocks, stem))


def _pixels(scorer: ScoringPath, blocks: int, stem: torch.Tensor) -> torch.Tensor:
    """``v (B, Tl, D)`` from patch features ``(B, K, C, h, w)`` after the frozen blocks."""
    t = scorer.low.rest(stem.flatten(0, 1), blocks)  # (B * K, Tl, Cl)
    return scorer.pixel_tokens(t.view(*stem.shape[:2], *t.shape[1:]))


def visual_tokens(scorer: ScoringPath, blocks: int, stem: torch.Tensor, tokens: torch.Tensor
                  ) -> torch.Tensor:
    """The decoder's visual tokens ``(B, Th + Tl, D)`` = ``[u; v]`` from frozen features.

    Args:
        stem: ``(B, K, C, h, w)`` patch features of the decoder's key frame.
        tokens: ``(B, Th, Ch)`` all high-level tokens of that frame.
    """
    return torch.cat([scorer.high_proj(tokens), _pixels(scorer, blocks, stem)], dim=1)


class CachedSet:
    """The items of one split with their cached features, in memory.

    Args:
        manifest: the manifest path (resolves relative item paths).
        items: the items (one split).
        cache: a built :class:`FeatureCache` holding every item.
        blocks: frozen blocks for training (default: the cache's); more than the cache's are
            run once here, so the stored features start where training does.
    """

    def __init__(self, manifest: str | os.PathLike, items: Sequence[Item], cache: FeatureCache,
                 blocks: int | None = None):
        self.items = list(items)
        missing = [it.path for it in self.items if it.sha256 is None
                   or not cache.path(it.sha256).is_file()]
        if missing:
            raise CachedTrainingError(message(
                "CachedSet", "cached features for every item", f"{len(missing)} missing, "
                f"first {missing[:3]}", "build the cache first (FeatureCache.build)"))
        feats = [cache.get(it.sha256) for it in self.items]
        self.blocks = blocks or cache.blocks
        if self.blocks < cache.blocks:
            raise CachedTrainingError(message(
                "CachedSet", f"blocks >= the cache's {cache.blocks}", repr(blocks),
                "build a cache that stops earlier, or freeze more blocks"))
        stems = [torch.from_numpy(f.stem) for f in feats]
        if self.blocks > cache.blocks:
            low = cache.scorer.low

            def advance(s: torch.Tensor) -> torch.Tensor:
                x = low.advance(s.flatten(0, 1).float(), cache.blocks, self.blocks)
                return x.half().view(*s.shape[:2], *x.shape[1:])

            # frozen blocks run as at inference: in train mode BatchNorm would normalise by
            # each video's own statistics and drop-connect would zero whole blocks at random
            with torch.no_grad(), eval_mode(low):
                stems = [advance(s) for s in stems]
        self.stem = torch.stack(stems)  # (N, M, K, C, h, w) float16
        self.ctx = torch.from_numpy(np.stack([f.ctx for f in feats]))  # (N, M, Ch)
        self.tokens = torch.from_numpy(np.stack([f.tokens for f in feats]))  # (N, Th, Ch)
        self.manifest = Path(manifest)
        self.m = self.stem.shape[1]
        self.target = np.array([np.nan if it.target is None else it.target
                                for it in self.items], np.float32)
        self.partners: list[list[int]] = []
        self.neighbours: list[list[int]] = []
        by_source: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            by_source.setdefault(it.source, []).append(i)
        for i, it in enumerate(self.items):
            mates = [j for j in by_source[it.source]
                     if j != i and pair_gap(it, self.items[j]) is not None]
            self.partners.append(mates)
            ladder = sorted((j for j in mates + [i] if self.items[j].crf is not None
                             and self.items[j].codec == it.codec), key=lambda j: self.items[j].crf)
            near = []
            if i in ladder:
                pos = ladder.index(i)
                near = [ladder[p] for p in (pos - 1, pos + 1) if 0 <= p < len(ladder)]
            self.neighbours.append([j for j in near if j in mates])
        self.with_partners = [i for i, p in enumerate(self.partners) if p]
        self.scored = np.flatnonzero(~np.isnan(self.target))
        self.source_of = np.array([it.source for it in self.items])
        if not self.with_partners:
            raise CachedTrainingError(message(
                "CachedSet", "videos with a partner of known order (variants of one source)",
                "none", "train on a manifest made by cpllm-variants"))

    def sample(self, rng: np.random.Generator, pairs: int, cross: float = 0.0,
               margin: float = 0.0) -> tuple[np.ndarray, ...]:
        """``pairs`` random pairs: first, second, gap and the shared key frame.

        A pair's second item is a neighbouring CRF or any other variant of the same source,
        or, with probability ``cross`` (when both have a score), a video of another source:
        those pairs rank sources against each other, which variants of one source never do.
        ``margin``: see :func:`~.losses.pair_gap`.
        """
        first = rng.choice(self.with_partners, size=pairs)
        second, gap = np.empty(pairs, np.int64), np.empty(pairs, np.float32)
        for n, i in enumerate(first):
            if cross and rng.random() < cross and not np.isnan(self.target[i]):
                j = self._other_source(rng, i)
                if j is not None:
                    second[n] = j
                    gap[n] = self.target[i] - self.target[j]
                    continue
            near = self.neighbours[i]
            pool = near if near and rng.random() < 0.5 else self.partners[i]
            j = pool[int(rng.integers(len(pool)))]
            second[n] = j
            gap[n] = pair_gap(self.items[i], self.items[j], margin)
        frame = rng.integers(0, self.m, size=pairs)
        return first.astype(np.int64), second, gap, frame

    def _other_source(self, rng: np.random.Generator, i: int) -> int | None:
        for _ in range(32):  # rejection: most scored videos belong to other sources
            j = int(self.scored[int(rng.integers(len(self.scored)))])
            if self.source_of[j] != self.source_of[i]:
                return j
        return None

    @torch.no_grad()
    def score_all(self, scorer: ScoringPath, chunk: int = 16) -> np.ndarray:
        """Video scores ``(N,)`` (mean over the M key frames) from the cache, as at inference
        whatever mode ``scorer`` is in."""
        out = np.empty(len(self.items))
        with eval_mode(scorer):
            for s in range(0, len(self.items), chunk):
                stem = self.stem[s:s + chunk].float()
                n = stem.shape[0]
                f = frame_scores(scorer, self.blocks, stem.flatten(0, 1),
                                 self.ctx[s:s + chunk].flatten(0, 1))
                out[s:s + n] = f.view(n, self.m).mean(dim=1).double().numpy()
        return out


def report(items: Sequence[Item], scores: np.ndarray) -> dict:
    """Flip rates (ties count) and SRCC against VMAF, pooled and within a source, counted as
    ``cpllm-eval`` counts them (an identical file, CRF 53 = 51, once), so a dev number from the
    cache compares with the shipped graph's."""
    values = [float(s) for s in scores]
    corr = srcc_vs_vmaf(items, values, None)
    return {"flip": flip_rate(flip_groups(items, values)), "srcc_vmaf": corr["pooled"],
            "srcc_within": corr["within_source"]}


# --- the loop ------------------------------------------------------------------------------


SCHEDULES = ("constant", "cosine")


@dataclass
class CachedConfig:
    """Settings of :func:`train_scorer`.

    Attributes:
        steps: optimiser steps in all (a resumed run stops there too).
        pairs: pairs per step (each two key frames of K patches).
        lr: Adam learning rate (paper: 1e-4).
        w_rank, w_score: weights of L1 and L2 (paper: equal).
        seed: seeds the pair and frame choice.
        log_every: a CSV row and a progress line every this many steps.
        checkpoint_every: save the state every this many steps (and at the end).
        dev_every: dev flip rate and SRCC from the cache every this many steps (0: never).
        cross: share of pairs whose second video is from another source (see
            :meth:`CachedSet.sample`; 0: variants of one source only).
        minutes: stop (with a checkpoint) after this many minutes of this session (0: off).
        margin: least gap of two variants of one ladder, signed by CRF (see
            :func:`~.losses.pair_gap`; 0: the paper's eq. 1 as is).
        schedule: ``"constant"`` keeps ``lr``; ``"cosine"`` starts at it (the paper's
            "initial learning rate") and decays to 0 at ``steps``, so that the weights that
            ship are not the last noisy step of a constant rate.
    """

    steps: int = 400
    pairs: int = 16
    lr: float = 1e-4
    w_rank: float = 1.0
    w_score: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    dev_every: int = 100
    cross: float = 0.0
    minutes: float = 0.0
    margin: float = 0.0
    schedule: str = "constant"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise CachedTrainingError(message("CachedConfig.schedule", " or ".join(SCHEDULES),
                                              repr(self.schedule), "pick one of those"))

    def lr_at(self, step: int) -> float:
        """The learning rate of the step after ``step`` steps."""
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step / self.steps, 1.0)))
        return self.lr


def _trainable(scorer: ScoringPath, blocks: int) -> list[tuple[str, torch.nn.Parameter]]:
    frozen = set(frozen_parameters(scorer, blocks))
    out = []
    for n, p in scorer.named_parameters():
        p.requires_grad_(n not in frozen)
        if n not in frozen:
            out.append((n, p))
    return out


def _save_state(out: Path, scorer: ScoringPath, opt: torch.optim.Adam,
                named: list[tuple[str, torch.nn.Parameter]], step: int, extra: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in scorer.state_dict().items()}
    for n, p in named:
        st = opt.state.get(p)
        if st:
            tensors[f"adam.{n}.exp_avg"] = st["exp_avg"].contiguous()
            tensors[f"adam.{n}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            extra.setdefault("adam_steps", {})[n] = float(st["step"])
    _write_state(out, "state", tensors, {"step": step, **extra})


def _write_state(out: Path, name: str, tensors: dict, meta: dict) -> None:
    """Write ``name.safetensors`` and ``name.json`` whole: both are written under temporary
    names before either is renamed, the tensors first."""
    from safetensors.torch import save_file

    def both(tmp: Path) -> None:
        tmp.write_text(json.dumps(meta))
        atomic(out / f"{name}.safetensors", lambda t: save_file(tensors, t))

    atomic(out / f"{name}.json", both)


def load_state(out: Path, scorer: ScoringPath) -> dict | None:
    """Load ``out/state.safetensors`` into ``scorer``; the saved JSON, or None if absent."""
    f = out / "state.safetensors"
    if not f.is_file():
        return None
    from safetensors.torch import load_file

    tensors = load_file(f)
    scorer.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    meta = json.loads((out / "state.json").read_text())
    meta["_tensors"] = tensors
    return meta


def train_scorer(scorer: ScoringPath, data: CachedSet, out: str | os.PathLike,
                 cfg: CachedConfig, dev: CachedSet | None = None,
                 progress: Callable[[str], None] | bool = True) -> dict:
    """Train the scoring path on cached features; resumable from ``out``.

    Returns:
        ``{"step", "seconds", "dev": [...]}`` where ``dev`` lists the periodic dev reports.
    """
    blocks = data.blocks
    if dev is not None and dev.blocks != blocks:
        raise CachedTrainingError(message("train_scorer", f"dev features after {blocks} "
                                          "blocks, like the training set's", str(dev.blocks),
                                          "build both sets with the same blocks"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with channels_last(scorer.low):
        return _train_scorer(scorer, data, out, cfg, dev, blocks, progress_printer(progress))


def _train_scorer(scorer: ScoringPath, data: CachedSet, out: Path, cfg: CachedConfig,
                  dev: CachedSet | None, blocks: int, say: Callable[[str], None]) -> dict:
    scorer.eval()  # BatchNorm statistics stay the pretrained ones (see module docstring)
    named = _trainable(scorer, blocks)
    opt = torch.optim.Adam([p for _, p in named], lr=cfg.lr)
    meta = load_state(out, scorer)
    start, history, spent = 0, [], 0.0
    if meta is not None:
        start, history, spent = meta["step"], meta.get("dev", []), meta.get("seconds", 0.0)
        t = meta["_tensors"]
        for n, p in named:
            if f"adam.{n}.exp_avg" in t:
                opt.state[p] = {"step": torch.tensor(meta["adam_steps"][n]),
                                "exp_avg": torch.empty_like(p).copy_(t[f"adam.{n}.exp_avg"]),
                                "exp_avg_sq": torch.empty_like(p).copy_(
                                    t[f"adam.{n}.exp_avg_sq"])}
        say(f"resumed at step {start} ({spent / 60:.1f} min trained so far)")
    log = out / "log.csv"
    if not log.is_file():
        log.write_text("step,l1,l2,total,seconds\n")
    t0 = time.perf_counter()
    step = start
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        first, second, gap, frame = data.sample(rng, cfg.pairs, cfg.cross, cfg.margin)
        fa = list(zip(first.tolist(), frame.tolist(), strict=True))
        fb = list(zip(second.tolist(), frame.tolist(), strict=True))
        keys = sorted(set(fa) | set(fb))  # (video, key frame) pairs, each run once
        slot = {k: n for n, k in enumerate(keys)}
        vid = torch.tensor([k[0] for k in keys])
        fr = torch.tensor([k[1] for k in keys])
        s = frame_scores(scorer, blocks, data.stem[vid, fr].float(), data.ctx[vid, fr])
        a = torch.tensor([slot[k] for k in fa])
        b = torch.tensor([slot[k] for k in fb])
        g = torch.from_numpy(gap)
        l1 = rank_loss(g, torch.zeros_like(g), s[a], s[b])
        tgt = torch.from_numpy(data.target[vid.numpy()])
        l2 = score_loss(tgt, s, ~torch.isnan(tgt))
        loss = cfg.w_rank * l1 + cfg.w_score * l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        opt.step()
        step += 1
        if not math.isfinite(loss.item()):
            raise CachedTrainingError(message("train_scorer", "a finite loss",
                                              f"{loss.item()} at step {step}",
                                              "lower lr or check the targets"))
        elapsed = spent + time.perf_counter() - t0
        if step % cfg.log_every == 0 or step == cfg.steps:
            with log.open("a", newline="") as fh:
                csv.writer(fh).writerow([step, f"{l1.item():.5f}", f"{l2.item():.5f}",
                                         f"{loss.item():.5f}", f"{elapsed:.1f}"])
            say(f"[train {step}/{cfg.steps}] l1 {l1.item():.4f} l2 {l2.item():.4f} "
                f"({elapsed / step:.2f} s/step)")
        if dev is not None and cfg.dev_every and step % cfg.dev_every == 0:
            r = report(dev.items, dev.score_all(scorer))
            history.append({"step": step, **r})
            say(f"[dev {step}] flip d=2 {r['flip']['d2']:.3f} all {r['flip']['overall']:.3f}"
                f" SRCC vs VMAF {r['srcc_vmaf']:.3f}, within a source "
                f"{r['srcc_within']:.3f}")
        out_of_time = cfg.minutes and time.perf_counter() - t0 > cfg.minutes * 60
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            _save_state(out, scorer, opt, named, step, {"dev": history, "seconds": elapsed})
        if out_of_time:
            say(f"stopping at step {step}: the {cfg.minutes:g} min budget is spent "
                "(run again to resume)")
            break
    return {"step": step, "seconds": spent + time.perf_counter() - t0, "dev": history}



# --- text (L3) on the frozen scoring path ---------------------------------------------------


@dataclass
class TextConfig:
    """Settings of :func:`train_text`.

    Attributes:
        steps: optimiser steps in all.
        batch: descriptions per step.
        lr: Adam learning rate on the LoRA weights (paper: 1e-4).
        max_tokens: longest target in tokens (eos included).
        seed: seeds the sample choice.
        log_every, checkpoint_every: as in :class:`CachedConfig`.
        minutes: stop (with a checkpoint) after this many minutes of this session (0: off).
    """

    steps: int = 200
    batch: int = 2
    lr: float = 1e-4
    max_tokens: int = 96
    seed: int = 0
    log_every: int = 5
    checkpoint_every: int = 25
    minutes: float = 0.0


def decoder_visuals(scorer: ScoringPath, data: CachedSet, items: Sequence[int] | None = None,
                    chunk: int = 8) -> torch.Tensor:
    """``(N, Th + Tl, D)`` decoder tokens of the decoder key frame of ``items`` (indices
    into ``data.items``; None: all), no grad."""
    from ..preprocess import key_frame_indices

    pick = int(key_frame_indices(data.m, 1)[0])
    idx = torch.arange(len(data.items)) if items is None else torch.as_tensor(items).long()
    out = []
    with torch.no_grad(), eval_mode(scorer):  # the tokens describe() will see
        for s in range(0, len(idx), chunk):
            at = idx[s:s + chunk]
            out.append(visual_tokens(scorer, data.blocks, data.stem[at, pick].float(),
                                     data.tokens[at].float()))
    return torch.cat(out)


def _lora(model) -> list[tuple[str, torch.nn.Parameter]]:
    for p in model.scorer.parameters():
        p.requires_grad_(False)
    named = []
    for n, p in model.decoder.named_parameters():
        p.requires_grad_("lora_A" in n or "lora_B" in n)
        if p.requires_grad:
            named.append((n, p))
    return named


def _facts(model, data: CachedSet, row: int):
    """The describe prompt's facts of item ``row``, from its file's display size and the
    cached high-level tokens of its decoder key frame (what ``describe`` computes from frames)."""
    from ..video import probe

    info = probe(resolve(data.manifest, data.items[row]))  # width/height after rotation
    return model.facts(info.width, info.height, data.tokens[row:row + 1].float())


def train_text(model, data: CachedSet, out: str | os.PathLike, cfg: TextConfig,
               progress: Callable[[str], None] | bool = True) -> dict:
    """Train the decoder's LoRA on the items' descriptions (L3) with the scoring path frozen.

    Single inputs, as in the paper's Fig. 4a: the visual tokens are duplicated and the copy
    masked out. With a config ``score_prompt`` the prompt carries each item's pseudo-score,
    where ``describe`` puts the head's score. Resumable from ``out``
    (``text_state.safetensors``, ``text_state.json``).

    Returns:
        ``{"step", "seconds", "samples"}``.
    """
    say = progress_printer(progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Unrated items (clean originals) only say "not rated": nothing a viewer of the pixels
    # could say, and describe() on a clean upload would learn to repeat it.
    rows = [i for i, it in enumerate(data.items) if it.description and it.target is not None]
    if not rows:
        raise CachedTrainingError(message("train_text", "rated items with a description", "none",
                                          "run the describe stage first"))
    tok = model.tokenizer
    ids = [tok(data.items[i].description, add_special_tokens=False).input_ids[
        :cfg.max_tokens - 1] + [tok.eos_token_id] for i in rows]
    named = _lora(model)
    opt = torch.optim.Adam([p for _, p in named], lr=cfg.lr)
    state = out / "text_state.safetensors"
    start, spent = 0, 0.0
    if state.is_file():
        from safetensors.torch import load_file

        t = load_file(state)
        meta = json.loads((out / "text_state.json").read_text())
        for n, p in named:
            p.data.copy_(t[f"w.{n}"])
            if f"m.{n}" in t:
                opt.state[p] = {"step": torch.tensor(meta["adam_steps"][n]),
                                "exp_avg": t[f"m.{n}"].clone(), "exp_avg_sq": t[f"v.{n}"].clone()}
        start, spent = meta["step"], meta["seconds"]
        say(f"text: resumed at step {start}")

    def draw(step: int) -> np.ndarray:
        rng = np.random.default_rng([cfg.seed, step, 0x73])
        return rng.choice(len(rows), size=min(cfg.batch, len(rows)), replace=False)

    # Visual tokens only for the rows the remaining steps draw (400 steps of 2 touch about a
    # third of 1,700 rows), so the stage's cost does not grow with the training set.
    picks = {step: draw(step) for step in range(start, cfg.steps)}
    used = sorted({int(i) for p in picks.values() for i in p})
    say(f"text: {len(rows)} descriptions, {np.mean([len(t) for t in ids]):.0f} tokens on "
        f"average; visual tokens of the {len(used)} that steps {start}..{cfg.steps} draw")
    vis = {}
    if used:
        tokens = decoder_visuals(model.scorer, data, [rows[u] for u in used])
        vis = dict(zip(used, tokens, strict=True))
    facts = {u: _facts(model, data, rows[u]) for u in used} if model.config.facts_prompt \
        else {}

    def save(step: int, seconds: float) -> None:
        tensors, steps = {}, {}
        for n, p in named:
            tensors[f"w.{n}"] = p.detach().contiguous()
            st = opt.state.get(p)
            if st:
                tensors[f"m.{n}"] = st["exp_avg"].contiguous()
                tensors[f"v.{n}"] = st["exp_avg_sq"].contiguous()
                steps[n] = float(st["step"])
        _write_state(out, "text_state", tensors,
                     {"step": step, "seconds": seconds, "adam_steps": steps})

    log = out / "text_log.csv"
    if not log.is_file():
        log.write_text("step,l3,seconds\n")
    model.decoder.train()
    t0, step = time.perf_counter(), start
    pad = tok.pad_token_id
    while step < cfg.steps:
        pick = picks[step]
        v = torch.stack([vis[int(i)] for i in pick])
        embeds, valid = model.prefix(v, None, [
            model.describe_prompt(data.items[rows[i]].target, facts.get(int(i))) for i in pick])
        width = max(len(ids[i]) for i in pick)
        target = torch.full((len(pick), width), pad, dtype=torch.long)
        for r, i in enumerate(pick):
            target[r, :len(ids[i])] = torch.tensor(ids[i])
        from .losses import text_loss

        l3 = text_loss(model.decoder, embeds, valid, target, pad)
        opt.zero_grad(set_to_none=True)
        l3.backward()
        opt.step()
        step += 1
        elapsed = spent + time.perf_counter() - t0
        if step % cfg.log_every == 0 or step == cfg.steps:
            with log.open("a") as fh:
                fh.write(f"{step},{l3.item():.5f},{elapsed:.1f}\n")
            say(f"[text {step}/{cfg.steps}] l3 {l3.item():.4f} ({elapsed / step:.1f} s/step)")
        out_of_time = cfg.minutes and time.perf_counter() - t0 > cfg.minutes * 60
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            save(step, elapsed)
        if out_of_time:
            say(f"text: stopping at step {step}, the {cfg.minutes:g} min budget is spent")
            break
    model.decoder.eval()
    return {"step": step, "seconds": spent + time.perf_counter() - t0, "samples": len(rows)}


def describe_agreement(model, manifest: str | os.PathLike, items: Sequence[Item],
                       scores: Sequence[float], count: int = 30,
                       progress: Callable[[str], None] | bool = True) -> dict:
    """How often a generated description's quality word matches the score's band.

    Takes ``count`` of ``items`` spread evenly over the range of their ``scores`` (what the
    shipped graph printed), generates each description as ``describe`` does (the decoder's
    key frame, greedy, three sentences), reads its quality word
    (:func:`.describe.quality_word_in`) and compares it with :func:`.describe.quality_word`
    of the score.

    Returns:
        ``{"n", "agree", "rate", "near", "three_sentences", "format", "tagged", "kind",
        "content", "examples": [...]}``; ``near`` counts descriptions whose word is at most
        one band off, ``format`` those whose style sentence names the frames' format as the
        training descriptions do; of the ``tagged`` items (a tag with content), ``kind``
        counts style sentences naming the tag's kind of footage
        (:func:`.describe.kind_in`) and ``content`` first sentences sharing a content word
        with the tag (:func:`.describe.shares_content`).
    """
    from ..configs import QUALITY_WORDS, frame_format
    from ..preprocess import key_frame_indices, prepare
    from ..video import read_key_frames
    from .describe import (
        kind_in,
        quality_word,
        quality_word_in,
        sentences_of,
        shares_content,
        split_tag,
    )

    say = progress_printer(progress)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores)
    pick = order[np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int)]
    cfg = model.config
    rows, agree, near, three, formats, kinds, contents = [], 0, 0, 0, 0, 0, 0
    tagged = sum(1 for i in pick if split_tag(items[i].tag)[1])
    for n, i in enumerate(pick):
        k = read_key_frames(resolve(manifest, items[i]), cfg.key_frames)
        sub = k.frames[key_frame_indices(len(k.frames), cfg.decoder_frames)]
        x = prepare(sub, cfg)
        shape = frame_format(sub.shape[2], sub.shape[1])
        with torch.no_grad():
            vis, facts = model.describe_inputs(torch.from_numpy(x.views),
                                               torch.from_numpy(x.patches),
                                               (sub.shape[2], sub.shape[1]))
        text = model.describe_text(vis, scores[i], facts=facts)
        want, got = quality_word(scores[i]), quality_word_in(text)
        agree += want == got
        near += got is not None and abs(QUALITY_WORDS.index(want) - QUALITY_WORDS.index(got)) <= 1
        sentences = sentences_of(text)
        three += len(sentences) == 3
        # the style sentence names the frames' format as the training descriptions do
        formats += len(sentences) >= 2 and f"{shape} format" in sentences[1]
        style, content = split_tag(items[i].tag)
        if content:  # against the source's tag (what a person wrote about the video)
            kinds += style is not None and kind_in(text) == style
            contents += shares_content(text, items[i].tag)
        rows.append({"path": items[i].path, "score": float(scores[i]), "band": want,
                     "said": got, "format": shape, "labels": list(facts.labels),
                     "text": text})
        say(f"[describe {n + 1}/{len(pick)}] {scores[i]:.2f} {want} -> {got}: {text[:90]}")
    return {"n": len(pick), "agree": agree, "rate": agree / max(len(pick), 1), "near": near,
            "three_sentences": three, "format": formats, "tagged": tagged, "kind": kinds,
            "content": contents, "examples": rows}

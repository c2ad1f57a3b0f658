"""Training data: a sampler of mixed single and pairwise samples, and batches for the model.

A **sample** is one video (single input; the decoder sees it with the copy masked out, paper
Fig. 4a) or a pair of two different videos of the same source (two variants, or the original
and a variant). The share of pairs is ``pair_ratio`` (the paper's best setting, Table 4a, is
the mix of both; 0.5 by default). Pairs never join identical files (equal sha256) and need a
known order or two scores (see :func:`cpllm_plugin.training.losses.pair_gap`).

Per video, ``M`` key frames come from :func:`cpllm_plugin.video.read_key_frames` (decoded
once and kept when ``cache_frames``) and go through :func:`cpllm_plugin.preprocess.prepare`
with a random generator: the patches move inside their cells (training augmentation), the
448 view stays fixed. Because the view is fixed and the high encoder frozen, its tokens are
cached per (video sha256, key frame index, high-encoder id) in memory and optionally on disk
(safetensors), so epochs after the first never run the high encoder.

Everything random is a function of ``(seed, epoch)`` (the order of samples) or ``(seed,
step, rank)`` (pair choice is in the order; patch placement per step), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..configs import ModelConfig
from ..errors import CpllmError, message
from ..files import atomic
from ..hashing import sha256_file
from ..model.cpllm import ScoringPath
from ..preprocess import prepare
from ..video import read_key_frames
from .losses import pair_gap
from .manifest import Item, read_manifest, resolve


class DatasetError(CpllmError, ValueError):
    """The training data cannot make a batch (no items in the split, bad sampler settings)."""


@dataclass(frozen=True)
class Sample:
    """Indices into the item list: ``first`` alone, or the pair ``(first, second)``.

    ``gap`` is the ground-truth ``q1 - q2`` (or the sign of the known order) for pairs.
    """

    first: int
    second: int | None = None
    gap: float | None = None


class PairSampler:
    """Batches of mixed single and pairwise samples, sharded by rank.

    Each epoch is a permutation of the items (seeded by ``(seed, epoch)``); each item becomes
    the first of a pair with probability ``pair_ratio`` when it has a partner (another file
    of its source with a known order), else a single sample. The list is padded by wrapping
    around to a whole number of global batches (``batch_size * world`` samples), so every
    rank gets the same number of full batches.

    Args:
        items: the training items.
        batch_size: samples per batch and rank.
        pair_ratio: probability that a sample is a pair, in [0, 1].
        seed: base seed.
        rank, world: this process's shard.
    """

    def __init__(self, items: Sequence[Item], batch_size: int, pair_ratio: float = 0.5,
                 seed: int = 0, rank: int = 0, world: int = 1):
        if not items:
            raise DatasetError(message("PairSampler", "at least one training item", "none",
                                       "check the manifest's split column"))
        if batch_size < 1 or not 0.0 <= pair_ratio <= 1.0:
            raise DatasetError(message(
                "PairSampler", "batch_size >= 1 and pair_ratio in [0, 1]",
                f"batch_size={batch_size}, pair_ratio={pair_ratio}", "fix the config"))
        self.items = list(items)
        self.batch_size, self.pair_ratio = batch_size, pair_ratio
        self.seed, self.rank, self.world = seed, rank, world
        by_source: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            by_source.setdefault(it.source, []).append(i)
        # Partners and gaps are fixed by the data; computing them once keeps epochs cheap.
        self.partners: list[list[tuple[int, float]]] = []
        for i, it in enumerate(self.items):
            row = []
            for j in by_source[it.source]:
                gap = pair_gap(it, self.items[j]) if j != i else None
                if gap is not None:
                    row.append((j, gap))
            self.partners.append(row)
        global_batch = batch_size * world
        self.steps_per_epoch = max(1, -(-len(self.items) // global_batch))

    def epoch(self, epoch: int) -> list[Sample]:
        """All samples of ``epoch`` (every rank's), in order."""
        rng = np.random.default_rng([self.seed, epoch, 0x5A])
        out = []
        for i in rng.permutation(len(self.items)):
            pick = rng.random()  # drawn for every item, so the stream does not depend on data
            which = rng.integers(1 << 30)
            row = self.partners[i]
            if row and pick < self.pair_ratio:
                j, gap = row[which % len(row)]
                out.append(Sample(int(i), j, gap))
            else:
                out.append(Sample(int(i)))
        need = self.steps_per_epoch * self.batch_size * self.world
        return [out[k % len(out)] for k in range(need)]

    def batch(self, epoch: int, index: int) -> list[Sample]:
        """This rank's samples of batch ``index`` of ``epoch``."""
        g = self.batch_size * self.world
        chunk = self.epoch(epoch)[index * g:(index + 1) * g]
        return chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]


def high_encoder_id(scorer: ScoringPath, cfg: ModelConfig) -> str:
    """A short hash of the frozen high encoder's weights and view size (the cache key)."""
    h = hashlib.sha256(f"{cfg.high.backbone}:{cfg.view_size}".encode())
    for name, t in sorted(scorer.high.state_dict().items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class ContextCache:
    """Frozen high-level tokens per (video sha256, key frame index, high-encoder id).

    Kept in memory; with ``directory`` also as ``directory/<encoder id>/<sha256>.safetensors``
    (one tensor ``"<frame index>"`` of shape ``(Th, Ch)`` per key frame), so a later run
    skips the high encoder from its first epoch.
    """

    def __init__(self, encoder_id: str, directory: str | Path | None = None):
        self.encoder_id = encoder_id
        self.directory = Path(directory) / encoder_id if directory else None
        self.memory: dict[tuple[str, int], torch.Tensor] = {}
        self.hits = self.misses = 0

    def _file(self, sha: str) -> Path:
        return self.directory / f"{sha}.safetensors"

    def lookup(self, sha: str, indices: Sequence[int]) -> list[torch.Tensor] | None:
        """The cached tokens of these key frames, or None if any is missing."""
        keys = [(sha, int(i)) for i in indices]
        if any(k not in self.memory for k in keys) and self.directory is not None:
            f = self._file(sha)
            if f.is_file():
                from safetensors.torch import load_file

                for name, t in load_file(f).items():
                    self.memory[(sha, int(name))] = t
        if all(k in self.memory for k in keys):
            return [self.memory[k] for k in keys]
        return None

    def store(self, sha: str, indices: Sequence[int], tokens: torch.Tensor) -> None:
        """Keep ``tokens (M, Th, Ch)`` of these key frames (and write them when on disk)."""
        for i, t in zip(indices, tokens.detach().float().cpu(), strict=True):
            self.memory[(sha, int(i))] = t.contiguous()
        if self.directory is not None:
            from safetensors.torch import save_file

            self.directory.mkdir(parents=True, exist_ok=True)
            state = {str(i): t for (s, i), t in self.memory.items() if s == sha}
            atomic(self._file(sha), lambda tmp: save_file(state, tmp))


@dataclass
class Batch:
    """One training batch of B samples over N distinct videos with M key frames each.

    Attributes:
        context: ``(N * M, Th, Ch)`` frozen high-level tokens (video-major).
        patches: ``(N * M, K, 3, P, P)`` float32 in [0, 1], randomly placed.
        videos: N.
        frames: M.
        first: ``(B,)`` long, video index of each sample's first item.
        second: ``(B,)`` long, video index of the second item, -1 for single samples.
        gap: ``(B,)`` float, ``q1 - q2`` (or the order's sign) for pairs, 0 for singles.
        target: ``(B,)`` float, score of the first item (NaN where it has none).
        has_target: ``(B,)`` bool.
        text_rows: ``(Bt,)`` long, samples whose first item has a description.
        text_ids: ``(Bt, O)`` long description tokens + eos, right-padded with the pad id.
        sizes: ``(N, 2)`` long, each video's frame ``(width, height)`` (the describe
            prompt's format fact).
    """

    context: torch.Tensor
    patches: torch.Tensor
    videos: int
    frames: int
    first: torch.Tensor
    second: torch.Tensor
    gap: torch.Tensor
    target: torch.Tensor
    has_target: torch.Tensor
    text_rows: torch.Tensor
    text_ids: torch.Tensor
    sizes: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                  for k, v in vars(self).items()}
        return Batch(**fields)


class TrainingData:
    """Reads a manifest's split and turns sampler output into :class:`Batch` es.

    Args:
        manifest: path of the JSONL manifest.
        cfg: the model config (geometry, key frames M by default).
        split: which split to train on.
        key_frames: M; 0 takes ``cfg.key_frames``.
        cache_frames: keep decoded key frames in memory (decode each file once).
        context_cache: where the high-level tokens are cached.
        workers: threads that decode and preprocess videos of a batch in parallel.
    """

    def __init__(self, manifest: str | Path, cfg: ModelConfig, split: str = "train",
                 key_frames: int = 0, cache_frames: bool = True,
                 context_cache: ContextCache | None = None, workers: int = 0):
        self.manifest = Path(manifest)
        every = read_manifest(self.manifest)
        self.items = [it for it in every if it.split == split]
        if not self.items:
            found = sorted({it.split for it in every})
            raise DatasetError(message(
                f"training data {str(self.manifest)!r}", f"videos in split {split!r}",
                f"none (splits present: {found})", "set split to one of those"))
        self.cfg = cfg
        self.m = key_frames or cfg.key_frames
        self.cache_frames = cache_frames
        self.cache = context_cache
        self.workers = workers
        self._frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._sha: dict[int, str] = {}

    def sha(self, i: int) -> str:
        """The sha256 of item ``i`` (from the manifest, else hashed once from the file)."""
        if i not in self._sha:
            it = self.items[i]
            self._sha[i] = it.sha256 or sha256_file(resolve(self.manifest, it))
        return self._sha[i]

    def key_frames(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``frames (M, H, W, 3)`` uint8 and ``indices (M,)`` of item ``i``."""
        if i in self._frames:
            return self._frames[i]
        k = read_key_frames(resolve(self.manifest, self.items[i]), self.m)
        out = (k.frames, k.indices)
        if self.cache_frames:
            self._frames[i] = out
        return out

    def _prepare(self, i: int, seed: Sequence[int]) -> tuple:
        """Patches, key frame indices, and cached high-level tokens or the views to make them."""
        frames, idx = self.key_frames(i)
        ctx = self.cache.lookup(self.sha(i), idx) if self.cache is not None else None
        x = prepare(frames, self.cfg, np.random.default_rng(list(seed)), views=ctx is None)
        return x.views, x.patches, idx, ctx, (frames.shape[2], frames.shape[1])

    def batch(self, samples: Sequence[Sample], scorer: ScoringPath, seed: Sequence[int],
              tokenizer=None, max_text_tokens: int = 512, device: torch.device | None = None
              ) -> Batch:
        """Build the :class:`Batch` of ``samples``.

        Args:
            samples: from :meth:`PairSampler.batch`.
            scorer: runs the frozen high encoder for frames not in the cache.
            seed: ints seeding the patch placement (e.g. ``(seed, step, rank)``).
            tokenizer: the decoder's tokenizer; None skips the descriptions (no L3).
            max_text_tokens: longest description target, eos included.
            device: where the high encoder runs.
        """
        order: list[int] = []
        for s in samples:
            for i in (s.first, s.second):
                if i is not None and i not in order:
                    order.append(i)
        slot = {i: n for n, i in enumerate(order)}
        jobs = [(i, (*seed, i)) for i in order]
        if self.workers > 0:
            with ThreadPoolExecutor(self.workers) as pool:
                prepared = list(pool.map(lambda a: self._prepare(*a), jobs))
        else:
            prepared = [self._prepare(*a) for a in jobs]
        m = {len(p[2]) for p in prepared}
        if len(m) != 1:
            # Short clips give fewer than M frames; a batch needs one M for all videos.
            raise DatasetError(message(
                "training batch", f"{self.m} key frames from every video",
                f"counts {sorted(m)}", "drop videos shorter than M frames or lower key_frames"))
        contexts = []
        for i, (views, _, idx, ctx, _) in zip(order, prepared, strict=True):
            if ctx is None:
                v = torch.from_numpy(views)
                if device is not None:
                    v = v.to(device)
                t = scorer.context(v).float()
                if self.cache is not None:
                    self.cache.store(self.sha(i), idx, t)
                    self.cache.misses += 1
                contexts.append(t.cpu())
            else:
                self.cache.hits += 1
                contexts.append(torch.stack(ctx))
        nan = float("nan")
        first = [slot[s.first] for s in samples]
        second = [slot[s.second] if s.second is not None else -1 for s in samples]
        gap = [s.gap if s.second is not None else 0.0 for s in samples]
        tgt = [self.items[s.first].target for s in samples]
        rows, ids = [], []
        if tokenizer is not None:
            for b, s in enumerate(samples):
                text = self.items[s.first].description
                if text:
                    tok = tokenizer(text, add_special_tokens=False).input_ids
                    ids.append(tok[:max_text_tokens - 1] + [tokenizer.eos_token_id])
                    rows.append(b)
        pad = tokenizer.pad_token_id if tokenizer is not None else 0
        width = max((len(t) for t in ids), default=0)
        text_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        for r, t in enumerate(ids):
            text_ids[r, :len(t)] = torch.tensor(t)
        return Batch(
            context=torch.cat(contexts),
            patches=torch.from_numpy(np.concatenate([p[1] for p in prepared])),
            videos=len(order), frames=m.pop(),
            first=torch.tensor(first), second=torch.tensor(second),
            gap=torch.tensor(gap, dtype=torch.float32),
            target=torch.tensor([nan if t is None else t for t in tgt], dtype=torch.float32),
            has_target=torch.tensor([t is not None for t in tgt]),
            text_rows=torch.tensor(rows, dtype=torch.long), text_ids=text_ids,
            sizes=torch.tensor([p[4] for p in prepared], dtype=torch.long))

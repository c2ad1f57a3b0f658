"""Frozen features, computed once per video, so CPU training runs only what it trains.

On two CPU cores a full step of ``cpllm-lite`` (the 448 view plus 8 patches through
EfficientNet-Lite0, forward and backward in torch) trains about 8 patches a second. Most of
that is spent at high resolution in the first blocks of the pixel encoder. The recipe
(:mod:`cpllm_plugin.training.recipe`) therefore keeps the stem and the first
``frozen_blocks`` blocks of the low-level encoder at their pretrained ImageNet values (the
high-level encoder is frozen anyway, paper Table 4c) and computes, once per video and with
ONNX Runtime:

- ``stem``   ``(M, K, C, h, w)`` float16: the K patches of each of the M key frames through the
  first :data:`FROZEN_BLOCKS` blocks (11 ends stage 5 of EfficientNet-Lite0: 112 x 14 x 14);
  training may freeze more blocks (they are then run once over the cache, in memory);
- ``ctx``    ``(M, Ch)`` float32: the token mean of the frozen high-level encoder on each 448
  view, which is all the quality head reads of it (``mean(W t + b) = W mean(t) + b``);
- ``tokens`` ``(Th, Ch)`` float16: all high-level tokens of the key frame the decoder sees.

Patches sit at the inference layout (no random placement), and every encoder block stays in
eval mode (BatchNorm statistics and drop-connect as at inference), so a score computed from
the cache equals the ONNX graph's score of the same video up to the float16 rounding of the
stored features. Training on the cache runs the last blocks (stages 6 and 7 and the head
convolution, 3.4M of the encoder's 4.65M parameters) at about 40 patches a second on one core,
against 4 for the whole encoder.

Files: ``DIR/<key>/<video sha256>.safetensors``; ``key`` names the encoders' weights, the
low-level input mode, the split point and M, so a changed setting never reads stale features.
A file that exists is complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..configs import ModelConfig
from ..console import progress_printer
from ..errors import CpllmError, message
from ..files import atomic
from ..hashing import sha256_file
from ..model.cpllm import ScoringPath
from ..preprocess import key_frame_indices, prepare
from ..video import read_key_frames
from .manifest import Item, resolve

FROZEN_BLOCKS = 11  # EfficientNet-Lite0: stem + stages 1-5 (112 channels at stride 16)


def keep_freed_memory() -> None:
    """Keep freed memory in the process instead of returning it to the kernel (glibc).

    A training step allocates activations of tens of MB; glibc serves those with mmap and
    unmaps them on free, so every step faults the same pages in again and kernel time eats
    the step (docs/experiments.md, "Kernel time"). The same can be had from the shell with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap for large blocks
        libc.mallopt(-1, 1 << 40)  # M_TRIM_THRESHOLD: never trim the heap
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


class CacheError(CpllmError, RuntimeError):
    """A frozen-feature cache cannot be built or read."""


class _Stem(nn.Module):
    def __init__(self, scorer: ScoringPath, blocks: int):
        super().__init__()
        self.low, self.blocks = scorer.low, blocks

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.low.stem(patches, self.blocks)


class _High(nn.Module):
    def __init__(self, scorer: ScoringPath):
        super().__init__()
        self.high = scorer.high

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.high(views)


def cache_key(scorer: ScoringPath, cfg: ModelConfig, blocks: int, key_frames: int) -> str:
    """A short name for the frozen parts' weights and the input settings."""
    h = hashlib.sha256(f"{cfg.high.backbone}:{cfg.low.backbone}:{cfg.view_size}:{cfg.fit}:"
                       f"{cfg.patch_size}:{cfg.num_patches}:{cfg.low_input}".encode())
    if cfg.placement != "grid":  # grid keys stay as they were, so existing caches still hit
        h.update(f":{cfg.placement}".encode())
    frozen = {f"high.{k}": v for k, v in scorer.high.state_dict().items()}
    frozen |= {f"low.{k}": v for k, v in scorer.low.state_dict().items()
               if _frozen_param(k, blocks)}
    for name, t in sorted(frozen.items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    place = "" if cfg.placement == "grid" else f"-{cfg.placement}"
    return f"{cfg.low_input}{place}-b{blocks}-m{key_frames}-{h.hexdigest()[:12]}"


def _frozen_param(name: str, blocks: int) -> bool:
    """Whether a low-encoder state-dict entry belongs to the stem or the first ``blocks``."""
    parts = name.split(".")
    if "_blocks" in parts:
        return int(parts[parts.index("_blocks") + 1]) < blocks
    return any(p in ("_conv_stem", "_bn0") for p in parts)


def frozen_parameters(scorer: ScoringPath, blocks: int) -> list[str]:
    """Names of the scorer parameters that split training keeps fixed."""
    return [n for n, _ in scorer.named_parameters()
            if n.startswith("high.") or (n.startswith("low.") and _frozen_param(n, blocks))]


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """A small ONNX graph of a frozen part (legacy exporter, dynamic batch), atomically."""
    if path.is_file():
        return path

    def make(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(module.eval(), (torch.rand(*shape),), str(tmp), dynamo=False,
                              input_names=["x"], output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})

    return atomic(path, make)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Features:
    """The cached features of one video (see the module docstring for shapes)."""

    stem: np.ndarray
    ctx: np.ndarray
    tokens: np.ndarray
    indices: np.ndarray


class FeatureCache:
    """Frozen features of videos, built with ONNX Runtime and kept as safetensors files.

    Args:
        scorer: the model's scoring path (its frozen parts are exported once).
        cfg: the model config (geometry, low-level input mode).
        directory: the cache folder (``DIR``).
        blocks: frozen blocks of the low-level encoder.
        key_frames: M per video.
        threads: ONNX Runtime threads.
    """

    def __init__(self, scorer: ScoringPath, cfg: ModelConfig, directory: str | os.PathLike,
                 blocks: int = FROZEN_BLOCKS, key_frames: int = 5, threads: int = 2):
        self.scorer, self.cfg, self.blocks, self.m = scorer, cfg, blocks, key_frames
        self.threads = threads
        self.key = cache_key(scorer, cfg, blocks, key_frames)
        self.dir = Path(directory) / self.key
        self._sessions = None

    def path(self, sha: str) -> Path:
        return self.dir / f"{sha}.safetensors"

    def _graphs(self):
        if self._sessions is None:
            g = self.dir / "graphs"
            p, s = self.cfg.patch_size, self.cfg.view_size
            stem = _export(_Stem(self.scorer, self.blocks), (2, 3, p, p), g / "stem.onnx")
            high = _export(_High(self.scorer), (1, 3, s, s), g / "high.onnx")
            self._sessions = (_session(stem, self.threads), _session(high, self.threads))
        return self._sessions

    def compute(self, frames: np.ndarray, indices: np.ndarray) -> Features:
        """Features of key frames ``(M, H, W, 3)`` uint8 (already chosen)."""
        stem, high = self._graphs()
        x = prepare(frames, self.cfg)
        m, k = x.patches.shape[:2]
        feats = stem.run(None, {"x": x.patches.reshape(m * k, *x.patches.shape[2:])})[0]
        tokens = high.run(None, {"x": x.views})[0]  # (M, Th, Ch)
        pick = int(key_frame_indices(m, self.cfg.decoder_frames)[0])
        return Features(feats.reshape(m, k, *feats.shape[1:]).astype(np.float16),
                        tokens.mean(axis=1).astype(np.float32),
                        tokens[pick].astype(np.float16), np.asarray(indices, np.int64))

    def get(self, sha: str) -> Features | None:
        """The stored features of a video, or None."""
        f = self.path(sha)
        if not f.is_file():
            return None
        from safetensors.numpy import load_file

        d = load_file(f)
        return Features(d["stem"], d["ctx"], d["tokens"], d["indices"])

    def put(self, sha: str, feats: Features) -> None:
        from safetensors.numpy import save_file

        atomic(self.path(sha), lambda tmp: save_file(
            {"stem": feats.stem, "ctx": feats.ctx, "tokens": feats.tokens,
             "indices": feats.indices}, str(tmp)))

    def build(self, manifest: str | os.PathLike, items: Sequence[Item],
              progress: Callable[[str], None] | bool = True) -> dict[str, float]:
        """Compute what is missing for ``items``; resumable. Returns timing counters.

        Decoding and preprocessing of the next video overlap ONNX Runtime on the current one.
        """
        say = progress_printer(progress)
        todo, seen = [], set()
        for it in items:
            sha = it.sha256 or sha256_file(resolve(manifest, it))
            if sha not in seen and not self.path(sha).is_file():
                seen.add(sha)
                todo.append((it, sha))
        say(f"feature cache {self.key}: {len(items) - len(todo)} of {len(items)} videos "
            f"cached, {len(todo)} to compute")
        self._graphs()
        t0, stats = time.perf_counter(), {"videos": len(todo), "decode_s": 0.0,
                                          "compute_s": 0.0}

        def load(job):
            it, sha = job
            t = time.perf_counter()
            k = read_key_frames(resolve(manifest, it), self.m)
            if len(k.indices) != self.m:
                raise CacheError(message(
                    f"feature cache: {it.path}", f"{self.m} key frames", f"{len(k.indices)}",
                    "drop videos shorter than M frames from the manifest"))
            return it, sha, k, time.perf_counter() - t

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(load, todo[0]) if todo else None
            for n in range(len(todo)):
                it, sha, k, dt = pending.result()
                pending = pool.submit(load, todo[n + 1]) if n + 1 < len(todo) else None
                t = time.perf_counter()
                self.put(sha, self.compute(k.frames, k.indices))
                stats["decode_s"] += dt
                stats["compute_s"] += time.perf_counter() - t
                if (n + 1) % 25 == 0 or n + 1 == len(todo):
                    rate = (n + 1) / (time.perf_counter() - t0)
                    say(f"[cache {n + 1}/{len(todo)}] {it.source}: {rate:.2f} videos/s, "
                        f"eta {(len(todo) - n - 1) / rate:.0f} s")
        stats["wall_s"] = time.perf_counter() - t0
        return stats

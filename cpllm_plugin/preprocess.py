"""Frames to model inputs: the one preprocessing path every entry point uses (numpy only).

    frames (N, H, W, 3) -> M key frames -> per key frame:
        view     (3, 448, 448)       bilinear resize, aspect ratio ignored      (high-level)
        patches  (K, 3, 224, 224)    K patches from the frame fitted in 540x1080 (low-level)

Values stay float32 in [0, 1]; each encoder normalises inside the model, so every backend
(torch, ONNX Runtime, TensorRT) takes exactly these arrays.

Rules (paper section 4.1, plus what the paper leaves open):

* Key frames: the i-th of M key frames is frame ``floor((i + 0.5) * N / M)``, the middle of
  the i-th of M equal segments. With ``N <= M`` every frame is used once.
* Resizing is bilinear with a triangle filter widened by the scale factor when shrinking
  (antialiased, like PIL's ``BILINEAR``), so a 1080p frame shrunk to 448 does not alias.
* The fit: the frame is scaled, aspect ratio kept, by ``min(540 / short side, 1080 / long
  side)``: landscape frames fit 540 high x 1080 wide, portrait frames 1080 high x 540 wide.
  Small frames are scaled up as well: the paper resizes to a fixed resolution, so the low-level
  encoder sees a low-resolution video as blurry, as a viewer would at that size.
* Frames too thin for a patch: when a side is still shorter than a patch after the fit
  (aspect ratio above about 4.8:1), the frame is scaled up until its short side equals the
  patch size, aspect ratio kept. Every frame of at least 1x1 pixel therefore yields K patches.
* Patch placement: the K patches lie on an r x c grid with ``r * c == K``; of the factor pairs,
  the one that packs the fitted frame least densely is used (2 rows x 4 columns for 16:9
  landscape, 4 x 2 for portrait). Along an axis with room for its n patches they sit at the
  centres of n equal segments (no overlap, equal gaps); without room they are spread from edge
  to edge with equal overlap (4:3 frames, 720x540, overlap by about 59 px).
* Training may place patches at random (``rng``): each patch moves uniformly within its grid
  cell, or anywhere along an axis that has no room.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import (
    EmptyInputError,
    FrameDtypeError,
    FrameShapeError,
    NonFiniteError,
    message,
)


class Geometry(Protocol):
    """The preprocessing fields of a model config (:class:`cpllm_plugin.configs.ModelConfig`)."""

    view_size: int
    fit: tuple[int, int]
    patch_size: int
    num_patches: int


@dataclass(frozen=True)
class Inputs:
    """Model inputs for M key frames.

    Attributes:
        views: ``(M, 3, S, S)`` float32 in [0, 1], S = view size (448); None when not asked.
        patches: ``(M, K, 3, P, P)`` float32 in [0, 1], P = patch size (224).
    """

    views: np.ndarray | None
    patches: np.ndarray


# --- checking what the user handed in ---------------------------------------------------


def as_frames(frames: Any, where: str = "score()") -> np.ndarray:
    """Check and stack frames into one ``(N, H, W, 3)`` array.

    Args:
        frames: a ``(N, H, W, 3)`` or ``(H, W, 3)`` array, or a list of ``(H, W, 3)`` arrays
            of one size; uint8 RGB (0-255) or float in [0, 1].
        where: the caller, for error messages.

    Returns:
        ``(N, H, W, 3)`` uint8, or float32 in [0, 1].
    """
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise EmptyInputError(message(
                where, "at least one frame", "an empty list",
                "pass a non-empty list of (H, W, 3) arrays or a video path"))
        arrays = [np.asarray(f) for f in frames]
        for i, a in enumerate(arrays):
            if a.ndim != 3:
                raise FrameShapeError(message(
                    where, "each list item of shape (H, W, 3)",
                    f"item {i} with shape {a.shape}", "pass one RGB image per list item"))
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise FrameShapeError(message(
                where, "frames of one size", f"sizes {sorted(shapes)}",
                "resize the frames to one size, or score them in separate calls"))
        frames = np.stack(arrays)
    elif not isinstance(frames, np.ndarray):
        raise FrameDtypeError(message(
            where, "a numpy array (N, H, W, 3), a list of (H, W, 3) arrays, or a video path",
            f"{type(frames).__name__}", "convert with np.asarray(...) or pass a file path"))
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4:
        raise FrameShapeError(message(
            where, "an array of shape (N, H, W, 3) or (H, W, 3)",
            f"shape {frames.shape}", "pass RGB frames with channels last"))
    if frames.shape[-1] != 3:
        hint = {1: "repeat the gray channel: np.repeat(frames, 3, axis=-1)",
                4: "drop alpha: frames[..., :3]"}.get(
            frames.shape[-1],
            "put channels last (frames.transpose(0, 2, 3, 1) for (N, 3, H, W)) in RGB order")
        raise FrameShapeError(message(
            where, "3 channels last (N, H, W, 3) RGB",
            f"shape {frames.shape} with {frames.shape[-1]} channels", hint))
    if 0 in frames.shape:
        raise EmptyInputError(message(
            where, "at least one frame of at least 1x1 pixels", f"shape {frames.shape}",
            "check the frame source; nothing was decoded"))
    if frames.dtype == np.uint8:
        return frames
    if np.issubdtype(frames.dtype, np.floating):
        finite = np.isfinite(frames)
        if not finite.all():
            bad = int((~finite).sum())
            raise NonFiniteError(message(
                where, "finite values", f"{bad} NaN or infinite values",
                "find where the NaNs come from; np.nan_to_num(frames) hides them"))
        lo, hi = float(frames.min()), float(frames.max())
        if lo < 0.0 or hi > 1.0:
            raise NonFiniteError(message(
                where, "float frames in [0, 1]", f"values in [{lo:.4g}, {hi:.4g}]",
                "divide 0-255 data by 255 (or pass uint8), clip to [0, 1]"))
        return frames.astype(np.float32, copy=False)
    fix = ("scale to [0, 1]: (frames / 1023).astype(np.float32) for 10-bit data, / 65535 "
           "for 16-bit" if frames.dtype == np.uint16 else "convert to uint8 RGB (0-255)")
    raise FrameDtypeError(message(
        where, "uint8 RGB (0-255) or float in [0, 1]", f"dtype {frames.dtype}", fix))


def key_frame_indices(n: int, m: int) -> np.ndarray:
    """Indices of M key frames spread uniformly over N frames: ``(M',)`` int64, M' = min(M, N)."""
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64)


# --- resizing ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows and weights ``(n_out, taps)`` of a triangle filter from n_in to n_out."""
    scale = n_in / n_out
    support = max(scale, 1.0)  # widen the filter when shrinking: antialiasing
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.floor(centre - support + 0.5).astype(np.int64)
    idx = first[:, None] + np.arange(int(math.ceil(2 * support)) + 1)[None, :]
    w = np.clip(1.0 - np.abs((idx + 0.5 - centre[:, None]) / support), 0.0, None)
    w[(idx < 0) | (idx >= n_in)] = 0.0  # taps outside the image drop out, weights renormalise
    w /= w.sum(axis=1, keepdims=True)
    used = w.max(axis=0) > 0
    return np.clip(idx, 0, n_in - 1)[:, used], w[:, used].astype(np.float32)


def _resize_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resize axis 0 by gathering whole rows: contiguous copies, and uint8 is read as is."""
    idx, w = _taps(x.shape[0], n_out)
    out = w[:, 0, None, None] * x[idx[:, 0]]
    for t in range(1, idx.shape[1]):
        out += w[:, t, None, None] * x[idx[:, t]]
    return out


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize, antialiased when shrinking: ``(H, W, C)`` to ``(height, width, C)`` float32.

    Matches PIL's ``BILINEAR`` to within one 8-bit level. uint8 input comes out scaled to
    [0, 1]; float input is taken as [0, 1] already.
    """
    out = img if img.shape[0] == height else _resize_rows(img, height)
    if img.shape[1] != width:
        out = _resize_rows(np.ascontiguousarray(out.transpose(1, 0, 2)), width).transpose(1, 0, 2)
    if img.dtype == np.uint8:
        return out * np.float32(1 / 255)
    return out.astype(np.float32, copy=False)


# --- the low-level fit and patch layout -------------------------------------------------


def fit_size(height: int, width: int, fit: tuple[int, int], patch: int) -> tuple[int, int]:
    """Size ``(h, w)`` of a frame fitted in the ``fit`` box (short, long), aspect ratio kept.

    Landscape frames fit ``fit[0]`` high x ``fit[1]`` wide, portrait frames the transpose.
    A frame whose short side would be below ``patch`` is scaled so that it equals ``patch``.
    """
    short, long_ = min(height, width), max(height, width)
    scale = min(fit[0] / short, fit[1] / long_)
    if short * scale < patch:
        scale = patch / short
    # max() only guards against rounding a side to patch - 1
    return max(patch, round(height * scale)), max(patch, round(width * scale))


def patch_grid(height: int, width: int, k: int, patch: int) -> tuple[int, int]:
    """Rows and columns ``(r, c)``, ``r * c == k``, that pack k patches into the frame best."""
    pairs = [(r, k // r) for r in range(1, k + 1) if k % r == 0]
    # Density of the fuller axis; ties go to more columns for landscape, more rows for portrait.
    return min(pairs, key=lambda rc: (max(rc[0] * patch / height, rc[1] * patch / width),
                                      -rc[1] if width >= height else -rc[0]))


def _starts(length: int, n: int, patch: int, rng: np.random.Generator | None) -> np.ndarray:
    """Start offsets of n patches along one axis of ``length`` pixels."""
    if n * patch <= length:
        cell = length / n
        if rng is None:
            return np.round((np.arange(n) + 0.5) * cell - patch / 2).astype(np.int64)
        lo = np.ceil(np.arange(n) * cell)
        hi = np.floor((np.arange(n) + 1) * cell) - patch
        return (lo + np.floor(rng.random(n) * (hi - lo + 1))).astype(np.int64)
    if rng is not None:
        return rng.integers(0, length - patch + 1, size=n)
    if n == 1:
        return np.array([(length - patch) // 2], np.int64)
    return np.round(np.linspace(0, length - patch, n)).astype(np.int64)


def patch_positions(height: int, width: int, k: int, patch: int,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Top-left corners ``(k, 2)`` int64 (y, x) of the k patches, row by row.

    Args:
        height, width: the fitted frame size (see :func:`fit_size`).
        k: number of patches.
        patch: patch side.
        rng: None for the fixed inference layout, a generator for random placement.
    """
    rows, cols = patch_grid(height, width, k, patch)
    ys = _starts(height, rows, patch, rng)
    xs = _starts(width, cols, patch, rng)
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(k, 2)


# --- the whole path ---------------------------------------------------------------------


def make_view(frame: np.ndarray, geo: Geometry) -> np.ndarray:
    """The high-level view ``(3, S, S)`` float32 of one ``(H, W, 3)`` frame."""
    return resize(frame, geo.view_size, geo.view_size).transpose(2, 0, 1)


def make_patches(frame: np.ndarray, geo: Geometry,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """The K low-level patches ``(K, 3, P, P)`` float32 of one ``(H, W, 3)`` frame."""
    h, w = frame.shape[:2]
    fh, fw = fit_size(h, w, tuple(geo.fit), geo.patch_size)
    fitted = resize(frame, fh, fw)
    p = geo.patch_size
    pos = patch_positions(fh, fw, geo.num_patches, p, rng)
    return np.stack([fitted[y:y + p, x:x + p] for y, x in pos]).transpose(0, 3, 1, 2)


def prepare_frame(frame: np.ndarray, geo: Geometry,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One ``(H, W, 3)`` frame to ``view (3, S, S)`` and ``patches (K, 3, P, P)`` float32."""
    return make_view(frame, geo), make_patches(frame, geo, rng)


def prepare(frames: np.ndarray, geo: Geometry, rng: np.random.Generator | None = None,
            views: bool = True) -> Inputs:
    """Key frames ``(M, H, W, 3)`` (uint8, or float in [0, 1]) to model :class:`Inputs`.

    ``views=False`` skips the high-level views (``Inputs.views`` is None): training reuses
    cached high-level tokens and needs only fresh patches.
    """
    patches = np.stack([make_patches(f, geo, rng) for f in frames])
    return Inputs(np.stack([make_view(f, geo) for f in frames]) if views else None, patches)

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
* ``placement="detail"`` (not in the paper): each patch still has its own grid cell, but moves
  inside it to the window with the most luma detail (gradient energy of the frame pooled 4x4,
  so compression noise does not move it), ties going to the patch's grid spot. The grid's fixed
  spots land on flat colour in screen content and slides (six of eight on a 1080p slide),
  where the pixel encoder learns nothing about the encode; text, edges and texture are where
  compression shows. Along an axis without room a patch keeps its grid position.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
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
    low_input: str
    placement: str


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
#
# A bilinear resize is two 1-D passes, each a multiplication by a (n_out, n_in) weight matrix
# that is zero outside a narrow band (a few taps per output). Gathering rows tap by tap, as a
# direct implementation does, makes float temporaries and strided transposes that cost far
# more than the arithmetic. Here each band of outputs becomes one small BLAS matmul with the
# dense block of the weight matrix that its taps touch: no gathers, no transposes between the
# passes, and the matrix is never built whole (an 8K frame would need tens of MB).
#
# Frames are kept as (H, C, W) float32 internally: the row pass then multiplies (H, C*W) from
# the left and the column pass multiplies (H*C, W) from the right, both plain 2-D BLAS calls,
# and patches come out channels-first with one strided copy. uint8 rows are converted in
# slabs, once for all targets, so an 8K frame never exists as a whole in float32.

_ROW_TAPS = 12  # input rows per row band; small blocks: the matmul is wide (C*W columns)
_COL_TAPS = 48  # input columns per column band; the matmul has few columns, so wider blocks
_SLAB = 48  # input rows converted to float32 at a time
# Multiply-adds per BLAS call at most. OpenBLAS splits a product above 4 * 65536 over its
# threads, and on products this small the hand-offs cost more than they give, so calls stay
# under it (docs/experiments.md, "BLAS threads in preprocessing").
_CALL = 4 * 65536


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


Band = tuple[int, int, int, int, np.ndarray]


@functools.lru_cache(maxsize=64)
def _bands(n_in: int, n_out: int, gain: float, taps: int) -> tuple[Band, ...]:
    """The weight matrix of :func:`_taps` cut into dense blocks along its band.

    Args:
        n_in, n_out: input and output length.
        gain: factor folded into the weights (1/255 turns uint8 into [0, 1] for free).
        taps: about how many inputs one block should span; sets outputs per block.

    Returns:
        Blocks ``(o0, o1, i0, i1, m)``: outputs ``o0:o1`` are ``m @ inputs[i0:i1]``, with
        ``m`` of shape ``(o1 - o0, i1 - i0)`` float32, read-only.
    """
    idx, w = _taps(n_in, n_out)
    w = w * np.float32(gain)
    live = w > 0
    lo = np.where(live, idx, n_in).min(axis=1)
    hi = np.where(live, idx, -1).max(axis=1) + 1
    step = max(1, round(taps * n_out / n_in))  # outputs whose taps span about `taps` inputs
    out = []
    for o0 in range(0, n_out, step):
        o1 = min(o0 + step, n_out)
        i0, i1 = int(lo[o0:o1].min()), int(hi[o0:o1].max())
        m = np.zeros((o1 - o0, i1 - i0), np.float32)
        rows = np.broadcast_to(np.arange(o1 - o0)[:, None], idx[o0:o1].shape)
        keep = live[o0:o1]
        m[rows[keep], idx[o0:o1][keep] - i0] = w[o0:o1][keep]  # taps of one output are distinct
        m.flags.writeable = False
        out.append((o0, o1, i0, i1, m))
    return tuple(out)


def _row_pass(x: np.ndarray, bands: tuple[Band, ...], out: np.ndarray, start: int = 0) -> None:
    """``out[o] = sum_i m[o, i] x[i - start]`` over axis 0: ``(n, C, W)`` into ``(h, C, W)``."""
    x2, out2 = x.reshape(x.shape[0], -1), out.reshape(out.shape[0], -1)
    for o0, o1, i0, i1, m in bands:
        step = max(64, _CALL // m.size)
        for j in range(0, x2.shape[1], step):
            np.matmul(m, x2[i0 - start:i1 - start, j:j + step], out=out2[o0:o1, j:j + step])


def _col_pass(x: np.ndarray, bands: tuple[Band, ...], out: np.ndarray) -> None:
    """The same along the last axis: ``(n, C, W)`` into ``(n, C, w)``."""
    x2, out2 = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
    for o0, o1, i0, i1, m in bands:
        step = max(64, _CALL // m.size)
        for j in range(0, x2.shape[0], step):
            np.matmul(x2[j:j + step, i0:i1], m.T, out=out2[j:j + step, o0:o1])


def _cost(bands: tuple[Band, ...]) -> int:
    """Multiply-adds per row (or column) the bands take."""
    return sum((o1 - o0) * (i1 - i0) for o0, o1, i0, i1, _ in bands)


def _resize_hcw(img: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Resize one ``(H, W, C)`` image to several sizes at once: ``(h, C, w)`` float32 each.

    uint8 input is scaled to [0, 1] (the 1/255 sits in the first pass's weights), float input
    is taken as is. The image is converted to float32 ``(rows, C, W)`` one slab of rows at a
    time and every target takes what it needs from the slab, so the conversion is shared.
    Each target runs the pass that does less work first: usually the one that shrinks more.
    """
    n_h, n_w, c = img.shape
    gain = 1 / 255 if img.dtype == np.uint8 else 1.0
    plans = []  # (rows first, row bands, column bands, middle buffer, output)
    for h, w in sizes:
        out = np.empty((h, c, w), np.float32)
        if n_h == h:  # a column pass alone (it also applies the gain)
            plans.append((False, None, _bands(n_w, w, gain, _COL_TAPS), out, out))
            continue
        if n_w == w:  # a row pass alone
            plans.append((True, _bands(n_h, h, gain, _ROW_TAPS), None, out, out))
            continue
        rows_first = (c * n_w * _cost(_bands(n_h, h, 1.0, _ROW_TAPS))
                      + c * h * _cost(_bands(n_w, w, 1.0, _COL_TAPS))
                      <= c * n_h * _cost(_bands(n_w, w, 1.0, _COL_TAPS))
                      + c * w * _cost(_bands(n_h, h, 1.0, _ROW_TAPS)))
        if rows_first:
            plans.append((True, _bands(n_h, h, gain, _ROW_TAPS), _bands(n_w, w, 1.0, _COL_TAPS),
                          np.empty((h, c, n_w), np.float32), out))
        else:
            plans.append((False, _bands(n_h, h, 1.0, _ROW_TAPS), _bands(n_w, w, gain, _COL_TAPS),
                          np.empty((n_h, c, w), np.float32), out))

    # Row bands read a window of input rows; the slab buffer keeps the rows still needed.
    span = max([i1 - i0 for p in plans if p[0] for _, _, i0, i1, _ in p[1]], default=0)
    buf = np.empty((min(n_h, span + _SLAB), c, n_w), np.float32)
    nxt = [0] * len(plans)  # next row band of each rows-first plan
    lo = hi = 0  # buf holds input rows lo:hi
    while hi < n_h:
        need = [p[1][k][2] for p, k in zip(plans, nxt, strict=True) if p[0] and k < len(p[1])]
        keep = min(need + [hi])
        if keep > lo:
            buf[:hi - keep] = buf[keep - lo:hi - lo]  # numpy copies overlapping rows safely
            lo = keep
        top = min(n_h, lo + len(buf))
        buf[hi - lo:top - lo] = img[hi:top].transpose(0, 2, 1)
        fresh = buf[hi - lo:top - lo]
        for i, (rows_first, rb, cb, mid, _) in enumerate(plans):
            if not rows_first:
                _col_pass(fresh, cb, mid[hi:top])
                continue
            k = nxt[i]
            while k < len(rb) and rb[k][3] <= top:
                k += 1
            _row_pass(buf[:top - lo], rb[nxt[i]:k], mid, lo)
            nxt[i] = k
        hi = top

    for rows_first, rb, cb, mid, out in plans:
        if mid is out:
            continue
        if rows_first:
            _col_pass(mid, cb, out)
        else:
            _row_pass(mid, rb, out)
    return [p[4] for p in plans]


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize, antialiased when shrinking: ``(H, W, C)`` to ``(height, width, C)`` float32.

    Matches PIL's ``BILINEAR`` to within one 8-bit level. uint8 input comes out scaled to
    [0, 1]; float input is taken as [0, 1] already. Two banded matmuls (see above).
    """
    return np.ascontiguousarray(_resize_hcw(img, [(height, width)])[0].transpose(0, 2, 1))


# --- the low-level fit and patch layout -------------------------------------------------


LOW_INPUTS = ("fit", "native", "pixels")
PLACEMENTS = ("grid", "detail")
DETAIL_POOL = 4  # detail is measured on the frame pooled 4x4: structure, not grain or noise


def fit_size(height: int, width: int, fit: tuple[int, int], patch: int,
             mode: str = "fit") -> tuple[int, int]:
    """Size ``(h, w)`` of a frame fitted in the ``fit`` box (short, long), aspect ratio kept.

    Landscape frames fit ``fit[0]`` high x ``fit[1]`` wide, portrait frames the transpose.
    A frame whose short side would be below ``patch`` is scaled so that it equals ``patch``.

    ``mode="native"`` never shrinks: a frame larger than the box keeps its own size, so the
    patches see its native pixels (halving a 1080p frame filters out the fine artifacts that
    separate neighbouring CRFs). Smaller frames are scaled up as in ``"fit"``.

    ``mode="pixels"`` never shrinks and scales up only as far as one patch needs (a 120p
    frame to 224 high, not to 540): scaled up 4.5 times, a clean 120p frame looks like a
    blurred or upscaled one, which the pseudo-labels (VMAF against the source itself) call
    excellent and poor respectively.
    """
    short, long_ = min(height, width), max(height, width)
    scale = min(fit[0] / short, fit[1] / long_)
    if mode == "native" and scale < 1.0:
        scale = 1.0
    elif mode == "pixels":
        scale = 1.0
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
                    rng: np.random.Generator | None = None,
                    detail: np.ndarray | None = None) -> np.ndarray:
    """Top-left corners ``(k, 2)`` int64 (y, x) of the k patches, row by row.

    Args:
        height, width: the fitted frame size (see :func:`fit_size`).
        k: number of patches.
        patch: patch side.
        rng: None for the fixed inference layout, a generator for random placement.
        detail: the fitted frame's :func:`detail_map` for ``placement="detail"``; None for
            the grid.
    """
    rows, cols = patch_grid(height, width, k, patch)
    if detail is not None:
        return _detail_positions(detail, height, width, rows, cols, patch, rng)
    ys = _starts(height, rows, patch, rng)
    xs = _starts(width, cols, patch, rng)
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(k, 2)


def detail_map(luma: np.ndarray) -> np.ndarray:
    """Gradient energy ``(h // 4, w // 4)`` float64 of a luma plane, pooled 4x4 first."""
    q = DETAIL_POOL
    h, w = luma.shape[0] // q * q, luma.shape[1] // q * q
    small = luma[:h, :w].reshape(h // q, q, w // q, q).mean(axis=(1, 3), dtype=np.float32)
    g = np.zeros(small.shape, np.float64)
    g[:, 1:] += np.abs(np.diff(small, axis=1))
    g[1:, :] += np.abs(np.diff(small, axis=0))
    return g


def _luma(img: np.ndarray, channel_axis: int) -> np.ndarray:
    """Rec. 601 luma ``(h, w)`` float32 of an RGB plane stack (any scale: only ratios count)."""
    rgb = np.moveaxis(img, channel_axis, -1)
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _candidates(length: int, n: int, i: int, patch: int) -> np.ndarray:
    """Starts patch ``i`` of ``n`` may take along an axis: its grid spot first, then every
    multiple of the pooling inside its cell (only the grid spot on an axis without room)."""
    grid = int(_starts(length, n, patch, None)[i])
    if n * patch > length:
        return np.array([grid])
    cell, q = length / n, DETAIL_POOL
    lo, hi = math.ceil(i * cell), math.floor((i + 1) * cell) - patch
    return np.concatenate([[grid], np.arange(-(-lo // q), hi // q + 1) * q])


def _detail_positions(detail: np.ndarray, height: int, width: int, rows: int, cols: int,
                      patch: int, rng: np.random.Generator | None) -> np.ndarray:
    q, win = DETAIL_POOL, patch // DETAIL_POOL
    # Integral image: the detail of any window is four lookups.
    integral = np.zeros((detail.shape[0] + 1, detail.shape[1] + 1))
    integral[1:, 1:] = detail.cumsum(0).cumsum(1)
    out = np.empty((rows * cols, 2), np.int64)
    for r in range(rows):
        ys = _candidates(height, rows, r, patch)
        for c in range(cols):
            xs = _candidates(width, cols, c, patch)
            yy, xx = (g.ravel() for g in np.meshgrid(ys, xs, indexing="ij"))
            a = np.clip(yy // q, 0, detail.shape[0] - win)
            b = np.clip(xx // q, 0, detail.shape[1] - win)
            e = (integral[a + win, b + win] - integral[a, b + win] - integral[a + win, b]
                 + integral[a, b])
            # Nearest the grid spot first (it is candidate 0), so argmax gives ties to it and
            # a flat cell keeps its grid spot.
            order = np.argsort(np.hypot(yy - yy[0], xx - xx[0]), kind="stable")
            e, yy, xx = e[order], yy[order], xx[order]
            if rng is None:
                j = int(np.argmax(e))
            else:  # training: any of the cell's most detailed quarter of windows
                top = np.flatnonzero(e >= np.quantile(e, 0.75))
                j = int(top[rng.integers(top.size)])
            out[r * cols + c] = yy[j], xx[j]
    return out


# --- the whole path ---------------------------------------------------------------------


def _fill(frame: np.ndarray, geo: Geometry, rng: np.random.Generator | None,
          view: np.ndarray | None, patches: np.ndarray) -> None:
    """Write the view ``(3, S, S)`` (unless None) and patches ``(K, 3, P, P)`` of one frame.

    Both come from one :func:`_resize_hcw` call, so the frame is converted to float once.
    """
    h, w = frame.shape[:2]
    fh, fw = fit_size(h, w, tuple(geo.fit), geo.patch_size, geo.low_input)
    p = geo.patch_size

    def place(img: np.ndarray, channel_axis: int) -> np.ndarray:
        """Patch corners in ``img``, the fitted frame the patches are cut from."""
        detail = detail_map(_luma(img, channel_axis)) if geo.placement == "detail" else None
        return patch_positions(fh, fw, geo.num_patches, p, rng, detail)

    if (fh, fw) == (h, w):
        pos = place(frame, -1)
        # Native pixels: cut the patches straight from the frame, no resize of the whole frame.
        gain = np.float32(1 / 255) if frame.dtype == np.uint8 else np.float32(1)
        for k, (y, x) in enumerate(pos):
            np.multiply(frame[y:y + p, x:x + p].transpose(2, 0, 1), gain, out=patches[k],
                        casting="unsafe")
        if view is not None:
            s = geo.view_size
            view[...] = _resize_hcw(frame, [(s, s)])[0].transpose(1, 0, 2)
        return
    sizes = [(fh, fw)] + ([(geo.view_size, geo.view_size)] if view is not None else [])
    outs = _resize_hcw(frame, sizes)
    pos = place(outs[0], 1)
    for k, (y, x) in enumerate(pos):
        patches[k] = outs[0][y:y + p, :, x:x + p].transpose(1, 0, 2)
    if view is not None:
        view[...] = outs[1].transpose(1, 0, 2)


def make_view(frame: np.ndarray, geo: Geometry) -> np.ndarray:
    """The high-level view ``(3, S, S)`` float32 of one ``(H, W, 3)`` frame."""
    s = geo.view_size
    return np.ascontiguousarray(_resize_hcw(frame, [(s, s)])[0].transpose(1, 0, 2))


def make_patches(frame: np.ndarray, geo: Geometry,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """The K low-level patches ``(K, 3, P, P)`` float32 of one ``(H, W, 3)`` frame."""
    p = geo.patch_size
    patches = np.empty((geo.num_patches, 3, p, p), np.float32)
    _fill(frame, geo, rng, None, patches)
    return patches


def prepare_frame(frame: np.ndarray, geo: Geometry,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One ``(H, W, 3)`` frame to ``view (3, S, S)`` and ``patches (K, 3, P, P)`` float32."""
    s, p = geo.view_size, geo.patch_size
    view = np.empty((3, s, s), np.float32)
    patches = np.empty((geo.num_patches, 3, p, p), np.float32)
    _fill(frame, geo, rng, view, patches)
    return view, patches


def prepare(frames: np.ndarray, geo: Geometry, rng: np.random.Generator | None = None,
            views: bool = True, workers: int = 1) -> Inputs:
    """Key frames ``(M, H, W, 3)`` (uint8, or float in [0, 1]) to model :class:`Inputs`.

    ``views=False`` skips the high-level views (``Inputs.views`` is None): training reuses
    cached high-level tokens and needs only fresh patches. Each frame is resized once for both
    outputs, straight into the batch arrays.

    ``workers > 1`` prepares frames on that many threads (numpy's matmuls release the GIL);
    the result is the same. With ``rng`` frames stay sequential so placements are reproducible.
    """
    m, s, p = len(frames), geo.view_size, geo.patch_size
    out_v = np.empty((m, 3, s, s), np.float32) if views else None
    out_p = np.empty((m, geo.num_patches, 3, p, p), np.float32)

    def fill(i: int) -> None:
        _fill(frames[i], geo, rng, None if out_v is None else out_v[i], out_p[i])

    workers = min(workers, m) if rng is None else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, range(m)))
    else:
        for i in range(m):
            fill(i)
    return Inputs(out_v, out_p)

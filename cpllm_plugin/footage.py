"""What kind of footage a video is: camera, animation, screen, game, a pan over a still or a
slideshow.

A small softmax head (``kind.json`` in the model directory, plain JSON) reads two things that
``describe()`` already has at run time: the frozen high-level encoder's tokens of the decoder's
key frame, averaged, and cheap pixel statistics of the key frames (:func:`pixel_stats`) that
tell apart what that encoder cannot: a pan over a photo is one rigid motion of the whole
picture, a slideshow is still pictures and cuts, camera footage has parallax and things moving
on their own, screens are flat colours and hard edges. The head names a kind only when its
probability reaches the threshold chosen when it was trained; below that :func:`guess` still
gives the most likely class, but ``kind`` is None and a description says nothing about it.

The head is trained by ``cpllm_plugin.training.kinds`` (how, and its numbers on the dev
split: docs/model-card.md, "Kind of footage"). Numpy only at import; torch only inside
:func:`guess`, when it has to encode a frame.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelFileError, message
from .modeldir import is_model_dir

KINDS: dict[str, str] = {
    "camera": "camera footage",
    "animation": "animation or computer-generated imagery",
    "screen": "a screen recording",
    "game": "video game footage",
    "still": "a pan or zoom over a still image",
    "slideshow": "a slideshow of still images",
}

HEAD_FILE = "kind.json"
FORMAT = "cpllm-kind/1"


class KindFileError(ModelFileError):
    """A model directory's ``kind.json`` is unreadable, malformed or does not fit the model."""


@dataclass(frozen=True)
class KindGuess:
    """The head's answer for one video.

    Attributes:
        kind: a key of :data:`KINDS` when the head is confident enough, else None.
        top: the most likely class, whatever its confidence.
        confidence: probability of ``top``.
        probs: every class's probability.
    """

    kind: str | None
    top: str
    confidence: float
    probs: dict[str, float]


@dataclass(frozen=True)
class Head:
    """A loaded ``kind.json``: ``softmax(((x - mean) / scale) @ weights + bias)``."""

    classes: tuple[str, ...]
    mean: np.ndarray      # (F,)
    scale: np.ndarray     # (F,)
    weights: np.ndarray   # (F, C)
    bias: np.ndarray      # (C,)
    threshold: float
    encoder: str          # the high-level backbone whose tokens it reads
    context_dim: int      # how many of the F features are pooled encoder channels
    provenance: dict

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(N, C)`` class probabilities of features ``(N, F)`` (or ``(F,)`` -> ``(C,)``)."""
        z = ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weights + self.bias
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def answer(self, probs: np.ndarray) -> KindGuess:
        i = int(np.argmax(probs))
        top, conf = self.classes[i], float(probs[i])
        return KindGuess(top if conf >= self.threshold else None, top, conf,
                         {c: float(p) for c, p in zip(self.classes, probs, strict=True)})

    def to_dict(self) -> dict:
        # 6 significant digits: the file stays small and the probabilities move by < 1e-4.
        def r(a):
            return [float(f"{v:.6g}") for v in np.asarray(a).ravel()]

        return {"format": FORMAT, "classes": list(self.classes), "encoder": self.encoder,
                "context_dim": self.context_dim, "features": len(self.mean),
                "threshold": float(f"{self.threshold:.6g}"), "mean": r(self.mean),
                "scale": r(self.scale), "weights": [r(row) for row in self.weights],
                "bias": r(self.bias), "provenance": self.provenance}


def _bad(path: Path, expected: str, got: str) -> KindFileError:
    return KindFileError(message(
        f"footage.load_head({str(path)!r})", expected, got,
        "rebuild it with `python -m cpllm_plugin.training.kinds --out MODEL_DIR`, or delete "
        "kind.json to describe without naming the kind of footage"))


def head_from_dict(data, path: Path = Path(HEAD_FILE)) -> Head:
    """Check and convert the JSON of a ``kind.json``; :class:`KindFileError` names what is wrong."""
    if not isinstance(data, dict):
        raise _bad(path, "a JSON object", type(data).__name__)
    if data.get("format") != FORMAT:
        raise _bad(path, f"format {FORMAT!r}", repr(data.get("format")))
    need = ("classes", "encoder", "context_dim", "threshold", "mean", "scale", "weights", "bias")
    missing = [k for k in need if k not in data]
    if missing:
        raise _bad(path, f"the keys {list(need)}", f"no {missing}")
    classes = data["classes"]
    if (not isinstance(classes, list) or not classes or len(set(classes)) != len(classes)
            or any(c not in KINDS for c in classes)):
        raise _bad(path, f"'classes': distinct names from {list(KINDS)}", repr(classes))
    try:
        mean = np.asarray(data["mean"], np.float64)
        scale = np.asarray(data["scale"], np.float64)
        weights = np.asarray(data["weights"], np.float64)
        bias = np.asarray(data["bias"], np.float64)
        threshold = float(data["threshold"])
        context_dim = int(data["context_dim"])
    except (TypeError, ValueError) as exc:
        raise _bad(path, "numbers in mean, scale, weights, bias and threshold",
                   f"{type(exc).__name__}: {exc}") from None
    f, c = len(mean), len(classes)
    shapes = {"mean": (mean.shape, (f,)), "scale": (scale.shape, (f,)),
              "weights": (weights.shape, (f, c)), "bias": (bias.shape, (c,))}
    wrong = {k: s for k, (s, want) in shapes.items() if s != want}
    if wrong or f == 0:
        raise _bad(path, f"mean and scale of F values, weights F x {c}, bias {c} (F = {f})",
                   ", ".join(f"{k} of shape {s}" for k, s in wrong.items()) or "F = 0")
    if not all(np.isfinite(a).all() for a in (mean, scale, weights, bias)) or (scale <= 0).any():
        raise _bad(path, "finite numbers and positive scales", "NaN, infinity or a scale <= 0")
    if not 0.0 <= threshold <= 1.0:
        raise _bad(path, "a threshold in [0, 1]", repr(threshold))
    if not 0 <= context_dim <= f - len(PIXEL_FEATURES):
        raise _bad(path, f"context_dim + {len(PIXEL_FEATURES)} pixel features <= F = {f}",
                   f"context_dim {context_dim}")
    return Head(tuple(classes), mean, scale, weights, bias, threshold, str(data["encoder"]),
                context_dim, dict(data.get("provenance") or {}))


def load_head(model_dir: str | Path) -> Head | None:
    """The kind head of a model directory, or None when it ships none.

    Where the directory's ``config.json`` lists ``kind.json`` (the shipped model does), its
    sha256 is checked like every weight file.
    """
    from .modeldir import read_config, verify

    d = Path(model_dir)
    path = d / HEAD_FILE
    if not path.is_file():
        return None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if key in _heads:
            return _heads[key]
    if (d / "config.json").is_file():
        _, files = read_config(d)
        if HEAD_FILE in files:
            verify(d, files, [HEAD_FILE])
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, "valid JSON", f"{type(exc).__name__}: {exc}") from None
    head = head_from_dict(data, path)
    with _lock:
        _heads[key] = head
    return head


_heads: dict[tuple, Head] = {}
_lock = threading.Lock()


def head_of(model) -> Head | None:
    """The kind head of a loaded model (``model.source`` its directory), or None."""
    src = Path(str(model.source))
    return load_head(src) if is_model_dir(src) else None


def save_head(head: Head, model_dir: str | Path) -> Path:
    """Write ``kind.json`` into ``model_dir``; where it has a ``config.json``, record the
    file's sha256 there (the model id hashes the scoring tensors only, so it stays)."""
    from .files import write_atomic
    from .modeldir import write_config

    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / HEAD_FILE
    write_atomic(path, json.dumps(head.to_dict(), separators=(",", ":")) + "\n")
    conf = d / "config.json"
    if conf.is_file():
        data = json.loads(conf.read_text())
        write_config(d, {k: v for k, v in data.items() if k != "files"})
    return path


# --- features -------------------------------------------------------------------------------

PIXEL_FEATURES = (
    "still_pairs",      # share of key-frame pairs that are the same picture (slideshow, slides)
    "cut_pairs",        # share of pairs no single motion explains (cuts, new content)
    "log_diff",         # log of the median difference between neighbouring key frames
    "log_residual",     # log of the median difference left after the best global motion
    "rigid_ratio",      # residual / difference: near 0 for a pan over a still
    "block_misfit",     # how far blocks move off the global motion (parallax, objects), px
    "log_motion",       # log of the global motion, px at the working size
    "colour_change",    # median change of the colour histogram between key frames (cuts)
    "colour_jump",      # the largest such change: a new picture, not the same scene moving
    "flat",             # share of pixels in flat areas (screens, drawn content)
    "top_colours",      # share of pixels in the 8 commonest colours (screens, pixel art)
    "hard_edges",       # share of strong edges among all edges (text, UI, pixel art)
    "saturation",       # mean chroma (cartoons, games)
    "log_detail",       # log of the mean gradient (texture)
    "log_noise",        # log of the fine noise (sensor noise and grain: camera, not CGI)
    "edge_sparsity",    # share of gradient energy in the strongest 5% of pixels (drawn edges)
    "log_colours",      # log of the distinct colours (5 bits a channel) per 1000 pixels
)
WORK = 160  # short side of the motion analysis, px: small enough to cost milliseconds


def _luma(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _shrink(frame: np.ndarray, short: int) -> np.ndarray:
    """``(h, w, 3)`` float32 in [0, 255] with its short side at most ``short``."""
    from .preprocess import resize

    h, w = frame.shape[:2]
    s = min(1.0, short / min(h, w))
    size = (max(8, round(h * s)), max(8, round(w * s)))
    if size == (h, w):
        return frame.astype(np.float32)
    return resize(frame, *size) * 255.0


def _phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Shift ``(dy, dx)`` that best maps ``a`` onto ``b`` (phase correlation) and the peak's
    height (1 for a perfect shift, near 0 for unrelated pictures)."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1])).astype(np.float32)
    fa = np.fft.rfft2((a - a.mean()) * win)
    fb = np.fft.rfft2((b - b.mean()) * win)
    r = fb * np.conj(fa)
    r /= np.abs(r) + 1e-6
    c = np.fft.irfft2(r, s=a.shape)
    i = np.unravel_index(int(np.argmax(c)), c.shape)
    dy, dx = (int(v) if v <= n // 2 else int(v) - n for v, n in zip(i, c.shape, strict=True))
    return float(dy), float(dx), float(c[i])


def _warp(img: np.ndarray, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img`` sampled at ``A @ [y, x, 1]`` (bilinear) and where that lies inside it."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sy = A[0, 0] * yy + A[0, 1] * xx + A[0, 2]
    sx = A[1, 0] * yy + A[1, 1] * xx + A[1, 2]
    inside = (sy >= 0) & (sy <= h - 1) & (sx >= 0) & (sx <= w - 1)
    sy, sx = np.clip(sy, 0, h - 1.001), np.clip(sx, 0, w - 1.001)
    y0, x0 = sy.astype(np.int32), sx.astype(np.int32)
    fy, fx = sy - y0, sx - x0
    out = (img[y0, x0] * (1 - fy) * (1 - fx) + img[y0 + 1, x0] * fy * (1 - fx)
           + img[y0, x0 + 1] * (1 - fy) * fx + img[y0 + 1, x0 + 1] * fy * fx)
    return out, inside


def _pair_motion(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """``(difference, residual, block misfit, motion)`` between two luma frames.

    The global motion is an affine map fitted to the shifts of a grid of blocks (after one
    shift of the whole frame, so fast pans stay within a block's reach); the residual is the
    mean absolute difference left after warping ``b`` back onto ``a`` with it.
    """
    h, w = a.shape
    diff = float(np.abs(a - b).mean())
    gy, gx, _ = _phase_shift(a, b)
    bs = 32
    pts, moves, weights = [], [], []
    for y in range(0, h - bs + 1, bs):
        for x in range(0, w - bs + 1, bs):
            ty, tx = int(round(y + gy)), int(round(x + gx))
            if ty < 0 or tx < 0 or ty + bs > h or tx + bs > w:
                continue
            pa, pb = a[y:y + bs, x:x + bs], b[ty:ty + bs, tx:tx + bs]
            if pa.std() < 2.0:  # a flat block has no shift to measure
                continue
            dy, dx, peak = _phase_shift(pa, pb)
            pts.append((y + bs / 2, x + bs / 2))
            moves.append((gy + dy, gx + dx))
            weights.append(max(peak, 0.0))
    A = np.array([[1, 0, gy], [0, 1, gx]], np.float64)
    misfit = 0.0
    if len(pts) >= 4:
        P = np.array([[py, px, 1.0] for py, px in pts])
        T = P[:, :2] + np.array(moves)
        wt = np.sqrt(np.array(weights) + 1e-3)[:, None]
        # Two passes: the second drops blocks far off the first fit (a moving object should
        # not drag the fit of the background).
        keep = np.ones(len(P), bool)
        for _ in range(2):
            sol, *_ = np.linalg.lstsq(P[keep] * wt[keep], T[keep] * wt[keep], rcond=None)
            err = np.linalg.norm(P @ sol - T, axis=1)
            keep = err <= max(1.5, float(np.median(err)) * 3)
            if keep.sum() < 4:
                break
        A = sol.T
        misfit = float(np.median(err) + np.mean(err > 2.0))
    # A maps a point of a to its place in b: sample b there and compare with a.
    warped, inside = _warp(b, A)
    residual = float(np.abs(warped - a)[inside].mean()) if inside.mean() > 0.25 else diff
    motion = float(np.hypot(A[0, 2] + (A[0, 0] - 1) * h / 2 + A[0, 1] * w / 2,
                            A[1, 2] + A[1, 0] * h / 2 + (A[1, 1] - 1) * w / 2))
    return diff, min(residual, diff), misfit, motion


def pixel_stats(frames: np.ndarray) -> np.ndarray:
    """:data:`PIXEL_FEATURES` of key frames ``(M, H, W, 3)`` uint8, as float64."""
    frames = np.asarray(frames)
    small = [_luma(_shrink(f, WORK)) for f in frames]
    pairs = [_pair_motion(a, b) for a, b in zip(small[:-1], small[1:], strict=True)]
    if pairs:
        d, r, mis, mv = (np.array(v) for v in zip(*pairs, strict=True))
    else:  # one frame: nothing moves
        d = r = mis = mv = np.zeros(1)
    still = float(np.mean(d < 0.75))
    cut = float(np.mean((r > 6.0) & (r > 0.5 * d)))
    moving = d >= 0.75
    ratio = float(np.median(r[moving] / d[moving])) if moving.any() else 0.0
    misfit = float(np.median(mis[moving])) if moving.any() else 0.0
    # Between two equal pictures the phase peak lands anywhere: no motion to report.
    motion = float(np.median(mv[moving])) if moving.any() else 0.0

    # A cut to another photo changes the colours; a shaky or busy shot of one scene does not.
    hists = [_colours(f) for f in frames]
    change = [float(np.abs(a - b).sum() / 2)
              for a, b in zip(hists[:-1], hists[1:], strict=True)] or [0.0]
    # Spatial statistics: the mean over every key frame, so one odd frame weighs little.
    spatial = np.mean([_spatial(f) for f in frames], axis=0)
    return np.concatenate([[still, cut, math.log1p(float(np.median(d))),
                            math.log1p(float(np.median(r))), ratio, misfit,
                            math.log1p(motion), float(np.median(change)), max(change)],
                           spatial])


def _colours(frame: np.ndarray) -> np.ndarray:
    """Normalised histogram of a frame's colours, 3 bits a channel, at most 90 px high."""
    q = (np.clip(_shrink(frame, 90), 0, 255).astype(np.uint8) >> 5).astype(np.int32)
    h = np.bincount(((q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]).ravel(), minlength=512)
    return h / h.sum()


_NOISE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(luma: np.ndarray) -> float:
    """Immerkaer's fast estimate of white noise in one luma plane (0-255 scale): the mean
    absolute response to a 3x3 mask that cancels planes and straight edges, scaled to a
    standard deviation. Clean footage reads below a few units; heavy sensor or added noise
    above. (Also what ``cpllm-ladder --mode auto`` reads of its input.)"""
    y = np.asarray(luma, np.float32)
    if min(y.shape) < 3:
        return 0.0
    h, w = y.shape
    lap = sum(_NOISE[i, j] * y[i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3))
    return float(np.sqrt(np.pi / 2) * np.abs(lap).mean() / 6)


def _spatial(frame: np.ndarray) -> np.ndarray:
    img = _shrink(frame, 360)
    y = _luma(img)
    gy, gx = np.abs(np.diff(y, axis=0))[:, :-1], np.abs(np.diff(y, axis=1))[:-1]
    grad = np.maximum(gy, gx)
    flat = float(np.mean(grad < 1.0))
    edges = grad > 8.0
    hard = float(np.mean(grad[edges] > 64.0)) if edges.any() else 0.0
    q = (np.clip(img, 0, 255).astype(np.uint8) >> 4).astype(np.int32)
    codes = (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]
    counts = np.bincount(codes.ravel(), minlength=4096)
    top = float(np.sort(counts)[-8:].sum() / codes.size)
    sat = float((img.max(axis=-1) - img.min(axis=-1)).mean() / 255.0)
    noise = noise_sigma(y)  # on the frame at most 360 px high, where most grain survives
    flat_g = np.sort(grad.ravel())
    sparsity = float(flat_g[-max(1, len(flat_g) // 20):].sum() / max(flat_g.sum(), 1e-6))
    q5 = (np.clip(img, 0, 255).astype(np.uint8) >> 3).astype(np.int32)
    distinct = len(np.unique((q5[..., 0] << 10) | (q5[..., 1] << 5) | q5[..., 2]))
    return np.array([flat, top, hard, sat, math.log1p(float(grad.mean())), math.log1p(noise),
                     sparsity, math.log1p(1000 * distinct / y.size)], np.float64)


def decoder_frame(m: int) -> int:
    """Which of ``m`` key frames the encoder features come from: the middle one, the frame the
    decoder sees (``decoder_frames`` = 1), so describe() can share its tokens."""
    from .preprocess import key_frame_indices

    return int(key_frame_indices(m, 1)[0])


def pooled(context) -> np.ndarray:
    """Tokens ``(F, Th, Ch)`` (or ``(Th, Ch)``) averaged to ``(Ch,)``."""
    ctx = np.asarray(context, np.float64)
    return ctx.reshape(-1, ctx.shape[-1]).mean(axis=0)


def _check(model, frames, head: Head | None) -> np.ndarray:
    where = f"footage.guess({getattr(model, 'id', model)})"
    if head is not None and head.encoder != model.config.high.backbone:
        raise KindFileError(message(
            where, f"a kind.json trained on the {model.config.high.backbone} encoder",
            f"one for {head.encoder}",
            "rebuild it with `python -m cpllm_plugin.training.kinds` for this model"))
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0 or frames.dtype != np.uint8:
        from .errors import FrameShapeError

        raise FrameShapeError(message(where, "key frames (M, H, W, 3) uint8 with M >= 1",
                                      f"{frames.dtype} {frames.shape}",
                                      "pass Model.key_frames(...).frames"))
    return frames


def decoder_context(model, frames: np.ndarray, context=None) -> np.ndarray:
    """Pooled high-level tokens ``(Ch,)`` of the decoder's key frame of ``frames`` (encoded
    here unless ``context``, the tokens of every key frame or of that one, is given)."""
    frames = _check(model, frames, None)
    i = decoder_frame(len(frames))
    if context is None:
        from . import preprocess

        net, torch = model.backend.net, model.backend.torch
        x = preprocess.prepare(frames[i:i + 1], model.config)
        with torch.inference_mode():
            context = net.scorer.context(torch.from_numpy(x.views).to(model.backend.device))
    ctx = context.detach().float().cpu().numpy() if hasattr(context, "detach") else context
    ctx = np.asarray(ctx)
    if ctx.ndim == 3 and len(ctx) == len(frames) and len(frames) > 1:
        ctx = ctx[i:i + 1]  # the tokens of every key frame: keep the decoder's
    return pooled(ctx)


def video_features(model, frames: np.ndarray, context=None) -> np.ndarray:
    """The head's input for key frames ``frames`` of ``model`` (torch backend): what
    :func:`guess` classifies, and (in its two parts) what ``cpllm_plugin.training.kinds``
    trains on."""
    return np.concatenate([decoder_context(model, frames, context), pixel_stats(frames)])


def guess(model, frames: np.ndarray, context=None) -> KindGuess | None:
    """The kind of footage of key frames ``frames`` ``(M, H, W, 3)`` uint8 RGB.

    Args:
        model: a :class:`cpllm_plugin.api.Model` with the torch backend.
        frames: the key frames describe() read (M >= 1, usually the config's 5).
        context: ``net.scorer.context(views)`` of those M frames, or of the decoder's frame
            alone (the middle key frame, :func:`decoder_frame`), when the caller has it:
            saves encoding that frame again.

    Returns:
        None when the model directory ships no ``kind.json`` (a model trained before it).
    """
    head = head_of(model)
    if head is None:
        return None
    frames = _check(model, frames, head)
    x = video_features(model, frames, context)
    if len(x) != len(head.mean) or len(x) - len(PIXEL_FEATURES) != head.context_dim:
        raise KindFileError(message(
            f"footage.guess({model.id})", f"{len(head.mean)} features "
            f"({head.context_dim} encoder channels)", f"{len(x)}",
            "pass net.scorer.context(views) of this model, or rebuild kind.json for it"))
    return head.answer(head.probabilities(x))

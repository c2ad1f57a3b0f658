"""CP-LLM scores as VapourSynth frame props, for .vpy encode scripts.

    import vapoursynth as vs
    from cpllm_plugin.integrations import vapoursynth as cpllm

    clip = vs.core.bs.VideoSource("input.mkv")
    clip = cpllm.score(clip, every=24, log="scores.csv")
    clip.set_output()       # every frame carries CPLLM_Score (1-5), CPLLM_Model, CPLLM_ScoredFrame

A frame's score is the model's per-key-frame score of that one frame, through the one scoring
path of :mod:`cpllm_plugin` (:func:`cpllm_plugin.preprocess.prepare`, then the backend): an
RGB24 clip's scores equal ``cpllm_plugin.score(frames).frame_scores``.

**Colour.** Frames go to RGB24 through VapourSynth's own resizer (zimg,
``core.resize.Bicubic``, which also upsamples chroma at the frame's ``_ChromaLocation``),
reading each frame's ``_Matrix``, ``_Range`` (or the older ``_ColorRange``), ``_Transfer`` and
``_Primaries``. Unset values (absent, or 2 "unspecified") default as players do (mpv's rule):

* ``_Matrix``: BT.709 for HD (width >= 1280 or height > 576), BT.601 (SMPTE 170M) below.
* ``_Range``: limited for YUV and GRAY, full for RGB (float formats are always full).
* ``_Transfer`` and ``_Primaries``: SDR values of the BT.709 family (BT.709, BT.601, BT.470,
  SMPTE 240M, sRGB, the BT.2020 SDR curve) and unset ones are taken as BT.709 and left as they
  are, as players and ``cpllm_plugin.score()`` on a decoded file do (their primaries differ by
  a few percent). Wide-gamut primaries (BT.2020, DCI-P3, Display P3, XYZ) and HDR, linear or
  log transfers are converted to BT.709 by zimg: gamut by matrix with clipping, PQ with
  reference white at 203 cd/m2 (BT.2408) mapped to SDR white and brighter highlights clipped.
  That is a clip, not tone mapping: tone-map HDR yourself first for meaningful scores. An
  unset value beside a converted one becomes BT.2020 primaries (beside PQ or HLG) or the
  BT.709 transfer. GRAY is never gamut-converted.

**Threads.** VapourSynth runs a Python callback of one filter instance one call at a time,
so the scored frames are dealt round-robin to ``parallel`` instances (default
``core.num_threads``) that score concurrently: the numpy preprocessing and the backend run
release the GIL, and ONNX Runtime sessions take concurrent runs without a lock. The model
loads once per process (:func:`cpllm_plugin.load_model` caches it). Concurrent requests are
batched into one backend call on GPU backends only: on CPU, batching gave no speed-up
(measured, see ``bench/bench_vapoursynth.py``) and would make a frame's score depend, in
float32 rounding (about 5e-7), on which frames shared its batch.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpllm_plugin import backends, preprocess
from cpllm_plugin.api import Model, load_model
from cpllm_plugin.configs import DEFAULT_MODEL
from cpllm_plugin.errors import CpllmError, message, require
from cpllm_plugin.files import write_atomic

vs = require("vapoursynth", "vapoursynth", "cpllm_plugin.integrations.vapoursynth")

__all__ = ["ClipFormatError", "ClipSummary", "FilterArgumentError", "NoScoresError",
           "VapourSynthError", "rgb24", "score", "summary"]

PROP = "CPLLM_Score"
MODEL_PROP = "CPLLM_Model"
FRAME_PROP = "CPLLM_ScoredFrame"
LOG_KINDS = (".csv", ".jsonl")
GPU_BATCH = 8  # frames per backend call at most on GPU backends (batch=None)

# zimg's colour constants, as VapourSynth numbers them (ITU-T H.273).
_UNSET = 2
_HDR = {16, 18}  # PQ (SMPTE ST 2084), HLG (ARIB STD-B67)
_CONVERT_TRANSFER = _HDR | {8, 9, 10, 17}  # + linear, log 100:1, log 316:1, SMPTE ST 428
_WIDE = {9, 10, 11, 12}  # BT.2020, XYZ (ST 428), DCI-P3, Display P3
_REFERENCE_WHITE = 203.0  # cd/m2 of HDR reference white (BT.2408): SDR white after conversion


class VapourSynthError(CpllmError):
    """Base of the errors of the VapourSynth filter."""


class ClipFormatError(VapourSynthError, ValueError):
    """The clip cannot be scored: variable format or size, or an unsupported format."""


class FilterArgumentError(VapourSynthError, ValueError):
    """An argument of :func:`score` or :func:`summary` is out of range or of the wrong kind."""


class NoScoresError(VapourSynthError, ValueError):
    """:func:`summary` found frames without the score prop (the clip was not scored)."""


# --- colour -----------------------------------------------------------------------------


def _check_clip(clip: Any, where: str) -> None:
    """Raise :class:`ClipFormatError` unless ``clip`` is a video clip of one format and size."""
    want = ("a video clip of one format and size: YUV, RGB or GRAY, integer 8-16 bit or "
            "float 16/32 bit")
    if not isinstance(clip, vs.VideoNode):
        raise ClipFormatError(message(where, want, type(clip).__name__,
                                      "pass a vs.VideoNode (e.g. core.bs.VideoSource(path))"))
    fmt = clip.format
    if fmt is None or fmt.color_family == vs.UNDEFINED:
        raise ClipFormatError(message(
            where, want, "a clip with variable format",
            "convert it to one format first, e.g. clip.resize.Bicubic(format=vs.YUV420P8), "
            "or open the source without variableformat"))
    if clip.width == 0 or clip.height == 0:
        raise ClipFormatError(message(
            where, want, "a clip with variable frame size",
            "resize it to one size first, e.g. clip.resize.Bicubic(1920, 1080)"))
    integer = fmt.sample_type == vs.INTEGER and 8 <= fmt.bits_per_sample <= 16
    floating = fmt.sample_type == vs.FLOAT and fmt.bits_per_sample in (16, 32)
    if fmt.color_family not in (vs.YUV, vs.RGB, vs.GRAY) or not (integer or floating):
        raise ClipFormatError(message(
            where, want, f"format {fmt.name}",
            "convert it first, e.g. clip.resize.Bicubic(format=vs.YUV444P16)"))


def _range(props) -> int | None:
    """The frame's range as ``vs.RANGE_FULL``/``vs.RANGE_LIMITED``, or None when unset."""
    if "_Range" in props:
        return int(props["_Range"])
    if "_ColorRange" in props:  # older cores and plugins: 0 full, 1 limited (_Range reversed)
        return vs.RANGE_FULL if int(props["_ColorRange"]) == 0 else vs.RANGE_LIMITED
    return None


def _tagger(clip):
    """A callback that fills a frame's unset colour props as the module docstring says."""
    family = clip.format.color_family
    hd = clip.width >= 1280 or clip.height > 576
    default_range = vs.RANGE_FULL if family == vs.RGB else vs.RANGE_LIMITED

    def tag(n: int, f):
        g = f.copy()
        p = g.props
        if family == vs.YUV and int(p.get("_Matrix", _UNSET)) == _UNSET:
            p["_Matrix"] = vs.MATRIX_BT709 if hd else vs.MATRIX_ST170_M
        rng = _range(p)
        p["_Range"] = default_range if rng is None else rng
        transfer = int(p.get("_Transfer", _UNSET))
        primaries = int(p.get("_Primaries", _UNSET))
        convert_t, convert_p = transfer in _CONVERT_TRANSFER, primaries in _WIDE
        if family == vs.GRAY or not (convert_t or convert_p):
            # Tagging them BT.709, like the output, makes zimg leave the values alone.
            p["_Transfer"], p["_Primaries"] = vs.TRANSFER_BT709, vs.PRIMARIES_BT709
        else:
            p["_Transfer"] = transfer if convert_t else vs.TRANSFER_BT709
            p["_Primaries"] = (primaries if convert_p else
                               vs.PRIMARIES_BT2020 if transfer in _HDR else vs.PRIMARIES_BT709)
        return g

    return tag


def rgb24(clip):
    """The clip as RGB24 (full range, BT.709), converted the way :func:`score` sees it.

    Args:
        clip: YUV, RGB or GRAY, integer 8-16 bit or float, of one format and size.

    Returns:
        An RGB24 clip of the same size and length; colour props handled as described in the
        module docstring (zimg through ``core.resize.Bicubic``).
    """
    _check_clip(clip, "rgb24()")
    tagged = clip.std.ModifyFrame(clip, _tagger(clip))
    return tagged.resize.Bicubic(format=vs.RGB24, transfer=vs.TRANSFER_BT709,
                                 primaries=vs.PRIMARIES_BT709,
                                 nominal_luminance=_REFERENCE_WHITE)


def _array(f) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an RGB24 frame (VapourSynth keeps planes apart)."""
    return np.stack([np.asarray(f[p]) for p in range(3)], axis=-1)


# --- scoring ----------------------------------------------------------------------------


class _Batcher:
    """Gathers concurrent requests into one backend call (GPU backends).

    No timer: a request that finds the backend idle runs at once with whatever is waiting;
    requests arriving meanwhile wait and go together in the next call. Calls run one at a
    time, which the GPU backends do anyway (each holds a lock around its engine).
    """

    def __init__(self, backend: backends.Backend, size: int):
        self.backend, self.size = backend, size
        self.cond = threading.Condition()
        self.waiting: list[dict] = []
        self.busy = False

    def run(self, views: np.ndarray, patches: np.ndarray) -> float:
        item = {"views": views, "patches": patches, "done": False}
        with self.cond:
            self.waiting.append(item)
            while not item["done"]:
                if self.busy:
                    self.cond.wait()
                    continue
                self.busy = True
                batch, self.waiting = self.waiting[:self.size], self.waiting[self.size:]
                self.cond.release()
                try:
                    self._call(batch)
                finally:
                    self.cond.acquire()
                    self.busy = False
                    self.cond.notify_all()
        if "error" in item:
            raise item["error"]
        return item["score"]

    def _call(self, batch: list[dict]) -> None:
        try:
            scores = self.backend.run(np.concatenate([b["views"] for b in batch]),
                                      np.concatenate([b["patches"] for b in batch]))
            for b, s in zip(batch, scores, strict=True):
                b["score"] = float(s)
        except BaseException as exc:  # every waiter of this batch sees the failure
            for b in batch:
                b["error"] = exc
        for b in batch:
            b["done"] = True


_batchers: dict[tuple[int, int], _Batcher] = {}
_batchers_lock = threading.Lock()


class _FrameScorer:
    """Scores frames of one :func:`score` call; keeps each score so a frame VapourSynth
    requests again (after its cache dropped it) is not run through the model twice."""

    def __init__(self, model: Model, batch: int):
        self.model = model
        self.scores: dict[int, float] = {}
        if batch > 1:
            key = (id(model.backend), batch)
            with _batchers_lock:
                self.run = _batchers.setdefault(key, _Batcher(model.backend, batch)).run
        else:
            self.run = lambda v, p: float(model.backend.run(v, p)[0])

    def __call__(self, n: int, f) -> float:
        got = self.scores.get(n)
        if got is None:
            x = preprocess.prepare(_array(f)[None], self.model.config)
            got = self.scores[n] = self.run(x.views, x.patches)
        return got


# --- the sidecar ------------------------------------------------------------------------


class _Sidecar:
    """Per-frame rows (CSV or JSON lines) appended as frames are produced.

    Each row is one ``write`` of a whole line under a lock, flushed at once, so a reader never
    sees half a line. Rows arrive in the order frames finish; once every frame of the clip has
    a row the file is rewritten sorted by frame (a temporary file, then an atomic rename).
    """

    COLUMNS = ("frame", "score", "scored_frame", "model")

    def __init__(self, path: Path, total: int):
        self.path, self.total = path, total
        self.jsonl = path.suffix.lower() == ".jsonl"
        self.rows: dict[int, str] = {}
        self.lock = threading.Lock()
        self.file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (held open)
        self.file.write(self._header())
        self.file.flush()

    def _header(self) -> str:
        return "" if self.jsonl else ",".join(self.COLUMNS) + "\n"

    def add(self, n: int, score: float, scored: int, model: str) -> None:
        if self.jsonl:
            line = json.dumps(dict(zip(self.COLUMNS, (n, score, scored, model), strict=True)))
        else:
            line = f"{n},{score!r},{scored},{model}"
        with self.lock:
            if n in self.rows or self.file is None:
                return  # a frame VapourSynth produced twice keeps its first row
            self.rows[n] = line + "\n"
            self.file.write(self.rows[n])
            self.file.flush()
            if len(self.rows) == self.total:
                self._finish()

    def _finish(self) -> None:
        self.file.close()
        self.file = None
        write_atomic(self.path, self._header() + "".join(self.rows[n] for n in sorted(self.rows)),
                     newline="")


# --- the filter -------------------------------------------------------------------------


def _check_args(every: Any, prop: Any, log: Any, batch: Any, parallel: Any) -> Path | None:
    where = "score()"
    for name, value in (("every", every), ("batch", batch), ("parallel", parallel)):
        if value is None and name != "every":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FilterArgumentError(message(
                where, f"{name} a whole number >= 1", f"{name}={value!r}",
                f"pass e.g. {name}={24 if name == 'every' else 4}"))
    if (not isinstance(prop, str) or not prop or prop.startswith("_")
            or prop in (MODEL_PROP, FRAME_PROP)):
        raise FilterArgumentError(message(
            where, f"prop a name not starting with '_' (reserved by VapourSynth), not "
            f"{MODEL_PROP!r} or {FRAME_PROP!r}", f"prop={prop!r}", f"use the default {PROP!r}"))
    if log is None:
        return None
    path = Path(log)
    if path.suffix.lower() not in LOG_KINDS:
        raise FilterArgumentError(message(
            where, f"log a path ending in {' or '.join(LOG_KINDS)}", f"log={str(log)!r}",
            "name the sidecar scores.csv or scores.jsonl"))
    if not path.parent.is_dir():
        raise FilterArgumentError(message(
            where, "log in an existing folder", f"{str(path.parent)!r}, which does not exist",
            "create the folder first, or write the sidecar elsewhere"))
    return path


def _nearest(n: np.ndarray, every: int, last: int) -> np.ndarray:
    """Index among the scored frames (0, every, 2 every, ...) nearest to frames ``n``.

    Ties (``every`` even, a frame halfway) go to the earlier scored frame.
    """
    return np.minimum((n + (every - 1) // 2) // every, last)


def score(clip, model: str | Path | Model = DEFAULT_MODEL,
          backend: str | backends.ORT | backends.TRT = "auto", every: int = 1,
          prop: str = PROP, log: str | os.PathLike | None = None, batch: int | None = None,
          parallel: int | None = None):
    """Attach a no-reference quality score to every frame of a clip.

    Args:
        clip: YUV, RGB or GRAY, integer 8-16 bit or float 16/32 bit, of one format and size.
            Colour is converted to RGB24 by :func:`rgb24`.
        model: a model name, model directory or loaded :class:`cpllm_plugin.Model`.
        backend: as in :func:`cpllm_plugin.load_model`: ``"auto"`` (ONNX Runtime for the
            bundled model; TensorRT when installed with a GPU), ``"onnxruntime"``,
            ``"tensorrt"``, ``"torch"``, or ``ORT(...)``/``TRT(...)`` options.
        every: score frames 0, N, 2N, ...; every other frame takes the score of the nearest
            scored frame (ties go to the earlier one).
        prop: name of the score prop.
        log: a ``.csv`` or ``.jsonl`` sidecar with one row per frame (frame, score,
            scored_frame, model), appended as frames are produced and rewritten sorted by frame
            once every frame has been; opening the script truncates it.
        batch: frames per backend call at most (None: 1 on CPU, where batching did not help,
            :data:`GPU_BATCH` on GPU backends). Batches only form from concurrent requests, so
            they need ``core.num_threads`` >= batch.
        parallel: frames scored at once (None: ``core.num_threads`` when called).

    Returns:
        The clip, unchanged in format and pixels, each frame carrying ``prop`` (float, 1-5),
        ``CPLLM_Model`` (the model id) and ``CPLLM_ScoredFrame`` (the frame the score is of).

    Raises:
        ClipFormatError: variable format or size, or an unsupported format.
        FilterArgumentError: a bad ``every``, ``prop``, ``log``, ``batch`` or ``parallel``.
    """
    _check_clip(clip, "score()")
    path = _check_args(every, prop, log, batch, parallel)
    m = load_model(model, backend)
    if batch is None:
        # A GPU call is cheap per frame only in batches; on the CPU batching did not help.
        batch = GPU_BATCH if m.backend.device.startswith("cuda") else 1
    parallel = parallel or max(1, vs.core.num_threads)
    scorer = _FrameScorer(m, batch)

    # Frames 0, every, 2 every, ... as RGB24, dealt round-robin to `parallel` instances.
    src = rgb24(clip[::every])
    shards = min(parallel, src.num_frames)

    def shard(i: int):
        def attach(n: int, f):
            k = (n * shards + i) * every  # source frame of this shard's n-th frame
            g = f.copy()
            g.props[prop] = scorer(k, f)
            g.props[FRAME_PROP] = k
            return g

        part = src[i::shards]
        return part.std.ModifyFrame(part, attach)

    scored = vs.core.std.Interleave([shard(i) for i in range(shards)], extend=True)
    scored = scored[:src.num_frames]  # extend=True pads the shorter shards
    if every > 1:
        # Frame n shows scored frame _nearest(n): repeat each scored frame that many times.
        pick = _nearest(np.arange(clip.num_frames), every, src.num_frames - 1)
        counts = np.bincount(pick, minlength=src.num_frames)
        extra = np.repeat(np.arange(src.num_frames), counts - 1)
        if len(extra):
            scored = scored.std.DuplicateFrames(frames=extra.tolist())

    sidecar = None if path is None else _Sidecar(path, clip.num_frames)
    model_id = m.id

    def output(n: int, f):
        g = f[0].copy()
        value, k = f[1].props[prop], f[1].props[FRAME_PROP]
        g.props[prop] = value
        g.props[MODEL_PROP] = model_id
        g.props[FRAME_PROP] = k
        if sidecar is not None:
            sidecar.add(n, value, k, model_id)
        return g

    return clip.std.ModifyFrame([clip, scored], output)


# --- summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSummary:
    """Scores of a whole clip.

    Attributes:
        frames: frames read.
        mean, min: over all frames.
        p5, p10, p50: percentiles (linear interpolation).
        worst_start: first frame of the ``worst_frames`` consecutive frames with the lowest
            mean score; ``worst_mean`` is that mean.
        model: the model id the scores came from (None when frames did not say).
    """

    frames: int
    mean: float
    min: float
    p5: float
    p10: float
    p50: float
    worst_start: int
    worst_frames: int
    worst_mean: float
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def summary(clip, prop: str = PROP, worst: int = 48) -> ClipSummary:
    """Request every frame of a scored clip and sum up its scores.

    Args:
        clip: a clip returned by :func:`score` (or any clip whose frames carry ``prop``).
        prop: the score prop.
        worst: length in frames of the worst segment to find (the whole clip if shorter).

    Returns:
        :class:`ClipSummary`. Frames are requested in parallel (``core.num_threads``).

    Raises:
        NoScoresError: a frame lacks ``prop``.
    """
    where = "summary()"
    if not isinstance(clip, vs.VideoNode):
        raise ClipFormatError(message(where, "a scored vs.VideoNode", type(clip).__name__,
                                      "pass the clip returned by cpllm.score(clip)"))
    if not isinstance(worst, int) or isinstance(worst, bool) or worst < 1:
        raise FilterArgumentError(message(where, "worst a whole number >= 1",
                                          f"worst={worst!r}", "pass e.g. worst=48"))
    values = np.empty(clip.num_frames, np.float64)
    model = None
    for n, f in enumerate(clip.frames(close=True)):
        if prop not in f.props:
            raise NoScoresError(message(
                where, f"frames carrying the prop {prop!r}", f"frame {n} without it",
                "score the clip first: clip = cpllm.score(clip), or pass prop= the name "
                "given to score()"))
        values[n] = f.props[prop]
        if model is None and MODEL_PROP in f.props:
            model = f.props[MODEL_PROP]
            model = model.decode() if isinstance(model, bytes) else str(model)
    width = min(worst, len(values))
    sums = np.concatenate([[0.0], np.cumsum(values)])
    means = (sums[width:] - sums[:-width]) / width
    start = int(np.argmin(means))
    p5, p10, p50 = np.percentile(values, [5, 10, 50])
    return ClipSummary(len(values), float(values.mean()), float(values.min()), float(p5),
                   float(p10), float(p50), start, width, float(means[start]), model)

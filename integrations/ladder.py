"""cpllm-ladder's engine: pick the highest CRF whose quality meets a target.

The search is ab-av1's ``crf-search`` idea, over one of two measures of each probe: VMAF
against the input (modes ``auto`` and ``vmaf``) or the no-reference model's score (``score``):

1. **Samples.** A few short windows spread evenly over the input (the whole input when they
   would cover most of it) are cut once into lossless *reference samples*, with ``--vfilter``
   applied, so every probe and the source score see the same frames at the same geometry.
2. **Probes.** A probe encodes every reference sample at one CRF and scores the encodes with
   the one scoring path of :mod:`cpllm_plugin` (``Model.score_many``); frame scores are
   pooled over all key frames of all samples (``mean``, ``p10`` or ``min``).
3. **Search.** Start near the encoder's usual answer, bracket the target, then interpolate on
   a monotone (isotonic, non-increasing) fit of the measure against CRF
   (:mod:`.search`); stop when the crossing is pinned to within one CRF, or after
   ``max_probes`` encodes.
4. **Cache.** Each probe's result is kept on disk under a key made of the input's content
   identity, the sample plan, the encoder settings and the model id; a repeated run is
   answered from it.

The reference samples also serve VMAF: each probe is measured against them with libvmaf.
``auto`` (:func:`pick_auto`) sets its VMAF level from how the input was made: 95 for an input
that reads as a master, lower for one whose bitrate reads as an earlier lossy encode.

Score targets (:class:`Target`): ``min_score`` S is absolute (default: the model's score at VMAF 95
on clean sources, from its ``calibration.json``); ``max_drop`` D is relative to the source's
own predicted score s0. The target is the lower of S and s0 - D: a clean source
(s0 >= S + D) must meet S; one near or below S only has to stay within D of itself. Without
D the target is S, which a source below S never reaches (a named error then suggests D).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from cpllm_plugin.configs import DEFAULT_MODEL, ModelConfig
from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.files import check_input, write_atomic
from cpllm_plugin.hashing import sampled_identity as identity

from . import ffmpeg as ff
from .search import PRIOR_SLOPE, Target, best_passing, monotone, next_crf  # noqa: F401

POOLS = ("mean", "p10", "min")
DEFAULT_VMAF = 95.0  # ab-av1's default target; the default min-score is the model's score there
SAMPLE_SECONDS = 2.0
KEY_FRAMES = 5  # per sample: the paper's M, and what the model's dev numbers used per clip
WHOLE_FRACTION = 0.8  # samples covering this much of the input: encode the whole input
MAX_PROBES = 6
VMAF_PRIOR_SLOPE = -1.0  # VMAF per CRF near 95: the VMAF search's first guess
# Reference samples are kept uncompressed when they fit this many bytes in all (and a quarter
# of the free space): every probe decodes them once more, and decoding lossless H.264 made a
# 1080p probe encode 14% and its libvmaf run 18% slower than reading raw frames (one thread).
RAW_BUDGET = 2 << 30

Progress = Callable[[str], None]


# --- errors -------------------------------------------------------------------------------


class LadderError(CpllmError):
    """Base of the ladder's named errors."""


class LadderArgumentError(LadderError, ValueError):
    """An option is out of range or does not fit the input."""


class InputTooShortError(LadderError, ValueError):
    """The input is shorter than one sample."""


class NoCrfMeetsTargetError(LadderError, RuntimeError):
    """Even the best CRF searched does not meet the target."""

    def __init__(self, text: str, best: Probe | None = None, target: float | None = None,
                 source_score: float | None = None):
        super().__init__(text)
        self.best = best
        self.target = target
        self.source_score = source_score


class PickTooLargeError(LadderError, RuntimeError):
    """The pick would keep more than ``max_encoded_percent`` of the input's bitrate: the
    re-encode would save too little to be worth its loss (``pick`` holds the pick; None for
    per-scene picks)."""

    def __init__(self, text: str, pick: Pick | None = None):
        super().__init__(text)
        self.pick = pick


class OutputExistsError(LadderError, FileExistsError):
    """The output file exists and ``force`` was not given."""


# --- settings, samples, source ------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How probes and the final encode are made.

    Attributes:
        encoder: an :data:`~cpllm_plugin.integrations.ffmpeg.ENCODERS` name.
        preset: its preset (None: the table's).
        options: ``(key, value)`` pairs passed as ``-key value`` after the encoder's own
            options (``--enc KEY=VALUE``); ``x264-params`` style keys are merged with the
            thread cap the table sets.
        pix_fmt: output pixel format (None: the input's, so 10-bit stays 10-bit).
        vfilter: an ffmpeg filter chain (scale, crop) applied to probes and the final
            encode alike.
        crf_range: ``(lowest, highest)`` CRF searched (None: the encoder's default).
    """

    encoder: str = "libx264"
    preset: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    pix_fmt: str | None = None
    vfilter: str | None = None
    crf_range: tuple[int, int] | None = None

    @property
    def chain(self) -> str:
        """The video filter of probes and the final encode: ``vfilter``, then a crop to even
        width and height (4:2:0 and 4:2:2 encoders refuse odd sizes; the last row or column
        of an odd-sized picture is dropped, as the training ladders do)."""
        return ",".join(f for f in (self.vfilter, ff.even_crop) if f)

    @property
    def table(self) -> ff.Encoder:
        return ff.get_encoder(self.encoder, "cpllm-ladder --encoder")

    @property
    def search(self) -> tuple[int, int]:
        return self.crf_range or self.table.search

    def args(self, crf: int, threads: int | None) -> list[str]:
        """Output options for the video stream at ``crf``: encoder, preset, CRF, the table's
        options, the thread cap (None: none) and the user's options
        (:func:`~cpllm_plugin.integrations.ffmpeg.video_args`)."""
        return ff.video_args(self.table, crf, self.preset, threads or None, self.options,
                             self.pix_fmt)

    def command(self, ffmpeg: str, src: str | os.PathLike, dst: str | os.PathLike, crf: int,
                threads: int | None, **kw) -> list[str]:
        """The whole ffmpeg command encoding ``src`` at ``crf`` with these settings
        (:func:`~cpllm_plugin.integrations.ffmpeg.encode_args`; ``kw``: its other options)."""
        return ff.encode_args(ffmpeg, src, dst, crf, self.table, preset=self.preset,
                              options=self.options, threads=threads or None,
                              pix_fmt=self.pix_fmt, **kw)

    def public(self) -> list[str]:
        """The encoder arguments as reported: no CRF, no thread cap."""
        args = self.args(0, None)
        i = args.index(self.table.crf_flag)
        return args[:i] + args[i + 2:]


@dataclass(frozen=True)
class Sample:
    """A window of the input: ``start`` and ``duration`` in seconds, key frames to score."""

    start: float
    duration: float
    key_frames: int


def plan_samples(duration: float, count: int | None = None,
                 seconds: float | None = None, key_frames: int | None = None,
                 window: tuple[float, float] | None = None) -> list[Sample]:
    """Windows spread evenly over ``[0, duration]`` (or over ``window``).

    The default count grows with length: 3 up to a minute, one more per 30 s after, at most
    10. When the windows would cover :data:`WHOLE_FRACTION` of the span, the whole span is
    one sample (with as many key frames as the windows together).
    """
    lo, hi = window or (0.0, duration)
    span = hi - lo
    seconds = float(seconds or SAMPLE_SECONDS)
    kf = int(key_frames or KEY_FRAMES)
    if count is None:
        count = min(10, 3 + max(0, math.floor((span - 60) / 30)))
    if span < min(seconds, 0.5) or span <= 0:
        raise InputTooShortError(message(
            "cpllm-ladder", f"an input of at least {min(seconds, 0.5):g} s",
            f"{span:.3f} s", "use a longer input, or --sample-seconds smaller"))
    if count * seconds >= WHOLE_FRACTION * span:
        return [Sample(lo, span, min(kf * count, max(kf, round(span * 4))))]
    step = span / count
    return [Sample(round(lo + (i + 0.5) * step - seconds / 2, 3), seconds, kf)
            for i in range(count)]


@dataclass(frozen=True)
class Source:
    """What the ladder knows about its input."""

    path: Path
    size: int
    duration: float
    fps: float
    width: int
    height: int
    bit_depth: int
    pix_fmt: str
    codec: str  # FFmpeg's codec name (not its decoder's): h264, hevc, av1, vp9, ...
    hdr: bool
    fields: str | None  # "top field first" or "bottom field first" for interlaced input
    identity: str  # size and a hash of sampled bytes: the content, not the name


def inspect(path: str | os.PathLike, where: str = "cpllm-ladder") -> Source:
    """Check and describe the input, raising a named error for anything unusable."""
    from cpllm_plugin.errors import EmptyInputError, VideoDecodeError
    from cpllm_plugin.video import probe

    p = Path(check_input(path, where, empty=EmptyInputError))
    size = p.stat().st_size
    info = probe(p)
    if not info.duration or info.duration <= 0 or not info.frame_count:
        raise VideoDecodeError(message(where, "a video with a duration", f"{p}: none",
                                       "re-mux it: ffmpeg -i IN -c copy OUT.mkv"))
    return Source(p, size, float(info.duration), float(info.fps), info.width, info.height,
                  info.bit_depth, info.pix_fmt, *_hints(p, info.codec), identity(p))


# FFmpeg's AVFieldOrder: 0 unknown, 1 progressive, then the interlaced orders.
_FIELDS = {2: "top field first", 3: "bottom field first", 4: "top field first",
           5: "bottom field first"}


def _hints(path: Path, decoder: str) -> tuple[str, bool, str | None]:
    """The input's codec (AV1 read by libdav1d is ``av1``), whether it is HDR (PQ or HLG),
    and its field order when it is interlaced."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            cc = stream.codec_context
            codec = cc.codec.canonical_name or decoder
            hdr = int(cc.color_trc or 0) in (16, 18)  # SMPTE ST 2084 (PQ), ARIB B67 (HLG)
            order = int(getattr(cc, "field_order", 0) or 0)
            if order == 0:  # not in the headers (raw streams, some muxers): the first frame
                frame = next(c.decode(stream), None)
                if frame is not None and frame.interlaced_frame:
                    order = 2 if frame.top_field_first else 3
            return codec, hdr, _FIELDS.get(order)
    except Exception:  # noqa: BLE001 - probe() already vetted the file; these are hints
        return decoder, False, None


# --- scoring ------------------------------------------------------------------------------


class Scorer:
    """Frame scores of video files by a cpllm model (ONNX Runtime by default).

    Anything with ``id`` and ``__call__(paths, key_frames) -> [frame scores]`` can stand in
    (tests use a stub); this one runs ``Model.score_many``, the one scoring path.
    """

    def __init__(self, model=DEFAULT_MODEL, backend: str = "auto"):
        from cpllm_plugin.api import load_model

        self.model = load_model(model, backend)
        self.id = self.model.id

    def __call__(self, paths: Sequence[str], key_frames: Sequence[int]) -> list[np.ndarray]:
        if len(set(key_frames)) == 1:  # one batched call: key frames of all samples together
            results = self.model.score_many(list(paths), key_frames=key_frames[0])
        else:
            results = [self.model.score_many([p], key_frames=k)[0]
                       for p, k in zip(paths, key_frames, strict=True)]
        return [r.frame_scores for r in results]

    def _calibration_file(self) -> dict:
        return read_calibration(self.model.source)

    def calibration(self) -> dict[float, float]:
        """VMAF level -> score on clean sources, from the model's ``calibration.json``."""
        return {float(v): float(a["score"]) for v, a in
                self._calibration_file().get("vmaf", {}).items() if a.get("score") is not None}

    def drop(self, vmaf: float = DEFAULT_VMAF) -> float | None:
        """Median fall of a clean source's score by its VMAF-``vmaf`` CRF, if calibrated."""
        return calibrated_drop(self._calibration_file(), vmaf)

    def predictor(self, encoder: str = "libx264"):
        """The model's ``predict`` mode rule for ``encoder`` (:class:`.predict.Predictor`),
        or None."""
        from . import predict

        return predict.load(self.model.source, encoder)

    def predict_encoders(self) -> list[str]:
        """The encoders the model has a ``predict`` rule for."""
        from . import predict

        return predict.encoders(self.model.source)


def read_calibration(model_dir: str | os.PathLike) -> dict:
    """A model directory's ``calibration.json`` (empty when it has none)."""
    path = Path(model_dir) / "calibration.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def calibrated_drop(calibration: dict, vmaf: float = DEFAULT_VMAF) -> float | None:
    """The ``drop`` entry of a calibration at VMAF ``vmaf``, if there is one."""
    return calibration.get("drop", {}).get(str(int(vmaf)), {}).get("drop")


def pool(scores: np.ndarray, how: str) -> float:
    """Pool frame scores: ``mean``, ``p10`` (10th percentile) or ``min``."""
    s = np.asarray(scores, dtype=np.float64)
    if how == "mean":
        return float(s.mean())
    if how == "p10":
        return float(np.percentile(s, 10))
    if how == "min":
        return float(s.min())
    raise LadderArgumentError(message("pool", f"one of {POOLS}", repr(how), "use --pool mean"))


def vmaf_to_score(vmaf: float, calibration: dict[float, float]) -> float:
    """The score at a VMAF level, interpolated between the model's calibration anchors."""
    if not calibration:
        raise LadderArgumentError(message(
            "--min-vmaf", "a model with calibration.json (VMAF anchors)", "none",
            "pass --min-score instead, or use the bundled cpllm-lite"))
    xs = sorted(calibration)
    if not xs[0] <= vmaf <= xs[-1]:
        raise LadderArgumentError(message(
            "--min-vmaf", f"a VMAF in the calibrated range {xs[0]:g}..{xs[-1]:g}",
            f"{vmaf:g}", "pick a VMAF in that range, or pass --min-score"))
    return float(np.interp(vmaf, xs, [calibration[x] for x in xs]))


# --- probes and the search ----------------------------------------------------------------


def score_to_vmaf(score: float, calibration: dict[float, float]) -> float | None:
    """The VMAF level whose calibrated score is ``score``: the inverse of
    :func:`vmaf_to_score` on the non-decreasing envelope of the anchors, extended above the
    top anchor along its last segment (a source can look better than VMAF 95); None below
    the lowest anchor."""
    xs = sorted(calibration)
    ys = np.maximum.accumulate([calibration[x] for x in xs])
    if len(xs) < 2 or score < ys[0]:
        return None
    if score > ys[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(xs[-1] + (score - ys[-1]) / max(slope, 1e-6))
    return float(np.interp(score, ys, xs))


def linear_target(source_score: float, calibration: dict[float, float], level: float,
                  margin: float) -> float | None:
    """The score a pick must keep when the source may lose ``margin`` VMAF-equivalent
    points: the calibrated score of ``min(level, V(s0) - margin)``, V the VMAF level the
    source's score stands for (:func:`score_to_vmaf`). Drops are compared in VMAF units, not
    in score units, which the head's sigmoid squeezes near both ends. None when that level
    is below the calibrated range."""
    v = score_to_vmaf(source_score, calibration)
    if v is None or v - margin < min(calibration):
        return None
    return vmaf_to_score(min(level, v - margin), calibration)


@dataclass
class Probe:
    """One CRF encoded over all samples, measured and (once something reads it) scored.

    ``score`` is None and ``frame_scores`` empty until the model's score is asked for
    (:meth:`Ladder.scored`): a VMAF search reads bitrates and VMAF alone, and scoring a probe
    costs more than encoding it on a small machine."""

    crf: int
    score: float | None
    frame_scores: list[float]
    bytes: int
    kbps: float
    predicted_size: int
    seconds: float
    from_cache: bool = False
    vmaf: float | None = None
    preset: str | None = None  # set when not the pick's own (``predict``'s fast probes)

    def to_dict(self) -> dict:
        d = {"type": "probe", **asdict(self)}
        for k in ("score", "vmaf", "preset"):
            if d[k] is None:
                del d[k]
        if self.score is None:
            del d["frame_scores"]
        return d


def encoded_percent(kbps: float, input_kbps: float | None) -> float | None:
    """``kbps`` as a percentage of ``input_kbps`` (None when the input's is unknown)."""
    return round(100 * kbps / input_kbps, 1) if input_kbps else None


@dataclass
class Pick:
    """The answer: the highest CRF meeting the target, and what it predicts."""

    crf: int
    score: float
    source_score: float
    target: Target
    predicted_size: int
    predicted_kbps: float
    encodes: int
    model: str
    encoder: str
    encoder_args: list[str]
    probes: list[Probe] = field(default_factory=list)
    vmaf: float | None = None
    exhaustive: bool = False
    input_kbps: float | None = None  # the input's own video bitrate inside the samples
    keep: bool = False  # the input is worth more as it is: see Job.pick

    @property
    def encoded_percent(self) -> float | None:
        """The pick's bitrate as a percentage of the input's (ab-av1's encoded percent)."""
        return encoded_percent(self.predicted_kbps, self.input_kbps)

    def row(self, path: str | os.PathLike) -> dict:
        """The ``--json`` pick object with ``path`` and its probes embedded (``probes``: the
        ``--json`` probe objects): one row of ``cpllm batch pick``."""
        return {"type": "pick", "path": str(path), **self.to_dict(),
                "probes": [p.to_dict() for p in self.probes]}

    def to_dict(self) -> dict:
        d = {"type": "pick", "crf": self.crf, "score": self.score,
             "source_score": self.source_score, "target": self.target.value,
             "target_rule": self.target.rule, "target_measure": self.target.measure,
             "min_score": self.target.min_score,
             "max_drop": self.target.max_drop, "predicted_size": self.predicted_size,
             "predicted_kbps": self.predicted_kbps, "encodes": self.encodes,
             "model": self.model, "encoder": self.encoder, "encoder_args": self.encoder_args}
        if self.vmaf is not None:
            d["vmaf"] = self.vmaf
        if self.input_kbps:
            d["input_kbps"] = self.input_kbps
            d["encoded_percent"] = self.encoded_percent
        d["keep"] = self.keep
        return d


class Ladder:
    """Probes of one input (or one window of it) with fixed samples and settings.

    Use as a context manager: the working folder (reference samples, probe encodes) is
    removed on exit, also on Ctrl-C.

    Args:
        source: the input path, or a :class:`Source` from :func:`inspect`.
        settings: encoder settings.
        scorer: a :class:`Scorer` (or a stand-in with ``id`` and ``__call__``).
        samples: the windows to encode (default: :func:`plan_samples`).
        pool: how frame scores become a score: ``mean``, ``p10``, ``min``.
        cache: folder of the probe cache (None: no cache).
        ffmpeg: the ffmpeg binary (see :func:`~cpllm_plugin.integrations.ffmpeg.find_ffmpeg`).
        vmaf: also measure VMAF of every probe against the reference samples.
        progress: called with one line per step (stderr in the CLI).
        workdir: where to make the working folder (default: the system's temp folder).
    """

    def __init__(self, source, settings: Settings, scorer, samples: list[Sample] | None = None,
                 pool: str = "mean", cache: str | os.PathLike | None = None,
                 ffmpeg: str | None = None, vmaf: bool = False,
                 progress: Progress | None = None, workdir: str | os.PathLike | None = None):
        self.source = source if isinstance(source, Source) else inspect(source)
        self.settings = settings
        self.scorer = scorer
        self.samples = samples or plan_samples(self.source.duration)
        if pool not in POOLS:
            raise LadderArgumentError(message("--pool", f"one of {POOLS}", repr(pool),
                                              "use --pool mean, p10 or min"))
        self.pool = pool
        self.ffmpeg = ff.find_ffmpeg(ffmpeg)
        self.vmaf = vmaf
        if vmaf:
            ff._require_libvmaf(self.ffmpeg, "cpllm-ladder --vmaf")
        self.say = progress or (lambda _line: None)
        lo, hi = settings.search
        rng = settings.table.crf_range
        if not rng[0] <= lo < hi <= rng[1]:
            raise LadderArgumentError(message(
                "--crf-range", f"lowest < highest within {rng[0]}..{rng[1]} for "
                f"{settings.encoder}", f"{lo}..{hi}", f"e.g. --crf-range {rng[0]}:{rng[1]}"))
        self.cache = Path(cache) if cache else None
        self.encodes = 0
        self.probes: dict[int, Probe] = {}
        self._unscored: dict[int, list[Path]] = {}  # encodes kept until a score is asked for
        self._workdir = workdir
        self._dir: Path | None = None
        self._refs: list[Path] | None = None
        self._s0: tuple[float, list[float]] | None = None
        self._kbps: float | None = None

    # working folder -----------------------------------------------------------------------

    def __enter__(self) -> Ladder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._unscored.clear()
            self._refs = None

    @property
    def dir(self) -> Path:
        if self._dir is None:
            base = self._workdir or None
            if base:
                Path(base).mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="cpllm-ladder-", dir=base))
        return self._dir

    # keys ---------------------------------------------------------------------------------

    def _key(self, *parts) -> str:
        plan = [(s.start, s.duration, s.key_frames) for s in self.samples]
        blob = json.dumps([self.source.identity, plan, self.settings.vfilter,
                           self.settings.pix_fmt, self.scorer.id, *parts], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _cache_file(self, kind: str, *parts) -> Path | None:
        if self.cache is None:
            return None
        return self.cache / f"{kind}-{self._key(kind, *parts)}.json"

    @staticmethod
    def _probe_key(s: Settings) -> tuple:
        # "video packets": probes cached before their size was read from the packets (a
        # file's size before) are encoded again, not mixed with the new ones.
        return (s.encoder, s.preset, list(map(list, s.options)), "video packets")

    @staticmethod
    def _read(path: Path | None) -> dict | None:
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a damaged cache entry is recomputed

    @staticmethod
    def _write(path: Path | None, data: dict) -> None:
        if path is not None:
            write_atomic(path, json.dumps(data))

    # reference samples --------------------------------------------------------------------

    def references(self) -> list[Path]:
        """Lossless cuts of the samples (``--vfilter`` applied), made once per run: raw frames
        when they fit :data:`RAW_BUDGET`, else lossless H.264."""
        if self._refs is not None:
            return self._refs
        jobs = min(len(self.samples), ff.cpus())
        threads = ff.threads_per_job(jobs)
        raw = self.raw_bytes() <= min(RAW_BUDGET, shutil.disk_usage(self.dir).free // 4)
        # Matroska for both: it keeps the last frame's duration, so the scorer counts the same
        # frames in a reference as in its encodes (NUT reported one frame fewer).
        paths = [self.dir / f"ref{i}.mkv" for i in range(len(self.samples))]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda a: self._cut(*a, threads, raw),
                          zip(self.samples, paths, strict=True)))
        self.say(f"cut {len(paths)} {'raw' if raw else 'lossless'} reference sample(s) in "
                 f"{time.perf_counter() - t0:.1f} s")
        self._refs = paths
        return paths

    def input_kbps(self, filtered: bool = False) -> float | None:
        """The input's own bitrate inside the samples; None when ``vfilter`` makes the
        probes' bitrate incomparable with it (a scale or crop changes what is coded), unless
        ``filtered`` (for what a re-encode saves, not for how the input was made)."""
        from .stream import stats

        if self.settings.vfilter and not filtered:
            return None
        if self._kbps is None:  # read by the mode, and again for the pick's share of it
            self._kbps = stats(self.source.path,
                               [(s.start, s.duration) for s in self.samples]).kbps
        return self._kbps

    def input_noise(self, frames: int = 6) -> float:
        """The input's luma noise inside the samples (:func:`.stream.noise`, ``frames`` spread
        over them). Read off the reference samples, which hold the input's own frames, so
        the input is not decoded again (2.5 s of a 1080p ``predict`` pick); with
        ``--vfilter`` they are filtered, so the input itself is read."""
        from .stream import noise

        if self.settings.vfilter:
            return noise(self.source.path, [(s.start, s.duration) for s in self.samples],
                         frames)
        return float(np.mean(self._on_references(noise, frames)))

    def input_detail(self, frames: int = 6) -> float:
        """The fine detail of the frames the probes are measured against
        (:func:`.stream.detail`, ``frames`` spread over the reference samples)."""
        from .stream import detail

        return float(np.median(self._on_references(detail, frames)))

    def _on_references(self, read, frames: int) -> list[float]:
        """``read(path, frames=...)`` of each reference sample, ``frames`` spread over all."""
        per = max(1, -(-frames // len(self.samples)))
        return [read(r, frames=per) for r in self.references()]

    def raw_bytes(self) -> int:
        """Bytes the reference samples take uncompressed, estimated on the safe side (4:4:4
        and the input's size: a --vfilter usually scales down)."""
        frames = sum(math.ceil(s.duration * self.source.fps) + 1 for s in self.samples)
        per_pixel = 3 * (2 if self.source.bit_depth > 8 else 1)
        return frames * self.source.width * self.source.height * per_pixel

    def _cut(self, s: Sample, out: Path, threads: int, raw: bool = False) -> None:
        where = f"cpllm-ladder: cutting the sample at {s.start:.2f} s"
        seek = ["-ss", f"{s.start:.3f}", "-t", f"{s.duration:.3f}"] if (
            s.start > 0 or s.duration < self.source.duration) else []
        # Time 0 at the first frame: with -ss between two frames the first frame can be
        # rounded one tick late, and the cut then declares one frame more than it holds.
        vf = ["-vf", f"{self.settings.chain},setpts=PTS-STARTPTS"]
        head = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-threads", str(threads), *seek, "-i", str(self.source.path),
                "-map", "0:v:0", "-an", "-sn", "-dn", "-map_metadata", "-1", *vf,
                "-fps_mode", "passthrough"]
        pix = ["-pix_fmt", self.settings.pix_fmt] if self.settings.pix_fmt else []
        ff.write_lossless(lambda codec: ff.run_ffmpeg(head + [*codec, *pix, str(out)], where),
                          threads, raw)

    # scores -------------------------------------------------------------------------------

    def _frame_scores(self, paths: list[Path]) -> list[np.ndarray]:
        return self.scorer([str(p) for p in paths], [s.key_frames for s in self.samples])

    def source_score(self) -> tuple[float, list[float]]:
        """Pooled score of the reference samples (the source as the encode would see it)."""
        if self._s0 is not None:
            return self._s0
        cached = self._read(self._cache_file("source"))
        if cached is None:
            frames = [float(v) for f in self._frame_scores(self.references()) for v in f]
            self._write(self._cache_file("source"), {"frame_scores": frames})
        else:
            frames = cached["frame_scores"]
            self.say("source score from the cache")
        self._s0 = (pool(np.array(frames), self.pool), frames)
        return self._s0

    def probe(self, crf: int, preset: str | None = None, score: bool = True) -> Probe:
        """Encode every sample at ``crf``, measure it (with ``vmaf``) and, with ``score``,
        score it; cached on disk. Without ``score`` the encodes are kept until
        :meth:`scored` (or :meth:`values` of ``"score"``) asks for the score.
        ``preset``: encode at this preset instead of the settings' (the probe then stands
        for that preset alone: a ladder holds probes of one preset)."""
        if crf in self.probes:
            return self.scored(crf) if score else self.probes[crf]
        settings = self._at(preset)
        cached = self._read(self._probe_file(settings, crf))
        if cached is not None and (not self.vmaf or cached.get("vmaf") is not None):
            p = Probe(**{**cached, "from_cache": True})
            p.score = pool(np.array(p.frame_scores), self.pool) if p.frame_scores else None
            self.probes[crf] = p
            self.say(f"crf {crf}: {self._line(p)} (from the cache)")
            return self.scored(crf) if score else p
        self.references()  # cut before the clock starts: a probe's time is its encodes'
        t0 = time.perf_counter()
        outs = self._encodes(crf, settings, score)
        self.encodes += 1
        frames = [v for f, _ in outs for v in f]
        vmaf = None
        if self.vmaf:
            vmaf = round(float(np.average([v for _, v in outs],
                                          weights=[s.duration for s in self.samples])), 3)
        from .stream import video_bytes

        files = self._files(crf)
        # The video's packets, as the input's bitrate is read (Ladder.input_kbps): keep and
        # auto compare the two, and a file's size would count each sample's container too.
        size = sum(video_bytes(p) for p in files)
        secs = sum(s.duration for s in self.samples)
        probe = Probe(crf, pool(np.array(frames), self.pool) if score else None, frames, size,
                      round(size * 8 / secs / 1000, 1),
                      int(size / secs * self.source.duration),
                      round(time.perf_counter() - t0, 2), False, vmaf, preset)
        if score:
            for f in files:
                f.unlink(missing_ok=True)
        else:
            self._unscored[crf] = files
        self._save(probe)
        self.probes[crf] = probe
        self.say(f"crf {crf}: {self._line(probe)} ({probe.seconds:.1f} s)")
        return probe

    def _at(self, preset: str | None) -> Settings:
        return self.settings if preset is None else replace(self.settings, preset=preset)

    def _probe_file(self, settings: Settings, crf: int) -> Path | None:
        return self._cache_file("probe", *self._probe_key(settings), crf)

    def _save(self, p: Probe) -> None:
        self._write(self._probe_file(self._at(p.preset), p.crf),
                    {k: v for k, v in asdict(p).items() if k != "from_cache"})

    def _files(self, crf: int) -> list[Path]:
        return [self.dir / f"crf{crf}_{i}.mkv" for i in range(len(self.samples))]

    def _encodes(self, crf: int, settings: Settings, score: bool, measure: bool = True
                 ) -> list[tuple[list[float], float | None]]:
        """Encode every sample at ``crf`` into :meth:`_files`; ``[(frame scores, VMAF)]``
        per sample (scores only with ``score``, VMAF only with ``measure`` and ``vmaf``)."""
        refs = self.references()
        # Every sample at once, each scored (and measured) as soon as it is encoded: no core
        # idles on the last sample while the others are done, and scoring fills the gaps.
        jobs = min(len(refs), 2 * ff.cpus())
        threads = max(1, ff.cpus() // jobs)
        outs = self._files(crf)

        def one(i: int) -> tuple[list[float], float | None]:
            self._encode(refs[i], outs[i], crf, threads, settings)
            scores = (self.scorer([str(outs[i])], [self.samples[i].key_frames])[0]
                      if score else [])
            vm = ff.measure_fr(refs[i], outs[i], self.ffmpeg, threads, subsample=1,
                               psnr=False)[0] if self.vmaf and measure else None
            return [float(v) for v in scores], vm

        with ThreadPoolExecutor(jobs) as ex:
            return list(ex.map(one, range(len(refs))))

    def scored(self, crf: int) -> Probe:
        """The probe at ``crf`` (made already) with its model score: scored now from the
        encodes :meth:`probe` kept, or encoded again when they are gone (a probe read from
        the cache without a score)."""
        p = self.probes[crf]
        if p.score is not None:
            return p
        t0 = time.perf_counter()
        files = self._unscored.pop(crf, None)
        try:
            if files is not None and all(f.is_file() for f in files):
                per = self.scorer([str(f) for f in files],
                                  [s.key_frames for s in self.samples])
            else:  # read from the cache without a score: encoded again to be scored
                files = self._files(crf)
                per = [f for f, _ in self._encodes(crf, self._at(p.preset), score=True,
                                                   measure=False)]
                self.encodes += 1
        finally:
            for f in files:
                f.unlink(missing_ok=True)
        p.frame_scores = [float(v) for f in per for v in f]
        p.score = pool(np.array(p.frame_scores), self.pool)
        self._save(p)
        self.say(f"crf {crf}: score {p.score:.3f} ({time.perf_counter() - t0:.1f} s)")
        return p

    @staticmethod
    def _line(p: Probe) -> str:
        return ", ".join([*([f"score {p.score:.3f}"] if p.score is not None else []),
                          *([f"VMAF {p.vmaf:.2f}"] if p.vmaf is not None else []),
                          f"{p.kbps:g} kb/s",
                          *([f"preset {p.preset}"] if p.preset is not None else [])])

    def _encode(self, ref: Path, out: Path, crf: int, threads: int,
                settings: Settings | None = None) -> None:
        # The reference sample is already filtered (Settings.chain) and cut to the video.
        ff.run_ffmpeg((settings or self.settings).command(self.ffmpeg, ref, out, crf, threads,
                                                          inputs=["-threads", str(threads)]),
                      f"cpllm-ladder: encoding the probe at CRF {crf}")

    # the search ---------------------------------------------------------------------------

    def search(self, target: float, max_probes: int = MAX_PROBES,
               start: int | None = None, measure: str = "score") -> int | None:
        """Probe until the highest CRF whose ``measure`` (``score``, or ``vmaf`` against the
        input) meets ``target`` is pinned; return it (or None)."""
        lo, hi = self.settings.search
        crf = min(max(start if start is not None else self.settings.table.start, lo), hi)
        prior = PRIOR_SLOPE if measure == "score" else VMAF_PRIOR_SLOPE
        while True:
            self.probe(crf, score=measure == "score")
            fresh = sum(not p.from_cache for p in self.probes.values())
            nxt = next_crf(self.values(measure), target, lo, hi, prior)
            if nxt is None or nxt in self.probes or fresh >= max_probes:
                break
            crf = nxt
        return best_passing(self.values(measure), target)

    def values(self, measure: str = "score") -> dict[int, float]:
        """``{crf: the probe's score or VMAF}`` of every probe so far (scores the probes not
        yet scored when ``measure`` is ``score``)."""
        if measure == "score":
            for c in list(self.probes):
                self.scored(c)
        return {c: float(getattr(p, measure)) for c, p in self.probes.items()}

    def full(self, levels: Sequence[int] | None = None) -> list[Probe]:
        """Probe every level (default: the encoder's 20 levels; libx264: the paper's)."""
        return [self.probe(c) for c in levels or self.settings.table.levels(20)]


def pick(ladder: Ladder, min_score: float, max_drop: float | None = None,
         max_probes: int = MAX_PROBES, full: bool = False) -> Pick:
    """Score the source, resolve the score target, search, and return the :class:`Pick`.

    Raises:
        NoCrfMeetsTargetError: even the lowest CRF searched (or tried) misses the target.
    """
    s0 = _source_score(ladder)
    target = Target.resolve(min_score, max_drop, s0)
    hint = ("pass --max-drop D to accept a CRF within D of the source's own score"
            if max_drop is None and s0 < min_score else
            "lower the target (--min-score / --min-vmaf), or widen --crf-range")
    return _search(ladder, target, max_probes, full, hint)


def pick_vmaf(ladder: Ladder, level: float, max_probes: int = MAX_PROBES,
              full: bool = False, rule: str = "vmaf") -> Pick:
    """The highest CRF whose VMAF against the input (its reference samples) meets ``level``:
    ab-av1's ``crf-search`` on the ladder's samples. ``ladder`` must measure VMAF."""
    if not ladder.vmaf:
        raise LadderArgumentError(message("pick_vmaf()", "a Ladder made with vmaf=True",
                                          "one without", "make it with vmaf=True"))
    s0 = _source_score(ladder)
    target = Target(float(level), None, None, s0, rule, "vmaf")
    return _search(ladder, target, max_probes, full,
                   "lower --min-vmaf, or widen --crf-range")


# ``auto`` mode: VMAF against the input, at a level set by how the input was made. An input
# that costs about as many bits as a transparent re-encode of itself is treated as a master
# and keeps VMAF 95 against itself; one that x264 would reproduce only at a CRF well above that
# crossing is an earlier lossy encode, whose own artifacts a viewer never saw in the master,
# so fidelity to them buys nothing: its level is lowered. The constants are fitted on the
# training catalog (``python -m cpllm_plugin.training.picker --auto``), never on dev
# (docs/benchmark.md).
AUTO_LEVEL = DEFAULT_VMAF
AUTO_GAP = 4.5  # CRF above the VMAF-95 crossing where an input starts to count as re-encoded
AUTO_STEP = 1.0  # VMAF the level gives up per CRF beyond AUTO_GAP
AUTO_FLOOR = 92.0  # never below this: what still shows of the master must be kept
# A soft copy (scaled down and back up, then kept at high quality) carries a master's bits, so
# its bitrate reads as a master's; what it lost is the top octave of its detail, which a
# re-encode cannot lose again, so keeping VMAF 95 against it keeps more than a viewer of the
# master would miss. An input whose fine detail (:func:`.stream.detail`) reads under
# AUTO_SOFT[0] is searched at no more than the level AUTO_SOFT[1]. Fitted on the x264 training
# half with the other constants held (``python -m cpllm_plugin.training.picker --auto`` prints
# ``fit_soft``'s table; docs/benchmark.md). None: off.
AUTO_SOFT: tuple[float, float] | None = (0.34, 90.0)
# The encoder whose ladders AUTO_SOFT was fitted and checked on. With SVT-AV1 on dev it lost a
# soft copy that the guard spares there (SVT-AV1's re-encode at the crossing is small enough
# that the copy reads as an untouched master), so other encoders keep VMAF 95 until a fit on
# their own ladders says otherwise.
AUTO_SOFT_ENCODER = "libx264"

# The model's guard (``--guard D``): VMAF against the input cannot tell when a re-encode that
# keeps the input's own picture still loses what a viewer of the master sees; the model can, as a
# fall of its score below its score of the input, and the pick then never goes above the CRF
# where that fall reaches D. On by default: fitted with the constants above on out-of-sample
# scores of the training catalog (models trained without half its sources), it is the one
# setting that keeps the goals' share of inputs; its price was more bits on the clean masters
# the model judges harsher than VMAF does, which AUTO_SPARE takes back (docs/benchmark.md).
# 0 or None: off.
AUTO_GUARD: float | None = 0.175
# The scale D is read on (guard_floor): "score", the 1-5 score itself, or "logit", the head's
# logit of it, where a fall spans about as many CRF on an input the model scores low (most
# uploads) as on one near 5. The fit (training/picker.py) sweeps both; the logit is not the
# default until it is fitted on out-of-sample scores and replayed with every encoder
# (docs/experiments.md, "The guard's fall on the head's logit scale").
AUTO_GUARD_SCALE = "score"
# The guard spares an input whose bitrate reads as an untouched master: one with at least this
# many times the bits of its own re-encode at the VMAF-95 crossing, in the same samples. There
# VMAF against the input is VMAF against the master, so the search is right and the guard could
# only add bits; the soft copies, the earlier encodes and the degraded originals the guard is
# for carry fewer. A ratio of bits, not a distance in CRF, so that it means the same with every
# encoder's CRF scale. Chosen on half the training catalog, where the richest input the guard
# saves carries 2.8 times its crossing's bits (docs/benchmark.md). None: it spares none.
AUTO_SPARE: float | None = 4.0
# The model's lift (``--drop-noise``): a noisy input (sensor noise, a noise filter) costs a
# re-encode many times the bits of its picture, because VMAF against it asks for the noise. The
# model's score of such an input holds while a re-encode smooths the noise away and falls once
# the picture goes, so with the lift the pick on a noisy input that is not spared goes up to
# the highest CRF whose score stays within AUTO_LIFT of the input's. Off by default: a master's
# film grain reads as the same noise, and the model lets it go as readily (docs/benchmark.md).
# The constants are chosen on half the training catalog. It stands apart from the guard:
# --guard 0 --drop-noise searches by VMAF alone but lets a noisy input's noise go.
AUTO_LIFT_NOISE: float | None = 5.5  # luma noise (stream.noise, 8-bit units) of a noisy input
AUTO_LIFT = 0.1  # the fall of the model's score where the lift stops
LIFT_ENCODER = "libx264"  # the ladders the lift was fitted on (x265 smooths noise sooner)


def equivalent_crf(rates: dict[int, float], input_rate: float) -> float | None:
    """The CRF at which the probes' bitrate (``{crf: rate}``) equals the input's: a straight
    line of log bitrate against CRF through them (least squares; two CRFs at least)."""
    crfs = sorted(c for c, r in rates.items() if r > 0)
    if len(crfs) < 2 or input_rate <= 0 or crfs[-1] == crfs[0]:
        return None
    slope, icpt = np.polyfit(crfs, [math.log(rates[c]) for c in crfs], 1)
    if slope >= 0:
        return None
    return float((math.log(input_rate) - icpt) / slope)


def soft_rule(encoder: str) -> tuple[float, float] | None:
    """:data:`AUTO_SOFT` for ``encoder``'s ladders (None: the rule is off for it)."""
    return AUTO_SOFT if encoder == AUTO_SOFT_ENCODER else None


def auto_level(gap: float | None, reached: bool = True, detail: float | None = None,
               at: float = AUTO_GAP, step: float = AUTO_STEP, floor: float = AUTO_FLOOR,
               soft: tuple[float, float] | None = AUTO_SOFT) -> float:
    """The VMAF level of ``auto`` mode for an input whose equivalent CRF lies ``gap`` CRF
    above its VMAF-95 crossing (None: unknown, the input is treated as a master).
    ``reached``: whether some CRF in the range keeps VMAF 95 against the input; when none
    does, its own detail (an upscale's ringing, noise) costs more than a re-encode keeps, so
    holding out for 95, or for an earlier encode's level just under it, can only fail or
    take the lowest CRF: the input gets ``floor``. ``detail``: the input's fine detail (None:
    not read); under ``soft[0]`` it reads as a soft copy, searched at no more than
    ``soft[1]``. The other arguments are the constants, overridden only by benchmark sweeps."""
    if not reached:
        return floor
    level = AUTO_LEVEL
    if gap is not None and gap > at:
        level = max(floor, AUTO_LEVEL - step * (gap - at))
    if soft is not None and detail is not None and detail < soft[0]:
        level = min(level, soft[1])
    return level


def pick_auto(ladder: Ladder, max_probes: int = MAX_PROBES, full: bool = False,
              guard: float | None = AUTO_GUARD, drop_noise: bool = False) -> Pick:
    """``auto`` mode: the VMAF-95 search against the input; then, for an input that reads as
    an earlier lossy encode (its bitrate inside the samples, :meth:`Ladder.input_kbps`,
    matches a re-encode well above that crossing), the search again at the lower
    :func:`auto_level`; when no CRF in the range reaches VMAF 95 against the input, the
    search again at :data:`AUTO_FLOOR`, and when none reaches that either, the range's lowest
    CRF. ``guard``: the model's cap (None or 0: none): the pick is capped where its score
    falls ``guard`` below its score of the input (:func:`guard_crf`). ``drop_noise``: on a
    noisy input (:meth:`Ladder.input_noise` from :data:`AUTO_LIFT_NOISE`), the pick is first
    lifted to where the score falls :data:`AUTO_LIFT` below it (:func:`lift_crf`). Neither on
    an input whose bitrate reads as an untouched master (:func:`spared`)."""
    if not ladder.vmaf:
        raise LadderArgumentError(message("pick_auto()", "a Ladder made with vmaf=True",
                                          "one without", "make it with vmaf=True"))
    s0 = _source_score(ladder)
    if full:
        ladder.full()
        c95 = best_passing(ladder.values("vmaf"), AUTO_LEVEL)
    else:
        c95 = ladder.search(AUTO_LEVEL, max_probes, measure="vmaf")
    input_kbps = ladder.input_kbps()
    ceq = None if input_kbps is None else equivalent_crf(
        {c: p.kbps for c, p in ladder.probes.items()}, input_kbps)
    # Nothing reaches VMAF 95: the crossing lies below the lowest CRF searched.
    gap = None if ceq is None else ceq - (c95 if c95 is not None else ladder.settings.search[0])
    level = auto_level(gap, c95 is not None)
    # Read only where it could lower the level (six frames of the reference samples), and
    # not with --vfilter, where auto keeps VMAF 95 as it does for the bitrate.
    rule = soft_rule(ladder.settings.encoder)
    detail = (ladder.input_detail() if rule is not None and c95 is not None
              and level > rule[1] and not ladder.settings.vfilter else None)
    soft = auto_level(gap, c95 is not None, detail, soft=rule)
    if c95 is None:
        why = f"no CRF in the range keeps VMAF {AUTO_LEVEL:g} against the input"
    elif soft < level:
        why = f"input reads as a soft copy (fine detail {detail:.2f}, under {rule[0]:g})"
    elif level == AUTO_LEVEL:
        why = "input reads as a master"
    else:
        why = (f"input reads as an earlier encode (bitrate of CRF {ceq:.1f}, {gap:.1f} "
               "above the VMAF-95 crossing)")
    level = soft
    ladder.say(f"auto: {why}; level {level:g}")
    target = Target(level, None, None, s0, f"auto: {why}", "vmaf")
    if level == AUTO_LEVEL:
        crf = c95
    else:
        try:
            crf = _find(ladder, target, max_probes + 2, full, "")
        except NoCrfMeetsTargetError:
            # Only an input that keeps VMAF 95 nowhere gets here (a lower level is met
            # wherever 95 is), so not even the floor is: the range's lowest CRF keeps the
            # most of it any CRF can, where stopping would leave a catalog without a pick.
            crf = ladder.settings.search[0]
            ladder.probe(crf)
            ladder.say(f"auto: no CRF in the range keeps VMAF {level:g} against the input "
                       f"either; its lowest CRF, {crf}")
            target = replace(target, rule=f"{target.rule}; not even VMAF {level:g} in the "
                             f"range: its lowest CRF")
    at95 = None if c95 is None else ladder.probes.get(c95)
    rich = (None if input_kbps is None or at95 is None or at95.kbps <= 0
            else input_kbps / at95.kbps)
    if (guard or drop_noise) and spared(rich, AUTO_SPARE):
        what = "guard" if guard else "lift"
        ladder.say(f"auto: the input has {rich:.1f} times the bits of its re-encode at CRF "
                   f"{c95}, the VMAF-95 crossing: an untouched master, which the model's "
                   f"{what} spares")
        target = replace(target, rule=f"{target.rule}; {what} spared (a master's bitrate)")
        guard, drop_noise = None, False
    lift = drop_noise and AUTO_LIFT_NOISE is not None
    sigma = ladder.input_noise() if lift else None
    if sigma is not None and sigma >= AUTO_LIFT_NOISE:
        lifted = lift_crf(ladder, s0, crf, full, AUTO_LIFT)
        if lifted is not None and lifted > crf:
            ladder.say(f"auto --drop-noise: the input reads as noisy (luma noise "
                       f"{sigma:.1f}); the model's score holds within {AUTO_LIFT:g} of the "
                       f"input's up to CRF {lifted}; pick lifted there")
            target = replace(target, rule=f"{target.rule}; noisy (luma noise {sigma:.1f}), "
                             f"lifted to CRF {lifted}, where the model's score holds within "
                             f"{AUTO_LIFT:g} of the input's")
            crf = lifted
    capped = guard_crf(ladder, s0, crf, full, guard)
    if capped is not None and capped < crf:
        fell = f"{guard:g} below the input's" + (
            "" if AUTO_GUARD_SCALE == "score" else
            f" on its {AUTO_GUARD_SCALE} (under {guard_floor(s0, guard):.2f})")
        ladder.say(f"auto: the model's score falls {fell} above CRF {capped}; pick capped "
                   "there")
        target = replace(target, rule=f"{target.rule}; capped at CRF {capped}, where the "
                         f"model's score falls {fell}")
        crf = capped
    return _result(ladder, target, crf, full)


def spared(rich: float | None, spare: float | None) -> bool:
    """Whether ``auto``'s guard spares an input with ``rich`` times the bits of its re-encode
    at the VMAF-95 crossing (None: unknown, never spared): ``spare`` times or more
    (:data:`AUTO_SPARE`; None: never)."""
    return rich is not None and spare is not None and rich >= spare


GUARD_PROBES = 3  # probes the guard may add: the VMAF search's probes are scored already
LIFT_PROBES = 3  # probes the lift may add above the pick


# The model's score range (the head's 1 + 4 sigmoid), whose logit the "logit" scale reads.
SCORE_RANGE = ModelConfig.score_range
# The widest fall --guard takes on each scale: the whole 1-5 range; on the logit, a score at
# the range's edge (guard_floor's eps) lies 9.2 from its middle, so 10 lets any encode through.
GUARD_MAX = {"score": 4.0, "logit": 10.0}


def guard_floor(s0: float, fall: float, scale: str | None = None) -> float:
    """The model score a re-encode must keep for ``auto``'s guard: ``fall`` below the input's
    own ``s0`` on ``scale`` (None: :data:`AUTO_GUARD_SCALE`). On ``"logit"``, the head's
    ``logit((score - lo) / (hi - lo))``: the head's sigmoid squeezes a fall near both ends, so
    one fall of the 1-5 score spans few CRF on an input the model scores low and many on one
    it scores near 5, where on the logit a fall spans about as many CRF anywhere."""
    scale = AUTO_GUARD_SCALE if scale is None else scale
    if scale == "score":
        return s0 - fall
    if scale != "logit":
        raise LadderArgumentError(message("guard_floor()", "a scale of " + " or ".join(
            GUARD_MAX), repr(scale), "pass scale='score' or 'logit'"))
    lo, hi = SCORE_RANGE
    eps = 1e-4  # a mean of frame scores can sit on the range's edge
    u = min(max((s0 - lo) / (hi - lo), eps), 1 - eps)
    return min(s0, lo + (hi - lo) / (1 + math.exp(fall - math.log(u / (1 - u)))))


def score_holds(ladder: Ladder, floor: float, start: int, full: bool,
                probes: int) -> int | None:
    """The highest CRF whose model score stays at ``floor`` or above (on the score's
    monotone fit), searched from ``start`` (with ``full``, read off every level); the probes
    made so far count, ``probes`` more at most. None when no probe does."""
    if full:
        return best_passing(ladder.values("score"), floor)
    # ``search`` counts every probe made so far against its budget.
    made = sum(not p.from_cache for p in ladder.probes.values())
    return ladder.search(floor, made + probes, start=start, measure="score")


def guard_crf(ladder: Ladder, s0: float, crf: int, full: bool,
              guard: float | None) -> int | None:
    """The highest CRF whose model score stays at :func:`guard_floor` (``guard`` below the
    input's own ``s0``), when the pick ``crf`` does not; None when ``crf`` does, when no CRF
    does, or with no guard (None or 0). Searched from ``crf`` down, so the probes already
    made count."""
    if not guard:
        return None
    floor = guard_floor(s0, guard)
    if not full:
        # The monotone fit at ``crf`` over the probes at and below it is a lower bound on the
        # fit over all of them (a probe above can only pool upwards with it): where that
        # holds, the pick holds, and the probes above it need no score.
        below = {c: ladder.scored(c).score for c in ladder.probes if c <= crf}
        if best_passing(below, floor) == crf:
            return None
    held = best_passing(ladder.values("score"), floor)
    if not full and held is not None and held >= crf:
        return None
    return score_holds(ladder, floor, crf, full, GUARD_PROBES)


def lift_crf(ladder: Ladder, s0: float, crf: int, full: bool, fall: float) -> int | None:
    """``--drop-noise``'s lift: the highest CRF whose model score stays within ``fall`` of the
    input's own ``s0``, searched from the pick ``crf`` up (:func:`score_holds`)."""
    return score_holds(ladder, s0 - fall, crf, full, LIFT_PROBES)


def pick_predict(ladder: Ladder) -> Pick:
    """``predict`` mode: no reference and no VMAF. One or two probes (at the rule's own
    preset, a fast one) give the encoder's bitrate and the model's scores; the model's fitted
    rule (:mod:`.predict`) turns them and the input's stream into a CRF, ``margin`` below the
    highest it estimates keeps what the input had. The pick itself is not encoded: its size
    is the rule's estimate from the probe's bitrate and the input's features
    (:meth:`.predict.Predictor.rate`), its score read off the probes' scores."""
    encoder = ladder.settings.encoder
    rule_of = getattr(ladder.scorer, "predictor", None)  # a stand-in scorer may have none
    rule = rule_of(encoder) if rule_of else None
    if rule is None:
        fitted = ladder.scorer.predict_encoders() if rule_of else []
        if fitted:
            raise LadderArgumentError(message(
                "cpllm-ladder --mode predict", "an --encoder the model has a rule for ("
                + ", ".join(fitted) + "; each is fitted on its encoder's CRF scale)", encoder,
                f"use --mode auto (or vmaf) with {encoder}, or fit a rule for it with python "
                f"-m cpllm_plugin.training.picker --codec {encoder}"))
        raise LadderArgumentError(message(
            "cpllm-ladder --mode predict", "a model with a fitted predict rule",
            f"model {ladder.scorer.id} without one", "use --mode auto, or fit one with "
            "python -m cpllm_plugin.training.picker"))
    from cpllm_plugin.video import probe as probe_video

    from . import predict

    s0 = _source_score(ladder)
    probes = [ladder.probe(c, rule.preset) for c in rule.probes]
    first, last = probes[0], probes[-1]
    kbps = ladder.input_kbps()
    ceq = None if kbps is None else predict.equivalent_crf(
        {p.crf: p.kbps for p in probes}, kbps, encoder)
    # The reference samples carry --vfilter's geometry: bits per pixel of what is coded.
    ref = probe_video(ladder.references()[0])
    bpp = first.kbps * 1000 / max(ref.width * ref.height * ref.fps, 1e-9)
    x = predict.features(ceq, ladder.input_noise(), bpp, ref.height, s0,
                         [p.score for p in probes], encoder)
    est = rule.estimate(x)
    crf = rule.crf(x, *ladder.settings.search)
    rate = rule.rate({p.crf: p.kbps for p in probes}, crf, x)
    # The score linearly between two probes, else the probe's own.
    t = (crf - first.crf) / (last.crf - first.crf) if last.crf > first.crf else 0.0
    score = first.score + t * (last.score - first.score)
    size = int(first.predicted_size * rate / first.kbps)
    why = ("input reads as a master" if ceq is None or ceq <= predict.scale(encoder).start else
           f"input reads as CRF {ceq:.1f}")
    ladder.say(f"predict: {why}; estimate CRF {est:.1f}, margin {rule.margin:g}")
    target = Target(round(est, 2), None, None, s0,
                    f"predict: {why}; estimate {est:.1f} less margin {rule.margin:g}", "crf")
    return Pick(crf, round(score, 3), s0, target, size, round(rate, 1), ladder.encodes,
                ladder.scorer.id, ladder.settings.encoder, ladder.settings.public(),
                sorted(ladder.probes.values(), key=lambda q: q.crf))


def predict_samples(samples: list[Sample], scorer, encoder: str) -> list[Sample]:
    """``samples`` with at most the key frames ``predict``'s rule for ``encoder`` reads per
    sample (unchanged for a rule, or a stand-in scorer, that names none)."""
    rule_of = getattr(scorer, "predictor", None)
    rule = rule_of(encoder) if rule_of else None
    if rule is None or rule.key_frames is None:
        return samples
    return [replace(s, key_frames=min(s.key_frames, rule.key_frames)) for s in samples]


def run_mode(ladder: Ladder, mode: str, min_score: float | None = None,
             max_drop: float | None = None, vmaf_level: float = DEFAULT_VMAF,
             max_probes: int = MAX_PROBES, full: bool = False,
             guard: float | None = None, drop_noise: bool = False) -> Pick:
    """The pick of ``mode`` (one of :data:`MODES`) on ``ladder``: the one dispatch that
    ``cpllm-ladder pick``, ``encode`` and ``scenes`` share. ``guard``: ``auto``'s model
    guard (None: :data:`AUTO_GUARD`; 0: off); ``drop_noise``: its lift on noisy inputs."""
    if mode == "auto":
        return pick_auto(ladder, max_probes, full, AUTO_GUARD if guard is None else guard,
                         drop_noise)
    if mode == "vmaf":
        return pick_vmaf(ladder, vmaf_level, max_probes, full)
    if mode == "predict":
        return pick_predict(ladder)
    return pick(ladder, min_score, max_drop, max_probes, full)


# ffmpeg's deinterlacing filters: a --vfilter with one of them has dealt with the fields.
_DEINTERLACERS = ("bwdif", "yadif", "w3fdif", "estdif", "nnedi", "kerndeint", "mcdeint")


def _source_score(ladder: Ladder) -> float:
    if ladder.source.hdr:
        warnings.warn(f"{ladder.source.path.name} is HDR (PQ or HLG): the model was trained "
                      "on SDR 8-bit content, so its scores and the pick are rough",
                      stacklevel=3)
    vfilter = ladder.settings.vfilter or ""
    if ladder.source.fields and not any(d in vfilter for d in _DEINTERLACERS):
        warnings.warn(f"{ladder.source.path.name} is interlaced ({ladder.source.fields}): "
                      "the probes and the encode code its frames as progressive, so the combing "
                      "of moving edges stays in the picture and the model scores it; "
                      "deinterlace with --vfilter bwdif (or bwdif=send_field for one frame a "
                      "field)", stacklevel=3)
    return ladder.source_score()[0]


def _search(ladder: Ladder, target: Target, max_probes: int, full: bool, hint: str) -> Pick:
    return _result(ladder, target, _find(ladder, target, max_probes, full, hint), full)


def _find(ladder: Ladder, target: Target, max_probes: int, full: bool, hint: str) -> int:
    """The highest CRF that meets ``target`` (searched, or read off the full ladder); a
    named error with ``hint`` when none does."""
    ladder.say(f"source score {target.source_score:.3f}; target {target.measure} "
               f"{target.value:.3f} ({target.rule})")
    if full:
        ladder.full()
        crf = best_passing(ladder.values(target.measure), target.value)
    else:
        crf = ladder.search(target.value, max_probes, measure=target.measure)
    if crf is None:
        values = ladder.values(target.measure)
        best = ladder.probes[max(values, key=values.get)]
        raise NoCrfMeetsTargetError(message(
            "cpllm-ladder pick", f"a CRF with {target.measure} at least {target.value:.3f} "
            f"({target.rule})", f"none; the best CRF tried is {best.crf} with "
            f"{target.measure} {values[best.crf]:.3f} (source score "
            f"{target.source_score:.3f})", hint), best, target.value, target.source_score)
    return crf


def _result(ladder: Ladder, target: Target, crf: int, full: bool) -> Pick:
    p = ladder.scored(crf)
    return Pick(crf, p.score, target.source_score, target, p.predicted_size, p.kbps,
                ladder.encodes, ladder.scorer.id, ladder.settings.encoder,
                ladder.settings.public(), sorted(ladder.probes.values(), key=lambda q: q.crf),
                p.vmaf, full)


def default_cache() -> Path:
    """``$CPLLM_CACHE`` or ``$XDG_CACHE_HOME/cpllm/ladder`` (``~/.cache/cpllm/ladder``)."""
    if os.environ.get("CPLLM_CACHE"):
        return Path(os.environ["CPLLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cpllm" / "ladder"


# --- the Python API: options in, a pick out -------------------------------------------------

MODES = ("auto", "vmaf", "predict", "score")
# Modes that never run VMAF (their ladders measure it only when asked, with --vmaf).
NO_REFERENCE = ("predict", "score")
DEFAULT_MODE = "auto"  # the catalog benchmark's winner (docs/benchmark.md)
DEFAULT_MAX_DROP = 0.25  # the drop of a model without a calibrated one


@dataclass(frozen=True)
class PickOptions(Settings):
    """Everything a pick depends on, with ``cpllm-ladder``'s defaults (one field per flag):
    the encoder :class:`Settings` it extends, and the target, samples and runtime.

    Attributes:
        mode: ``auto`` by VMAF against the input at a level set by how the input was
            made (:func:`pick_auto`); ``vmaf`` by VMAF against the input at ``min_vmaf``
            (ab-av1's ``crf-search``); ``score`` by the model's predicted score (no
            reference, no VMAF runs). None: ``score`` when a score target is given
            (``min_score``, ``max_drop``, ``no_max_drop``), ``vmaf`` when ``min_vmaf`` is,
            else :data:`DEFAULT_MODE`.
        encoder, preset, options, pix_fmt, vfilter, crf_range: inherited, see
            :class:`Settings`.
        min_score: absolute score target (default: the model's score at ``min_vmaf``).
        min_vmaf: the target as a VMAF level (default 95): mapped through the model's
            calibration in ``score`` mode, measured in ``vmaf`` mode.
        max_drop: the score target is at most this far below the source's own score
            (None: the model's calibrated drop); ``no_max_drop`` turns the rule off.
        samples, sample_seconds, key_frames: the sample plan (see :func:`plan_samples`).
        pool: how frame scores pool: ``mean``, ``p10`` or ``min``.
        max_probes: most probe encodes of the search.
        guard: ``auto`` only: never pick above the CRF where the model's score falls this
            far below its score of the input (:func:`guard_crf`; None: :data:`AUTO_GUARD`;
            0: no such cap; ``drop_noise`` still lifts).
        drop_noise: ``auto`` only: the input's noise is not worth its bits (sensor noise in
            uploads, not a master's grain): on an input that reads as noisy
            (:data:`AUTO_LIFT_NOISE`) the pick goes up to where the model's score holds
            within :data:`AUTO_LIFT` of its score of the input (:func:`lift_crf`).
        keep: mark the pick ``keep`` (and ``encode`` copies the input's video stream instead
            of encoding it) where the pick needs more bits than the input has
            (:data:`KEEP_PERCENT`) and the input is in one of the codecs the tool encodes
            (:data:`KEEP_CODECS`: H.264, HEVC, AV1, VP9) with the output's pixel format and
            no ``vfilter``: such a re-encode keeps at most what the input has, for more bits.
        keep_any_codec: with ``keep``, an input in any of :data:`KEEP_CODECS` is kept, as
            ab-av1's gate leaves any input it would not shrink; False (``--keep-same-codec``):
            only one already in the encoder's format, for a catalog that needs its own.
        max_encoded_percent: refuse a pick whose bitrate is more than this percentage of
            the input's (:class:`PickTooLargeError`; ab-av1's ``--max-encoded-percent``;
            None: any). Per-scene picks are judged together (the CLI's ``--per-scene``).
        vmaf: also measure VMAF of every probe against the input (always on in ``vmaf`` mode).
        full: probe every level instead of searching.
        model, backend: the scoring model and its backend.
        cache: probe cache folder (None: :func:`default_cache`); ``no_cache`` turns it off.
        ffmpeg: the ffmpeg binary (None: imageio-ffmpeg's, or ``$CPLLM_FFMPEG``).
        temp_dir: where probe encodes are made.
    """

    mode: str | None = None
    min_score: float | None = None
    min_vmaf: float | None = None
    max_drop: float | None = None
    no_max_drop: bool = False
    samples: int | None = None
    sample_seconds: float | None = None
    key_frames: int | None = None
    pool: str = "mean"
    max_probes: int = MAX_PROBES
    guard: float | None = None
    drop_noise: bool = False
    keep: bool = True
    keep_any_codec: bool = True
    max_encoded_percent: float | None = None
    vmaf: bool = False
    full: bool = False
    model: str = DEFAULT_MODEL
    backend: str = "auto"
    cache: str | os.PathLike | None = None
    no_cache: bool = False
    ffmpeg: str | None = None
    temp_dir: str | os.PathLike | None = None

    # Fields whose click option names differ (``--samples`` is stored as ``count``).
    FLAG_NAMES = {"samples": "count", "cache": "cache_dir"}

    @classmethod
    def from_flags(cls, kw: dict) -> PickOptions:
        """From the values of ``cpllm-ladder``'s click options (their names as click gives
        them; presentation flags such as ``as_json`` and ``quiet`` are ignored)."""
        names = {flag: field for field, flag in cls.FLAG_NAMES.items()}
        fields = set(cls.__dataclass_fields__)
        return cls(**{names.get(k, k): v for k, v in kw.items()
                      if names.get(k, k) in fields})

    def settings(self) -> Settings:
        """The encoder settings alone (lists from JSON or click made tuples, so they hash)."""
        return Settings(self.encoder, self.preset, tuple(map(tuple, self.options)),
                        self.pix_fmt, self.vfilter,
                        tuple(self.crf_range) if self.crf_range else None)


# A pick over this share of the input's bitrate is kept (PickOptions.keep): the re-encode
# keeps at most what the input has, for more bits. Not fitted: it is where a re-encode stops
# saving anything.
KEEP_PERCENT = 100.0
# What keep keeps: the codecs the tool itself encodes, which any player it targets decodes
# (not MPEG-2, MPEG-4 Part 2 or MJPEG, however small). Any of them by default, not only the
# encoder's: an earlier H.264 upload that an HEVC or AV1 re-encode would outgrow is already
# the cheapest file that keeps what it has, and ab-av1's gate (--max-encoded-percent) leaves
# such an input too, whatever its codec.
KEEP_CODECS = tuple(sorted({e.codec for e in ff.ENCODERS.values()}))


class Job:
    """One input with its options resolved: the source checked, the model loaded, the target
    rule and the cache chosen. :meth:`pick` runs the search; :meth:`ladder` gives the probes
    to ``encode`` and ``scenes``.

    Args:
        path: the input video.
        options: the pick's options.
        scorer: a loaded :class:`Scorer` (or a stand-in) to reuse; None loads ``options.model``.
        progress: called with one line per step (None: silent).
        where: the command named in errors.

    Attributes:
        holds: the video codecs the output's container takes (``encode`` sets it from the
            output's name; None: any): an input in another is re-encoded, never kept.
    """

    holds: Collection[str] | None = None

    def __init__(self, path: str | os.PathLike, options: PickOptions | None = None,
                 scorer=None, progress: Progress | None = None,
                 where: str = "cpllm-ladder pick", default_mode: str = DEFAULT_MODE):
        o = self.options = options or PickOptions()
        self.where = where
        self.say = progress or (lambda _line: None)
        if o.mode is not None and o.mode not in MODES:
            raise LadderArgumentError(message(f"{where} --mode", f"one of {MODES}",
                                              repr(o.mode), "use --mode auto"))
        score_target = (o.min_score is not None or o.max_drop is not None or o.no_max_drop)
        self.mode = o.mode or ("score" if score_target else "vmaf" if o.min_vmaf is not None
                               else default_mode)
        if o.min_score is not None and o.min_vmaf is not None:
            raise LadderArgumentError(message(where, "one of --min-score and --min-vmaf",
                                              "both", "give the target once"))
        if self.mode == "vmaf" and o.min_score is not None:
            raise LadderArgumentError(message(
                where, "a VMAF level (--min-vmaf) in --mode vmaf", "--min-score",
                "pass --min-vmaf V, or use --mode score for a score target"))
        if self.mode in ("auto", "predict") and (o.min_score is not None
                                                 or o.min_vmaf is not None):
            raise LadderArgumentError(message(
                where, f"no target in --mode {self.mode} (it sets its own)",
                "--min-score" if o.min_score is not None else "--min-vmaf",
                "use --mode vmaf --min-vmaf V or --mode score --min-score S for a target "
                "of your own"))
        if o.guard is not None and self.mode != "auto":
            raise LadderArgumentError(message(
                where, "--guard with --mode auto (it caps auto's VMAF pick by the model)",
                f"--guard with --mode {self.mode}", "drop --guard, or use --mode auto"))
        if o.drop_noise and self.mode != "auto":
            raise LadderArgumentError(message(
                where, "--drop-noise with --mode auto (it lifts auto's pick by the model)",
                f"--drop-noise with --mode {self.mode}", "drop --drop-noise, or use --mode auto"))
        if o.drop_noise and o.encoder != LIFT_ENCODER:
            # Not an error: on the dev ladders it kept every noisy copy with each encoder.
            warnings.warn(f"--drop-noise: its lift is fitted on {LIFT_ENCODER} ladders; "
                          f"with {o.encoder} it may take a noisy input past what it had (with "
                          "libx265 on the training catalog it did so on 6 of 16 noisy copies, "
                          "by 1-3 CRF; docs/benchmark.md)", stacklevel=2)
        top = GUARD_MAX[AUTO_GUARD_SCALE]
        if o.guard is not None and not 0 <= o.guard <= top:
            raise LadderArgumentError(message(
                f"{where} --guard", f"a fall of the model's score in [0, {top:g}] on "
                + ("its 1-5 scale" if AUTO_GUARD_SCALE == "score" else "its logit")
                + " (0 turns the guard off)", f"{o.guard:g}",
                f"drop --guard for the default {AUTO_GUARD:g}, or pass --guard 0 to turn it off"))
        if o.max_encoded_percent is not None and not o.max_encoded_percent > 0:
            raise LadderArgumentError(message(
                f"{where} --max-encoded-percent", "a percentage of the input's bitrate above 0",
                f"{o.max_encoded_percent:g}", "pass e.g. --max-encoded-percent 80, or drop it"))
        if self.mode == "predict" and o.full:
            raise LadderArgumentError(message(
                where, "--full with a searching mode", "--mode predict (it reads its "
                "probe, whatever --full says)", "drop --full, or use --mode auto --full"))
        self.settings = o.settings()
        self.settings.table  # noqa: B018 - validates the encoder name early
        self.source = inspect(path, where)
        self.say(f"{self.source.path.name}: {self.source.width}x{self.source.height}, "
                 f"{self.source.duration:.2f} s, {self.source.fps:g} fps, "
                 f"{self.source.pix_fmt}; loading {o.model}")
        self.scorer = scorer if scorer is not None else Scorer(o.model, o.backend)
        self.cache = None if o.no_cache else (Path(o.cache) if o.cache else default_cache())
        self.vmaf_level = o.min_vmaf if o.min_vmaf is not None else DEFAULT_VMAF
        self.min_score, self.target_note = (None, f"VMAF {self.vmaf_level:g}") \
            if self.mode != "score" else self._min_score()
        if o.no_max_drop:
            self.max_drop = None
        elif o.max_drop is not None:
            self.max_drop = o.max_drop
        else:
            drop = self.scorer.drop() if hasattr(self.scorer, "drop") else None
            self.max_drop = drop or DEFAULT_MAX_DROP

    def _min_score(self) -> tuple[float, str]:
        o = self.options
        if o.min_score is not None:
            return o.min_score, f"--min-score {o.min_score:g}"
        cal = self.scorer.calibration() if hasattr(self.scorer, "calibration") else {}
        if not cal and o.min_vmaf is None:
            raise LadderArgumentError(message(
                self.where, "--min-score for a model without calibration.json",
                f"model {self.scorer.id} without one", "pass --min-score S (1-5)"))
        return vmaf_to_score(self.vmaf_level, cal), f"VMAF {self.vmaf_level:g}"

    def ladder(self, samples: list[Sample] | None = None) -> Ladder:
        o = self.options
        samples = samples or plan_samples(self.source.duration, o.samples, o.sample_seconds,
                                          o.key_frames)
        if self.mode == "predict" and o.key_frames is None:
            samples = predict_samples(samples, self.scorer, self.settings.encoder)
        return Ladder(self.source, self.settings, self.scorer, samples, o.pool, self.cache,
                      o.ffmpeg, o.vmaf or self.mode not in NO_REFERENCE, self.say,
                      o.temp_dir)

    def pick(self, on_probe: Callable[[Probe], None] | None = None) -> Pick:
        """Search (or probe every level with ``full``) and return the pick. ``on_probe`` is
        called with every probe, also when no CRF meets the target."""
        o = self.options
        with self.ladder() as ladder:
            try:
                result = run_mode(ladder, self.mode, self.min_score, self.max_drop,
                                  self.vmaf_level, o.max_probes, o.full, o.guard,
                                  o.drop_noise)
                result.input_kbps = ladder.input_kbps(filtered=True)
                bigger = (result.encoded_percent or 0) > KEEP_PERCENT
                held = self.holds is None or self.source.codec in self.holds
                result.keep = bigger and self.keepable() and held
                if bigger and not result.keep and self.keepable(any_codec=True):
                    why = ("the output's container cannot hold it" if self.keepable()
                           else f"it is not in {self.settings.encoder}'s format "
                           "(--keep-same-codec)")
                    self.say(f"the input ({self.source.codec}) is smaller than CRF "
                             f"{result.crf}'s re-encode, but {why}: re-encoded")
                if not result.keep:  # a kept input re-encodes nothing: no size to refuse
                    self.check_size(result.predicted_kbps, result.input_kbps,
                                    f"CRF {result.crf}", result)
                return result
            finally:
                for p in ladder.probes.values():  # in the order they were made
                    if on_probe:
                        on_probe(p)

    def keepable(self, any_codec: bool = False) -> bool:
        """Whether the input could stand for the encode as it is: ``keep`` is on and the
        input is in one of :data:`KEEP_CODECS` (without ``keep_any_codec`` or ``any_codec``:
        in the encoder's format) at the output's pixel format, unfiltered. The output's
        container (:attr:`holds`) is the pick's to check."""
        st, src, o = self.settings, self.source, self.options
        codecs = KEEP_CODECS if o.keep_any_codec or any_codec else (st.table.codec,)
        return (o.keep and not st.vfilter and src.codec in codecs
                and st.pix_fmt in (None, src.pix_fmt))

    def check_size(self, kbps: float, input_kbps: float | None, what: str,
                   result: Pick | None = None) -> None:
        """Raise :class:`PickTooLargeError` when ``kbps`` (the pick's, ``what`` names it) is
        over ``max_encoded_percent`` of ``input_kbps``."""
        limit = self.options.max_encoded_percent
        percent = encoded_percent(kbps, input_kbps)
        if limit is None or percent is None or percent <= limit:
            return
        raise PickTooLargeError(message(
            self.where, f"a pick of at most {limit:g}% of the input's bitrate "
            f"(--max-encoded-percent {limit:g})", f"{what} at {percent:g}% "
            f"({kbps:g} kb/s against the input's {input_kbps:g})",
            "the input is already about as small as this target allows: keep it as it is, "
            "or raise --max-encoded-percent"), result)


def pick_file(path: str | os.PathLike, options: PickOptions | None = None, scorer=None,
              progress: Progress | None = None) -> Pick:
    """Pick a CRF for one video file: ``cpllm-ladder pick`` in Python.

    >>> from cpllm_plugin.integrations.ladder import PickOptions, pick_file
    >>> p = pick_file("clip.mp4", PickOptions(encoder="libx265"))  # doctest: +SKIP
    >>> p.crf, p.predicted_kbps  # doctest: +SKIP

    Raises:
        NoCrfMeetsTargetError: no CRF searched meets the target.
        PickTooLargeError: the pick keeps more than ``max_encoded_percent`` of the input's
            bitrate.
        LadderError: bad options or input (every error names what was expected).
    """
    return Job(path, options, scorer, progress).pick()

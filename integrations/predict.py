"""``predict`` mode: a CRF from what the input shows without any reference, never VMAF.

One or two probe encodes give the encoder's bitrate on the input's samples and the model's
score there. From them and the input's own stream, a linear rule fitted on a catalog of
training sources (``cpllm_plugin.training.picker``; never on dev) predicts the highest CRF
that keeps what the input had against its clean master, and the pick stays ``margin`` CRF
below it. The rule ships in the model directory as plain JSON, one file per encoder
(:func:`rule_file`: ``predict.json`` for libx264), because some of its inputs are that
model's scores and all are that encoder's CRF scale.

What each feature reads (:func:`features`):

- ``reencoded``: how far the input's equivalent CRF (its bitrate on the probes' line, or
  with one probe on a line of a fixed CRF per halving) lies above the CRF where masters end
  (both per encoder, :data:`SCALES`): an earlier lossy encode's own CRF caps what a re-encode
  can keep.
- ``noisy``: luma noise above 4, which a re-encode smooths away and a viewer never missed.
- ``bits``: log2 bits per pixel at the first probe: content that costs bits hides loss.
- ``height``: log2 of the coded height: small pictures show loss at lower CRFs.
- ``drop_lo``, ``drop_hi``: the model's score at the first and the last probe less its score
  of the input: how fast this content loses what the model sees.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cpllm_plugin.errors import ModelFileError, message

PREDICT_FILE = "predict.json"  # libx264's; another encoder's is predict-ENCODER.json
FORMAT = "cpllm-predict/1"
FEATURES = ("const", "reencoded", "noisy", "bits", "height", "drop_lo", "drop_hi")
REENCODED_FROM = 20.0  # libx264: equivalent CRFs below this read as masters (feature 0)
# A tiny earlier encode's bitrate can read as CRF 100+ on a line extrapolated far past the
# probes; no CRF above the encoder's usual top says more.
REENCODED_CAP = 51.0
NOISY_FROM = 4.0
HALVING = 6.0  # CRF per halving of libx264's bitrate: the line through a single probe


@dataclass(frozen=True)
class Scale:
    """An encoder's CRF scale as the features read it."""

    halving: float  # CRF per halving of the bitrate: the line through one probe
    start: float  # equivalent CRFs below this read as masters
    cap: float  # the encoder's usual top: no equivalent CRF above it says more


# x264's is the rule of thumb its rule was fitted with, and x265 shares it. SVT-AV1's CRF runs
# to 63 and halves the bitrate about twice as slowly near its probes, and its masters cross
# VMAF 95 higher, both measured on the training catalog's ladders (medians;
# docs/experiments.md, "predict for SVT-AV1").
SCALES = {"libx264": Scale(HALVING, REENCODED_FROM, REENCODED_CAP),
          "libx265": Scale(HALVING, REENCODED_FROM, REENCODED_CAP),
          "libsvtav1": Scale(13.0, 39.0, 63.0)}


def scale(encoder: str) -> Scale:
    return SCALES.get(encoder, SCALES["libx264"])


class PredictFileError(ModelFileError):
    """A model directory's ``predict.json`` is unreadable or malformed."""


def equivalent_crf(rates: dict[int, float], input_rate: float,
                   encoder: str = "libx264") -> float | None:
    """The CRF whose bitrate matches the input's: on the line through two or more probes
    (``{crf: rate}``), or through one probe at ``encoder``'s CRF per halving."""
    from .ladder import equivalent_crf as through

    if len(rates) >= 2:
        return through(rates, input_rate)
    (crf, rate), = rates.items()
    if rate <= 0 or input_rate <= 0:
        return None
    return crf + scale(encoder).halving * math.log2(rate / input_rate)


def line_rate(rates: dict[int, float], crf: float, encoder: str = "libx264") -> float:
    """The bitrate at ``crf`` on the probes' line (``{crf: rate}``): in log through two
    probes, or through one at ``encoder``'s CRF per halving."""
    (lo, r_lo), *rest = sorted(rates.items())
    if rest:
        hi, r_hi = rest[-1]
        t = (crf - lo) / (hi - lo)
        return math.exp(math.log(r_lo) + t * (math.log(r_hi) - math.log(r_lo)))
    return r_lo * 2 ** (-(crf - lo) / scale(encoder).halving)


def features(equivalent: float | None, noise: float, bits_per_pixel: float, height: int,
             source_score: float, scores: Sequence[float],
             encoder: str = "libx264") -> dict[str, float]:
    """Every feature of :data:`FEATURES` for one input; ``scores``: the model's score at each
    probe, lowest CRF first (``equivalent`` None: unknown, e.g. a ``--vfilter`` makes the
    bitrates incomparable; the input then reads as a master)."""
    sc = scale(encoder)
    e = sc.start if equivalent is None else min(equivalent, sc.cap)
    return {"const": 1.0, "reencoded": max(e - sc.start, 0.0),
            "noisy": max(noise - NOISY_FROM, 0.0),
            "bits": math.log2(max(bits_per_pixel, 1e-6)), "height": math.log2(max(height, 1)),
            "drop_lo": scores[0] - source_score, "drop_hi": scores[-1] - source_score}


def below(estimate: float, margin: float, lo: int, hi: int) -> int:
    """The pick for an estimate: ``margin`` CRF below it, rounded down, within ``lo..hi``
    (the tool, the catalog's replay and the fit's margin search all pick this way)."""
    return int(min(max(math.floor(estimate - margin), lo), hi))


@dataclass(frozen=True)
class Size:
    """The pick's bitrate read off the first probe's, fitted on the training ladders:
    ``log2(rate / probe's) = offset + (probe's CRF - crf) * sum(slope[f] * x[f])``. Below
    its probe a noisy input's bitrate climbs much faster than a clean one's (the encoder
    starts to keep the noise), which a line of a fixed CRF per halving misses by up to ten
    times; ``offset`` carries a probe preset's own bitrate to the pick's."""

    offset: float
    slope: dict[str, float]  # keyed by FEATURES
    # The slopes the training inputs had: an input far outside them (an abstract clip whose
    # detail reads as noise 90) would otherwise get a size thousands of times too big.
    bounds: tuple[float, float]

    def rate(self, probe_rate: float, probe_crf: float, crf: float,
             x: dict[str, float]) -> float:
        per_crf = min(max(sum(w * x[f] for f, w in self.slope.items()), self.bounds[0]),
                      self.bounds[1])
        return probe_rate * 2 ** (self.offset + (probe_crf - crf) * per_crf)

    def to_dict(self) -> dict:
        return {"offset": self.offset, "slope": dict(self.slope), "bounds": list(self.bounds)}


@dataclass(frozen=True)
class Predictor:
    """A fitted rule: ``crf = sum(weights[f] * x[f]) - margin``."""

    encoder: str
    probes: tuple[int, ...]  # one or two CRFs, increasing
    weights: dict[str, float]
    margin: float
    provenance: dict = field(default_factory=dict)
    # The probes' own preset (None: the pick's). A fast one buys most of the mode's time back:
    # the rule reads its probes as they were fitted, whatever preset the user's encode takes.
    preset: str | None = None
    # A rule fitted before size models: the pick's bitrate over the probe line's, the median
    # on the training ladders. Read from such files; a fit now gives ``size`` instead.
    rate_scale: float = 1.0
    # Key frames per sample its scores are read at (None: the sample plan's). On a short
    # input the plan scores 4 a second, and the input's and the probe's scorings are most of
    # the pick's time; the rule's drops are means, so fewer frames only add a little noise.
    key_frames: int | None = None
    # When fitted, the pick's size comes from it, not from the line and ``rate_scale``.
    size: Size | None = None

    def estimate(self, x: dict[str, float]) -> float:
        """The predicted highest CRF that keeps what the input had (before the margin)."""
        return float(sum(w * x[f] for f, w in self.weights.items()))

    def crf(self, x: dict[str, float], lo: int, hi: int, margin: float | None = None) -> int:
        """The pick within ``lo..hi`` (``margin``: another than the fitted one)."""
        return below(self.estimate(x), self.margin if margin is None else margin, lo, hi)

    def rate(self, rates: dict[int, float], crf: float, x: dict[str, float]) -> float:
        """The pick's bitrate at ``crf`` from the probes' (``{crf: rate}``) and the input's
        features ``x``: by :attr:`size` when fitted, else along the probes' line times
        :attr:`rate_scale`."""
        if self.size is None:
            return line_rate(rates, crf, self.encoder) * self.rate_scale
        lo = min(rates)
        return self.size.rate(rates[lo], lo, crf, x)

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "encoder": self.encoder, "probes": list(self.probes),
             "weights": dict(self.weights), "margin": self.margin}
        if self.preset is not None:
            d["preset"] = self.preset
        if self.rate_scale != 1.0:
            d["rate_scale"] = self.rate_scale
        if self.key_frames is not None:
            d["key_frames"] = self.key_frames
        if self.size is not None:
            d["size"] = self.size.to_dict()
        return d | {"provenance": self.provenance}


def rule_file(encoder: str = "libx264") -> str:
    """The file name of ``encoder``'s rule in a model directory."""
    return PREDICT_FILE if encoder == "libx264" else f"predict-{encoder}.json"


def from_dict(d, path: Path = Path(PREDICT_FILE)) -> Predictor:
    def bad(expected: str, got: str) -> PredictFileError:
        return PredictFileError(message(str(path), expected, got, "rebuild it with "
                                        "python -m cpllm_plugin.training.picker"))

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise bad(f'a JSON object with "format": "{FORMAT}"',
                  repr(d.get("format")) if isinstance(d, dict) else type(d).__name__)
    w = d.get("weights")
    if not isinstance(w, dict) or not set(w) <= set(FEATURES) or not all(
            isinstance(v, int | float) for v in w.values()):
        raise bad(f"weights keyed by {FEATURES}", repr(w)[:80])
    probes = d.get("probes")
    if not (isinstance(probes, list) and len(probes) in (1, 2)
            and all(isinstance(c, int) for c in probes) and probes == sorted(set(probes))):
        raise bad("one or two increasing probe CRFs", repr(probes))
    preset, scale_ = d.get("preset"), d.get("rate_scale", 1.0)
    if preset is not None and not (isinstance(preset, str) and preset):
        raise bad("a preset name for the probes (or none)", repr(preset))
    if not (isinstance(scale_, int | float) and scale_ > 0):
        raise bad("a positive rate_scale", repr(scale_))
    key_frames = d.get("key_frames")
    if key_frames is not None and not (type(key_frames) is int and key_frames >= 1):
        raise bad("key_frames: a whole number of key frames per sample, at least 1 (or none)",
                  repr(key_frames))
    size = d.get("size")
    if size is not None:
        slope = size.get("slope") if isinstance(size, dict) else None
        lo_hi = size.get("bounds") if isinstance(size, dict) else None
        if not (isinstance(slope, dict) and set(slope) <= set(FEATURES)
                and all(isinstance(v, int | float) for v in slope.values())
                and isinstance(size.get("offset"), int | float)
                and isinstance(lo_hi, list) and len(lo_hi) == 2
                and all(isinstance(v, int | float) for v in lo_hi) and lo_hi[0] <= lo_hi[1]):
            raise bad(f'size: {{"offset": a number, "slope": numbers keyed by {FEATURES}, '
                      '"bounds": [lowest, highest]} (or none)', repr(size)[:80])
        size = Size(float(size["offset"]), {k: float(v) for k, v in slope.items()},
                    (float(lo_hi[0]), float(lo_hi[1])))
    return Predictor(str(d.get("encoder")), tuple(probes),
                     {k: float(v) for k, v in w.items()}, float(d.get("margin", 0.0)),
                     dict(d.get("provenance", {})), preset, float(scale_), key_frames, size)


def load(model_dir: str | Path, encoder: str = "libx264") -> Predictor | None:
    """The model directory's rule for ``encoder``, or None when it ships none."""
    path = Path(model_dir) / rule_file(encoder)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PredictFileError(message(str(path), "readable JSON", str(e),
                                       "rebuild it with python -m "
                                       "cpllm_plugin.training.picker")) from e
    rule = from_dict(data, path)
    if rule.encoder != encoder:
        raise PredictFileError(message(str(path), f"a rule for {encoder}",
                                       f"one for {rule.encoder}", "rebuild it with python -m "
                                       "cpllm_plugin.training.picker --codec " + encoder))
    return rule


def encoders(model_dir: str | Path) -> list[str]:
    """The encoders the model directory ships a rule for."""
    d = Path(model_dir)
    names = [] if not d.is_dir() else [p.name for p in d.glob("predict*.json")]
    return sorted("libx264" if n == PREDICT_FILE else n[len("predict-"):-len(".json")]
                  for n in names)


def save(p: Predictor, model_dir: str | Path) -> Path:
    from cpllm_plugin.files import write_atomic

    path = Path(model_dir) / rule_file(p.encoder)
    write_atomic(path, json.dumps(p.to_dict(), indent=1) + "\n")
    return path

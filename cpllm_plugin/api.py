"""The public API: :func:`score`, :func:`describe`, :func:`compare` and :func:`load_model`.

Every entry point goes through :meth:`Model.key_frames` and
:func:`cpllm_plugin.preprocess.prepare`, so a frame is scored the same way everywhere.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backends, preprocess
from .configs import COMPARE_PROMPT, DEFAULT_MODEL, MODELS, packaged
from .errors import UnknownNameError, message, suggest
from .files import check_input
from .modeldir import is_model_dir

# Key frames are resized on every core; the matmuls in preprocess release the GIL.
_WORKERS = os.cpu_count() or 1


@dataclass(frozen=True)
class ScoreResult:
    """The quality of one video or frame sequence.

    Attributes:
        score: video score on the model's range (1-5: bad, poor, fair, good, excellent),
            the mean of the per-key-frame scores.
        frame_scores: ``(M,)`` score of each key frame.
        frame_indices: ``(M,)`` frame number of each key frame.
        timestamps: ``(M,)`` seconds from the start, or None for arrays given without fps.
        model: model id, ``name@sha256[:8]``.
        backend: the backend that ran.
    """

    score: float
    frame_scores: np.ndarray
    frame_indices: np.ndarray
    timestamps: np.ndarray | None
    model: str
    backend: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "score": self.score,
            "frame_scores": [float(s) for s in self.frame_scores],
            "frame_indices": [int(i) for i in self.frame_indices],
            "timestamps": None if self.timestamps is None else [float(t) for t in self.timestamps],
            "model": self.model,
            "backend": self.backend,
        }

    def to_row(self, path: str | os.PathLike) -> dict[str, Any]:
        """The ``cpllm score --json`` object of the video at ``path`` (``cpllm batch score``
        writes the same rows)."""
        return {"type": "score", "path": str(path), **self.to_dict()}


@dataclass(frozen=True)
class Description:
    """A three-sentence description (content, style, technical quality) and the score."""

    text: str
    result: ScoreResult

    @property
    def score(self) -> float:
        return self.result.score


@dataclass(frozen=True)
class Comparison:
    """Which of two videos is better (``"a"`` or ``"b"``), both scores and an explanation."""

    better: str
    a: ScoreResult
    b: ScoreResult
    explanation: str
    margin: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "margin", abs(self.a.score - self.b.score))


@dataclass(frozen=True)
class Frames:
    """Key frames of a source: ``frames (M, H, W, 3)``, their indices and timestamps, and
    the frame rate (the file's, or the ``fps`` given with an array; None when unknown)."""

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray | None
    fps: float | None = None


class Model:
    """A loaded model with its backend; create with :func:`load_model`.

    Safe to call from several threads: backends guard what they must.
    """

    def __init__(self, source: str | Path, backend: backends.Backend):
        self.source = str(source)
        self.backend = backend
        self.config = backend.config
        self.id = backend.id
        if not self.config.trained:
            warnings.warn(
                f"model {self.id} has an untrained quality head: its scores are not "
                "meaningful. Train one with cpllm-train, or pass a trained model directory.",
                stacklevel=3)

    def __repr__(self) -> str:
        return f"Model({self.id!r}, backend={self.backend.name!r})"

    def key_frames(self, source: Any, count: int | None = None, fps: float | None = None,
                   where: str = "score()") -> Frames:
        """M key frames of a video path or of frames ``(N, H, W, 3)``, spread uniformly."""
        count = count or self.config.key_frames
        if _check_path(source, where):
            from .video import read_key_frames

            k = read_key_frames(source, count)
            return Frames(k.frames, k.indices, k.timestamps, k.info.fps or None)
        frames = preprocess.as_frames(source, where)
        idx = preprocess.key_frame_indices(len(frames), count)
        ts = None if fps is None else idx / float(fps)
        return Frames(frames[idx], idx, ts, None if fps is None else float(fps))

    def score(self, source: Any, key_frames: int | None = None,
              fps: float | None = None) -> ScoreResult:
        """Score a video path or frames; see :func:`score`."""
        return self.score_key_frames(self.key_frames(source, key_frames, fps))

    def score_key_frames(self, k: Frames) -> ScoreResult:
        """Score key frames already chosen by :meth:`key_frames`."""
        x = preprocess.prepare(k.frames, self.config, workers=_WORKERS)
        scores = np.asarray(self.backend.run(x.views, x.patches), dtype=np.float64)
        return self._result(k, scores)

    def _result(self, k: Frames, scores: np.ndarray) -> ScoreResult:
        return ScoreResult(float(scores.mean()), scores, k.indices, k.timestamps,
                           self.id, self.backend.name)

    def score_many(self, sources: list[Any], key_frames: int | None = None,
                   fps: float | None = None, batch: int = 32) -> list[ScoreResult]:
        """Score several videos, sending their key frames to the backend in shared batches.

        Args:
            sources: video paths and/or frame arrays (as for :meth:`score`).
            key_frames: M per video (default: the model's).
            fps: frame rate of array sources.
            batch: key frames gathered before a backend call; one frame's inputs take about
                7 MB (448 view and 8 patches in float32), so 32 frames hold about 230 MB.

        Returns:
            One :class:`ScoreResult` per source, in order; each equals :meth:`score` of it.
        """
        results: list[ScoreResult | None] = [None] * len(sources)
        pending: list[tuple[int, Frames, preprocess.Inputs]] = []

        def flush():
            views = np.concatenate([x.views for _, _, x in pending])
            patches = np.concatenate([x.patches for _, _, x in pending])
            scores = np.asarray(self.backend.run(views, patches), dtype=np.float64)
            at = 0
            for i, k, x in pending:
                results[i] = self._result(k, scores[at:at + len(x.views)])
                at += len(x.views)
            pending.clear()

        for i, src in enumerate(sources):
            k = self.key_frames(src, key_frames, fps, where=f"score_many(sources[{i}])")
            pending.append((i, k, preprocess.prepare(k.frames, self.config, workers=_WORKERS)))
            if sum(len(x.views) for _, _, x in pending) >= batch:
                flush()
        if pending:
            flush()
        return results


def _check_path(source: Any, where: str) -> bool:
    """True for a path to a readable, non-empty file; raise for any other path (before loading)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    check_input(source, where)
    return True


_cache: dict[tuple, Model] = {}
_cache_lock = threading.Lock()


def load_model(model: str | Path | Model = DEFAULT_MODEL,
               backend: str | backends.ORT | backends.TRT = "auto",
               decoder: bool = False, **backend_options) -> Model:
    """Load a model once per (model, backend, decoder) and keep it for later calls.

    Args:
        model: a registered name (:func:`list_models`), a model directory, or a loaded Model.
            A name whose trained model ships in the package (``cpllm-lite``) loads it.
        backend: ``"auto"``, ``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, or options
            ``backends.ORT(...)`` / ``backends.TRT(...)``. ``"auto"`` picks TensorRT > ONNX
            Runtime on CUDA > torch on CUDA > ONNX Runtime on CPU > torch for an exported
            directory (see :mod:`cpllm_plugin.backends`), torch otherwise.
        decoder: also load the Gemma decoder (needed by describe and compare).
        **backend_options: passed to the backend (torch: ``device``, ``batch_size``; ONNX
            Runtime: the fields of ``backends.ORT``; TensorRT: those of ``backends.TRT``).
    """
    if isinstance(model, Model):
        return model
    if not is_model_dir(model) and str(model) not in MODELS:
        raise UnknownNameError(message(
            "load_model()", f"a model name, one of {sorted(MODELS)}, or a model directory",
            repr(str(model)), f"pick a listed name or give a directory with config.json."
            f"{suggest(str(model), MODELS)}"))
    # A registered name with a trained model in the package loads that model (torch-free
    # through ONNX Runtime); names without one build fresh weights (training, tests).
    model = packaged(str(model)) or model
    key = (str(model), backend, decoder, tuple(sorted(backend_options.items())))
    with _cache_lock:
        if key not in _cache:
            if decoder and backend == "auto":
                backend = "torch"  # the decoder runs in torch by design
            be = backends.create(backend, model, **({"decoder": True} if decoder else {}),
                                 **backend_options)
            _cache[key] = Model(model, be)
        return _cache[key]


def score(frames: Any, model: str | Path | Model = DEFAULT_MODEL, backend: str = "auto",
          key_frames: int | None = None, fps: float | None = None) -> ScoreResult:
    """No-reference quality of a video.

    Args:
        frames: a video path, a ``(N, H, W, 3)`` uint8 RGB array (or float in [0, 1]), or a
            list of ``(H, W, 3)`` arrays of one size.
        model: model name or directory (see :func:`load_model`).
        backend: which backend runs the encoders and head.
        key_frames: M, key frames spread uniformly over the video (default: the model's).
        fps: frame rate of array input, to fill in timestamps.

    Returns:
        :class:`ScoreResult` with the score on 1-5 and per-key-frame details.
    """
    _check_path(frames, "score()")
    return load_model(model, backend).score(frames, key_frames, fps)


def score_many(sources: list[Any], model: str | Path | Model = DEFAULT_MODEL,
               backend: str = "auto", key_frames: int | None = None,
               fps: float | None = None) -> list[ScoreResult]:
    """Score several videos with their key frames batched together; see :func:`score`."""
    for i, src in enumerate(sources):
        _check_path(src, f"score_many(sources[{i}])")
    return load_model(model, backend).score_many(list(sources), key_frames, fps)


def _decoder_inputs(m: Model, k: Frames, facts: bool = True):
    """Visual tokens of the key frames the decoder sees (``decoder_frames`` of them), and
    their facts when asked and the config has a ``facts_prompt`` (else None)."""
    sub = k.frames[preprocess.key_frame_indices(len(k.frames), m.config.decoder_frames)]
    x = preprocess.prepare(sub, m.config)
    net, torch = m.backend.net, m.backend.torch
    size = (sub.shape[2], sub.shape[1]) if facts and m.config.facts_prompt else None
    with torch.inference_mode():
        dev = m.backend.device
        return net.describe_inputs(torch.from_numpy(x.views).to(dev),
                                   torch.from_numpy(x.patches).to(dev), size)


@dataclass(frozen=True)
class Seen:
    """What describe() knows of one video besides its score, for its first two sentences.

    Attributes:
        width, height, fps: the frames' size and the frame rate (None: unknown).
        kind: the kind of footage (a key of ``footage.KINDS``) when the kind head is
            confident, else None.
        guess: the kind head's whole answer (None for a model without one).
        content: ``(1000,)`` mean ImageNet probabilities of the key frames, or None.
    """

    width: int
    height: int
    fps: float | None
    kind: str | None
    guess: Any
    content: np.ndarray | None


def _look(m: Model, k: Frames) -> tuple[ScoreResult, Seen, Any, Any]:
    """Score the key frames and learn their facts in one pass over the encoders: the
    result (the same numbers as :meth:`Model.score_key_frames`: the same batches through
    the same calls), the :class:`Seen` facts, the decoder's visual tokens and its prompt
    facts."""
    from . import footage

    x = preprocess.prepare(k.frames, m.config, workers=_WORKERS)
    be, net = m.backend, m.backend.net
    torch = be.torch
    context, tokens, scores = [], [], []
    with be._lock, torch.inference_mode():
        for i in range(0, len(x.views), be.batch_size):
            c = net.scorer.context(torch.from_numpy(x.views[i:i + be.batch_size]).to(be.device))
            u, v = net.scorer.embed(
                c, torch.from_numpy(x.patches[i:i + be.batch_size]).to(be.device))
            scores.append(net.scorer.head_score(u, v).double().cpu().numpy())
            context.append(c)
            tokens.append(torch.cat([u, v], dim=1))
        context, tokens = torch.cat(context), torch.cat(tokens)
        sub = torch.from_numpy(preprocess.key_frame_indices(len(k.frames),
                                                            m.config.decoder_frames))
        visual = tokens[sub].reshape(1, -1, tokens.shape[-1])
        h, w = k.frames.shape[1:3]
        prompt_facts = net.facts(w, h, context[sub]) if m.config.facts_prompt else None
        prob = net.content_probabilities(k.frames)
        guess = footage.guess(m, k.frames, context=context)
    result = m._result(k, np.concatenate(scores))
    content = None if prob is None else prob.float().mean(0).cpu().numpy()
    seen = Seen(w, h, k.fps, getattr(guess, "kind", None), guess, content)
    return result, seen, visual, prompt_facts


def describe(frames: Any, model: str | Path | Model = DEFAULT_MODEL,
             key_frames: int | None = None, max_new_tokens: int | None = None,
             fps: float | None = None) -> Description:
    """Three sentences (content, style, technical quality) and the score.

    The first two are facts the pipeline knows: what the frozen encoder's ImageNet head is
    confident the frames show (else what the kind of footage implies, else that the content
    is not identified), then the kind of footage (named only when the kind head is
    confident) and the format: resolution class, orientation and frame rate (``fps`` for
    arrays; a file's own rate). The third is the Gemma decoder's, after the first two: the
    opener "Its technical quality is", the quality word it chooses by its logits, and its
    own words, kept only when every word is a real one (else the plain sentence of the
    score's band). Runs in torch (extra ``describe``). Arguments as in :func:`score`.
    """
    _check_path(frames, "describe()")
    m = load_model(model, "torch", decoder=True)
    k = m.key_frames(frames, key_frames, fps, where="describe()")
    result, seen, visual, prompt_facts = _look(m, k)
    first = _written(seen)
    third = m.backend.net.quality_text(visual, result.score, " ".join(first), prompt_facts,
                                       max_new_tokens=max_new_tokens)
    return Description(" ".join([*first, third]), result)


def _written(f: Seen) -> list[str]:
    """The content and style sentences of :class:`Seen`."""
    from . import footage, text

    phrase = footage.KINDS.get(f.kind) if f.kind else None
    return [text.content_sentence(f.content, f.kind),
            text.style_sentence(f.width, f.height, f.fps, phrase)]



def compare(a: Any, b: Any, model: str | Path | Model = DEFAULT_MODEL,
            key_frames: int | None = None, max_new_tokens: int | None = None,
            fps: float | None = None) -> Comparison:
    """Which of two videos (or frame arrays) has better quality, in pairwise mode (Fig. 6).

    The verdict comes from the quality head's scores. The explanation states the scores,
    their bands and the verdict, the two formats (``fps`` for arrays), and then the
    decoder's sentence, fed both variants, when every word in it is real and it names the
    same winner; else the plain sentence of the two bands. Runs in torch with the Gemma
    decoder.
    """
    from . import text

    _check_path(a, "compare(a)")
    _check_path(b, "compare(b)")
    m = load_model(model, "torch", decoder=True)
    ka = m.key_frames(a, key_frames, fps, where="compare(a)")
    kb = m.key_frames(b, key_frames, fps, where="compare(b)")
    ra, rb = m.score_key_frames(ka), m.score_key_frames(kb)
    better = "a" if ra.score >= rb.score else "b"
    # One sentence is all that can be kept, so the decoder stops after it.
    said = m.backend.net.generate_text(_decoder_inputs(m, ka, False)[0],
                                       _decoder_inputs(m, kb, False)[0], prompt=COMPARE_PROMPT,
                                       max_new_tokens=max_new_tokens, sentences=1)[0]
    known = m.backend.net.known_words()
    keep = said and said.endswith((".", "!", "?")) and not text.non_words(said, known) \
        and text.names_winner(said, better)
    size = lambda k: (k.frames.shape[2], k.frames.shape[1], k.fps)  # noqa: E731
    explanation = " ".join([text.verdict_sentence(ra.score, rb.score),
                            text.formats_sentence(size(ka), size(kb)),
                            said if keep else text.looks_sentence(ra.score, rb.score)])
    return Comparison(better, ra, rb, explanation)


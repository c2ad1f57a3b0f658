"""What a worker runs on each input: :class:`ScoreJob` (``cpllm score``), :class:`PickJob`
(``cpllm-ladder pick``) or any :class:`Job`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

from cpllm_plugin import api, backends
from cpllm_plugin.configs import DEFAULT_MODEL, packaged
from cpllm_plugin.errors import CpllmError, message

from .. import ladder as lad
from .errors import BatchArgumentError

# Pick options that change where or how loudly a pick runs, never its result: not in the key.
PICK_OPTIONS_NOT_IN_KEY = ("as_json", "quiet", "cache_dir", "no_cache", "ffmpeg", "temp_dir")


class Job(Protocol):
    """What a worker runs: picklable, loaded once per worker, then called once per input."""

    def options(self) -> dict:
        """The options that decide a row (JSON-ready): part of the resume key."""

    def load(self, cpus: int) -> str:
        """Load the model with ``cpus`` threads; return the model id."""

    def __call__(self, path: str) -> dict:
        """The row of one input (raise on failure: the worker turns it into an error row)."""


def _threaded(backend: Any, model: str, cpus: int) -> Any:
    """``backend`` with ``cpus`` ONNX Runtime threads where it is, or resolves to, ONNX
    Runtime; other backends as given."""
    if isinstance(backend, backends.ORT):
        return dataclasses.replace(backend, threads=cpus)
    if backend == "auto":
        try:
            backend = backends.resolve(packaged(str(model)) or model)
        except CpllmError:
            return "auto"  # load_model raises the full error
    return backends.ORT(threads=cpus) if backend == "onnxruntime" else backend


@dataclasses.dataclass
class ScoreJob:
    """``cpllm score`` of each input (arguments as its options)."""

    model: str = DEFAULT_MODEL
    backend: str = "auto"
    precision: str = "fp32"
    key_frames: int | None = None

    def __post_init__(self):
        backends.choose(self.backend, self.precision)  # a bad pair fails here, not in every worker
        self._model = None

    def options(self) -> dict:
        return {"job": "score", "backend": self.backend, "precision": self.precision,
                "key_frames": self.key_frames}

    def load(self, cpus: int) -> str:
        self._model = api.load_model(
            self.model, _threaded(backends.choose(self.backend, self.precision), self.model,
                                  cpus))
        return self._model.id

    def __call__(self, path: str) -> dict:
        return api.score(path, model=self._model, key_frames=self.key_frames).to_row(path)


def pick_defaults() -> dict:
    """The values of ``cpllm batch pick``'s pick options when none is given, by their
    command-line names: the ladder's defaults, less ``full`` (not a batch option)."""
    out = {lad.PickOptions.FLAG_NAMES.get(f.name, f.name): f.default
           for f in dataclasses.fields(lad.PickOptions) if f.name != "full"}
    return {**out, "as_json": False, "quiet": False}


@dataclasses.dataclass
class PickJob:
    """``cpllm-ladder pick`` of each input; ``kw``: the values of its options
    (:func:`cpllm_plugin.integrations.cli.pick_options`)."""

    kw: dict

    @classmethod
    def make(cls, **kw) -> PickJob:
        """A pick job from keyword options named as ``pick_options`` passes them
        (``min_score=3.5, preset="fast"``); the others take their command-line defaults."""
        defaults = pick_defaults()
        unknown = sorted(set(kw) - set(defaults))
        if unknown:
            raise BatchArgumentError(message(
                "PickJob.make()", f"options among {sorted(defaults)}", f"{unknown}",
                "use the names cpllm-ladder pick's options have in Python (--min-score: "
                "min_score)"))
        return cls({**defaults, **kw})

    def __post_init__(self):
        if self.kw.get("min_score") is not None and self.kw.get("min_vmaf") is not None:
            raise lad.LadderArgumentError(message(
                "cpllm batch pick", "one of --min-score and --min-vmaf", "both",
                "give the target once"))
        lad.Settings(self.kw["encoder"]).table  # noqa: B018 - checks the encoder name now
        self._options = self._scorer = None

    def options(self) -> dict:
        out = {"job": "pick"}
        for k, v in sorted(self.kw.items()):
            if k not in PICK_OPTIONS_NOT_IN_KEY:
                out[k] = json.loads(json.dumps(v, default=str))  # tuples -> lists, Path -> str
        return out

    def load(self, cpus: int) -> str:
        backend = _threaded(self.kw["backend"], self.kw["model"], cpus)
        self._options = lad.PickOptions.from_flags({**self.kw, "backend": backend})
        self._scorer = lad.Scorer(self.kw["model"], backend)  # loaded once; every pick reuses it
        return self._scorer.id

    def __call__(self, path: str) -> dict:
        return lad.Job(path, self._options, self._scorer, where="cpllm batch pick").pick().row(
            path)


def error_row(path: str, error: str, text: str) -> dict:
    """The row of a failed input (the shape of ``cpllm-ladder --json`` errors, plus path)."""
    return {"type": "error", "path": path, "error": error, "message": text}

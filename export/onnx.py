"""Export the scoring path to ONNX, check it against torch and write a runtime model directory.

The exported graph is :class:`cpllm_plugin.model.cpllm.ScoringPath`: both encoders, projections,
pooling, LayerNorm and the MLP head. Per key frame it takes exactly what
:func:`cpllm_plugin.preprocess.prepare` makes, with a dynamic batch dimension B::

    views    (B, 3, 448, 448)     float32 in [0, 1]
    patches  (B, 8, 3, 224, 224)  float32 in [0, 1]
    scores   (B,)                 float32 in (1, 5)

The output directory is itself a model directory (``cpllm_plugin.load_model(out_dir)``):

    config.json        the ModelConfig and the sha256 of every file below
    model.safetensors  the torch weights (so torch, describe() and compare() still work)
    adapter/           the LoRA adapter, when the source had one
    model.onnx         fp32, checked against torch (max |diff| <= 1e-4 or the export fails)
    model.fp16.onnx    fp16 weights and activations, fp32 inputs and output (for TensorRT)
    model.int8.onnx    int8 high-level encoder, fp32 pixel encoder and head (CPU; see
                       _quantize_int8 for why and how)
    manifest.json      model id, checksums, opset, inputs, preprocessing, score range,
                       measured differences and the versions that made it

Models over 2 GB (protobuf's limit) keep their weights in ``<file>.data`` next to the graph.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import datetime
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from io import StringIO
from pathlib import Path

import numpy as np

from cpllm_plugin import modeldir
from cpllm_plugin.configs import ModelConfig, backbone
from cpllm_plugin.errors import CpllmError, ModelFileError, message, require
from cpllm_plugin.files import replace_dir
from cpllm_plugin.hashing import sha256_file

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "cpllm-onnx/1"
FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
INPUTS = ("views", "patches")
OUTPUT = "scores"
OPSET = 17
DYNAMO_OPSET = 18  # the torch.export-based exporter writes opset 18 and up
# "torchscript" made the shipped graphs; torch has deprecated it and says it will be
# removed, so "dynamo" (torch.export, needs onnxscript) is here to move to, checked against
# torch the same way. Neither has been built into a TensorRT engine on a GPU yet.
EXPORTERS = ("torchscript", "dynamo")
TOLERANCE = 1e-4  # max |score difference| of the fp32 graph against torch
EXTERNAL_BYTES = 1_800_000_000  # below protobuf's 2 GiB limit, with room for the graph itself
TRACE_BATCH = 2  # trace with B != 1 so nothing specialises on a batch of one


class ParityError(CpllmError, RuntimeError):
    """The exported graph scores differently from the torch model."""


def input_specs(cfg: ModelConfig) -> list[dict]:
    """Names, shapes (``"batch"`` for the dynamic axis) and dtypes of the graph inputs."""
    s, k, p = cfg.view_size, cfg.num_patches, cfg.patch_size
    return [
        {"name": "views", "shape": ["batch", 3, s, s], "dtype": "float32"},
        {"name": "patches", "shape": ["batch", k, 3, p, p], "dtype": "float32"},
    ]


def data_files(path: Path) -> list[str]:
    """Names of the external data files an ONNX file refers to (empty when self-contained)."""
    onnx = require("onnx", "dev", "cpllm-export")
    model = onnx.load(str(path), load_external_data=False)
    names = set()
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return sorted(names)


def _versions(exporter: str) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from cpllm_plugin import __version__

    out = {"cpllm": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
           "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    if exporter == "dynamo":
        import onnxscript

        out["onnxscript"] = onnxscript.__version__
        out["exporter"] = "torch.onnx.export (torch.export, dynamo=True)"
    else:
        out["exporter"] = "torch.onnx.export (TorchScript, dynamo=False)"
    return out


def _half(scorer):
    """The scorer with fp16 weights and activations behind fp32 inputs and output.

    TensorRT 11 builds strongly typed networks, so the precision must already be in the ONNX.
    """
    import torch

    class Half(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = copy.deepcopy(net).half()

        def forward(self, views, patches):
            return self.net(views.half(), patches.half()).float()

    return Half(scorer).eval()


def _save(model, path: Path) -> None:
    """Write an ONNX ModelProto, moving weights to ``<name>.data`` when it passes 2 GB."""
    import onnx

    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > EXTERNAL_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def _trace(net, cfg: ModelConfig, path: Path, opset: int, fold: bool = True,
           exporter: str = "torchscript") -> None:
    """Trace ``net`` (views, patches) -> scores into ``path`` with a dynamic batch axis.

    ``fold=False`` keeps BatchNorm apart from the convolutions and the weights as they are
    in torch (ONNX Runtime fuses them when it loads the graph): weights rounded to float16
    then stay exactly representable in float16. The ``dynamo`` exporter always folds them
    (its optimiser does), so :func:`halve_weights` then keeps the folded weights float32.
    """
    import onnx
    import torch

    s, k, p = cfg.view_size, cfg.num_patches, cfg.patch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        example = (torch.rand(TRACE_BATCH, 3, s, s), torch.rand(TRACE_BATCH, k, 3, p, p))
    if exporter == "dynamo":
        _save(_dynamo(net, example, opset), path)
        return
    batch = {0: "batch"}
    # Torch writes one file per tensor for large models; trace into a scratch folder and
    # save once, as one graph (plus one .data file when over 2 GB).
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        scratch = Path(tmp) / "traced.onnx"
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                net, example, str(scratch), dynamo=False, opset_version=opset,
                input_names=list(INPUTS), output_names=[OUTPUT], do_constant_folding=fold,
                training=torch.onnx.TrainingMode.EVAL if fold else
                torch.onnx.TrainingMode.PRESERVE,
                dynamic_axes={"views": batch, "patches": batch, OUTPUT: batch})
        model = onnx.load(str(scratch))
        _dedupe_identities(model)
        _save(model, path)


def _dynamo(net, example: tuple, opset: int):
    """``net`` through torch.export and onnxscript's optimiser, nodes named by module path
    (``opset`` at least :data:`DYNAMO_OPSET`; :func:`export` raises it)."""
    require("onnxscript", "dev", "cpllm-export --exporter dynamo")
    import torch

    batch = torch.export.Dim("batch", min=1)
    # It reports its progress on stdout, warns about its own dynamic-shape naming and logs
    # each torchvision op it could not register: nothing a user of cpllm can act on.
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with (torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(),
              contextlib.redirect_stdout(StringIO())):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, example, dynamo=True, opset_version=opset,
                input_names=list(INPUTS), output_names=[OUTPUT], optimize=True,
                dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
    finally:
        log.setLevel(level)
    model = program.model_proto
    _name_by_module(model)
    _dedupe_identities(model)
    return model


def _name_by_module(model) -> None:
    """Name each node ``/<module path>/<op>_<n>`` as the TorchScript exporter does.

    The dynamo exporter names nodes ``node_Conv_12`` and keeps the module path in metadata;
    int8 quantisation picks the high-level encoder's nodes by their ``/high/`` prefix, and
    TensorRT's layer names read better with it.
    """
    seen: dict[str, int] = {}
    for node in model.graph.node:
        scopes = next((ast.literal_eval(m.value) for m in node.metadata_props
                       if m.key == "pkg.torch.onnx.name_scopes"), None)  # a Python list repr
        if not scopes:
            continue
        modules = [x for x in scopes[:-1] if x]  # the last entry is the op, not a module
        base = "/" + (modules[-1].replace(".", "/") + "/" if modules else "") + node.op_type
        seen[base] = seen.get(base, -1) + 1
        node.name = base if seen[base] == 0 else f"{base}_{seen[base]}"


def _dedupe_identities(model) -> None:
    """Point consumers of ``Identity(initializer)`` straight at the initializer.

    The tracer shares identical weights (both encoders start from the same ImageNet weights)
    through Identity nodes; quantisers and some TensorRT passes want initializers on Conv.
    """
    inits = {t.name for t in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in inits}
    outputs = {o.name for o in model.graph.output}
    alias = {k: v for k, v in alias.items() if k not in outputs}
    if not alias:
        return
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _quantize_int8(src: Path, dst: Path, cfg: ModelConfig, calib: np.ndarray | None) -> dict:
    """int8 for the high-level (context) encoder; the low-level pixel encoder stays fp32.

    The low-level encoder exists to see pixel-level artifacts a level or two deep, and 8-bit
    activations erase exactly that; the high-level encoder sees a 448 view of the whole frame
    and moves far less. Even that costs fine rankings, so fp32 is what backends pick by
    default and int8 is a speed option to check with cpllm-eval (measured: docs/backends.md,
    "Scoring without torch: export and backends").

    Convolutional encoders get static quantisation (per-channel int8 weights, uint8
    activations whose ranges are calibrated on ``calib`` real frames) because ONNX Runtime's
    QLinearConv is fast where the dynamic ConvInteger is many times slower than fp32.
    Transformer encoders get dynamic int8 on their MatMuls (activation ranges per run).

    Args:
        calib: views ``(N, 3, S, S)`` float32 of real frames, for the static ranges.

    Returns:
        What was done, for the manifest.
    """
    onnx = require("onnx", "dev", "cpllm-export")
    large = bool(data_files(src))
    conv = backbone(cfg.high.backbone).family == "efficientnet"
    # The quantiser's warnings ask for optional shape pre-processing and report fused nodes.
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            graph = src
            if conv:
                graph = Path(tmp) / "pre.onnx"
                from onnxruntime.quantization.shape_inference import quant_pre_process

                # Folds batch norms into their convs, so each conv is quantised once.
                quant_pre_process(str(src), str(graph), skip_symbolic_shape=True,
                                  save_as_external_data=large)
            model = onnx.load(str(graph), load_external_data=False)
            nodes = [n.name for n in model.graph.node if n.name.startswith("/high/")]
            if conv:
                _static(graph, dst, nodes, calib, cfg, large)
            else:
                _dynamic(graph, dst, nodes, large)
    finally:
        logging.disable(logging.NOTSET)
    if conv:
        return {"method": "static", "quantised": "high-level encoder (Conv and its "
                "element-wise ops)", "weights": "int8 per channel", "activations":
                "uint8, MinMax ranges", "calibration_frames": len(calib)}
    return {"method": "dynamic", "quantised": "high-level encoder MatMuls",
            "weights": "int8", "activations": "uint8, range per run"}


def _static(src: Path, dst: Path, nodes: list[str], calib: np.ndarray, cfg: ModelConfig,
            large: bool) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    k, p = cfg.num_patches, cfg.patch_size
    blank = np.zeros((1, k, 3, p, p), np.float32)  # the patches do not touch quantised nodes

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            view = next(self.it, None)
            return None if view is None else {"views": view[None], "patches": blank}

    quantize_static(str(src), str(dst), Frames(), quant_format=QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=large)


def _dynamic(src: Path, dst: Path, nodes: list[str], large: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes,
                     use_external_data_format=large)


def ort_scores(path: Path, views: np.ndarray, patches: np.ndarray, threads: int = 1,
               batch: int = 4) -> np.ndarray:
    """Scores ``(M,)`` float64 from ONNX Runtime on CPU (used by the parity check)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = [sess.run([OUTPUT], {"views": views[i:i + batch], "patches": patches[i:i + batch]})[0]
           for i in range(0, len(views), batch)]
    return np.concatenate(out).astype(np.float64)


def _reference_frames(video: str | os.PathLike | None, count: int) -> tuple[np.ndarray, str]:
    """Real key frames ``(M, H, W, 3)`` for the parity check and where they came from."""
    from cpllm_plugin.video import read_key_frames

    if video is None:
        sample = Path(__file__).resolve().parents[1] / "samples" / "sample.mp4"
        if not sample.is_file():
            raise ModelFileError(message(
                "cpllm-export", "a video for the parity check", "no --video and no bundled "
                "samples/sample.mp4", "pass --video PATH (any real clip)"))
        video = sample
    return read_key_frames(video, count).frames, str(video)


def _load_torch(source: str | Path):
    from cpllm_plugin.model import io

    if Path(source).is_dir():
        return io.load(source, with_decoder=False)
    return io.build(str(source), with_decoder=False)


def halve_weights(path: Path, min_size: int = 1024) -> int:
    """Store the float32 weights of an fp32 graph as float16, cast back to float32 on load.

    The arithmetic stays float32 (ONNX Runtime folds the casts when it loads the graph), only
    the file halves. Only tensors whose values are float16 values already (the recipe rounds
    the weights before it exports) are converted, so the graph computes exactly what it did;
    weights the exporter computed from them (BatchNorm folded into a convolution) stay
    float32. Returns the number of tensors converted.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    casts, kept, n = [], [], 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if (t.data_type == TensorProto.FLOAT and a.size >= min_size
                and np.array_equal(a.astype(np.float16).astype(np.float32), a)):
            half = numpy_helper.from_array(a.astype(np.float16), t.name + "__fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [t.name], to=TensorProto.FLOAT,
                                          name=t.name + "__cast"))
            n += 1
        else:
            kept.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _save(model, path)
    return n


def export(source: str | Path, out_dir: str | Path, precisions: tuple[str, ...] = tuple(FILES),
           frames: np.ndarray | None = None, video: str | os.PathLike | None = None,
           key_frames: int = 3, calib_frames: int = 16, opset: int = OPSET,
           tolerance: float = TOLERANCE, log=None, store_half: bool = False,
           exporter: str = "torchscript") -> dict:
    """Export a model's scoring path to ONNX with a parity check; returns the manifest.

    Args:
        source: a model directory (from training or :func:`cpllm_plugin.model.io.save`) or a
            registered model name (fresh weights, e.g. ``"cpllm-lite"``).
        out_dir: the model directory to write (replaced only when everything passed).
        precisions: which of ``"fp32"``, ``"fp16"``, ``"int8"`` to write (fp32 always is).
        frames: real frames ``(M, H, W, 3)`` uint8 for the parity check; default: ``key_frames``
            key frames of ``video``.
        video: clip to take parity frames from (default: the bundled ``samples/sample.mp4``).
        key_frames: how many key frames of ``video`` to compare on.
        calib_frames: how many key frames of ``video`` calibrate the static int8 ranges
            (``frames``, when given, are used instead).
        opset: ONNX opset.
        tolerance: largest fp32 score difference to accept.
        log: callable taking one line of progress (e.g. ``click.echo`` to stderr), or None.
        store_half: store the fp32 graph's weights as float16 (see :func:`halve_weights`);
            the parity check then runs on that file.
        exporter: ``"torchscript"`` (what made the shipped graphs) or ``"dynamo"``
            (torch.export; needs onnxscript; writes opset 18 or more).

    Returns:
        The manifest dict, also written to ``out_dir/manifest.json``.

    Raises:
        ParityError: ONNX Runtime's fp32 scores differ from torch by more than ``tolerance``.
        UnknownNameError, ModelFileError: the source cannot be loaded.
    """
    torch = require("torch", "torch", "cpllm-export")
    require("onnx", "dev", "cpllm-export")
    from cpllm_plugin import preprocess
    from cpllm_plugin.model import io

    say = log or (lambda line: None)
    bad = [p for p in precisions if p not in FILES]
    if bad:
        raise ModelFileError(message(
            "cpllm-export", f"precisions among {list(FILES)}", repr(bad), "drop the unknown ones"))
    precisions = tuple(dict.fromkeys(("fp32", *precisions)))
    if exporter not in EXPORTERS:
        raise ModelFileError(message("cpllm-export", f"an exporter among {list(EXPORTERS)}",
                                     repr(exporter), "pick one of them"))
    if exporter == "dynamo":
        opset = max(opset, DYNAMO_OPSET)
    out_dir = Path(out_dir)

    model = _load_torch(source)
    cfg, scorer = model.config, model.scorer.eval()
    mid = io.model_id(model)
    calib = frames
    if frames is None:
        frames, origin = _reference_frames(video, key_frames)
        if "int8" in precisions:
            calib = _reference_frames(video, calib_frames)[0]
    else:
        origin = "frames given to export()"
    x = preprocess.prepare(preprocess.as_frames(frames, "cpllm-export"), cfg)
    with torch.no_grad():
        ref = scorer(torch.from_numpy(x.views), torch.from_numpy(x.patches)).double().numpy()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # The torch side of the directory first: io.save writes weights, adapter, config.json.
        if Path(source).is_dir():
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            for stale in [*FILES.values(), MANIFEST]:
                (tmp / stale).unlink(missing_ok=True)
        else:
            io.save(model, tmp)
        results = {}
        for prec in precisions:
            path = tmp / FILES[prec]
            say(f"cpllm-export: tracing {prec} -> {path.name}")
            if prec == "fp32":
                _trace(scorer, cfg, path, opset, fold=not store_half, exporter=exporter)
                if store_half:
                    say(f"cpllm-export: {halve_weights(path)} weight tensors stored "
                        "as float16")
            elif prec == "fp16":
                _trace(_half(scorer), cfg, path, opset, exporter=exporter)
            else:
                how = _quantize_int8(tmp / FILES["fp32"], path, cfg,
                                     preprocess.prepare(calib, cfg).views)
            got = ort_scores(path, x.views, x.patches)
            diff = float(np.abs(got - ref).max())
            ok = diff <= tolerance if prec == "fp32" else True
            results[prec] = {"file": FILES[prec], "max_abs_diff": diff,
                             "tolerance": tolerance if prec == "fp32" else None, "passed": ok,
                             "scores_in_range": bool(np.all((got > cfg.score_range[0])
                                                            & (got < cfg.score_range[1])))}
            if prec == "int8":
                results[prec]["quantization"] = how
            if prec == "fp32" and store_half:
                results[prec]["weights_stored"] = "float16 (float32 arithmetic)"
            say(f"cpllm-export: {prec} max |ONNX Runtime - torch| = {diff:.3g}")
            if not ok:
                raise ParityError(message(
                    "cpllm-export", f"ONNX Runtime fp32 scores within {tolerance:g} of torch",
                    f"a difference of {diff:.3g} on {len(ref)} real frames ({origin})",
                    "report it with the manifest; export with another --opset meanwhile"))
        manifest = _manifest(tmp, cfg, mid, opset, results, origin, len(ref), exporter)
        conf = json.loads((tmp / "config.json").read_text())
        modeldir.write_config(tmp, {k: v for k, v in conf.items() if k != "files"})
        replace_dir(tmp, out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(d: Path, cfg: ModelConfig, mid: str, opset: int, results: dict, origin: str,
              count: int, exporter: str) -> dict:
    files = {}
    for r in results.values():
        for name in [r["file"], *data_files(d / r["file"])]:
            files[name] = {"sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        "model_id": mid,
        "model": cfg.name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "opset": opset,
        "inputs": input_specs(cfg),
        "outputs": [{"name": OUTPUT, "shape": ["batch"], "dtype": "float32"}],
        "precisions": results,
        "parity": {"frames": count, "source": origin, "reference": "torch fp32 on CPU",
                   "runtime": "onnxruntime CPUExecutionProvider"},
        "preprocessing": {
            "function": "cpllm_plugin.preprocess.prepare", "value_range": [0.0, 1.0],
            "layout": "RGB, channels first", "view_size": cfg.view_size, "fit": list(cfg.fit),
            "low_input": cfg.low_input, "placement": cfg.placement,
            "patch_size": cfg.patch_size, "num_patches": cfg.num_patches,
            "key_frames": cfg.key_frames, "resize": "bilinear, antialiased when shrinking",
            "normalisation": "inside the graph"},
        "score_range": list(cfg.score_range),
        "files": files,
        "versions": _versions(exporter),
    }
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict:
    """The manifest of an exported model directory (checked against config.json's sha256)."""
    path = Path(path)
    _, files = modeldir.read_config(path)
    modeldir.verify(path, files, [MANIFEST])
    return json.loads((path / MANIFEST).read_text())

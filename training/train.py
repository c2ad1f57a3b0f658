"""``cpllm-train CONFIG [--set key=value ...] [--resume]``: train CP-LLM (paper 3.2 and 4.1).

The loop optimises ``L1 + L2 + L3`` (equal weights by default) with Adam at 1e-4. The high
encoder is frozen (and stays in eval mode); the low encoder, projections, LayerNorm and head
are trained fully, the decoder through LoRA (rank 4 on q/k/v). Samples mix single and
pairwise inputs (:mod:`cpllm_plugin.training.dataset`).

Output folder ``out``:

* ``checkpoints/step_XXXXXX/``: model directories (:func:`cpllm_plugin.model.io.save`, with
  ``trained = true``) plus ``training/`` (``optimizer.safetensors`` with Adam's moment tensors
  and the torch RNG state, ``state.json`` with step, epoch, config and Adam's step counts).
* ``last/``: the same for the newest checkpoint; ``--resume`` continues from it exactly.
* ``log.csv``: ``step, epoch, l1, l2, l3, total, lr, seconds`` every ``log_every`` steps.

Launched by torchrun (``RANK``/``WORLD_SIZE`` set) it trains with DistributedDataParallel
(gloo on CPU, NCCL on CUDA); each rank takes its shard of every global batch and only rank 0
writes. Relative paths in a config are relative to the working directory.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from ..configs import DEFAULT_MODEL, MODELS, ModelConfig, get_config
from ..console import progress_printer, run_command
from ..errors import CpllmError, message, suggest
from ..files import replace_dir
from ..model import io
from ..model.cpllm import CPLLM
from .dataset import Batch, ContextCache, PairSampler, TrainingData, high_encoder_id
from .losses import LossWeights, rank_loss, score_loss, text_loss, total_loss

LOG_COLUMNS = ("step", "epoch", "l1", "l2", "l3", "total", "lr", "seconds")


class TrainConfigError(CpllmError, ValueError):
    """A training config file, key or ``--set`` override is wrong."""


class ResumeError(CpllmError, FileNotFoundError):
    """``--resume`` found no usable ``out/last`` checkpoint."""


@dataclass
class TrainConfig:
    """Everything a training run needs; loaded from TOML or YAML (see ``training/configs``).

    Attributes:
        manifest: the JSONL manifest (:mod:`cpllm_plugin.training.manifest`).
        out: output folder (checkpoints, ``last``, ``log.csv``).
        model: a registered model name (fresh build) or a model directory to start from.
        model_overrides: ModelConfig fields changed on a fresh build, e.g.
            ``{key_frames = 3, low = {backbone = "tiny_efficientnet"}}``.
        decoder: train the decoder (L3); False builds the scoring path only.
        split: manifest split to train on.
        epochs: passes over the data (used when ``steps`` is 0).
        steps: total optimiser steps; 0 means ``epochs`` whole epochs.
        batch_size: samples per step and process.
        micro_batch: samples per forward and backward pass (0: the whole batch at once). The
            gradients of a step are accumulated over its micro-batches, each loss weighted by
            its share of the pairs, rated samples and text tokens the batch averages over, so
            a step equals one pass over the whole batch (except that BatchNorm statistics are
            per micro-batch). It lets the paper's batch of 128 fit on one GPU.
        lr: Adam learning rate (paper: 1e-4).
        w_rank, w_score, w_text: weights of L1, L2, L3 (paper: equal).
        pair_ratio: share of pairwise samples (Table 4a: the mix is best).
        key_frames: M per video; 0 takes the model config's.
        max_text_tokens: longest description target in tokens (paper: L = 512).
        seed: seeds the model's trainable init, the sample order and patch placement.
        log_every: CSV and stderr line every this many steps.
        checkpoint_every: save every this many steps (0: only at the end); the last step is
            always saved.
        device: ``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        bf16: bf16 autocast on CUDA (ignored on CPU).
        num_workers: threads decoding and preprocessing the videos of a batch.
        cache_dir: folder for the high-level token cache ("" keeps it in memory only).
        cache_frames: keep decoded key frames in memory.
    """

    manifest: str = ""
    out: str = "runs/cpllm"
    model: str = DEFAULT_MODEL
    model_overrides: dict[str, Any] = field(default_factory=dict)
    decoder: bool = True
    split: str = "train"
    epochs: int = 1
    steps: int = 0
    batch_size: int = 8
    micro_batch: int = 0
    lr: float = 1e-4
    w_rank: float = 1.0
    w_score: float = 1.0
    w_text: float = 1.0
    pair_ratio: float = 0.5
    key_frames: int = 0
    max_text_tokens: int = 512
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0
    device: str = "auto"
    bf16: bool = True
    num_workers: int = 0
    cache_dir: str = ""
    cache_frames: bool = True

    def validate(self, where: str = "train config") -> None:
        """Check ranges; raise :class:`TrainConfigError` naming the key."""
        def bad(key: str, expected: str) -> None:
            raise TrainConfigError(message(f"{where}: {key}", expected,
                                           repr(getattr(self, key)), f"set {key} accordingly"))

        if not self.manifest:
            bad("manifest", "the path of a JSONL manifest")
        for key in ("epochs", "batch_size", "log_every"):
            if getattr(self, key) < 1:
                bad(key, "an integer >= 1")
        for key in ("steps", "micro_batch", "key_frames", "checkpoint_every", "num_workers"):
            if getattr(self, key) < 0:
                bad(key, "an integer >= 0")
        if self.max_text_tokens < 2:
            bad("max_text_tokens", "an integer >= 2")
        if not (math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "a positive learning rate")
        for key in ("w_rank", "w_score", "w_text"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                bad(key, "a finite weight >= 0")
        if not 0.0 <= self.pair_ratio <= 1.0:
            bad("pair_ratio", "a share in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, where: str) -> Any:
    """``value`` as the type of field ``key`` (strings from ``--set`` are parsed)."""
    kind = _TYPES[key]
    origin = typing.get_origin(kind) or kind
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if origin is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if origin is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if origin is dict:
            if isinstance(value, str):
                import yaml

                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        name = kind.__name__ if isinstance(kind, type) else str(kind)
        raise TrainConfigError(message(
            f"{where}: {key}", f"a value of type {name}", repr(value),
            f"write {key} as a {name}")) from None


def _unknown(key: str, where: str) -> TrainConfigError:
    return TrainConfigError(message(
        where, f"a TrainConfig key (one of {sorted(_FIELDS)})", repr(key),
        f"remove or rename it.{suggest(key, _FIELDS)}"))


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a ``.toml``, ``.yaml`` or ``.yml`` config file."""
    path = Path(path)
    where = f"train config {str(path)!r}"
    if not path.is_file():
        raise TrainConfigError(message(where, "a TOML or YAML file", "no such file",
                                       "check the path (see training/configs/*.toml)"))
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise TrainConfigError(message(where, "a file ending in .toml, .yaml or .yml",
                                           repr(path.suffix), "rename the file"))
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, TrainConfigError):
            raise
        raise TrainConfigError(message(where, "valid TOML/YAML", str(exc).splitlines()[0],
                                       "fix the syntax")) from None
    except Exception as exc:  # yaml.YAMLError has no common builtin base
        raise TrainConfigError(message(where, "valid YAML", str(exc).splitlines()[0],
                                       "fix the syntax")) from None
    if not isinstance(data, dict):
        raise TrainConfigError(message(where, "a mapping of keys to values",
                                       type(data).__name__, "write key = value lines"))
    return data


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()
                ) -> TrainConfig:
    """A :class:`TrainConfig` from a file plus ``key=value`` overrides.

    An override ``model_overrides.low={backbone: tiny_efficientnet}`` sets one entry of a
    dict field (the value is parsed as YAML there).

    Raises:
        TrainConfigError: missing file, bad syntax, unknown key, bad value or range.
    """
    data = read_file(path) if path is not None else {}
    where = f"train config {str(path)!r}" if path is not None else "train config"
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise _unknown(key, where)
        values[key] = _coerce(key, value, where)
    for item in overrides:
        if "=" not in item:
            raise TrainConfigError(message("--set", "key=value", repr(item),
                                           "write e.g. --set steps=100"))
        key, _, raw = item.partition("=")
        key = key.strip()
        head, _, sub = key.partition(".")
        if head not in _FIELDS:
            raise _unknown(head, "--set")
        if sub:
            if typing.get_origin(_TYPES[head]) is not dict:
                raise TrainConfigError(message("--set", "a dotted key only for dict fields",
                                               repr(key), f"write --set {head}=value"))
            import yaml

            merged = dict(values.get(head, {}))
            merged[sub] = yaml.safe_load(raw)
            values[head] = merged
        else:
            values[head] = _coerce(head, raw, "--set")
    cfg = TrainConfig(**values)
    cfg.validate(where)
    return cfg


# --- model ----------------------------------------------------------------------------


def model_config(name: str, overrides: dict[str, Any]) -> ModelConfig:
    """A registered config with ``overrides`` applied (nested for ``high``/``low``)."""
    cfg = get_config(name)
    data = cfg.to_dict()
    for key, value in overrides.items():
        if key not in data:
            raise TrainConfigError(message(
                "model_overrides", "ModelConfig fields", repr(key),
                f"use one of {sorted(data)}.{suggest(key, data)}"))
        if isinstance(data[key], dict) and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    out = ModelConfig.from_dict(data, where="model_overrides")
    out.validate()
    return out


def build_model(cfg: TrainConfig) -> CPLLM:
    """A fresh model from a name, or one loaded from a model directory, ready to train."""
    path = Path(cfg.model)
    if cfg.model not in MODELS and path.is_dir():
        if cfg.model_overrides:
            raise TrainConfigError(message(
                "model_overrides", "no overrides when starting from a model directory",
                repr(cfg.model_overrides), "drop model_overrides or start from a name"))
        model = io.load(path, with_decoder=cfg.decoder)
    elif cfg.model in MODELS:
        torch.manual_seed(cfg.seed)
        model = io.build(model_config(cfg.model, cfg.model_overrides), with_decoder=cfg.decoder)
    else:
        raise TrainConfigError(message(
            "model", f"a registered model ({sorted(MODELS)}) or a model directory",
            repr(cfg.model), f"fix the name or the path.{suggest(cfg.model, MODELS)}"))
    set_trainable(model)
    return model


def set_trainable(model: CPLLM) -> None:
    """Freeze the high encoder and the base decoder; train everything else and LoRA."""
    for name, p in model.scorer.named_parameters():
        p.requires_grad_(not name.startswith("high."))
    if model.decoder is not None:
        for name, p in model.decoder.named_parameters():
            p.requires_grad_("lora_A" in name or "lora_B" in name)


class Step(nn.Module):
    """The training forward: batch in, ``(l1, l2, l3)`` out (what DDP wraps)."""

    def __init__(self, model: CPLLM):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scorer = self.model.scorer
        u, v = scorer.embed(batch.context, batch.patches)
        n, m = batch.videos, batch.frames
        video = scorer.head_score(u, v).float().view(n, m).mean(dim=1)  # paper 3.1.4
        pred1 = video[batch.first]
        pairs = batch.second >= 0
        l1 = rank_loss(batch.gap[pairs], torch.zeros_like(batch.gap[pairs]),
                       video[batch.first[pairs]], video[batch.second[pairs]])
        l2 = score_loss(batch.target, pred1, batch.has_target)
        l3 = pred1.sum() * 0.0
        dec = self.model.decoder
        if dec is not None and len(batch.text_rows):
            from ..preprocess import key_frame_indices

            cfg = self.model.config
            pick = torch.as_tensor(key_frame_indices(m, cfg.decoder_frames), device=u.device)
            tokens = torch.cat([u, v], dim=1)  # (N * M, Th + Tl, D)
            tokens = tokens.view(n, m, *tokens.shape[1:])[:, pick]
            tokens = tokens.reshape(n, -1, tokens.shape[-1])  # (N, F * (Th + Tl), D)
            rows, text_ids, prompt = self._text(batch)
            if len(rows):
                a = tokens[batch.first[rows]]
                sec = batch.second[rows]
                single = sec < 0
                b = tokens[torch.where(single, batch.first[rows], sec)]
                embeds, valid = self.model.prefix(a, b, prompt)
                tv = a.shape[1]
                valid[single, 1 + tv:1 + 2 * tv] = False  # a single input's copy (Fig. 4a)
                l3 = text_loss(dec, embeds, valid, text_ids, self.model.tokenizer.pad_token_id)
        return l1, l2, l3

    def _text(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, str | list[str]]:
        """The rows L3 trains on, their target tokens and their prompt(s)."""
        rows, text_ids = batch.text_rows, batch.text_ids
        prompt: str | list[str] = self.model.config.prompt
        if self.model.config.score_prompt:  # the prompt carries the score: rated rows only
            keep = batch.has_target[rows]
            rows, text_ids = rows[keep], text_ids[keep]
            facts = self._facts(batch, rows)
            prompt = [self.model.describe_prompt(float(batch.target[r]), f)
                      for r, f in zip(rows, facts, strict=True)]
        return rows, text_ids, prompt

    def _facts(self, batch: Batch, rows: torch.Tensor) -> list:
        """The describe prompt's facts of each row's first video (None without a
        ``facts_prompt``): its frame size and its decoder frames' high-level tokens."""
        cfg = self.model.config
        if not cfg.facts_prompt:
            return [None] * len(rows)
        from ..preprocess import key_frame_indices

        n, m = batch.videos, batch.frames
        pick = torch.as_tensor(key_frame_indices(m, cfg.decoder_frames))
        ctx = batch.context.view(n, m, *batch.context.shape[1:])
        out = []
        for r in rows.tolist():
            vid = int(batch.first[r])
            w, h = (int(x) for x in batch.sizes[vid])
            out.append(self.model.facts(w, h, ctx[vid, pick.to(ctx.device)]))
        return out

    def counts(self, batch: Batch) -> tuple[int, int, int]:
        """What L1, L2 and L3 average over in ``batch``: pairs, rated samples, text tokens."""
        tokens = 0
        if self.model.decoder is not None and len(batch.text_rows):
            _, ids, _ = self._text(batch)
            tokens = int(((ids != self.model.tokenizer.pad_token_id) & (ids >= 0)).sum())
        return int((batch.second >= 0).sum()), int(batch.has_target.sum()), tokens


def accumulate(net: nn.Module, parts: list[Batch], weights: LossWeights, dev: torch.device,
               autocast: bool) -> torch.Tensor:
    """Forward and backward over the micro-batches of one step; returns ``(l1, l2, l3, total)``
    of the whole batch.

    Each micro-batch's loss is weighted by its share of the batch's pairs (L1), rated samples
    (L2) and target tokens (L3), so the accumulated gradients are those of one pass over the
    whole batch. Under DDP only the last micro-batch synchronises the gradients.
    """
    step: Step = getattr(net, "module", net)
    counts = torch.tensor([step.counts(b) for b in parts], dtype=torch.float64)
    share = (counts / counts.sum(dim=0).clamp(min=1)).tolist()
    total = torch.zeros(4)
    for j, part in enumerate(parts):
        last = j == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                l1, l2, l3 = net(part.to(dev))
            if len(parts) > 1:
                l1, l2, l3 = (x * w for x, w in zip((l1, l2, l3), share[j], strict=True))
            loss = total_loss(l1, l2, l3, weights)
            loss.backward()
        total += torch.stack([l1, l2, l3, loss]).detach().float().cpu()
    return total


# --- checkpoints ----------------------------------------------------------------------


def _param_names(model: nn.Module) -> dict[nn.Parameter, str]:
    return {p: n for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model: CPLLM, opt: torch.optim.Optimizer, state: dict) -> Path:
    """Write the model directory plus ``training/`` (optimizer tensors and JSON state)."""
    from safetensors.torch import save_file

    model.config.trained = True
    io.save(model, path)
    names = _param_names(model)
    tensors: dict[str, torch.Tensor] = {}
    steps: dict[str, float] = {}
    for p, s in opt.state.items():
        name = names[p]
        for key, value in s.items():
            if key == "step":
                steps[name] = float(value)
            elif isinstance(value, torch.Tensor):
                tensors[f"{name}::{key}"] = value.detach().contiguous().cpu()
    tensors["rng::torch"] = torch.get_rng_state()
    folder = path / "training"
    folder.mkdir(exist_ok=True)
    save_file(tensors, folder / "optimizer.safetensors")
    meta = {**state, "adam_steps": steps,
            "param_groups": [{k: v for k, v in g.items() if k != "params"}
                             for g in opt.param_groups]}
    (folder / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def load_training_state(path: Path, model: CPLLM, opt: torch.optim.Optimizer) -> dict:
    """Put the optimizer and RNG state of checkpoint ``path`` back; return its JSON state."""
    from safetensors.torch import load_file

    folder = path / "training"
    if not (folder / "state.json").is_file() or not (folder / "optimizer.safetensors").is_file():
        raise ResumeError(message(
            f"--resume ({path})", "a checkpoint with training/state.json and "
            "training/optimizer.safetensors", "missing files",
            "start without --resume, or copy a whole checkpoint to out/last"))
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(folder / "optimizer.safetensors")
    torch.set_rng_state(tensors.pop("rng::torch"))
    by_name = {n: p for p, n in _param_names(model).items()}
    sd = opt.state_dict()
    index = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        name, _, what = key.rpartition("::")
        p = by_name[name]
        state.setdefault(index[id(p)], {})[what] = t.to(p.device)
    for name, step in meta["adam_steps"].items():
        state.setdefault(index[id(by_name[name])], {})["step"] = torch.tensor(step)
    sd["state"] = state
    for g, saved in zip(sd["param_groups"], meta["param_groups"], strict=True):
        g.update(saved)
    opt.load_state_dict(sd)
    return meta


def _copy_dir(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    replace_dir(tmp, dst)


# --- the loop -------------------------------------------------------------------------


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


_log = progress_printer(True)


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run the training loop; return a summary (steps, last losses, paths).

    Raises:
        TrainConfigError, ResumeError, ManifestError, DatasetError: bad input.
    """
    cfg.validate()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(cfg.device, local_rank)
    # torchrun sets MASTER_ADDR: a launch of one process still joins a process group, so one
    # GPU runs the same DDP and collective code as many.
    dist = world > 1 or "MASTER_ADDR" in os.environ
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist:
        import torch.distributed as tdist

        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend)
    out = Path(cfg.out)
    last = out / "last"
    try:
        if resume:
            if not (last / "config.json").is_file():
                raise ResumeError(message(
                    f"--resume ({out})", "a previous run's out/last checkpoint", "none",
                    "run without --resume first, or point out at the earlier run"))
            model = io.load(last, with_decoder=cfg.decoder)
            set_trainable(model)
        else:
            model = build_model(cfg)
        model.to(dev).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        step = 0
        if resume:
            meta = load_training_state(last, model, opt)
            step = int(meta["step"])
        mcfg = model.config
        cache = ContextCache(high_encoder_id(model.scorer, mcfg), cfg.cache_dir or None)
        data = TrainingData(cfg.manifest, mcfg, cfg.split, cfg.key_frames, cfg.cache_frames,
                            cache, cfg.num_workers)
        sampler = PairSampler(data.items, cfg.batch_size, cfg.pair_ratio, cfg.seed, rank, world)
        total_steps = cfg.steps or cfg.epochs * sampler.steps_per_epoch
        net: nn.Module = Step(model)
        if dist:
            from torch.nn.parallel import DistributedDataParallel

            # Samples without a description leave LoRA unused in that step.
            net = DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=model.decoder is not None)
        weights = LossWeights(cfg.w_rank, cfg.w_score, cfg.w_text)
        tok = model.tokenizer if (model.decoder is not None and cfg.w_text > 0) else None
        log_path = out / "log.csv"
        autocast = _autocast(dev, cfg)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _trim_log(log_path, step)
            group = f" ({backend})" if dist else ""
            _log(f"cpllm-train: {len(data.items)} videos, {sampler.steps_per_epoch} steps/epoch, "
                 f"{total_steps} steps, world {world}{group}, device {dev}, bf16 {autocast}, "
                 f"start at step {step}")
        start = time.perf_counter()
        last_losses = (math.nan,) * 4
        saved = None
        while step < total_steps:
            epoch, index = divmod(step, sampler.steps_per_epoch)
            samples = sampler.batch(epoch, index)
            size = cfg.micro_batch or len(samples)
            # Patch placement is seeded per video, so splitting a batch does not change it.
            parts = [data.batch(samples[j:j + size], model.scorer, (cfg.seed, step, rank), tok,
                                cfg.max_text_tokens, dev) for j in range(0, len(samples), size)]
            opt.zero_grad(set_to_none=True)
            values = accumulate(net, parts, weights, dev, autocast).to(dev)
            opt.step()
            step += 1
            if dist:
                tdist.all_reduce(values)
                values /= world
            last_losses = tuple(float(x) for x in values)
            if rank == 0 and (step % cfg.log_every == 0 or step == total_steps):
                row = [step, epoch, *last_losses, opt.param_groups[0]["lr"],
                       round(time.perf_counter() - start, 3)]
                _append_log(log_path, row)
                _log(f"step {step}/{total_steps} epoch {epoch} l1 {row[2]:.4f} l2 {row[3]:.4f} "
                     f"l3 {row[4]:.4f} total {row[5]:.4f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total_steps:
                if rank == 0:
                    state = {"step": step, "epoch": step // sampler.steps_per_epoch,
                             "world_size": world, "config": cfg.to_dict()}
                    saved = save_checkpoint(out / "checkpoints" / f"step_{step:06d}", model,
                                            opt, state)
                    _copy_dir(saved, last)
                    _log(f"saved {saved}")
                if dist:
                    tdist.barrier()
        return {"steps": step, "l1": last_losses[0], "l2": last_losses[1],
                "l3": last_losses[2], "total": last_losses[3],
                "checkpoint": str(saved) if saved else None, "last": str(last),
                "cache_hits": cache.hits, "cache_misses": cache.misses}
    finally:
        if dist:
            tdist.destroy_process_group()


def _autocast(dev: torch.device, cfg: TrainConfig) -> bool:
    """bf16 autocast only on CUDA: CPUs without bf16 units run it slower than fp32."""
    return dev.type == "cuda" and cfg.bf16


def _trim_log(path: Path, step: int) -> None:
    """Start a fresh log, or on resume drop rows after the checkpoint's step."""
    rows = []
    if step > 0 and path.is_file():
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, LOG_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _append_log(path: Path, row: list) -> None:
    with path.open("a", newline="") as f:
        csv.writer(f).writerow(row)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (repeatable), e.g. --set steps=100.")
@click.option("--resume", is_flag=True, default=False, show_default=True,
              help="Continue from OUT/last: same step, same sampler position.")
def main(config: str, overrides: tuple[str, ...], resume: bool) -> None:
    """Train CP-LLM from a TOML/YAML CONFIG (see training/configs/)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    summary = run_command(lambda: train(load_config(config, overrides), resume=resume),
                          show_warnings=False)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()

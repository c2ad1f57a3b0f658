"""The kind-of-footage head: its pixel statistics, the shipped kind.json on real frames, and
the model directories it must refuse or skip."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data
from media import pan_frames

import cpllm_plugin as cp
from cpllm_plugin import footage
from cpllm_plugin.configs import packaged
from cpllm_plugin.errors import CpllmError, ModelFileError

SAMPLE = "samples/sample.mp4"  # a photo pan over a riverboat on a lake


def screen_capture(n: int = 12, size=(480, 270)) -> np.ndarray:
    """A text editor scrolling: dark text on a white page under a flat blue title bar."""
    from PIL import Image, ImageDraw

    w, h = size
    out = []
    for i in range(n):
        img = Image.new("RGB", size, (250, 250, 250))
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, w, 28), fill=(40, 90, 170))
        d.text((10, 8), "report.txt - Editor", fill=(255, 255, 255))
        for line in range(16):
            y = 40 + line * 16 - 3 * i
            if y > 30:
                d.text((12, y), f"{line + i:3d}  total = sum(values[{line}]) / count",
                       fill=(20, 20, 20))
        out.append(np.asarray(img))
    return np.stack(out)


def slideshow(n: int = 20, size=(320, 180)) -> np.ndarray:
    from cpllm_plugin.preprocess import resize

    stills = [np.clip(resize(p, size[1], size[0]) * 255 + 0.5, 0, 255).astype(np.uint8)
              for p in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket())]
    return np.stack([stills[min(i * 3 // n, 2)] for i in range(n)])


def stats(frames):
    idx = np.linspace(0, len(frames) - 1, 5).round().astype(int)
    return dict(zip(footage.PIXEL_FEATURES, footage.pixel_stats(frames[idx]), strict=True))


def test_pixel_stats_tell_a_pan_a_slideshow_and_a_screen_apart():
    pan, show, screen = stats(pan_frames(40)), stats(slideshow()), stats(screen_capture())
    # a pan: every pair moves, and one global motion explains nearly all of it
    assert pan["still_pairs"] == 0 and pan["rigid_ratio"] < 0.3 and pan["log_motion"] > 1
    # a slideshow: pairs either equal or cut
    assert show["still_pairs"] >= 0.5 and show["cut_pairs"] > 0
    # a screen: flat colour and few colours, unlike either photo
    assert screen["flat"] > 0.6 and screen["top_colours"] > 0.8
    assert pan["flat"] < 0.5 and show["top_colours"] < 0.6
    one = footage.pixel_stats(pan_frames(1))  # one key frame: nothing to compare
    assert one.shape == (len(footage.PIXEL_FEATURES),) and np.isfinite(one).all()


@pytest.fixture(scope="module")
def lite():
    return cp.load_model("cpllm-lite", backend="torch", device="cpu")


def test_the_shipped_head_names_a_photo_pan_and_a_screen_capture(lite):
    k = lite.key_frames(SAMPLE)
    g = footage.guess(lite, k.frames)
    assert g is not None and g.top == "still" and g.kind in ("still", None)
    assert set(g.probs) == set(footage.head_of(lite).classes)
    assert abs(sum(g.probs.values()) - 1) < 1e-6 and g.confidence == max(g.probs.values())
    s = footage.guess(lite, lite.key_frames(screen_capture()).frames)
    assert s.top == "screen" and s.kind in ("screen", None)
    # the caller's tokens of every key frame give the same answer as none
    import torch

    from cpllm_plugin import preprocess

    x = preprocess.prepare(k.frames, lite.config)
    ctx = lite.backend.net.scorer.context(torch.from_numpy(x.views))
    assert footage.guess(lite, k.frames, ctx).probs == pytest.approx(g.probs, abs=1e-5)


def test_shipped_head_is_small_plain_json_and_checksummed():
    d = packaged("cpllm-lite")
    data = json.loads((d / footage.HEAD_FILE).read_text())
    assert data["format"] == footage.FORMAT and set(data["classes"]) == set(footage.KINDS)
    assert (d / footage.HEAD_FILE).stat().st_size < 400_000
    files = json.loads((d / "config.json").read_text())["files"]
    assert footage.HEAD_FILE in files  # checked like every weight file
    assert 0.3 < data["threshold"] < 1


def test_a_model_directory_without_kind_json_gives_none(tmp_path):
    shutil.copy(packaged("cpllm-lite") / "config.json", tmp_path / "config.json")
    model = SimpleNamespace(source=str(tmp_path), id="x@0")
    assert footage.load_head(tmp_path) is None
    assert footage.guess(model, np.zeros((5, 64, 64, 3), np.uint8)) is None
    assert footage.guess(SimpleNamespace(source="cpllm-tiny", id="t"), None) is None


def _head_dict():
    return json.loads((packaged("cpllm-lite") / footage.HEAD_FILE).read_text())


@pytest.mark.parametrize("break_it, words", [
    (lambda d: "{not json", ["valid JSON"]),
    (lambda d: json.dumps([1, 2]), ["a JSON object", "list"]),
    (lambda d: json.dumps({**d, "format": "other/9"}), ["format 'cpllm-kind/1'", "other/9"]),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "weights"}), ["no ['weights']"]),
    (lambda d: json.dumps({**d, "classes": ["camera", "robot"]}), ["robot"]),
    (lambda d: json.dumps({**d, "bias": d["bias"][:-1]}), ["bias of shape"]),
    (lambda d: json.dumps({**d, "threshold": 3}), ["threshold in [0, 1]"]),
    (lambda d: json.dumps({**d, "scale": [0.0] * len(d["scale"])}), ["positive scales"]),
])
def test_a_malformed_kind_json_is_named(tmp_path, break_it, words):
    (tmp_path / footage.HEAD_FILE).write_text(break_it(_head_dict()))
    with pytest.raises(footage.KindFileError) as e:
        footage.load_head(tmp_path)
    assert isinstance(e.value, ModelFileError) and isinstance(e.value, CpllmError)
    text = str(e.value)
    assert "kind.json" in text and "expected" in text and "Fix:" in text
    assert "cpllm_plugin.training.kinds" in text
    for w in words:
        assert w in text


def test_a_changed_kind_json_fails_its_checksum(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(packaged("cpllm-lite"), d, ignore=shutil.ignore_patterns("*.onnx"))
    data = _head_dict()
    data["threshold"] = 0.5
    (d / footage.HEAD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="kind.json with sha256"):
        footage.load_head(d)


def test_a_head_for_another_encoder_is_refused(tmp_path, lite):
    data = {**_head_dict(), "encoder": "siglip"}
    (tmp_path / "config.json").write_text((packaged("cpllm-lite") / "config.json").read_text()
                                          .replace('"kind.json"', '"kind-old.json"'))
    (tmp_path / footage.HEAD_FILE).write_text(json.dumps(data))
    model = SimpleNamespace(source=str(tmp_path), id="x@0", config=lite.config)
    with pytest.raises(footage.KindFileError, match="trained on the efficientnet_lite0"):
        footage.guess(model, np.zeros((5, 64, 64, 3), np.uint8))


def test_the_json_round_trip_keeps_the_answers():
    head = footage.head_from_dict(_head_dict())
    again = footage.head_from_dict(json.loads(json.dumps(head.to_dict())))
    x = head.mean + head.scale * np.random.default_rng(0).standard_normal((4, len(head.mean)))
    np.testing.assert_allclose(head.probabilities(x), again.probabilities(x), atol=1e-6)

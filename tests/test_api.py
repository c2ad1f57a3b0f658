"""The public API on real video files, and every bad input it must name."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from media import pan_frames, write_audio, write_video

import cpllm_plugin as cp
from cpllm_plugin import api, errors
from cpllm_plugin.cli import main as cli
from cpllm_plugin.model import io

pytestmark = pytest.mark.filterwarnings("ignore:model .* untrained quality head")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("media") / "pan.mp4", pan_frames(40), fps=25)


def test_score_a_real_video_file(clip):
    before = clip.read_bytes(), clip.stat().st_mtime_ns
    r = cp.score(clip, model="cpllm-tiny", key_frames=4)
    assert 1.0 <= r.score <= 5.0
    assert r.frame_scores.shape == (4,) and np.isclose(r.score, r.frame_scores.mean())
    assert r.frame_indices.tolist() == [5, 15, 25, 35]
    np.testing.assert_allclose(r.timestamps, r.frame_indices / 25, atol=1e-3)
    assert r.model.startswith("cpllm-tiny@") and r.backend == "torch"
    assert json.loads(json.dumps(r.to_dict()))["frame_indices"] == [5, 15, 25, 35]
    assert (clip.read_bytes(), clip.stat().st_mtime_ns) == before  # input untouched


def test_default_model_scores_the_bundled_sample():
    r = cp.score("samples/sample.mp4")
    assert r.model.startswith("cpllm-lite@") and len(r.frame_scores) == 5
    assert 1.0 < r.score < 5.0
    assert r.frame_indices.tolist() == [9, 28, 48, 67, 86]  # 96 frames, M = 5


def test_arrays_lists_and_files_agree(clip):
    frames = pan_frames(40)
    a = cp.score(frames, model="cpllm-tiny", key_frames=4)
    b = cp.score(list(frames), model="cpllm-tiny", key_frames=4)
    assert a.score == b.score and a.timestamps is None
    c = cp.score(clip, model="cpllm-tiny", key_frames=4)
    assert abs(a.score - c.score) < 0.05  # the file went through CRF 18 compression


def test_untrained_head_warns():
    api._cache.clear()
    with pytest.warns(UserWarning, match="untrained quality head"):
        cp.load_model("cpllm-tiny")


def test_describe_and_compare_run_the_decoder(clip):
    # The tiny decoder's weights are random, so its words cannot be checked (the shipped
    # model's sentences are, in test_shipped.py); the scores and the verdict can.
    back = pan_frames(40)[:, ::-1]
    a, b = cp.score(clip, model="cpllm-tiny"), cp.score(back, model="cpllm-tiny")
    d = cp.describe(clip, model="cpllm-tiny", max_new_tokens=4)
    assert isinstance(d.text, str) and d.text.strip()
    assert d.score == pytest.approx(a.score, abs=1e-6)  # the head's, of score()'s key frames
    assert d.result.frame_indices.tolist() == a.frame_indices.tolist()
    np.testing.assert_allclose(d.result.frame_scores, a.frame_scores, atol=1e-6)
    c = cp.compare(clip, back, model="cpllm-tiny", max_new_tokens=4)
    assert isinstance(c.explanation, str) and c.explanation.strip()
    assert c.a.score == pytest.approx(a.score, abs=1e-6)
    assert c.b.score == pytest.approx(b.score, abs=1e-6)
    assert c.margin == pytest.approx(abs(a.score - b.score), abs=1e-6) and c.margin > 1e-4
    assert c.better == ("a" if a.score > b.score else "b")
    swapped = cp.compare(back, clip, model="cpllm-tiny", max_new_tokens=4)
    assert swapped.better == {"a": "b", "b": "a"}[c.better]  # the verdict follows the videos


def test_model_directory_loads(tmp_path, clip):
    io.save(io.build("cpllm-tiny"), tmp_path / "tiny")
    r = cp.score(clip, model=tmp_path / "tiny", key_frames=2)
    assert r.model.startswith("cpllm-tiny@")


def _truncated(tmp_path, clip):
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    return tmp_path / "cut.mp4"


def _damaged_model(tmp_path, clip):
    path = io.save(io.build("cpllm-tiny", with_decoder=False), tmp_path / "bad")
    (path / "model.safetensors").write_bytes(b"\0" * 100)
    return path


BAD = {
    "dtype": (lambda t, c: dict(frames=np.zeros((2, 8, 8, 3), np.int64)),
              errors.FrameDtypeError, "int64"),
    "shape": (lambda t, c: dict(frames=np.zeros((8, 8), np.uint8)),
              errors.FrameShapeError, "(N, H, W, 3)"),
    "channels": (lambda t, c: dict(frames=np.zeros((2, 8, 8, 4), np.uint8)),
                 errors.FrameShapeError, "4 channels"),
    "empty": (lambda t, c: dict(frames=[]), errors.EmptyInputError, "empty list"),
    "nan": (lambda t, c: dict(frames=np.full((1, 8, 8, 3), np.nan, np.float32)),
            errors.NonFiniteError, "NaN"),
    "missing path": (lambda t, c: dict(frames=t / "nope.mp4"),
                     errors.VideoNotFoundError, "does not exist"),
    "directory": (lambda t, c: dict(frames=t), errors.VideoNotFoundError, "is a directory"),
    "no video stream": (lambda t, c: dict(frames=write_audio(t / "a.wav")),
                        errors.NoVideoStreamError, "video stream"),
    "truncated": (lambda t, c: dict(frames=_truncated(t, c)), errors.VideoDecodeError, ""),
    "corrupt": (lambda t, c: dict(frames=(t / "x.mp4").write_bytes(b"\x13" * 5000)
                                  and t / "x.mp4"), errors.VideoDecodeError, ""),
    "unknown model": (lambda t, c: dict(frames=c, model="cpllm-lit"),
                      errors.UnknownNameError, "Did you mean 'cpllm-lite'"),
    "unknown backend": (lambda t, c: dict(frames=c, backend="onnx"),
                        errors.UnknownNameError, "Did you mean 'onnxruntime'"),
    "damaged model": (lambda t, c: dict(frames=c, model=_damaged_model(t, c)),
                      errors.ModelFileError, "sha256"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_named_error(case, tmp_path, clip):
    make, error, words = BAD[case]
    kw = make(tmp_path, clip)
    frames = kw.pop("frames")
    with pytest.raises(error) as info:
        cp.score(frames, **({"model": "cpllm-tiny"} | kw))
    text = str(info.value)
    assert isinstance(info.value, errors.CpllmError)
    assert "expected" in text and "got" in text and "Fix:" in text, text
    assert words in text
    assert info.value.__traceback__ is not None and info.value.__cause__ is None


def test_missing_torch_names_the_extra(monkeypatch, clip):
    monkeypatch.setattr(api, "_cache", {})
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(errors.MissingExtraError, match=r"pip install 'cpllm-plugin\[torch\]'"):
        cp.score(clip, model="cpllm-tiny", backend="torch")


def test_cli_score_json_and_errors(clip):
    runner = CliRunner()
    out = runner.invoke(cli, ["score", str(clip), "-m", "cpllm-tiny", "-k", "3", "--json"])
    assert out.exit_code == 0, out.output
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["type"] == "score" and len(line["frame_scores"]) == 3
    bad = runner.invoke(cli, ["score", "missing.mp4", "-m", "cpllm-tiny"])
    assert bad.exit_code == 1 and "error: score(): expected an existing video file" in bad.stderr
    assert runner.invoke(cli, ["score"]).exit_code == 2


# --- describe and compare with the shipped model: every sentence true or not said ---------

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.mp4"


@pytest.fixture(scope="module")
def lite():
    return cp.load_model("cpllm-lite", "torch", decoder=True)


def _screen_capture(n: int = 16, width: int = 720, height: int = 1280) -> np.ndarray:
    """A phone-shaped screen recording: this package's source as light text on a dark
    editor background, scrolling up a line every other frame."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=26)
    lines = Path(api.__file__).read_text().splitlines()[:120]
    step, out = 34, []
    for i in range(n):
        img = Image.new("RGB", (width, height), (30, 30, 36))
        draw = ImageDraw.Draw(img)
        for row, line in enumerate(lines[i // 2:i // 2 + height // step]):
            draw.text((16, 8 + row * step), line[:48], font=font, fill=(220, 220, 210))
        out.append(np.asarray(img))
    return np.stack(out)


def _kind_phrase(style: str) -> str | None:
    from cpllm_plugin.footage import KINDS

    named = [p for p in KINDS.values() if style.startswith(f"It is {p} in ")]
    assert named or style.startswith("It is a video in "), style
    return named[0] if named else None


@pytest.mark.slow
def test_describe_states_the_format_and_kind_of_two_kinds_of_clip(lite):
    from cpllm_plugin import text
    from cpllm_plugin.configs import quality_word

    screen = _screen_capture()
    said = {"sample": cp.describe(str(SAMPLE), model=lite),
            "screen": cp.describe(screen, model=lite, fps=30)}
    formats = {"sample": "low-resolution landscape format at 24 fps",  # 640x360 file
               "screen": "720p portrait format at 30 fps"}
    kinds = {}
    for name, d in said.items():
        s = text.sentences_of(d.text)
        assert len(s) == 3, d.text
        assert s[1].endswith(f" in {formats[name]}."), d.text
        kinds[name] = _kind_phrase(s[1])
        assert text.non_words(d.text) == [], d.text
        assert s[2].startswith(f"Its technical quality is {quality_word(d.score)}"), d.text
    # footage that differs this much is not named as the same kind
    assert kinds["sample"] != kinds["screen"] or kinds["sample"] is None, kinds
    # no rate for an array without fps, and a sentence cut short gives the plain one
    d = cp.describe(screen, model=lite, max_new_tokens=1)
    s = text.sentences_of(d.text)
    assert s[1].endswith(" in 720p portrait format."), d.text
    assert s[2] == text.quality_sentence(quality_word(d.score)), d.text


@pytest.mark.slow
def test_compare_explains_with_scores_formats_and_real_words(lite):
    from cpllm_plugin import text

    c = cp.compare(str(SAMPLE), _screen_capture(), model=lite, fps=30)
    s = text.sentences_of(c.explanation)
    assert len(s) == 3, c.explanation
    assert f"{c.a.score:.2f}" in s[0] and f"{c.b.score:.2f}" in s[0]
    assert f"so {c.better.upper()} has the better" in s[0] or "about equal" in s[0]
    assert s[1] == "A is low-resolution landscape at 24 fps and B is 720p portrait at 30 fps."
    assert text.non_words(c.explanation) == [], c.explanation

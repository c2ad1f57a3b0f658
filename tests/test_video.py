"""Tests of cpllm_plugin.video: probing and uniformly spread key frames from real files.

The videos are made here, small and short. Each frame carries its own frame number as a row
of black/white blocks, so a test can tell which frame came back, not only that one did.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cpllm_plugin import errors, video

FPS = 25
BITS = 10  # frame numbers up to 1023
RED = (255, 0, 0)


# --- making videos ----------------------------------------------------------------------


def coded_frame(number: int, width: int = 160, height: int = 90) -> np.ndarray:
    """``(H, W, 3)`` uint8: gray, a red marker top-left, ``number`` in blocks on row two."""
    img = np.full((height, width, 3), 128, np.uint8)
    b = width // 12
    img[:b, :b] = RED  # asymmetric: tells how the frame was rotated
    for j in range(BITS):
        img[b : 2 * b, b * (j + 1) : b * (j + 2)] = 255 if number >> j & 1 else 0
    return img


def read_number(rgb: np.ndarray) -> int:
    """The frame number written by :func:`coded_frame` (``rgb`` unrotated)."""
    b = rgb.shape[1] // 12
    q = b // 4
    number = 0
    for j in range(BITS):
        block = rgb[b + q : 2 * b - q, b * (j + 1) + q : b * (j + 2) - q]
        number |= int(block.mean() > 128) << j
    return number


def encode(
    path: Path,
    images,
    *,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    pts=None,
    time_base: Fraction = Fraction(1, FPS),
    options: dict | None = None,
    container_options: dict | None = None,
) -> Path:
    """Encode ``(H, W, 3)`` uint8 RGB images in-process with PyAV; ``pts`` in ``time_base``."""
    images = list(images)
    height, width = images[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base  # frame pts are read in this unit
        if options is None:
            options = {"crf": "23", "preset": "ultrafast"} if codec == "libx264" else {}
        stream.options = options
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(pts[i]) if pts is not None else i
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def ffmpeg(exe: str, *args: str) -> None:
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def decode_all_with_ffmpeg(exe: str, path: Path, width: int, height: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 RGB as the ffmpeg command line shows it (auto-rotated)."""
    raw = subprocess.run(
        [exe, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def shown_at_centres(pts_s: np.ndarray, duration: float, count: int) -> np.ndarray:
    """Frame numbers on screen at the centres of ``count`` equal segments."""
    centres = (np.arange(count) + 0.5) * duration / count
    return np.maximum(np.searchsorted(pts_s, centres + 1e-9, side="right") - 1, 0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, ffmpeg_exe) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    v: dict[str, Path] = {}
    v["cfr"] = encode(d / "cfr.mp4", (coded_frame(i) for i in range(50)))
    v["short"] = encode(d / "short.mp4", (coded_frame(i) for i in range(10)))
    v["long"] = encode(
        d / "long.mp4",
        (coded_frame(i) for i in range(600)),
        options={"crf": "23", "preset": "ultrafast", "g": "25"},
    )
    for ext in ("mkv", "ts", "h264"):
        v[f"long_{ext}"] = d / f"long.{ext}"
        ffmpeg(ffmpeg_exe, "-i", str(v["long"]), "-c", "copy", str(v[f"long_{ext}"]))
    # Encoded, not re-muxed: ffmpeg's AVI muxer copies the MP4's 1/12800 time base into a
    # header rate of 600 fps with empty frames between the real ones.
    v["long_avi"] = encode(
        d / "long.avi",
        (coded_frame(i) for i in range(600)),
        options={"crf": "23", "preset": "ultrafast", "g": "25"},
    )
    v["faststart"] = encode(
        d / "faststart.mp4",
        (coded_frame(i) for i in range(50)),
        container_options={"movflags": "faststart"},
    )
    v["odd444"] = encode(
        d / "odd444.mp4", (coded_frame(i, 161, 91) for i in range(20)), pix_fmt="yuv444p"
    )
    v["gray"] = encode(
        d / "gray.mkv", (coded_frame(i) for i in range(20)), pix_fmt="gray", codec="ffv1"
    )
    v["odd420_ffv1"] = encode(
        d / "odd420.mkv",
        (coded_frame(i, 161, 91) for i in range(20)),
        pix_fmt="yuv420p",
        codec="ffv1",
    )
    for angle in (90, 270):
        v[f"rot{angle}"] = d / f"rot{angle}.mp4"
        ffmpeg(
            ffmpeg_exe, "-display_rotation", str(angle), "-i", str(v["cfr"]), "-c", "copy",
            str(v[f"rot{angle}"]),
        )  # fmt: skip
    return v


# --- probe and positions ----------------------------------------------------------------


def test_probe_reads_headers(videos):
    info = video.probe(videos["cfr"])
    assert info == video.VideoInfo(
        path=str(videos["cfr"]),
        width=160,
        height=90,
        rotation=0,
        fps=25.0,
        duration=2.0,
        frame_count=50,
        pix_fmt="yuv420p",
        bit_depth=8,
        codec="h264",
    )


def test_key_frames_are_uniform_and_show_the_right_frames(videos):
    kf = video.read_key_frames(videos["cfr"], 8)
    expected = np.floor((np.arange(8) + 0.5) * 50 / 8).astype(np.int64)  # 3, 9, 15, ...
    assert kf.frames.shape == (8, 90, 160, 3) and kf.frames.dtype == np.uint8
    assert kf.indices.dtype == np.int64 and kf.timestamps.dtype == np.float64
    np.testing.assert_array_equal(kf.indices, expected)
    np.testing.assert_allclose(kf.timestamps, expected / FPS, atol=1e-9)
    assert [read_number(f) for f in kf.frames] == expected.tolist()
    assert kf.info == video.probe(videos["cfr"])


def test_count_equal_to_frame_count_returns_each_frame_once(videos):
    kf = video.read_key_frames(videos["cfr"], 50)
    assert kf.indices.tolist() == list(range(50))
    assert [read_number(f) for f in kf.frames] == list(range(50))


def test_fewer_frames_than_count_returns_every_frame_once(videos):
    kf = video.read_key_frames(videos["short"], 16)
    assert kf.frames.shape == (10, 90, 160, 3)
    assert kf.indices.tolist() == list(range(10))
    np.testing.assert_allclose(kf.timestamps, np.arange(10) / FPS, atol=1e-9)
    assert [read_number(f) for f in kf.frames] == list(range(10))


def test_one_key_frame_is_the_middle(videos):
    kf = video.read_key_frames(videos["cfr"], 1)
    assert kf.indices.tolist() == [25] and read_number(kf.frames[0]) == 25


@pytest.mark.parametrize("name", ["long", "long_mkv", "long_ts", "long_avi", "long_h264"])
@pytest.mark.parametrize("count", [3, 7])
def test_containers_give_the_same_frames(videos, name, count):
    """MP4, AVI (full index), Matroska (sparse cues), MPEG-TS (none), raw H.264 (no times)."""
    kf = video.read_key_frames(videos[name], count)
    expected = np.floor((np.arange(count) + 0.5) * 600 / count).astype(np.int64)
    np.testing.assert_array_equal(kf.indices, expected)
    np.testing.assert_allclose(kf.timestamps, expected / FPS, atol=1e-6)
    assert [read_number(f) for f in kf.frames] == expected.tolist()
    assert kf.info.frame_count == 600 and kf.info.duration == pytest.approx(24.0)


def _count_decoded(monkeypatch) -> list[int]:
    """Count every frame the reader decodes, in a one-element list."""
    decoded = [0]
    real = video._frames

    def counting(container, stream):
        for frame in real(container, stream):
            decoded[0] += 1
            yield frame

    monkeypatch.setattr(video, "_frames", counting)
    return decoded


@pytest.mark.parametrize("name", ["long", "long_mkv", "long_ts", "long_avi"])
def test_seeking_decodes_far_fewer_frames_than_the_file_holds(videos, name, monkeypatch):
    decoded = _count_decoded(monkeypatch)
    kf = video.read_key_frames(videos[name], 3)
    assert [read_number(f) for f in kf.frames] == [100, 300, 500]
    # Three targets in a 600-frame file with a keyframe every 25 frames: a few GOPs each.
    assert 0 < decoded[0] < 150


class _Container:
    """Wraps a PyAV input container to make its seeks fail or overshoot."""

    def __init__(self, real, mode: str):
        self._real, self._mode = real, mode
        self.seeks = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()

    def seek(self, offset, *, stream, backward=True):
        self.seeks += 1
        if self._mode == "fail":
            raise av.error.PermissionError(1, "Operation not permitted")
        # "overshoot": land on the keyframe after the target, as MPEG-TS seeks can.
        step = int(2 / stream.time_base)
        self._real.seek(offset + step, stream=stream, backward=False)


@pytest.mark.parametrize("mode", ["fail", "overshoot"])
def test_bad_seeks_fall_back_and_still_find_the_frames(videos, monkeypatch, mode):
    opened = []
    real_open = video._open

    def wrapped(name):
        opened.append(_Container(real_open(name), mode))
        return opened[-1]

    monkeypatch.setattr(video, "_open", wrapped)
    decoded = _count_decoded(monkeypatch)
    kf = video.read_key_frames(videos["long"], 3)
    assert [read_number(f) for f in kf.frames] == kf.indices.tolist() == [100, 300, 500]
    seeks = sum(c.seeks for c in opened)
    if mode == "fail":  # one try, then decoding on from a restart
        assert seeks == 1 and decoded[0] <= 505  # one pass up to frame 500
    else:  # backing off until a seek lands before the target
        assert seeks > 3 and decoded[0] < 200


# --- formats, sizes, rotation, frame rate -----------------------------------------------


@pytest.mark.parametrize(
    "name, size, pix_fmt",
    [
        ("odd444", (91, 161), "yuv444p"),
        ("odd420_ffv1", (91, 161), "yuv420p"),
        ("gray", (90, 160), "gray"),
    ],
)
def test_other_pixel_formats_and_odd_sizes(videos, name, size, pix_fmt):
    kf = video.read_key_frames(videos[name], 4)
    assert kf.info.pix_fmt == pix_fmt and kf.info.bit_depth == 8
    assert (kf.info.height, kf.info.width) == size
    assert kf.frames.shape == (4, *size, 3) and kf.frames.dtype == np.uint8
    assert [read_number(f) for f in kf.frames] == kf.indices.tolist() == [2, 7, 12, 17]
    corner = kf.frames[:, 2:8, 2:8].reshape(-1, 3).mean(0)
    if pix_fmt == "gray":
        assert np.ptp(corner) < 2  # no colour survives
    else:
        np.testing.assert_allclose(corner, RED, atol=12)


def flat(color, width=160, height=90) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (height, width, 3)).copy()


@pytest.mark.parametrize("color", [(128, 128, 128), (200, 30, 30)])
def test_ten_bit_h264_comes_back_as_8_bit_rgb(tmp_path, color):
    path = encode(tmp_path / "ten.mp4", [flat(color)] * 6, pix_fmt="yuv420p10le")
    kf = video.read_key_frames(path, 3)
    assert kf.info.pix_fmt == "yuv420p10le" and kf.info.bit_depth == 10
    assert kf.frames.dtype == np.uint8 and kf.frames.shape == (3, 90, 160, 3)
    np.testing.assert_allclose(kf.frames.reshape(-1, 3).mean(0), color, atol=3)


def test_ten_bit_hevc_from_ffmpeg(tmp_path, ffmpeg_exe):
    path = tmp_path / "ten.mkv"
    ffmpeg(
        ffmpeg_exe, "-f", "lavfi", "-i", "color=c=0xC81E1E:s=162x90:r=25:d=0.4",
        "-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le",
        str(path),
    )  # fmt: skip
    kf = video.read_key_frames(path, 2)
    assert (kf.info.codec, kf.info.bit_depth) == ("hevc", 10)
    assert kf.frames.shape == (2, 90, 162, 3) and kf.frames.dtype == np.uint8
    np.testing.assert_allclose(kf.frames.reshape(-1, 3).mean(0), (200, 30, 30), atol=6)


@pytest.mark.parametrize("angle, k", [(90, 1), (270, 3)])
def test_rotation_matches_what_ffmpeg_displays(videos, ffmpeg_exe, angle, k):
    info = video.probe(videos[f"rot{angle}"])
    assert (info.rotation, info.width, info.height) == (angle, 90, 160)
    kf = video.read_key_frames(videos[f"rot{angle}"], 5)
    assert kf.frames.shape == (5, 160, 90, 3)  # portrait: H > W
    # Undoing a counter-clockwise turn of `angle` gives the stored frame back.
    plain = video.read_key_frames(videos["cfr"], 5)
    np.testing.assert_array_equal(np.rot90(kf.frames, -k, axes=(1, 2)), plain.frames)
    assert [read_number(np.rot90(f, -k)) for f in kf.frames] == kf.indices.tolist()
    # The red top-left marker ends up bottom-left (90 ccw) or top-right (270 ccw).
    corner = kf.frames[0, -5:, :5] if angle == 90 else kf.frames[0, :5, -5:]
    np.testing.assert_allclose(corner.reshape(-1, 3).mean(0), RED, atol=12)
    shown = decode_all_with_ffmpeg(ffmpeg_exe, videos[f"rot{angle}"], 90, 160)
    assert np.abs(shown[kf.indices].astype(int) - kf.frames).mean() < 1


def test_variable_frame_rate_uses_timestamps(tmp_path):
    gaps = [40, 40, 120, 40, 200, 40, 80, 40, 40, 300, 40, 40, 40, 160, 40] * 2
    pts_ms = np.concatenate([[0], np.cumsum(gaps)])
    path = encode(
        tmp_path / "vfr.mp4",
        (coded_frame(i) for i in range(len(pts_ms))),
        pts=pts_ms,
        time_base=Fraction(1, 1000),
    )
    info = video.probe(path)
    assert info.frame_count == len(pts_ms)
    count = 7
    kf = video.read_key_frames(path, count)
    shown = shown_at_centres(pts_ms / 1000, info.duration, count)
    assert [read_number(f) for f in kf.frames] == shown.tolist()
    np.testing.assert_allclose(kf.timestamps, pts_ms[shown] / 1000, atol=1e-6)
    # Frame numbers are estimates from time at the average rate, within the file.
    np.testing.assert_array_equal(
        kf.indices, np.clip(np.round(kf.timestamps * info.fps), 0, len(pts_ms) - 1)
    )


# --- truncation, errors and the input file ----------------------------------------------


def test_truncated_file_returns_frames_that_exist(videos, tmp_path):
    data = videos["faststart"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.97)])
    kf = video.read_key_frames(cut, 2)
    assert [read_number(f) for f in kf.frames] == kf.indices.tolist() == [12, 37]


def _bad_file(kind: str, tmp: Path, videos, ffmpeg_exe) -> Path:
    path = tmp / f"bad_{kind}"
    if kind == "missing":
        return tmp / "no_such_clip.mp4"
    if kind == "directory":
        path.mkdir()
    elif kind == "wav":
        path = tmp / "tone.wav"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 800), np.int16), format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = 8000, 0
            out.mux(stream.encode(frame))
            out.mux(stream.encode())
    elif kind == "m4a":
        path = tmp / "tone.m4a"
        ffmpeg(ffmpeg_exe, "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac", str(path))
    elif kind == "cover_mp3":  # audio with album art: a video stream that is no video
        path = tmp / "song.mp3"
        ffmpeg(
            ffmpeg_exe, "-f", "lavfi", "-i", "sine=d=0.5", "-f", "lavfi", "-i",
            "color=c=red:s=64x64", "-map", "0", "-map", "1", "-frames:v", "1",
            "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic", str(path),
        )  # fmt: skip
    elif kind == "text":
        path.write_text("just some notes, not a video\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_moov":  # an mp4 cut in half with its index at the end
        data = videos["cfr"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated":  # index at the front, half of the frames gone
        data = videos["faststart"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_mkv":  # duration in the header, half of the frames gone
        path = tmp / "cut.mkv"
        ffmpeg(ffmpeg_exe, "-i", str(videos["cfr"]), "-c", "copy", str(path))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


ERROR_CASES = [
    ("missing", errors.VideoNotFoundError, "an existing video file", "does not exist", "path"),
    ("directory", errors.VideoNotFoundError, "a video file", "a directory", "file itself"),
    ("wav", errors.NoVideoStreamError, "video stream", "audio streams only", "video file"),
    ("m4a", errors.NoVideoStreamError, "video stream", "audio streams only", "video file"),
    ("cover_mp3", errors.NoVideoStreamError, "video stream", "audio and cover picture", "video"),
    ("text", errors.VideoDecodeError, "FFmpeg can read", "InvalidDataError", "re-mux"),
    ("random", errors.VideoDecodeError, "FFmpeg can read", "truncated or corrupt", "re-mux"),
    ("empty", errors.VideoDecodeError, "a video file", "empty file (0 bytes)", "re-encode"),
    ("no_moov", errors.VideoDecodeError, "FFmpeg can read", "truncated or corrupt", "re-mux"),
]


def _check_message(exc: BaseException, where: str, expected: str, got: str, fix: str) -> None:
    text = str(exc)
    assert text.startswith(f"{where}: expected ")
    head, _, fix_part = text.partition(". Fix: ")
    assert expected in head.split(", got ")[0]
    assert got in head.split(", got ")[1]
    assert fix in fix_part
    # Raised "from None": no PyAV exception chained into the traceback.
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


@pytest.mark.parametrize("func", ["probe", "read_key_frames"])
@pytest.mark.parametrize("kind, cls, expected, got, fix", ERROR_CASES)
def test_file_errors(tmp_path, videos, ffmpeg_exe, func, kind, cls, expected, got, fix):
    path = _bad_file(kind, tmp_path, videos, ffmpeg_exe)
    call = video.probe if func == "probe" else lambda p: video.read_key_frames(p, 4)
    with pytest.raises(cls) as info:
        call(str(path))
    assert isinstance(info.value, errors.CpllmError)
    _check_message(info.value, f"{func}({str(path)!r})", expected, got, fix)


@pytest.mark.parametrize("kind", ["truncated", "truncated_mkv"])
def test_truncated_file_error_says_how_many_were_decoded(tmp_path, videos, ffmpeg_exe, kind):
    path = _bad_file(kind, tmp_path, videos, ffmpeg_exe)
    assert video.probe(path).duration == pytest.approx(2.0)  # headers promise every frame
    with pytest.raises(errors.VideoDecodeError) as info:
        video.read_key_frames(path, 4)
    _check_message(
        info.value,
        f"read_key_frames({str(path)!r})",
        "4 key frames",
        "of 4 decoded",
        "ffmpeg -i FILE -c copy",
    )
    assert "truncated" in str(info.value)


@pytest.mark.parametrize("count", [0, -3, 2.5, None, True])
def test_bad_count(videos, count):
    with pytest.raises(errors.EmptyInputError) as info:
        video.read_key_frames(videos["cfr"], count)
    assert isinstance(info.value, ValueError)
    _check_message(
        info.value,
        f"read_key_frames({str(videos['cfr'])!r})",
        "a whole number >= 1",
        f"count={count!r}",
        "at least one key frame",
    )


def test_input_file_is_left_untouched(videos):
    path = videos["long"]
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
    listing = sorted(os.listdir(path.parent))
    video.probe(path)
    video.read_key_frames(path, 5)
    video.read_key_frames(str(path), 700)  # the every-frame path
    after = (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
    assert after == before
    assert sorted(os.listdir(path.parent)) == listing  # no index or sidecar files


def test_module_does_not_import_torch():
    code = "import sys, cpllm_plugin.video; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"

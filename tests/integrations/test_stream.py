"""The input's own stream: H.264 quantisers read from the decoder, bitrate inside windows."""

import subprocess
from pathlib import Path

import pytest

from cpllm_plugin.integrations import stream

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"


def _encode(ffmpeg_exe, out: Path, *args) -> Path:
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(SAMPLE),
                    "-t", "2", "-an", *args, str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def encodes(ffmpeg_exe, tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    x264 = ["-c:v", "libx264", "-preset", "veryfast"]
    return {"crf20": _encode(ffmpeg_exe, d / "a.mp4", *x264, "-crf", "20"),
            "crf38": _encode(ffmpeg_exe, d / "b.mp4", *x264, "-crf", "38"),
            "qp30": _encode(ffmpeg_exe, d / "c.mp4", *x264, "-qp", "30"),
            "hevc": _encode(ffmpeg_exe, d / "d.mp4", "-c:v", "libx265", "-preset",
                            "ultrafast", "-crf", "30", "-x265-params", "log-level=error")}


def test_h264_quantiser_follows_the_encode(encodes):
    a, b = (stream.stats(encodes[k], quantiser=True) for k in ("crf20", "crf38"))
    assert a.codec == "h264" and a.frames == 48
    assert a.qp is not None and b.qp is not None and b.qp > a.qp + 10
    assert b.kbps < a.kbps / 3
    # Constant QP: every macroblock at 30 (x264's I and B offsets move frames by a few).
    assert stream.stats(encodes["qp30"], quantiser=True).qp == pytest.approx(30, abs=3)


def test_windows_count_only_their_packets(encodes):
    whole = stream.stats(encodes["crf20"])
    half = stream.stats(encodes["crf20"], [(1.0, 1.0)], quantiser=True)
    assert 18 <= half.frames <= 26 and half.qp is not None
    assert 0 < half.kbps < whole.kbps * 3


def test_other_codecs_give_bitrate_without_quantiser(encodes):
    s = stream.stats(encodes["hevc"], quantiser=True)
    assert s.codec == "hevc" and s.qp is None and s.kbps > 0

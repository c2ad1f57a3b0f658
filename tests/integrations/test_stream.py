"""The input's own stream: H.264 quantisers read from the decoder, bitrate inside windows."""

import subprocess
from pathlib import Path

import numpy as np
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


def test_sigma_reads_white_noise_and_ignores_planes_and_edges():
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(120.0), np.arange(160.0)) / 2  # a smooth gradient
    edge = np.where(np.arange(160) < 80, 40.0, 200.0)[None].repeat(120, 0)  # a straight edge
    assert stream.sigma(ramp) < 0.01
    assert stream.sigma(edge) < 2.5  # only the edge's one column responds
    for s in (4.0, 10.0, 16.0):
        noisy = np.clip(128 + rng.normal(0, s, (240, 320)), 0, 255)
        assert stream.sigma(noisy) == pytest.approx(s, rel=0.1)


def test_noise_tells_a_noisy_copy_from_its_clip(encodes, ffmpeg_exe, tmp_path):
    # The catalog's noisy upload: temporal noise on the clip, kept at a high quality.
    noisy = _encode(ffmpeg_exe, tmp_path / "n.mp4", "-vf", "noise=alls=16:allf=t",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "16")
    clean = stream.noise(encodes["crf20"])
    assert clean < 3 < 6 < stream.noise(noisy)
    # Windows: frames inside them only, still the same reading.
    assert stream.noise(noisy, [(0.5, 1.0)]) == pytest.approx(stream.noise(noisy), rel=0.2)


def test_fine_detail_reads_the_octave_a_down_and_up_scale_loses():
    # A picture's spectrum falls as 1/f, as natural images' do (white noise would not tell:
    # the reading is a ratio to the plane's own pixel differences).
    rng = np.random.default_rng(0)
    f = np.hypot(np.fft.fftfreq(240)[:, None], np.fft.rfftfreq(320)[None, :])
    f[0, 0] = 1
    plane = np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f,
                          (240, 320))
    sharp = (128 + 30 * plane / plane.std()).astype(np.float32)
    # The same plane scaled 2x down and back up: its top octave gone.
    small = sharp.reshape(120, 2, 160, 2).mean(axis=(1, 3))
    soft = stream._resize(small, 240, 320)
    assert stream.fine_detail(sharp) > 0.6 > 0.5 > stream.fine_detail(soft)
    assert stream.fine_detail(np.full((240, 320), 90.0)) == 0.0  # flat: nothing to lose
    assert stream.fine_detail(np.zeros((2, 2))) == 0.0  # too small to halve
    # Odd sizes are read on their even part.
    assert stream.fine_detail(sharp[:239, :319]) == pytest.approx(stream.fine_detail(sharp),
                                                                  rel=0.05)


def test_detail_tells_a_soft_copy_from_its_clip(encodes, ffmpeg_exe, tmp_path):
    # The catalog's soft upload: scaled down 2x and back up, kept at a high quality.
    soft = _encode(ffmpeg_exe, tmp_path / "s.mp4", "-vf",
                   "scale=320:180:flags=bicubic,scale=640:360:flags=bicubic",
                   "-c:v", "libx264", "-preset", "veryfast", "-crf", "16")
    sharp = stream.detail(encodes["crf20"])
    assert stream.detail(soft) < 0.45 < 0.5 < sharp
    assert stream.detail(soft, [(0.5, 1.0)]) == pytest.approx(stream.detail(soft), rel=0.1)

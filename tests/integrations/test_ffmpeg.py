"""The one encode-command builder (encode_args, video_args): a training ladder encode and a
ladder probe at the same encoder and CRF get the same encoder options, and the user's
options merge with the table's thread cap."""

import sys
from pathlib import Path

import pytest

from cpllm_plugin.integrations import ffmpeg as ff
from cpllm_plugin.integrations import ladder as lad
from cpllm_plugin.training import variants as vr

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample.mp4"
EXE = sys.executable  # any executable file: nothing is run, the commands are captured


@pytest.fixture
def captured(monkeypatch):
    """argv of every ffmpeg the callers would run (they are not run)."""
    seen: list[list[str]] = []

    def fake(args, where, on_line=None):
        seen.append([str(a) for a in args])
        return ""

    monkeypatch.setattr(ff, "run_ffmpeg", fake)
    monkeypatch.setattr(vr, "_run_ffmpeg", fake)
    return seen


@pytest.mark.parametrize("codec, codec_args", [
    ("libx264", ["-c:v", "libx264", "-preset", "medium", "-crf", "30", "-threads", "2"]),
    ("libx265", ["-c:v", "libx265", "-preset", "fast", "-crf", "30", "-tag:v", "hvc1",
                 "-x265-params", "pools=2:log-level=error"]),
])
def test_training_encode_and_ladder_probe_share_the_codec_options(captured, tmp_path, codec,
                                                                 codec_args):
    vr.encode(SAMPLE, tmp_path / "v.mp4", 30, codec, ffmpeg=EXE, threads=2)
    ladder = lad.Ladder.__new__(lad.Ladder)  # only what _encode reads
    ladder.settings, ladder.ffmpeg = lad.Settings(codec), EXE
    ladder._encode(tmp_path / "ref0.mkv", tmp_path / "crf30_0.mkv", 30, 2)
    train, probe = captured
    tmp = train[-1]  # atomic()'s temporary name beside v.mp4
    assert train == [EXE, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                     "-filter_threads", "2", "-threads", "2", "-i", str(SAMPLE),
                     "-map", "0:v:0", *ff.DROP_ALL, "-vf", ff.even_crop,
                     "-fps_mode", "passthrough", *codec_args, "-pix_fmt", "yuv420p",
                     "-f", "mp4", tmp]
    assert probe == [EXE, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                     "-threads", "2", "-i", str(tmp_path / "ref0.mkv"), "-map", "0:v:0",
                     "-fps_mode", "passthrough", *codec_args, str(tmp_path / "crf30_0.mkv")]
    # the point: the same encoder options, by construction
    at = [c.index("-c:v") for c in (train, probe)]
    assert train[at[0]:at[0] + len(codec_args)] == probe[at[1]:at[1] + len(codec_args)]
    assert codec_args == ff.ENCODERS[codec].args(30, threads=2) == ff.video_args(codec, 30,
                                                                                 threads=2)


def test_user_options_merge_with_the_thread_cap():
    opts = (("x265-params", "aq-mode=3"), ("g", "60"))
    args = ff.video_args("libx265", 28, "slow", 4, opts, "yuv420p10le")
    assert args == ["-c:v", "libx265", "-preset", "slow", "-crf", "28", "-tag:v", "hvc1",
                    "-x265-params", "pools=4:log-level=error:aq-mode=3", "-g", "60",
                    "-pix_fmt", "yuv420p10le"]
    # no thread cap: the user's -params pass as they are
    assert ff.video_args("libx265", 28, options=opts)[-4:] == [
        "-x265-params", "aq-mode=3", "-g", "60"]
    svt = ff.video_args("libsvtav1", 40, threads=2, options=(("svtav1-params", "tune=0"),))
    assert svt[-2:] == ["-svtav1-params", "lp=2:tune=0"]
    # the ladder's Settings are the builder's (threads 0 or None: no cap)
    s = lad.Settings("libx265", "slow", opts, "yuv420p10le")
    assert s.args(28, 4) == args
    assert s.args(28, None) == s.args(28, 0) == ff.video_args("libx265", 28, "slow", None,
                                                              opts, "yuv420p10le")


def test_first_only_aims_the_video_options_at_output_stream_v0():
    args = ff.encode_args("ffmpeg", "in.mkv", "out.mp4", 30, "libx265", threads=2,
                          pix_fmt="yuv420p", vfilter="scale=640:-2", video="0:1",
                          streams=["-map", "0:a", "-c:a", "copy"], first_only=True,
                          outputs=["-nostats"])
    assert args[6:] == ["-i", "in.mkv", "-map", "0:1", "-map", "0:a", "-c:a", "copy",
                        "-filter:v:0", "scale=640:-2", "-fps_mode:v:0", "passthrough",
                        "-c:v:0", "libx265", "-preset", "fast", "-crf", "30", "-tag:v:0",
                        "hvc1", "-x265-params", "pools=2:log-level=error",
                        "-pix_fmt:v:0", "yuv420p", "-nostats", "out.mp4"]


def test_a_graph_is_mapped_by_its_label_and_fps_mode_can_be_left_to_ffmpeg():
    args = ff.encode_args("ffmpeg", "in.mkv", "out.mp4", 10, threads=2, inputs=["-ss", "1"],
                          graph="[0:v]reverse[v]", video="[v]", fps_mode=None, fmt="mp4")
    assert args[6:] == ["-ss", "1", "-i", "in.mkv", "-filter_complex", "[0:v]reverse[v]",
                        "-map", "[v]", "-c:v", "libx264", "-preset", "medium", "-crf", "10",
                        "-threads", "2", "-f", "mp4", "out.mp4"]

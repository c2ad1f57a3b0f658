"""cpllm-ladder encode's library call on real clips: streams copied, CRF written, per-scene
CRFs (x264 zones, chunks for the others), containers, refusals, failures and interrupts."""

import hashlib
import io
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from cpllm_plugin.errors import EmptyInputError, NoVideoStreamError, VideoNotFoundError
from cpllm_plugin.integrations import encode as enc
from cpllm_plugin.integrations import ffmpeg as ff
from cpllm_plugin.integrations import ladder as lad
from cpllm_plugin.video import probe, read_key_frames

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample.mp4"
FAST = lad.Settings(preset="ultrafast")
X265 = lad.Settings("libx265", preset="ultrafast")
FRAMES = 48  # the test clips: 2 s at 24 fps
SRT = "1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,000 --> 00:00:02,000\nworld\n"
CHAPTERS = (";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=One\n"
            "[CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=Two\n")


def _run(ffmpeg_exe, *args):
    subprocess.run([ffmpeg_exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    *map(str, args)], check=True)


@pytest.fixture(scope="module")
def rich(ffmpeg_exe, tmp_path_factory):
    """2 s of the sample at 320x180 with AAC audio (English), SRT subtitles, a title and
    two chapters, in Matroska."""
    d = tmp_path_factory.mktemp("rich")
    (d / "s.srt").write_text(SRT)
    (d / "ch.txt").write_text(CHAPTERS)
    out = d / "rich.mkv"
    _run(ffmpeg_exe, "-i", SAMPLE, "-f", "lavfi", "-i", "sine=f=440:d=2", "-i", d / "s.srt",
         "-i", d / "ch.txt", "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map_metadata", "3",
         "-map_chapters", "3", "-t", "2", "-vf", "scale=320:180", "-c:v", "libx264",
         "-preset", "ultrafast", "-crf", "14", "-c:a", "aac", "-c:s", "srt",
         "-metadata", "title=Rich clip", "-metadata:s:a:0", "language=eng", out)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _frames(path: Path) -> list[float]:
    """Presentation times of every decoded video frame (attached pictures skipped)."""
    with av.open(str(path)) as c:
        s = next(v for v in c.streams.video
                 if not int(v.disposition) & int(av.stream.Disposition.attached_pic))
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def _streams(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if getattr(s, "codec_context", None) else "")
                for s in c.streams if s.type != "data"]  # MP4 keeps chapters as a data track


def _sei(path: Path) -> str:
    """x264's settings string (SEI user data) in the file."""
    m = re.search(rb"x264 - core [^\x00]*", Path(path).read_bytes())
    assert m, "no x264 SEI in the file"
    return m.group().decode("latin-1")


def _packet_bytes(path: Path, split: float) -> tuple[int, int]:
    """Video bytes before and after ``split`` seconds."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        a = b = 0
        for p in c.demux(s):
            if p.size and p.pts is not None:
                if p.pts * s.time_base < split:
                    a += p.size
                else:
                    b += p.size
    return a, b


def _ids(path: Path) -> list[int]:
    """The frame numbers drawn into the pictures of :func:`counter` (top half: N mod 25 in
    steps of 8 levels, bottom half: N // 25 in steps of 80)."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            y = f.to_ndarray(format="yuv420p")[:f.height].astype(np.float32)
            h = f.height // 2
            top, bottom = (y[2:h - 2].mean() - 16) / 8, (y[h + 2:-2].mean() - 16) / 80
            out.append(round(top) + 25 * round(bottom))
    return out


def _left(folder: Path, *keep: Path) -> list[str]:
    """What lies in ``folder`` besides ``keep``: temporary files would show here."""
    return sorted(p.name for p in folder.iterdir() if p not in keep)


# --- one CRF ------------------------------------------------------------------------------


@pytest.mark.parametrize("ext, sub", [(".mp4", "mov_text"), (".mkv", "srt")])
def test_encode_copies_streams_and_writes_the_crf(rich, tmp_path, ext, sub):
    before = _sha(rich)
    calls = []
    out = tmp_path / f"out{ext}"
    r = enc.encode_file(rich, out, FAST, 31, progress=lambda d, t: calls.append((d, t)))
    assert r.output == out and r.bytes == out.stat().st_size > 0 and r.crf == 31
    assert r.scenes is None and r.encoder == "libx264"
    assert r.encoder_args == FAST.public() and r.kbps == round(r.bytes * 8 / 2.0 / 1000, 1)
    assert len(_frames(out)) == FRAMES
    assert " crf=31.0 " in _sei(out)
    assert _streams(out) == [("video", "h264"), ("audio", "aac"), ("subtitle", sub)]
    with av.open(str(out)) as c:
        assert c.metadata.get("title") == "Rich clip"
        assert c.streams.audio[0].metadata.get("language") == "eng"
        assert [ch["metadata"].get("title") for ch in c.chapters()] == ["One", "Two"]
    assert calls and calls[-1] == (2.0, 2.0)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))
    assert _sha(rich) == before and _left(tmp_path, out) == []
    assert r.to_dict()["type"] == "encode"


def test_mp4_text_subtitles_become_srt_in_mkv(rich, tmp_path):
    mp4 = enc.encode_file(rich, tmp_path / "a.mp4", FAST, 30).output
    assert _streams(mp4)[2] == ("subtitle", "mov_text")
    enc.encode_file(mp4, tmp_path / "b.mkv", FAST, 30)  # Matroska has no mov_text
    assert _streams(tmp_path / "b.mkv") == [("video", "h264"), ("audio", "aac"),
                                            ("subtitle", "srt")]


def test_existing_output_needs_force(rich, tmp_path):
    out = tmp_path / "out.mkv"
    out.write_bytes(b"old")
    with pytest.raises(lad.OutputExistsError, match="--force"):
        enc.encode_file(rich, out, FAST, 30)
    assert out.read_bytes() == b"old" and _left(tmp_path, out) == []
    enc.encode_file(rich, out, FAST, 30, force=True)
    assert len(_frames(out)) == FRAMES and _left(tmp_path, out) == []


def test_output_is_never_the_input(rich, tmp_path, monkeypatch):
    src = tmp_path / "in.mkv"
    src.write_bytes(rich.read_bytes())
    before = _sha(src)
    (tmp_path / "link.mkv").symlink_to(src)
    os.link(src, tmp_path / "hard.mkv")
    monkeypatch.chdir(tmp_path)
    for out in (src, Path("in.mkv"), tmp_path / "sub" / ".." / "in.mkv",
                tmp_path / "link.mkv", tmp_path / "hard.mkv"):
        with pytest.raises(lad.LadderArgumentError, match="input itself"):
            enc.encode_file(src, out, FAST, 30, force=True)
    assert _sha(src) == before
    assert _left(tmp_path, src) == ["hard.mkv", "link.mkv"]


def test_failed_encode_leaves_output_and_no_temporary_file(rich, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    bad = lad.Settings(preset="ultrafast", options=(("tune", "nonsense"),))  # --enc tune=...
    with pytest.raises(ff.FfmpegError, match="exit code"):
        enc.encode_file(rich, out, bad, 30, force=True)
    assert out.read_bytes() == b"old" and _left(tmp_path, out) == []
    out.unlink()
    with pytest.raises(ff.FfmpegError):
        enc.encode_file(rich, out, bad, scenes=[(0, 1, 20), (1, 2, 30)])
    with pytest.raises(ff.FfmpegError):  # chunks: the folder of chunks goes too
        enc.encode_file(rich, out, lad.Settings("libx265", options=(("tune", "nonsense"),)),
                        scenes=[(0, 1, 20), (1, 2, 30)])
    assert _left(tmp_path) == []


def test_bad_inputs_raise_the_ladders_errors(ffmpeg_exe, tmp_path):
    out = tmp_path / "out.mkv"
    with pytest.raises(VideoNotFoundError):
        enc.encode_file(tmp_path / "missing.mp4", out, FAST, 30)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyInputError):
        enc.encode_file(tmp_path / "empty.mp4", out, FAST, 30)
    _run(ffmpeg_exe, "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac", tmp_path / "a.m4a")
    with pytest.raises(NoVideoStreamError):
        enc.encode_file(tmp_path / "a.m4a", out, FAST, 30)
    assert not out.exists()


def test_bad_arguments_and_containers_are_refused_before_encoding(rich, tmp_path):
    vp9 = lad.Settings("libvpx-vp9")
    cases = [
        (dict(crf=30, scenes=[(0, 2, 30)]), "out.mkv", FAST, "exactly one"),
        (dict(), "out.mkv", FAST, "exactly one"),
        (dict(crf=99), "out.mkv", FAST, "0..63"),
        (dict(crf=30.5), "out.mkv", FAST, "whole crf"),
        (dict(scenes=[(0, 1, 30), (1.5, 2, 30)]), "out.mkv", FAST, "cover the input"),
        (dict(scenes=[(0.5, 2, 30)]), "out.mkv", FAST, "first scene"),
        (dict(scenes=[(0, 1, 30)]), "out.mkv", FAST, "last scene"),
        (dict(scenes=[(0, 1, 30), (1, 2, 70)]), "out.mkv", FAST, "scene 1"),
        (dict(scenes=[(0, 2, 30.5)]), "out.mkv", FAST, "whole CRF of scene 0"),
        (dict(crf=30), "out", FAST, "extension"),
        (dict(crf=30), "out.webm", FAST, "VP9 or AV1"),
        (dict(crf=30), "out.webm", vp9, "Opus or Vorbis"),  # the source's audio is AAC
        (dict(crf=30), "out.mov", vp9, "H.264 or HEVC"),
        (dict(crf=30), "no/such/dir/out.mkv", FAST, "existing folder"),
    ]
    for kw, name, settings, text in cases:
        with pytest.raises(lad.LadderArgumentError, match=text):
            enc.encode_file(rich, tmp_path / name, settings, **kw)
    with pytest.raises(ff.UnknownEncoderError):
        enc.encode_file(rich, tmp_path / "out.mkv", lad.Settings("libx266"), 30)
    assert _left(tmp_path) == []


def test_webm_takes_vp9_opus_and_webvtt(ffmpeg_exe, rich, tmp_path):
    src = tmp_path / "opus.mkv"
    _run(ffmpeg_exe, "-i", rich, "-map", "0", "-c", "copy", "-c:a", "libopus", src)
    out = tmp_path / "out.webm"
    enc.encode_file(src, out, lad.Settings("libvpx-vp9", preset="8"), 45)
    assert _streams(out) == [("video", "vp9"), ("audio", "opus"), ("subtitle", "webvtt")]
    assert len(_frames(out)) == FRAMES


def test_rotated_phone_video_is_encoded_upright(ffmpeg_exe, rich, tmp_path):
    # A phone's portrait clip: landscape pixels with a display matrix that turns them.
    src = tmp_path / "portrait.mp4"
    _run(ffmpeg_exe, "-display_rotation", "90", "-i", rich, "-map", "0:v", "-c", "copy", src)
    shown = read_key_frames(src, 1).frames[0].mean(axis=2)  # as a player shows it
    assert probe(src).rotation == 90 and shown.shape == (320, 180)
    out = tmp_path / "out.mp4"
    enc.encode_file(src, out, FAST, 20)
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (180, 320, 0)
    coded = read_key_frames(out, 1).frames[0].mean(axis=2)
    # Turned the right way: far closer to the shown picture than to it upside down.
    assert np.abs(coded - shown).mean() < 0.25 * np.abs(coded - shown[::-1, ::-1]).mean()


def test_cover_picture_is_not_taken_for_the_video(ffmpeg_exe, rich, tmp_path):
    _run(ffmpeg_exe, "-i", rich, "-frames:v", "1", "-vf", "scale=64:36", "-update", "1",
         tmp_path / "cover.png")
    src = tmp_path / "cover.mp4"
    _run(ffmpeg_exe, "-i", tmp_path / "cover.png", "-i", rich, "-map", "0", "-map", "1:v",
         "-map", "1:a", "-c", "copy", "-disposition:v:0", "attached_pic",
         "-disposition:v:1", "default", src)
    out = tmp_path / "out.mp4"
    enc.encode_file(src, out, FAST, 30)
    with av.open(str(out)) as c:
        v = c.streams.video
        assert [(s.codec_context.name, s.width) for s in v] == [("h264", 320), ("png", 64)]
        assert int(v[1].disposition) & int(av.stream.Disposition.attached_pic)
    assert len(_frames(out)) == FRAMES
    with pytest.warns(UserWarning, match="cover picture"):
        enc.encode_file(src, tmp_path / "out.mkv", FAST, 30)
    assert _streams(tmp_path / "out.mkv") == [("video", "h264"), ("audio", "aac")]


# --- a CRF per scene ----------------------------------------------------------------------


def test_per_scene_x264_uses_zones(rich, tmp_path):
    out = tmp_path / "out.mp4"
    r = enc.encode_file(rich, out, FAST, scenes=[(0, 1, 18), (1, 2, 45)])
    assert r.crf is None and r.scenes == [(0.0, 1.0, 18), (1.0, 2.0, 45)]
    assert "zones=0,23,crf=18/24,47,crf=45" in _sei(out)
    assert len(_frames(out)) == FRAMES
    first, second = _packet_bytes(out, 1.0)
    assert first > 3 * second  # CRF 18 then 45
    assert [t for t, _ in _streams(out)] == ["video", "audio", "subtitle"]
    assert _left(tmp_path, out) == []


def test_per_scene_x264_chunks_when_asked(counter, tmp_path):
    """--chunks: libx264 encodes each scene at its CRF and joins them, frame-exact, no zones."""
    out = tmp_path / "out.mkv"
    settings = lad.Settings("libx264", preset="ultrafast")
    enc.encode_file(counter, out, settings, scenes=[(0, 0.5, 20), (0.5, 1.25, 35), (1.25, 2, 28)],
                    chunks=True)
    assert _ids(out) == list(range(FRAMES))
    sei = _sei(out)
    assert "zones=" not in sei and "crf=20.0" in sei  # the first chunk's own settings
    assert _left(tmp_path, out, counter) == []


def test_per_scene_x265_encodes_and_joins_chunks(rich, tmp_path):
    out = tmp_path / "out.mp4"
    calls = []
    r = enc.encode_file(rich, out, X265, scenes=[(0, 1, 20), (1, 2, 45)],
                        progress=lambda d, t: calls.append(d))
    times = _frames(out)
    assert len(times) == FRAMES == len(_frames(rich))
    steps = {round(b - a, 4) for a, b in zip(times, times[1:], strict=False)}
    assert steps == {round(1 / 24, 4)} and times[0] == 0  # no gap or overlap at the cut
    first, second = _packet_bytes(out, 1.0)
    assert first > 2 * second
    single = enc.encode_file(rich, tmp_path / "one.mp4", X265, 20)
    assert r.bytes < single.bytes
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_tag == "hvc1"
        assert c.metadata.get("title") == "Rich clip"
        assert c.streams.audio[0].metadata.get("language") == "eng"
        assert len(c.chapters()) == 2
    assert _streams(out) == [("video", "hevc"), ("audio", "aac"), ("subtitle", "mov_text")]
    assert calls[-1] == 2.0 and max(calls) <= 2.0
    assert _left(tmp_path, out, tmp_path / "one.mp4") == []


@pytest.fixture(scope="module")
def counter(ffmpeg_exe, tmp_path_factory):
    """2 s at 24 fps, 160x96, each picture showing its frame number (see :func:`_ids`),
    lossless, with AAC audio."""
    out = tmp_path_factory.mktemp("counter") / "counter.mkv"
    lum = r"if(lt(Y\,48)\,16+8*mod(N\,25)\,16+80*floor(N/25))"
    _run(ffmpeg_exe, "-f", "lavfi", "-i", f"color=c=black:s=160x96:r=24:d=2,format=yuv420p,"
         f"geq=lum='{lum}':cb=128:cr=128", "-f", "lavfi", "-i", "sine=d=2", "-c:v", "libx264",
         "-qp", "0", "-preset", "ultrafast", "-c:a", "aac", "-shortest", out)
    return out


@pytest.mark.parametrize("encoder, preset, vfilter, late", [
    ("libx265", "ultrafast", None, False),
    ("libx265", "ultrafast", "scale=128:64", True),
    ("libvpx-vp9", "8", None, True),
    ("libsvtav1", "12", "scale=128:64", False),
])
def test_chunks_keep_every_frame_in_place(ffmpeg_exe, counter, tmp_path, encoder, preset,
                                          vfilter, late):
    """Each frame once, in order, across the cuts; with a --vfilter (no frame cap: only
    the cut times count), and on a file whose video starts 0.5 s after its audio (the
    joined chunks must be put back there)."""
    src = counter
    if late:
        src = tmp_path / "late.mkv"
        _run(ffmpeg_exe, "-itsoffset", "0.5", "-i", counter, "-i", counter, "-map", "0:v",
             "-map", "1:a", "-c", "copy", src)
    out = tmp_path / "out.mkv"
    settings = lad.Settings(encoder, preset=preset, vfilter=vfilter)
    enc.encode_file(src, out, settings, scenes=[(0, 0.5, 20), (0.5, 1.25, 35), (1.25, 2, 28)])
    assert _ids(out) == list(range(FRAMES))
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert abs(float(v.start_time * v.time_base) - (0.5 if late else 0)) < 0.002
        assert abs(float(a.start_time * a.time_base)) < 0.002
        if vfilter:
            assert (v.width, v.height) == (128, 64)
    assert _left(tmp_path, out, src) == []


# --- interrupts and the bar ---------------------------------------------------------------

DRIVER = """
import signal, sys
from cpllm_plugin.integrations import encode, ffmpeg, ladder

def term(signum, frame):  # what the CLI does with SIGTERM
    ffmpeg.stop_all()
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, term)
started = []

def progress(done, total):
    if done > 0 and not started:
        started.append(done)
        print("started", flush=True)

try:
    encode.encode_file(sys.argv[1], sys.argv[2], ladder.Settings(preset="medium"), 23,
                       progress=progress)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def long(ffmpeg_exe, tmp_path_factory):
    """The sample ten times over (40 s), made by stream copy."""
    out = tmp_path_factory.mktemp("long") / "long.mp4"
    _run(ffmpeg_exe, "-stream_loop", "9", "-i", SAMPLE, "-c", "copy", out)
    return out


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_leaves_no_output_and_no_temporary_file(long, tmp_path, sig):
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(long),
                             str(folder / "out.mp4")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # a background shell may have left SIGINT ignored (inherited)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "started", proc.stderr.read() if proc.poll() is not None else ""
        assert any(folder.iterdir())  # the temporary file is being written
        if sig == "SIGINT":  # Ctrl-C in a terminal: python and ffmpeg both get it
            os.killpg(proc.pid, signal.SIGINT)
        else:  # a service manager: python only; its handler stops ffmpeg
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in out, err
    assert list(folder.iterdir()) == []


def test_progress_bar_draws_one_line():
    s = io.StringIO()
    bar = enc.progress_bar(s)
    bar(0.5, 2.0)
    bar(1.0, 2.0)  # within a quarter second: skipped
    bar(2.0, 2.0)
    bar(2.0, 2.0)  # after the end: nothing more
    text = s.getvalue()
    assert text.startswith("\r[") and text.endswith("\n") and text.count("\n") == 1
    assert " 25.0%" in text and "ETA" in text and "100.0%" in text and "elapsed" in text
    s2 = io.StringIO()
    bar = enc.progress_bar(s2)
    bar(1.0, 4.0)
    bar.close()
    assert s2.getvalue().endswith("\n") and "ETA" in s2.getvalue()

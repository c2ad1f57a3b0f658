"""The CRF ladder on a real photo-pan clip: VMAF falls with CRF, CRF 53 = 51 by hash,
resumability, pseudo-scores, LSVQ label files and named errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from media import pan_frames, write_video

from cpllm_plugin.errors import CpllmError, VideoNotFoundError
from cpllm_plugin.integrations.ffmpeg import FfmpegError
from cpllm_plugin.training import variants as vr
from cpllm_plugin.training.manifest import Item, read_manifest

CRFS = (15, 31, 51, 53)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A short, clean pan across a real photo (20 frames, 256x144)."""
    pytest.importorskip("imageio_ffmpeg")
    return write_video(tmp_path_factory.mktemp("src") / "coffee.mp4",
                       pan_frames(20, 144, 256), fps=25, crf=10)


@pytest.fixture(scope="module")
def ladder(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder")
    items = vr.make_variants([Item(str(source), "coffee", split="dev", tag="a cup of coffee")],
                             out, crfs=CRFS, jobs=2, progress=False)
    return out, items


def test_ladder_rows_and_vmaf_falls_with_crf(ladder):
    out, items = ladder
    assert [i.original for i in items] == [True] + [False] * len(CRFS)
    variants = {i.crf: i for i in items if not i.original}
    assert sorted(variants) == list(CRFS)
    assert all((out / i.path).is_file() for i in variants.values())
    vmaf = [variants[c].vmaf for c in (15, 31, 51)]
    psnr = [variants[c].psnr for c in (15, 31, 51)]
    assert vmaf[0] > 90 and vmaf[0] > vmaf[1] > vmaf[2]
    assert psnr[0] > psnr[1] > psnr[2]
    pseudo = [variants[c].pseudo for c in (15, 31, 51)]
    assert pseudo[0] > pseudo[1] > pseudo[2] and all(1 <= p <= 5 for p in pseudo)
    assert all(i.split == "dev" and i.tag == "a cup of coffee" for i in items)
    # the manifest on disk is the same, and its paths resolve from its folder
    assert read_manifest(out / vr.MANIFEST_NAME) == items


def test_crf53_is_byte_identical_to_crf51_and_seen_by_hash(ladder):
    _, items = ladder
    v = {i.crf: i for i in items if not i.original}
    assert v[53].sha256 == v[51].sha256  # libx264 clamps CRF to 51 on 8-bit input
    assert len({i.sha256 for i in v.values()}) == 3
    assert v[53].vmaf == v[51].vmaf  # measured once for both


def _count_ffmpeg(monkeypatch) -> list:
    calls = []
    real = vr._run_ffmpeg

    def counting(args, where):
        calls.append("libvmaf" if any("libvmaf" in a for a in args) else "encode")
        return real(args, where)

    from cpllm_plugin.integrations import ffmpeg

    # Encodes run here, measurements in integrations.ffmpeg (shared with the ladder).
    monkeypatch.setattr(vr, "_run_ffmpeg", counting)
    monkeypatch.setattr(ffmpeg, "run_ffmpeg", counting)
    return calls


def test_resume_runs_no_ffmpeg_and_redoes_only_what_is_gone(source, tmp_path, monkeypatch):
    src = [Item(str(source), "coffee")]
    first = vr.make_variants(src, tmp_path, crfs=CRFS, jobs=2, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.mp4")}
    calls = _count_ffmpeg(monkeypatch)
    again = vr.make_variants(src, tmp_path, crfs=CRFS, jobs=2, progress=False)
    assert calls == [] and again == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.mp4")} == mtimes

    # Lost files are encoded again; x264 is deterministic, so the bytes (and hashes) come
    # back the same and the measurements in the manifest still hold.
    (tmp_path / "coffee" / "libx264_crf31.mp4").unlink()
    (tmp_path / "coffee" / "libx264_crf53.mp4").unlink()
    third = vr.make_variants(src, tmp_path, crfs=CRFS, jobs=2, progress=False)
    assert calls == ["encode", "encode"] and third == first

    # A measurement missing from the manifest (a crash mid-run) is measured, only that one.
    from dataclasses import replace

    from cpllm_plugin.training.manifest import write_manifest

    write_manifest(tmp_path / vr.MANIFEST_NAME,
                   [replace(i, vmaf=None) if i.crf == 31 else i for i in third])
    calls.clear()
    fourth = vr.make_variants(src, tmp_path, crfs=CRFS, jobs=2, progress=False)
    assert calls == ["libvmaf"] and fourth == first


def test_leftover_partial_files_are_ignored(source, tmp_path):
    part = tmp_path / "coffee" / ".libx264_crf15.x.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half an encode")
    items = vr.make_variants([Item(str(source), "coffee")], tmp_path, crfs=(15,), jobs=1,
                             measure=False, progress=False)
    assert items[1].path == "coffee/libx264_crf15.mp4" and items[1].vmaf is None
    assert items[1].pseudo is None and items[1].sha256  # ranking-only row
    # a crash's leftover is left alone, and the run's own temporary file is gone
    assert sorted(p.name for p in part.parent.iterdir()) == [part.name, "libx264_crf15.mp4"]


def test_progress_lines_go_to_the_callable(source, tmp_path):
    lines = []
    vr.make_variants([Item(str(source), "coffee")], tmp_path, crfs=(23,), jobs=1,
                     progress=lines.append)
    assert any(line.startswith("[encode 1/1]") for line in lines)
    assert any(line.startswith("[measure 1/1]") and "VMAF" in line for line in lines)


def test_annotator_descriptions_and_mos_survive_a_rerun(source, tmp_path):
    from dataclasses import replace

    from cpllm_plugin.training.manifest import write_manifest

    src = [Item(str(source), "coffee", mos=4.0)]
    items = vr.make_variants(src, tmp_path, crfs=(15,), jobs=1, progress=False)
    edited = [replace(i, description="Written by a person.") if not i.original else i
              for i in items]
    write_manifest(tmp_path / vr.MANIFEST_NAME, edited)
    again = vr.make_variants(src, tmp_path, crfs=(15,), jobs=1, progress=False)
    assert again[1].description == "Written by a person."
    assert again[1].pseudo == pytest.approx(vr.pseudo_score(again[1].vmaf, 4.0))
    assert again[1].pseudo <= 4.0


# --- pseudo-scores -------------------------------------------------------------------------


@pytest.mark.parametrize("mos", [None, 1.0, 2.5, 4.2, 5.0])
def test_pseudo_score_is_monotone_and_bounded(mos):
    v = np.linspace(-20, 120, 281)
    p = np.array([vr.pseudo_score(x, mos) for x in v])
    assert np.all(np.diff(p) >= 0) and p.min() >= 1.0 and p.max() <= 5.0
    top = 5.0 if mos is None else mos
    assert vr.pseudo_score(100, mos) == pytest.approx(top)
    assert vr.pseudo_score(0, mos) == pytest.approx(1.0)
    assert vr.pseudo_score(None, mos) is None


def test_pseudo_score_known_values():
    assert vr.pseudo_score(80) == pytest.approx(4.2)
    assert vr.pseudo_score(50) == pytest.approx(3.0)
    assert vr.pseudo_score(50, 4.0) == pytest.approx(2.5)  # 1 + 3 * 0.5: below its source


# --- measuring -----------------------------------------------------------------------------


def test_measure_identical_file_is_perfect(source):
    vmaf, psnr = vr.measure_fr(source, source)
    assert vmaf > 97 and psnr == vr.PSNR_CAP
    assert vr.measure_fr(source, source, psnr=False) == (vmaf, None)  # VMAF alone, the same
    upscaled = vr.measure_fr(source, source, psnr=False, size=(320, 192))[0]
    assert upscaled > 97 and upscaled != vmaf  # compared at the asked size, not the source's


def test_measure_odd_sized_source(tmp_path):
    frames = pan_frames(10, 101, 181)  # odd sizes: the variant drops a row and a column
    src = write_video(tmp_path / "odd.mp4", frames, crf=10, codec="libx264rgb",
                      pix_fmt="rgb24")
    items = vr.make_variants([Item(str(src), "odd")], tmp_path / "v", crfs=(20, 45),
                             jobs=2, progress=False)
    assert items[1].vmaf > items[2].vmaf and items[1].vmaf > 80


# --- named errors --------------------------------------------------------------------------


def test_corrupt_source_is_a_named_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(CpllmError, match=r"probe\('.*bad.mp4'\).*ffprobe"):
        vr.make_variants([Item(str(bad), "bad")], tmp_path / "out", crfs=(23,),
                         progress=False)  # found when its height is read, before any encode
    with pytest.raises(vr.FfmpegError, match=r"encode\('bad.mp4', crf=23\).*ffmpeg"):
        vr.encode(bad, tmp_path / "out.mp4", 23)


def test_missing_source_is_a_named_error(tmp_path):
    with pytest.raises(vr.MissingVideosError, match="1 missing") as e:
        vr.make_variants([Item(str(tmp_path / "nope.mp4"), "nope")], tmp_path, crfs=(23,),
                         progress=False)
    assert isinstance(e.value, CpllmError) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(VideoNotFoundError):
        vr.measure_fr(tmp_path / "nope.mp4", tmp_path / "nope.mp4")


def test_a_picture_too_small_for_libvmaf_is_a_named_error(tmp_path, ffmpeg_exe):
    # libvmaf segfaults on a side under 18 pixels; the error must name the size and the way out.
    tiny = tmp_path / "tiny.mp4"
    subprocess.run([ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=64x16:d=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(tiny)], check=True)
    with pytest.raises(FfmpegError, match=r"at least 18x18.*got 64x16.*--mode predict"):
        vr.measure_fr(tiny, tiny)


def test_ffmpeg_without_libvmaf_or_missing_is_named(tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' .. psnr  VV->V  Calculate the PSNR'\n")
    fake.chmod(0o755)
    with pytest.raises(vr.FfmpegError, match="built with libvmaf"):
        vr.make_variants([Item(str(fake), "x")], tmp_path / "o", ffmpeg=str(fake),
                         progress=False)
    with pytest.raises(vr.FfmpegError, match="an executable ffmpeg"):
        vr.find_ffmpeg(tmp_path / "no-such-ffmpeg")


@pytest.mark.parametrize("kw, err, text", [
    ({"crfs": ()}, vr.DataArgumentError, "CRF levels"),
    ({"crfs": (70,)}, vr.DataArgumentError, "CRF levels"),
    ({"jobs": 0}, vr.DataArgumentError, "jobs >= 1"),
])
def test_bad_arguments(source, tmp_path, kw, err, text):
    with pytest.raises(err, match=text) as e:
        vr.make_variants([Item(str(source), "c")], tmp_path, progress=False, **kw)
    assert isinstance(e.value, CpllmError) and isinstance(e.value, ValueError)


# --- LSVQ label files ----------------------------------------------------------------------

_LSVQ_HEADER = "name,p1,p2,p3,height,width,mos_p1,mos_p2,mos_p3,mos,frame_number,is_test\n"


def _lsvq(tmp_path: Path, rows: list[tuple[str, float, bool]], make: int) -> Path:
    videos = tmp_path / "videos"
    for name, *_ in rows[:make]:
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / f"{name}.mp4").write_bytes(b"video")
    csv = tmp_path / "labels_train_test.csv"
    csv.write_text(_LSVQ_HEADER + "".join(
        f"{n},0,0,0,720,1280,50,50,50,{m},240,{str(t)}\n" for n, m, t in rows))
    return csv


def test_read_lsvq_csv_maps_0_100_to_1_5(tmp_path):
    rows = [("yfcc-batch1/11819", 0.0, False), ("ia-batch3/clip_a", 100.0, True),
            ("yfcc-batch2/7", 62.5, False)]
    items = vr.read_lsvq_csv(_lsvq(tmp_path, rows, 3), tmp_path / "videos")
    assert [i.source for i in items] == [r[0] for r in rows]
    assert [i.mos for i in items] == pytest.approx([1.0, 5.0, 3.5])
    assert [i.mos_raw for i in items] == [0.0, 100.0, 62.5]
    assert all(i.mos_scale == (0.0, 100.0) and i.original for i in items)
    assert [i.split for i in items] == ["train", "test", "train"]
    assert Path(items[0].path) == (tmp_path / "videos/yfcc-batch1/11819.mp4").resolve()
    dev = vr.read_lsvq_csv(tmp_path / "labels_train_test.csv", tmp_path / "videos",
                           split="dev")
    assert {i.split for i in dev} == {"dev"}


def test_read_lsvq_csv_names_missing_videos(tmp_path):
    rows = [(f"yfcc-batch1/{n}", 50.0, False) for n in range(8)]
    csv = _lsvq(tmp_path, rows, 2)
    with pytest.raises(vr.MissingVideosError, match=r"6 of 8 missing.*yfcc-batch1/2") as e:
        vr.read_lsvq_csv(csv, tmp_path / "videos")
    assert isinstance(e.value, FileNotFoundError)
    with pytest.warns(UserWarning, match="6 of 8 missing"):
        assert len(vr.read_lsvq_csv(csv, tmp_path / "videos", missing="skip")) == 2


@pytest.mark.parametrize("text, match", [
    ("name,score\na,3\n", "columns 'name' and 'mos'"),
    ("name,mos\na,high\n", r":2: expected a number in column 'mos'"),
    ("name,mos\n,40\n", "a video name"),
])
def test_read_lsvq_csv_bad_files(tmp_path, text, match):
    (tmp_path / "videos").mkdir()
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(vr.LabelFileError, match=match):
        vr.read_lsvq_csv(tmp_path / "l.csv", tmp_path / "videos")


# --- encoders ------------------------------------------------------------------------------


def test_encoder_table_is_complete_and_consistent():
    assert set(vr.ENCODERS) == {"libx264", "libx265", "libsvtav1", "libvpx-vp9"}
    assert vr.ENCODERS["libx264"].ladder == tuple(range(15, 54, 2))  # the paper's 20 levels
    for name, enc in vr.ENCODERS.items():
        lo, hi = enc.crf_range
        assert enc.name == name and list(enc.ladder) == sorted(set(enc.ladder))
        assert lo <= enc.ladder[0] and enc.ladder[-1] <= hi
        assert name == "libx264" or len(enc.ladder) == 8
        args = enc.args(30, threads=3)
        assert args[:2] == ["-c:v", name] and "30" in args and "{n}" not in " ".join(args)
        assert any("3" in a for a in args[args.index("30") + 1:])  # the thread cap
    vp9 = vr.ENCODERS["libvpx-vp9"].args(40, preset="2")
    assert vp9[vp9.index("-cpu-used") + 1] == "2" and vp9[vp9.index("-b:v") + 1] == "0"


def test_unknown_codec_and_out_of_range_crf_are_named(source, tmp_path):
    with pytest.raises(vr.UnknownEncoderError, match="did you mean 'libx265'") as e:
        vr.make_variants([Item(str(source), "c")], tmp_path, codec="x265", progress=False)
    assert isinstance(e.value, ValueError)
    with pytest.raises(vr.DataArgumentError, match=r"0\.\.51 for libx265"):
        vr.make_variants([Item(str(source), "c")], tmp_path, codec="libx265", crfs=(53,),
                         progress=False)


def test_threads_never_oversubscribe(monkeypatch):
    from cpllm_plugin.integrations import ffmpeg

    monkeypatch.setattr(ffmpeg, "cpus", lambda: 2)
    assert vr.default_jobs() == 2 and vr._threads(2) == 1 and vr._threads(1) == 2
    assert vr._threads(5) == 1
    assert [vr.auto_subsample(n) for n in (20, 96, 191, 300, 600)] == [1, 1, 1, 3, 6]


@pytest.fixture(scope="module")
def codecs(source, tmp_path_factory):
    """Two levels of every encoder, written into one folder by successive runs."""
    out = tmp_path_factory.mktemp("codecs")
    for name, enc in vr.ENCODERS.items():
        rows = vr.make_variants([Item(str(source), "coffee", split="dev")], out,
                                crfs=(enc.ladder[0], enc.ladder[-1]), codec=name, jobs=2,
                                progress=False)
    return out, rows


def test_every_encoder_makes_a_ladder_and_runs_merge(codecs):
    out, rows = codecs
    variants = [r for r in rows if not r.original]
    assert sorted({r.codec for r in variants}) == sorted(vr.ENCODERS)  # no run dropped another
    assert len(variants) == 2 * len(vr.ENCODERS)
    from cpllm_plugin.video import probe

    for name, enc in vr.ENCODERS.items():
        best, worst = sorted((r for r in variants if r.codec == name), key=lambda r: r.crf)
        assert (best.crf, worst.crf) == (enc.ladder[0], enc.ladder[-1])
        assert best.vmaf > 90 and best.vmaf > worst.vmaf and best.pseudo > worst.pseudo
        assert best.height == worst.height == 144 and best.split == "dev"
        assert probe(out / best.path).codec in {"h264", "hevc", "av1", "libdav1d", "vp9"}
    assert rows[0].original and rows[0].height == 144 and rows[0].pseudo is None
    assert read_manifest(out / vr.MANIFEST_NAME) == rows


def test_merge_keeps_other_codecs_measured_once_and_can_be_turned_off(codecs, source,
                                                                      monkeypatch):
    out, rows = codecs
    calls = _count_ffmpeg(monkeypatch)
    again = vr.make_variants([Item(str(source), "coffee", split="dev")], out, crfs=(15, 31),
                             progress=False)
    assert calls == ["encode", "libvmaf"]  # only libx264 CRF 31 is new
    assert {r.codec for r in again if not r.original} == set(vr.ENCODERS)
    assert [r.crf for r in again if r.codec == "libx264"] == [15, 31]
    kept = {r.path: r for r in again if r.codec not in (None, "libx264")}
    assert kept == {r.path: r for r in rows if r.codec not in (None, "libx264")}
    only = vr.make_variants([Item(str(source), "coffee", split="dev")], out, crfs=(15,),
                            merge=False, progress=False)
    assert [r.codec for r in only] == [None, "libx264"]
    assert all((out / p).is_file() for p in kept)  # files stay; a merging run finds them


# --- degraded originals and their reference ------------------------------------------------


def test_degraded_original_is_measured_against_its_reference(source, tmp_path, monkeypatch):
    low = write_video(tmp_path / "coffee_low.mp4", pan_frames(20, 72, 128), fps=25, crf=10)
    sources = [Item(str(source), "coffee", mos=4.0),
               Item(str(low), "coffee-low", reference=str(source))]
    rows = vr.make_variants(sources, tmp_path / "v", crfs=(15, 45), jobs=2, progress=False)
    by = {(r.source, r.crf): r for r in rows}
    clean, low_o = by[("coffee", None)], by[("coffee-low", None)]
    assert clean.vmaf is None and clean.pseudo is None and clean.reference is None
    assert low_o.reference == clean.path and low_o.height == 72
    assert 20 < low_o.vmaf < 90 and low_o.psnr < 40  # a quarter of the pixels, upscaled
    # capped by the clean parent's MOS, like a variant of it
    assert low_o.pseudo == pytest.approx(vr.pseudo_score(low_o.vmaf, 4.0))
    lo15, lo45 = by[("coffee-low", 15)], by[("coffee-low", 45)]
    assert lo15.reference == lo45.reference == clean.path and lo15.height == 72
    # measured against the clean reference: never better than the degraded original
    assert lo45.vmaf < lo15.vmaf <= low_o.vmaf + 1
    assert by[("coffee", 15)].vmaf > 95 > lo15.vmaf and lo15.pseudo <= low_o.pseudo + 0.05
    calls = _count_ffmpeg(monkeypatch)
    assert vr.make_variants(sources, tmp_path / "v", crfs=(15, 45), progress=False) == rows
    assert calls == []  # resumable: every measurement kept
    with pytest.raises(vr.MissingVideosError, match="reference"):
        vr.make_variants([Item(str(low), "x", reference=str(tmp_path / "gone.mp4"))],
                         tmp_path / "w", crfs=(15,), progress=False)


def test_shorten_cuts_the_first_frames_losslessly_and_ladders_measure_them(source, tmp_path,
                                                                        monkeypatch):
    import av

    from cpllm_plugin.video import probe

    def read_frames(path, n=None):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)][:n]

    low = write_video(tmp_path / "coffee_low.mp4", pan_frames(20, 72, 128), fps=25, crf=10)
    sources = [Item(str(source), "coffee", split="train"),
               Item(str(low), "coffee-low", split="train", reference=str(source))]
    cuts = vr.shorten(sources, tmp_path / "cuts", 0.4, min_frames=4, jobs=2, progress=False)
    assert [c.source for c in cuts] == ["coffee", "coffee-low"]
    assert cuts[1].reference == str(source)  # the parent stays whole
    for c, o in zip(cuts, sources, strict=True):
        assert probe(c.path).frame_count == 10  # 0.4 s at 25 fps
        with av.open(c.path) as f:  # raw: the ladder decodes each cut twice per variant
            assert f.streams.video[0].codec_context.name == "rawvideo"
        got, want = read_frames(c.path), read_frames(o.path)[:10]
        assert len(got) == 10 and all(np.array_equal(a, b) for a, b in zip(got, want,
                                                                            strict=True))
    calls = _count_ffmpeg(monkeypatch)
    assert vr.shorten(sources, tmp_path / "cuts", 0.4, progress=False) == cuts
    assert calls == []  # resumable
    rows = vr.make_variants(cuts, tmp_path / "v", crfs=(15, 45), jobs=2, progress=False)
    by = {(r.source, r.crf): r for r in rows}
    assert probe(tmp_path / "v" / by[("coffee", 45)].path).frame_count == 10
    # measured against the parent's first 10 frames: a clean cut's variant stays near 100
    assert by[("coffee", 15)].vmaf > 95 > by[("coffee-low", 15)].vmaf
    assert by[("coffee-low", 45)].vmaf < by[("coffee-low", 15)].vmaf
    with pytest.raises(vr.DataArgumentError, match="seconds > 0"):
        vr.shorten(sources, tmp_path / "c2", 0, progress=False)
    # seconds=None: every frame (the dev ladders' whole originals), still raw
    whole = vr.shorten(sources, tmp_path / "whole", None, jobs=2, progress=False)
    for c, o in zip(whole, sources, strict=True):
        got, want = read_frames(c.path), read_frames(o.path)
        assert len(got) == len(want) == probe(o.path).frame_count
        assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))


def test_shorten_keeps_ten_bit_cuts_lossless_in_h264(source, tmp_path):
    """Matroska refuses raw 10-bit YUV: the cut falls back to lossless H.264, same pixels."""
    import av

    deep = tmp_path / "deep.mkv"
    subprocess.run([vr.find_ffmpeg(), "-loglevel", "error", "-i", str(source), "-frames:v", "6",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p10le", str(deep)],
                   check=True)
    (cut,) = vr.shorten([Item(str(deep), "deep", split="train")], tmp_path / "cuts", 0.2,
                        min_frames=4, progress=False)

    def frames(path):
        with av.open(str(path)) as f:
            st = f.streams.video[0]
            return st.codec_context.name, [x.to_ndarray() for x in f.decode(st)]

    (codec, got), (_, want) = frames(cut.path), frames(deep)
    assert codec == "h264" and len(got) == 5
    assert all(np.array_equal(a, b) for a, b in zip(got, want[:5], strict=True))

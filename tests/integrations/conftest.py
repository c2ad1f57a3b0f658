"""Fixtures the ladder's mode tests share."""

import subprocess
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.mp4"


@pytest.fixture(scope="session")
def master_and_upload(ffmpeg_exe, tmp_path_factory):
    """The sample's first 2 s as a lossless master, and an earlier CRF 40 encode of it: well
    above the master's VMAF-95 crossing (near CRF 30), as earlier uploads are."""
    d = tmp_path_factory.mktemp("master")
    master, upload = d / "master.mkv", d / "upload.mp4"
    base = [ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run([*base, "-i", str(SAMPLE), "-t", "2", "-an", "-c:v", "libx264", "-qp", "0",
                    "-preset", "ultrafast", str(master)], check=True)
    subprocess.run([*base, "-i", str(master), "-c:v", "libx264", "-crf", "40", "-preset",
                    "medium", str(upload)], check=True)
    return master, upload

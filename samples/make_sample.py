"""Recipe for samples/sample.mp4, the clip the README's main job runs on.

Slow pans across two photographs shipped with scikit-image: "coffee" (CC0, Rachel Michetti)
and "rocket" (public domain, SpaceX). 640x360, 24 fps, 4 s, libx264 CRF 12 (near-pristine,
so a CRF ladder made from it shows the compression it adds).

    python samples/make_sample.py            # rewrites samples/sample.mp4
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import skimage.data

from cpllm_plugin.preprocess import resize

W, H, FPS, SECONDS = 640, 360, 24, 4


def pan(photo: np.ndarray, frames: int, window: tuple[int, int], axis: int) -> list[np.ndarray]:
    """Frames of a window ``(h, w)`` sliding across ``photo`` along ``axis``, resized to WxH."""
    wh, ww = window
    span = photo.shape[axis] - (wh, ww)[axis]
    out = []
    for i in range(frames):
        off = round(span * i / (frames - 1))
        y, x = (off, (photo.shape[1] - ww) // 2) if axis == 0 else ((photo.shape[0] - wh) // 2, off)
        crop = photo[y:y + wh, x:x + ww]
        out.append(np.clip(resize(crop, H, W) * 255 + 0.5, 0, 255).astype(np.uint8))
    return out


def main(out: Path) -> None:
    half = FPS * SECONDS // 2
    frames = pan(skimage.data.coffee(), half, (304, 540), axis=1)
    frames += pan(skimage.data.rocket(), half, (360, 640), axis=0)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "12", "preset": "slow"}
        stream.time_base = Fraction(1, FPS)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(frames)} frames)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample.mp4"))

"""Real media for tests, made on the fly: pans across photographs, encoded with PyAV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import skimage.data

from cpllm_plugin.preprocess import resize


def pan_frames(n: int = 40, height: int = 180, width: int = 320, photo: str = "coffee"):
    """``(n, height, width, 3)`` uint8: a window sliding across a photo, left to right."""
    img = getattr(skimage.data, photo)()
    h = img.shape[0] * 3 // 4
    w = min(img.shape[1] - 40, round(h * width / height))
    out = []
    for i in range(n):
        x = round((img.shape[1] - w) * i / max(n - 1, 1))
        crop = img[(img.shape[0] - h) // 2:(img.shape[0] - h) // 2 + h, x:x + w]
        out.append(np.clip(resize(crop, height, width) * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_video(path: Path, frames: np.ndarray, fps: int = 25, crf: int = 18,
                codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames to ``path`` in-process."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_ladder(folder: Path, photos: Sequence[str], crfs: Sequence[int], n: int, height: int,
                 width: int, description: str, mos: Callable[[int], float] | None = None
                 ) -> Path:
    """A training manifest of libx264 ladders in ``folder``: each photo's pan of ``n`` frames
    encoded at each CRF. ``description`` is formatted with ``photo`` and ``crf``; ``mos`` gives
    a CRF's score (None: no score)."""
    # Imported here: most users of this module make media only.
    from cpllm_plugin.hashing import sha256_file
    from cpllm_plugin.training.manifest import Item, write_manifest

    items = []
    for photo in photos:
        frames = pan_frames(n, height, width, photo)
        for crf in crfs:
            p = write_video(folder / f"{photo}_{crf}.mp4", frames, crf=crf)
            items.append(Item(path=p.name, source=photo, split="train", original=False,
                              codec="libx264", crf=crf, sha256=sha256_file(p),
                              mos=None if mos is None else mos(crf),
                              description=description.format(photo=photo, crf=crf)))
    return write_manifest(folder / "manifest.jsonl", items)


def write_audio(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """A file with one audio stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        samples = (np.sin(np.arange(int(seconds * rate)) / 10) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path

"""What an input's own stream says about how it was made: its quantiser, its bitrate and
its noise.

A no-reference picker cannot see the master an upload was made from, but the upload's
stream records how hard it was compressed. H.264 decoders export each frame's quantiser
(FFmpeg's ``venc_params`` side data: a frame QP and a delta per macroblock); for other
codecs the bitrate inside the same windows is what remains. Noise shows in the pixels: an
upload kept at high quality over sensor or added noise costs as many bits as a master, yet
what a viewer saw in the master is the picture under the noise.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpllm_plugin.footage import noise_sigma

# AVVideoEncParams (libavutil/video_enc_params.h): nb_blocks (unsigned, padded to 8),
# blocks_offset and block_size (size_t), type (enum), qp (int32); each AVVideoBlockParams
# holds src_x, src_y, w, h and delta_qp as int32.
_HEAD = struct.Struct("=I4xQQii")
_DELTA = 4  # index of delta_qp among a block's int32 fields
QP_CODECS = ("h264",)  # decoders that export venc_params with an H.264-scale QP


@dataclass(frozen=True)
class StreamStats:
    """The input's stream inside the sample windows.

    Attributes:
        codec: the decoder's name (``h264``, ``hevc``, ...).
        qp: mean quantiser over the decoded frames (macroblock deltas included), None when
            not asked for or the decoder exports none.
        kbps: bitrate of the video packets inside the windows.
        frames: frames decoded (0 without the quantiser).
    """

    codec: str
    qp: float | None
    kbps: float
    frames: int


def frame_qp(side_data) -> float | None:
    """Mean QP of one decoded frame from its ``VIDEO_ENC_PARAMS`` side data (None: none)."""
    for key in side_data.keys():
        if "ENC_PARAMS" not in str(key):
            continue
        blob = bytes(side_data[key])
        if len(blob) < _HEAD.size:
            return None
        nb, offset, size, _kind, qp = _HEAD.unpack_from(blob, 0)
        if nb == 0 or size < 4 * (_DELTA + 1) or offset + nb * size > len(blob):
            return float(qp)
        blocks = np.frombuffer(blob, np.int32, nb * size // 4, offset).reshape(nb, size // 4)
        return float(qp + blocks[:, _DELTA].mean())
    return None


def video_bytes(path: str | os.PathLike) -> int:
    """Bytes of ``path``'s first video stream: its packets, without the container or the
    codec's global headers, as :func:`stats` counts the input's (a short low-bitrate probe
    is otherwise several percent container: x265's headers alone are 2 kB a file)."""
    import av

    with av.open(str(path)) as c:
        return sum(k.size for k in c.demux(c.streams.video[0]) if k.size)


def stats(path: str | os.PathLike, windows: Sequence[tuple[float, float]] | None = None,
          quantiser: bool = False, max_frames: int = 600) -> StreamStats:
    """Read the bitrate of ``path``'s first video stream inside ``windows`` (``(start,
    duration)`` in seconds; None: the whole file) from its packets, without decoding. With
    ``quantiser``, also decode at most ``max_frames`` frames for their mean QP (H.264)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        codec = s.codec_context.name
        want_qp = quantiser and codec in QP_CODECS
        if want_qp:
            s.codec_context.options = {"export_side_data": "venc_params"}
        tb = float(s.time_base) if s.time_base else 0.0
        spans = list(windows) if windows else [(0.0, float("inf"))]
        qps: list[float] = []
        total_bytes, total_seconds, frames = 0, 0.0, 0
        for start, duration in spans:
            if start > 0 and tb:
                c.seek(int(start / tb), stream=s, backward=True)
            end = start + duration
            first = last = None
            for packet in c.demux(s):
                flush = packet.pts is None and packet.dts is None
                t = end if flush else float(
                    (packet.pts if packet.pts is not None else packet.dts) * tb)
                if want_qp and frames < max_frames:  # the flush packet drains the decoder
                    for frame in packet.decode():
                        ft = frame.time if frame.time is not None else t
                        if start <= ft < end:
                            q = frame_qp(frame.side_data)
                            if q is not None:
                                qps.append(q)
                            frames += 1
                if flush or t >= end:
                    # Frames held back for reordering inside the window are not read: the
                    # mean quantiser needs most of the window's frames, not all of them.
                    break
                if t < start:
                    continue
                total_bytes += packet.size
                first = t if first is None else first
                last = t
            if first is not None and last is not None:
                fps = float(s.average_rate or 25)
                total_seconds += last - first + 1 / fps
    kbps = total_bytes * 8 / total_seconds / 1000 if total_seconds > 0 else 0.0
    return StreamStats(codec, float(np.mean(qps)) if qps else None, round(kbps, 1), frames)


# One 8-bit luma plane's noise (Immerkaer): the runtime's estimate, which the kind-of-footage
# head reads too.
sigma = noise_sigma


def _lumas(path: str | os.PathLike, windows: Sequence[tuple[float, float]] | None,
           frames: int) -> list[np.ndarray]:
    """Up to ``frames`` 8-bit luma planes of ``path`` spread over ``windows`` (``(start,
    duration)`` in seconds; None: the whole file)."""
    import av

    spans = list(windows) if windows else [(0.0, float("inf"))]
    per = max(1, -(-frames // len(spans)))
    planes: list[np.ndarray] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base) if s.time_base else 0.0
        fps = float(s.average_rate or 25)
        for start, duration in spans:
            if start > 0 and tb:
                c.seek(int(start / tb), stream=s, backward=True)
            # Frames a few apart, so one static stretch does not stand for the window.
            every = max(1, int(min(duration, 4.0) * fps / per))
            n = taken = 0
            for frame in c.decode(s):
                t = frame.time if frame.time is not None else start
                if t < start:
                    continue
                if t >= start + duration or taken >= per:
                    break
                if n % every == 0:
                    planes.append(frame.to_ndarray(format="gray"))
                    taken += 1
                n += 1
    return planes


def noise(path: str | os.PathLike, windows: Sequence[tuple[float, float]] | None = None,
          frames: int = 6) -> float:
    """Mean :func:`sigma` of up to ``frames`` frames of ``path`` spread over ``windows``
    (``(start, duration)`` in seconds; None: the whole file), in 8-bit luma units."""
    values = [sigma(y) for y in _lumas(path, windows, frames)]
    return float(np.mean(values)) if values else 0.0


def _resize(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    """``plane`` resampled to ``h`` x ``w`` by linear interpolation (pixel centres aligned)."""
    out = plane
    for axis, n in ((0, h), (1, w)):
        m = out.shape[axis]
        x = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, m - 1)
        f = (x - lo).astype(np.float32)
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        f = f[:, None] if axis == 0 else f[None, :]
        out = a + (b - a) * f
    return out


def fine_detail(luma: np.ndarray) -> float:
    """How much of one luma plane's detail lies above half its Nyquist rate: the RMS of the
    plane less its 2x box-down, linear-up copy, over the RMS of its pixel differences. A copy
    scaled down and back up has lost that octave and reads low (about 0.3-0.45), a sharp
    master higher (0.5-0.7); 0 for a flat plane."""
    y = np.asarray(luma, np.float32)
    h, w = y.shape[0] // 2 * 2, y.shape[1] // 2 * 2
    if h < 4 or w < 4:
        return 0.0
    y = y[:h, :w]
    small = y.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    rest = y - _resize(small, h, w)
    steps = np.concatenate([np.diff(y, axis=0).ravel(), np.diff(y, axis=1).ravel()])
    scale = float(np.sqrt(np.mean(steps * steps)))
    return 0.0 if scale < 1e-6 else float(np.sqrt(np.mean(rest * rest)) / scale)


def detail(path: str | os.PathLike, windows: Sequence[tuple[float, float]] | None = None,
           frames: int = 6) -> float:
    """Median :func:`fine_detail` of up to ``frames`` frames of ``path`` spread over
    ``windows`` (as :func:`noise` reads them): low on a soft, upscaled copy."""
    values = [fine_detail(y) for y in _lumas(path, windows, frames)]
    return float(np.median(values)) if values else 0.0

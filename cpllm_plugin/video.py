"""Read video files: probe them and pull key frames spread uniformly over their duration.

Only numpy and PyAV are used here (never torch), so probing and frame reading work in every
install. Every failure a user can cause is raised as one of the errors in
:mod:`cpllm_plugin.errors`; PyAV's own exceptions never leak out.

Key frame ``i`` of ``M`` is the frame a player shows at the centre of the ``i``-th of ``M``
equal segments of the video, reached by seeking to the keyframe before it and decoding
forward, so reading ``M`` frames costs about ``M`` GOPs of decoding, not the whole file.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .errors import (
    CpllmError,
    EmptyInputError,
    NoVideoStreamError,
    VideoDecodeError,
    message,
)
from .files import FIX_DECODE as _FIX_DECODE
from .files import check_input

__all__ = ["KeyFrames", "VideoInfo", "probe", "read_key_frames"]

# PyAV raises FFmpegError subclasses for everything FFmpeg reports; odd metadata bytes can
# still raise UnicodeDecodeError while PyAV builds its dicts.
_AV_ERRORS = (av.error.FFmpegError, UnicodeDecodeError)

# Seek this many frame durations before a target: with B-frames a keyframe's decode time
# (what the index holds) runs ahead of its presentation time by a frame or two.
_SEEK_MARGIN_FRAMES = 3
# Without an index, decoding forward is cheaper than a seek for gaps up to about a GOP.
_NO_INDEX_WINDOW_S = 2


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video from its headers.

    Attributes:
        path: The path as given, as a string.
        width: Display width in pixels, after rotation (storage pixels: the sample aspect
            ratio is not applied).
        height: Display height in pixels, after rotation.
        rotation: Counter-clockwise rotation in degrees (0, 90, 180 or 270) that a player
            applies for display, from the stream's display matrix (as FFmpeg and PyAV's
            ``VideoFrame.rotation`` report it). A phone video tagged ``rotate=90`` (the
            legacy clockwise tag) reads as 270 here. A matrix that also mirrors the picture
            is read for its rotation only.
        fps: Average frame rate.
        duration: Duration of the video stream in seconds.
        frame_count: Number of frames: the container's count when it has one, else
            ``round(duration * fps)``; for raw streams without timestamps (``.h264``,
            ``.hevc``), the packets are counted.
        pix_fmt: FFmpeg pixel format, e.g. ``"yuv420p10le"``.
        bit_depth: Bits per sample of the pixel format (8, 10, 12, ...).
        codec: FFmpeg decoder name, e.g. ``"h264"``.
    """

    path: str
    width: int
    height: int
    rotation: int
    fps: float
    duration: float
    frame_count: int
    pix_fmt: str
    bit_depth: int
    codec: str


@dataclass(frozen=True)
class KeyFrames:
    """Key frames read by :func:`read_key_frames`.

    Attributes:
        frames: ``(M, H, W, 3)`` uint8 RGB, rotation applied, all the same size
            (``H, W == info.height, info.width``).
        indices: ``(M,)`` int64 frame numbers. From the timestamp as
            ``round(t * fps)`` clipped to ``[0, frame_count - 1]``: exact for constant frame
            rate, an estimate for variable frame rate. Where frames were counted while
            decoding (every frame returned, or a raw stream without timestamps) they are
            the true frame numbers.
        timestamps: ``(M,)`` float64 presentation times in seconds from the start of the
            stream.
        info: The :class:`VideoInfo` of the file.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo


@dataclass(frozen=True)
class _Layout:
    """Timing details of the video stream that the public :class:`VideoInfo` leaves out."""

    info: VideoInfo
    width: int  # stored (unrotated) size: every frame is converted to it
    height: int
    time_base: Fraction
    length: Fraction | None  # stream duration in time_base units, None when unknown
    timed: bool  # pts and duration known: key frames are found by time, with seeking


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's size, rotation, rate, duration and format from its headers.

    Nothing is decoded. Raw elementary streams without timestamps (``.h264``, ``.hevc``) are
    read once to count their packets, since their headers hold no duration.

    Args:
        path: Path to a video file. It is only opened for reading.

    Returns:
        The :class:`VideoInfo` of the first video stream (attached cover pictures skipped).

    Raises:
        VideoNotFoundError: ``path`` does not exist or is not a file.
        NoVideoStreamError: The file holds no video stream (audio only, ...).
        VideoDecodeError: The file is not a media file FFmpeg can read, or is damaged.
    """
    where = _where("probe", path)
    name = check_input(path, where)
    with _translated(where), _open(name) as container:
        return _layout(container, name, where).info


def read_key_frames(path: str | os.PathLike, count: int) -> KeyFrames:
    """Decode ``count`` frames spread uniformly over a video.

    Key frame ``i`` is the frame on screen at ``start + (i + 0.5) * duration / count``, the
    centre of the ``i``-th of ``count`` equal segments: the last frame whose presentation
    time is at or before that instant. It is reached by seeking to the keyframe before it and
    decoding forward; where the next target lies in the GOP being decoded, decoding simply
    goes on. When a seek fails or lands past its target (containers without an index), an
    earlier point is tried, and only as a last resort decoding restarts from the beginning.

    If the video has fewer frames than ``count``, every frame is returned once, so ``M`` may
    be smaller than ``count``. Times come from timestamps, so variable frame rate works;
    there, two segments can share one long-lasting frame and return it twice.

    Args:
        path: Path to a video file. It is only opened for reading.
        count: Number of key frames ``M`` wanted, at least 1.

    Returns:
        :class:`KeyFrames` with ``frames`` ``(M, H, W, 3)`` uint8 RGB (rotation applied),
        ``indices`` ``(M,)`` int64 and ``timestamps`` ``(M,)`` float64 seconds.

    Raises:
        EmptyInputError: ``count`` is not a whole number of at least 1.
        VideoNotFoundError: ``path`` does not exist or is not a file.
        NoVideoStreamError: The file holds no video stream.
        VideoDecodeError: The file cannot be decoded, or is truncated or corrupt so that a
            requested key frame does not exist; the message says how many were decoded.
    """
    where = _where("read_key_frames", path)
    try:
        wanted = operator.index(count)
    except TypeError:
        wanted = 0
    if wanted < 1 or isinstance(count, bool):
        raise EmptyInputError(
            message(
                where,
                "count to be a whole number >= 1",
                f"count={count!r}",
                "ask for at least one key frame, e.g. read_key_frames(path, 8)",
            )
        )
    count = wanted
    name = check_input(path, where)
    with _translated(where):
        with _open(name) as container:
            layout = _layout(container, name, where)
            by_time = layout.timed and layout.info.frame_count >= count
            if by_time:
                picks, start = _read_by_time(container, layout, count, where)
        if not by_time:
            # Reopened: counting a raw stream's packets has used up the first container.
            with _open(name) as container:
                picks, start = _read_in_order(container, layout, count, where)
        return _assemble(picks, start, layout, sequential=not by_time)


# --- paths, opening and errors ----------------------------------------------------------


def _where(func: str, path: object) -> str:
    try:
        shown = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return f"{func}({path!r})"
    return f"{func}({shown!r})"


def _open(name: str):
    # Read mode only: the input file is never written.
    return av.open(name, mode="r")


@contextmanager
def _translated(where: str) -> Iterator[None]:
    """Turn PyAV's exceptions into :class:`VideoDecodeError` without their tracebacks."""
    try:
        yield
    except CpllmError:
        raise
    except _AV_ERRORS as exc:
        got = f"{_describe(exc)}: not a video, or a truncated or corrupt one"
        raise VideoDecodeError(
            message(where, "a video file FFmpeg can read", got, _FIX_DECODE)
        ) from None


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}"


# --- headers ----------------------------------------------------------------------------


def _layout(container, name: str, where: str) -> _Layout:
    stream = _video_stream(container, where)
    cc = stream.codec_context
    width, height = int(cc.width or 0), int(cc.height or 0)
    if width <= 0 or height <= 0:
        raise VideoDecodeError(
            message(
                where,
                "a video stream with a known frame size",
                f"a {cc.name} stream of size {width}x{height}",
                _FIX_DECODE,
            )
        )
    tb = stream.time_base
    length = _stream_length(container, stream) if tb else None
    frames = int(stream.frames or 0)
    timed = bool(tb) and length is not None and length > 0

    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate and rate > 0:
        fps = float(rate)
    elif timed and frames > 0:
        fps = frames / float(length * tb)
    else:
        raise VideoDecodeError(
            message(
                where,
                "a video stream with a known frame rate",
                "a stream without frame rate or duration",
                _FIX_DECODE,
            )
        )

    if timed:
        duration = float(length * tb)
        if frames and abs(frames - duration * fps) > max(2, 0.1 * duration * fps):
            frames = 0  # a count in time-base ticks, not frames (seen in AVI): don't trust it
    else:
        # No duration in the headers (raw .h264/.hevc): count the packets, one per frame.
        frames = frames or _count_packets(container, stream)
        duration = frames / fps
        tb = tb or Fraction(1, 1_000_000)
    frame_count = frames if frames > 0 else max(1, round(duration * fps))

    rotation = _rotation(stream)
    pix_fmt = cc.pix_fmt or "unknown"
    info = VideoInfo(
        path=name,
        width=height if rotation in (90, 270) else width,
        height=width if rotation in (90, 270) else height,
        rotation=rotation,
        fps=fps,
        duration=duration,
        frame_count=frame_count,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        codec=cc.name,
    )
    return _Layout(info, width, height, Fraction(tb), length, timed)


def _video_stream(container, where: str):
    def cover(s) -> bool:  # album art in audio files shows up as a one-picture video stream
        return bool(int(s.disposition) & int(av.stream.Disposition.attached_pic))

    streams = [s for s in container.streams.video if not cover(s)]
    if not streams:
        kinds = sorted({"cover picture" if cover(s) else s.type for s in container.streams})
        kinds = kinds or ["no"]
        kind = container.format.long_name or container.format.name
        raise NoVideoStreamError(
            message(
                where,
                "a file with a video stream",
                f"a {kind} file with {' and '.join(kinds)} streams only",
                "pass a video file; audio-only files and cover pictures cannot be scored",
            )
        )
    stream = streams[0]
    stream.thread_type = "AUTO"
    return stream


def _stream_length(container, stream) -> Fraction | None:
    """Duration of the stream in its time base: its own, a Matroska tag, or the file's."""
    tb = stream.time_base
    if stream.duration:
        return Fraction(stream.duration)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    seconds = _parse_clock(tag) if tag else None
    if seconds is None and container.duration:
        seconds = Fraction(container.duration, av.time_base)
    return seconds / tb if seconds else None


def _parse_clock(text: str) -> Fraction | None:
    """``"HH:MM:SS.fffffffff"`` (Matroska's per-track DURATION tag) to seconds."""
    try:
        h, m, s = text.strip().split(":")
        return (int(h) * 60 + int(m)) * 60 + Fraction(s)
    except ValueError:
        return None


def _count_packets(container, stream) -> int:
    return sum(1 for packet in container.demux(stream) if packet.size)


def _rotation(stream) -> int:
    """Counter-clockwise display rotation in degrees, rounded to 0, 90, 180 or 270."""
    side = getattr(stream.codec_context, "coded_side_data", None) or {}
    matrix = side.get("display_matrix")
    if matrix and len(matrix) >= 36:
        # FFmpeg's 3x3 display matrix, int32 in native order, 16.16 fixed point; the angle is
        # computed as av_display_rotation_get() does, but counter-clockwise positive.
        m = np.frombuffer(matrix, dtype=np.int32, count=9).astype(np.float64) / 65536
        scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
        if scale0 == 0 or scale1 == 0:
            return 0
        angle = -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
        return int(round(angle / 90)) % 4 * 90
    tag = stream.metadata.get("rotate")  # legacy clockwise tag, when no matrix was parsed
    try:
        return int(round(-float(tag) / 90)) % 4 * 90 if tag else 0
    except ValueError:
        return 0


def _bit_depth(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, *_AV_ERRORS):
        return 8


# --- decoding ---------------------------------------------------------------------------


def _frames(container, stream) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` from the container's current position, in presentation order.

    A packet the decoder rejects (damaged data) is skipped instead of ending the read, and
    frames without a timestamp get the previous one plus a frame duration.
    """
    step = 1
    if stream.time_base and stream.average_rate:
        step = max(1, round(1 / (stream.average_rate * stream.time_base)))
    last = None
    for packet in container.demux(stream):
        try:
            frames = stream.decode(packet)
        except av.error.InvalidDataError:
            continue
        for frame in frames:
            if frame.pts is None:
                frame.pts = 0 if last is None else last + step
            last = frame.pts
            yield frame


class _Cursor:
    """Finds the frame shown at a given time, seeking only where that saves decoding."""

    def __init__(self, container, layout: _Layout):
        self.container = container
        self.stream = _video_stream(container, "")
        self.layout = layout
        tb, fps = layout.time_base, Fraction(layout.info.fps).limit_denominator(1_000_000)
        self.frame_len = 1 / (fps * tb)  # one frame duration in time-base units
        self.margin = _SEEK_MARGIN_FRAMES * self.frame_len
        self.window = _NO_INDEX_WINDOW_S / tb
        self.can_seek = True
        self.pulled = False  # any frame decoded yet
        # A full index (MP4, MOV, AVI: an entry per frame) tells where keyframes are. Matroska
        # cues and MPEG-TS entries are sparse and grow while reading, so there the longest
        # keyframe interval seen so far decides when a seek beats decoding forward.
        entries = getattr(self.stream, "index_entries", None)
        self.indexed = entries is not None and len(entries) >= 0.9 * layout.info.frame_count
        self.gop = Fraction(0)
        self.last_key = None
        self.current = None  # last frame pulled with pts <= the latest target
        self.ahead = None  # a frame pulled beyond the latest target, not yet used
        self._start_over(reopen=False)
        self.first_pts = self.current.pts if self.current is not None else 0

    def _start_over(self, reopen: bool) -> None:
        if reopen:
            self.container.close()
            self.container = _open(self.layout.info.path)
            self.stream = _video_stream(self.container, "")
        self.iterator = _frames(self.container, self.stream)
        self.ended = False
        self.last_key = None
        self.current, self.ahead = self._pull(), None

    def _pull(self):
        if self.ended:
            return None
        try:
            frame = next(self.iterator)
            self.pulled = True
            if frame.key_frame:
                if self.last_key is not None:
                    self.gop = max(self.gop, Fraction(frame.pts - self.last_key))
                self.last_key = frame.pts
            return frame
        except StopIteration:
            pass
        except av.error.FFmpegError:
            if not self.pulled:
                raise  # nothing decodes at all (missing decoder, ...): say what FFmpeg said
            # A read error mid-file ends the data like a truncation does.
        self.ended = True
        return None

    def frame_at(self, target: Fraction):
        """The last frame with pts <= ``target`` (the first frame if none), or None if the
        data ends before ``target`` (truncated file)."""
        if self.current is None:
            return None
        if self._should_seek(target):
            self._seek(target)
            if self.current is None:
                return None
        while True:
            if self.ahead is None:
                self.ahead = self._pull()
            if self.ahead is None or self.ahead.pts > target:
                break
            self.current, self.ahead = self.ahead, None
        if self.ahead is None and self._end(self.current) <= target:
            return None
        return self.current

    def _end(self, frame) -> Fraction:
        span = frame.duration if frame.duration else self.frame_len
        # Half a frame of slack absorbs rounding in container durations.
        return frame.pts + span + self.frame_len / 2

    def _should_seek(self, target: Fraction) -> bool:
        if not self.can_seek or self.ended:
            return False
        position = self.ahead.pts if self.ahead is not None else self.current.pts
        if position >= target:
            return False
        if self.indexed:
            # Index times are decode times, up to a margin before presentation times: look
            # one margin earlier than the seek goes, so the keyframe found is one it reaches.
            entries = self.stream.index_entries
            k = entries.search_timestamp(math.floor(target - 2 * self.margin), backward=True)
            return k >= 0 and entries[k].timestamp > position
        return target - position > max(self.window, self.gop)

    def _seek(self, target: Fraction) -> None:
        back = self.margin
        while True:
            goal = math.floor(target - back)
            if goal <= self.first_pts:
                self._start_over(reopen=True)
                return
            try:
                self.container.seek(goal, stream=self.stream, backward=True)
            except av.error.FFmpegError:
                # Some streams cannot seek at all: restart once, then only decode forward.
                self.can_seek = False
                self._start_over(reopen=True)
                return
            self.iterator = _frames(self.container, self.stream)
            self.ended = False
            self.last_key = None
            first = self._pull()
            if first is not None and first.pts <= target:
                self.current, self.ahead = first, None
                return
            # Landed past the target (no index, or past the data in a truncated file).
            back *= 2

    def close(self) -> None:
        self.container.close()


def _targets(count: int, length: Fraction) -> list[Fraction]:
    """Segment centres ``(i + 0.5) * length / count`` measured from the stream start."""
    return [Fraction(2 * i + 1, 2 * count) * length for i in range(count)]


def _read_by_time(container, layout: _Layout, count: int, where: str) -> tuple[list, int]:
    """``count`` key frames found by time.

    Returns:
        ``(pts, None, rgb)`` per key frame, and the first frame's pts, the stream's start:
        the header's start time can sit a frame early (AVI) and is not used.
    """
    cursor = _Cursor(container, layout)
    try:
        start = cursor.first_pts
        picks: list[tuple] = []
        for target in _targets(count, layout.length):
            frame = cursor.frame_at(start + target)
            if frame is None:
                _raise_missing(layout, start, cursor.current, len(picks), count, where)
            if picks and picks[-1][0] == frame.pts:
                picks.append(picks[-1])  # a long frame covers two segments (VFR)
            else:
                picks.append((frame.pts, None, _rgb(frame, layout)))
        return picks, start
    finally:
        cursor.close()


def _read_in_order(container, layout: _Layout, count: int, where: str) -> tuple[list, int]:
    """Decode from the start, keeping wanted frames by number.

    Returns:
        ``(pts, ordinal, rgb)`` per key frame, and the first frame's pts.
    """
    total = layout.info.frame_count
    if total < count:
        wanted = None  # every frame
        expected = total
    else:
        # The frame shown at segment centre i of a constant-rate stream is floor((i+.5)N/M).
        wanted = sorted({math.floor(c) for c in _targets(count, Fraction(total))})
        expected = count
    keep = None if wanted is None else set(wanted)
    stream = _video_stream(container, "")
    picks, last, start = [], None, 0
    for ordinal, frame in enumerate(_frames(container, stream)):
        last = frame
        start = frame.pts if ordinal == 0 else start
        if keep is None or ordinal in keep:
            picks.append((frame.pts, ordinal, _rgb(frame, layout)))
            if keep is not None and len(picks) == len(keep):
                break
    if not picks:
        _raise_missing(layout, start, None, 0, expected, where)
    if wanted is not None:
        if len(picks) < len(wanted):
            _raise_missing(layout, start, last, len(picks), expected, where)
        # Repeat picks where two targets fell on one frame, so M == count as promised.
        by_ordinal = {p[1]: p for p in picks}
        picks = [by_ordinal[math.floor(c)] for c in _targets(count, Fraction(total))]
    elif layout.timed and last is not None:
        # Every frame was asked for: data ending well before the stream's end is truncation.
        fps, tb = Fraction(layout.info.fps).limit_denominator(1_000_000), layout.time_base
        frame_len = 1 / (fps * tb)
        span = last.duration if last.duration else frame_len
        if last.pts + span + frame_len < start + layout.length:
            _raise_missing(layout, start, last, len(picks), expected, where)
    return picks, start


def _rgb(frame, layout: _Layout) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a frame at the stream's size, rotated for display."""
    # swscale converts any pixel format and bit depth, honouring the frame's colour matrix
    # and range tags; a mid-stream size change is scaled back to the stream's size.
    rgb = frame.to_ndarray(format="rgb24", width=layout.width, height=layout.height)
    k = layout.info.rotation // 90
    return np.rot90(rgb, k) if k else rgb


def _assemble(picks: list[tuple], start: int, layout: _Layout, sequential: bool) -> KeyFrames:
    info = layout.info
    pts = np.array([p[0] for p in picks], dtype=np.float64)
    if layout.timed:
        times = (pts - float(start)) * float(layout.time_base)
    else:
        times = np.array([p[1] for p in picks], dtype=np.float64) / info.fps
    if sequential:
        indices = np.array([p[1] for p in picks], dtype=np.int64)
    else:
        indices = np.clip(np.round(times * info.fps), 0, info.frame_count - 1).astype(np.int64)
    frames = np.stack([p[2] for p in picks])  # copies the rotated views into one array
    return KeyFrames(frames=frames, indices=indices, timestamps=times, info=info)


def _raise_missing(layout: _Layout, start, last, decoded: int, wanted: int, where: str) -> None:
    info = layout.info
    if last is not None and layout.timed:
        ends = f"; decodable data ends at {float((last.pts - start) * layout.time_base):.2f} s"
    else:
        ends = ""
    raise VideoDecodeError(
        message(
            where,
            f"{wanted} key frames spread over the {info.duration:.2f} s the file declares",
            f"{decoded} of {wanted} decoded{ends}: the file is likely truncated or corrupt",
            _FIX_DECODE,
        )
    )

"""The final encode of ``cpllm-ladder encode``: the whole input at the picked CRF(s).

One CRF (:func:`encode_file` with ``crf=``) is one ffmpeg run. Per-scene CRFs (``scenes=``)
are one run with x264 zones for libx264; other encoders have no per-frame CRF through
ffmpeg, so each scene is encoded as its own chunk and the chunks are joined with the concat
demuxer, losslessly, in the same run that adds the source's other streams.

Either way the source's audio and subtitles are copied (subtitles converted where the
output container needs another text format), with its metadata and chapters. ffmpeg
writes to a hidden temporary file beside OUTPUT that is renamed onto OUTPUT only when all
went well: a failure, Ctrl-C or SIGTERM leaves OUTPUT as it was and no temporary file.
"""

from __future__ import annotations

import numbers
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from cpllm_plugin.console import clock
from cpllm_plugin.errors import VideoDecodeError, message
from cpllm_plugin.files import atomic

from . import ffmpeg as ff
from .ladder import LadderArgumentError, OutputExistsError, Settings, inspect

WHERE = "cpllm-ladder encode"

# Subtitle formats that are text, so an MP4 or WebM output can take them converted.
TEXT_SUBS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
# Output containers by file extension; others are left to ffmpeg's own muxer rules.
KINDS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "mkv", ".webm": "webm"}
# Of the tool's video codecs, those a container takes where it does not take them all: WebM
# only VP9 and AV1 (and VP8, which the tool does not encode); ffmpeg's .mov muxer no VP9 or AV1.
HOLDS = {"webm": frozenset({"vp9", "av1"}), "mov": frozenset({"h264", "hevc"})}
# Audio that ffmpeg's muxers refuse to copy into the container (checked with ffmpeg 9).
NO_AUDIO = {"mp4": {"truehd"}, "mov": {"opus", "flac", "truehd"}}
WEBM_AUDIO = frozenset({"opus", "vorbis"})

Scenes = list[tuple[float, float, int]]


@dataclass
class EncodeResult:
    """What :func:`encode_file` wrote.

    Attributes:
        output: the output file.
        bytes: its size.
        seconds: wall-clock time the encode took.
        crf: the one CRF (None with per-scene CRFs, or with the input's video kept).
        scenes: ``(start_s, end_s, crf)`` per scene (None with one CRF).
        encoder: the encoder name.
        encoder_args: the encoder's options as reported (no CRF, no thread cap).
        kbps: average bitrate of the whole file over the source's duration.
        duration: the source's duration in seconds.
        kept: the input's video stream was copied, not encoded.
    """

    output: Path
    bytes: int
    seconds: float
    crf: int | None
    scenes: Scenes | None
    encoder: str
    encoder_args: list[str]
    kbps: float
    duration: float
    kept: bool = False

    def to_dict(self) -> dict:
        return {"type": "encode", "output": str(self.output), "bytes": self.bytes,
                "seconds": self.seconds, "crf": self.crf,
                "scenes": [list(s) for s in self.scenes] if self.scenes else None,
                "encoder": self.encoder, "encoder_args": self.encoder_args,
                "kbps": self.kbps, "duration": self.duration, "kept": self.kept}


@dataclass(frozen=True)
class _Streams:
    """The source's streams, as ffmpeg numbers them."""

    video: int  # the first video stream that is not an attached picture
    rate: Fraction
    origin: float  # seconds from the file's start to the video's first frame
    frames: int
    audio: list[tuple[int, str]]  # (index, codec)
    subs: list[tuple[int, str]]
    covers: list[int]  # attached pictures (cover art)
    attachments: int  # Matroska attachments (fonts)
    tags: dict[str, str]  # the video stream's language and title
    default: bool  # the video stream is marked the default one


def _streams(path: Path) -> _Streams:
    import av

    from cpllm_plugin.video import probe

    frames = probe(path).frame_count
    try:
        with av.open(str(path)) as c:
            video, covers, audio, subs, attachments = None, [], [], [], 0
            for s in c.streams:
                cc = getattr(s, "codec_context", None)
                name = cc.codec.canonical_name if cc else ""  # the codec's, not a decoder's
                if s.type == "video":
                    if int(s.disposition) & int(av.stream.Disposition.attached_pic):
                        covers.append(s.index)
                    elif video is None:
                        video = s
                elif s.type == "audio":
                    audio.append((s.index, name))
                elif s.type == "subtitle":
                    subs.append((s.index, name))
                elif s.type == "attachment":
                    attachments += 1
            rate = video.average_rate or video.guessed_rate or video.base_rate
            start = video.start_time * video.time_base if video.start_time is not None else 0
            first = c.start_time / 1e6 if c.start_time is not None else float(start)
            tags = {k.lower(): v for k, v in video.metadata.items()
                    if k.lower() in ("language", "title")}
            return _Streams(video.index, Fraction(rate), max(0.0, float(start) - first),
                            frames, audio, subs, covers, attachments, tags,
                            bool(int(video.disposition) & int(av.stream.Disposition.default)))
    except (av.error.FFmpegError, AttributeError, TypeError, ZeroDivisionError) as exc:
        # probe() vetted the file; this is a stream it could read but not list
        raise VideoDecodeError(message(WHERE, "a video whose streams can be listed",
                                       f"{path}: {type(exc).__name__}: {exc}",
                                       "re-mux it: ffmpeg -i IN -c copy OUT.mkv")) from None


# --- containers ---------------------------------------------------------------------------


def _kind(output: Path) -> str:
    if not output.suffix:
        raise LadderArgumentError(message(
            WHERE, "an OUTPUT name with an extension that names the container",
            f"{str(output)!r}", "name it e.g. OUT.mkv, OUT.mp4 or OUT.webm"))
    return KINDS.get(output.suffix.lower(), "other")


def holds(output: str | os.PathLike) -> frozenset[str] | None:
    """The video codecs a container named like ``output`` takes (None: any the tool
    encodes), so that a pick keeps only an input the output can hold."""
    return HOLDS.get(_kind(Path(output)))


def _others(st: _Streams, kind: str, encoder: str, i: int,
            kept: str | None = None) -> list[str]:
    """Maps and options for input ``i``'s audio, subtitles, covers, metadata and chapters.
    ``kept``: the input's video codec when its stream is copied (``keep``), else None.

    Raises :class:`LadderArgumentError` for streams the container cannot hold, before any
    encoding; warns for the streams it drops.
    """
    fix = "write a .mkv, which takes any stream"
    codec = kept or ff.ENCODERS[encoder].codec
    video, other = ((f"the input's {codec} video, kept as it is", "--no-keep") if kept else
                    (f"--encoder {encoder}", "--encoder libvpx-vp9 or libsvtav1"))
    if kind == "webm" and codec not in HOLDS["webm"]:
        raise LadderArgumentError(message(
            WHERE, "VP9 or AV1 video for a WebM output", video, f"use {other}, or {fix}"))
    if kind == "mov" and codec not in HOLDS["mov"]:
        raise LadderArgumentError(message(
            WHERE, "H.264 or HEVC video for a .mov output", video,
            f"write a .mp4 (which takes {codec.upper()}), or {fix}"))
    bad = [c for _, c in st.audio
           if (c not in WEBM_AUDIO if kind == "webm" else c in NO_AUDIO.get(kind, ()))]
    if bad:
        takes = "Opus or Vorbis audio" if kind == "webm" else f"audio a .{kind} can hold"
        raise LadderArgumentError(message(
            WHERE, takes, f"{', '.join(bad)} audio in the source (copied, never re-encoded)",
            fix))

    out = []
    for idx, _ in st.audio:
        out += ["-map", f"{i}:{idx}"]
    if st.audio:
        out += ["-c:a", "copy"]
    k = 0
    for idx, codec in st.subs:
        if kind in ("mp4", "mov", "webm"):
            if codec not in TEXT_SUBS:
                warnings.warn(f"subtitle stream {idx} ({codec}) is left out: not a text "
                              f"format a .{kind} can take (write a .mkv to keep it)",
                              stacklevel=3)
                continue
            to = "webvtt" if kind == "webm" else "mov_text"
        elif kind == "mkv":
            to = "srt" if codec == "mov_text" else "copy"  # Matroska has no mov_text
        else:
            to = "copy"
        out += ["-map", f"{i}:{idx}", f"-c:s:{k}", to]
        k += 1
    if st.covers and kind in ("mp4", "mov"):
        for n, idx in enumerate(st.covers, start=1):  # video output 0 is the encode
            out += ["-map", f"{i}:{idx}", f"-c:v:{n}", "copy",
                    f"-disposition:v:{n}", "attached_pic"]
    elif st.covers:
        warnings.warn(f"the cover picture is left out: ffmpeg cannot write one to .{kind} "
                      "(write a .mp4 to keep it)", stacklevel=3)
    if st.attachments and kind == "mkv":
        out += ["-map", f"{i}:t", "-c:t", "copy"]  # fonts of ASS subtitles
    elif st.attachments:
        warnings.warn(f"{st.attachments} attachment(s) (fonts) left out: only .mkv holds them",
                      stacklevel=3)
    out += ["-map_metadata", str(i), "-map_chapters", str(i)]
    if kind in ("mp4", "mov"):
        out += ["-movflags", "+faststart"]  # the index first: playback starts before download
    return out


# --- checks -------------------------------------------------------------------------------


def check_output(source: Path, output: Path, force: bool) -> None:
    """Refuse OUTPUT when it is the input, a folder, exists without ``force``, or cannot be
    written; ``cpllm-ladder encode`` calls it before minutes of probing."""
    same = os.path.realpath(source) == os.path.realpath(output)
    if not same and output.exists():
        try:
            same = os.path.samefile(source, output)
        except OSError:
            same = False
    if same:
        raise LadderArgumentError(message(
            WHERE, "an OUTPUT other than the input", f"{str(output)!r}, which is the input "
            "itself", "write to a new file; the input is never modified"))
    if output.is_dir():
        raise LadderArgumentError(message(WHERE, "an OUTPUT file", f"{output}, a directory",
                                          "give a file name, e.g. DIR/out.mkv"))
    if output.exists() and not force:
        raise OutputExistsError(message(
            WHERE, "an OUTPUT that does not exist yet", f"{output}, which exists",
            "pass --force (force=True) to replace it, or choose another OUTPUT"))
    parent = output.parent
    if not parent.is_dir():
        raise LadderArgumentError(message(WHERE, "OUTPUT in an existing folder",
                                          f"{parent}, which does not exist", "create it first"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LadderArgumentError(message(WHERE, "OUTPUT in a folder you may write to",
                                          f"{parent}, which is read-only",
                                          "choose another folder"))


def _check_crf(settings: Settings, crf, what: str = "crf") -> int:
    lo, hi = settings.table.crf_range
    if isinstance(crf, bool) or not isinstance(crf, numbers.Real) or crf != int(crf) \
            or not lo <= crf <= hi:
        raise LadderArgumentError(message(
            WHERE, f"a whole {what} in {lo}..{hi} for {settings.encoder}", repr(crf),
            f"pick a CRF in {lo}..{hi}"))
    return int(crf)


def _bounds(scenes, settings: Settings, st: _Streams, duration: float) -> list[int]:
    """First frame of each scene, then the frame count: ``len(scenes) + 1`` numbers.

    Scene times count from the video's first frame; they must follow on from each other
    (to within a frame) and span the input.
    """
    fps = float(st.rate)
    tol = 1.0 / fps + 1e-6
    duration -= st.origin  # a video that starts late (after the audio) is that much shorter
    fix = "pass scenes as (start_s, end_s, crf) in order, covering the input without gaps"
    if not scenes:
        raise LadderArgumentError(message(WHERE, "at least one scene", "none", fix))
    try:
        rows = [(float(a), float(b), c) for a, b, c in scenes]
    except (TypeError, ValueError):
        raise LadderArgumentError(message(WHERE, "scenes of (start_s, end_s, crf)",
                                          repr(scenes)[:80], fix)) from None
    for n, (a, b, c) in enumerate(rows):
        _check_crf(settings, c, f"CRF of scene {n}")
        if not b > a:
            raise LadderArgumentError(message(WHERE, "scenes that end after they start",
                                              f"scene {n} at {a:g}..{b:g} s", fix))
    gaps = [n for n in range(len(rows) - 1) if abs(rows[n][1] - rows[n + 1][0]) > tol]
    if abs(rows[0][0]) > tol or gaps or rows[-1][1] < duration - tol:
        got = (f"a first scene starting at {rows[0][0]:g} s" if abs(rows[0][0]) > tol else
               f"scene {gaps[0]} ending at {rows[gaps[0]][1]:g} s and the next starting at "
               f"{rows[gaps[0] + 1][0]:g} s" if gaps else
               f"a last scene ending at {rows[-1][1]:g} s of {duration:g} s")
        raise LadderArgumentError(message(WHERE, "scenes that cover the input", got, fix))
    bounds = [0, *(round(a * fps) for a, _, _ in rows[1:]), st.frames]
    short = [n for n in range(len(rows)) if bounds[n + 1] <= bounds[n]]
    if short:
        raise LadderArgumentError(message(WHERE, "scenes of at least one frame",
                                          f"scene {short[0]} with none at {fps:g} fps", fix))
    return bounds


# --- the encode ---------------------------------------------------------------------------


def _tag(settings: Settings, kept: str | None = None) -> list[str]:
    """The encoder's codec tag option (x265's hvc1, for Apple players), for a stream copy;
    ``kept``: the codec of a kept input's video, tagged as the encoder of that codec tags."""
    if kept is not None and kept != settings.table.codec:
        own = next((n for n, e in ff.ENCODERS.items() if e.codec == kept), None)
        if own is None:
            return []
        settings = Settings(own)
    video = ff.first_video_only(settings.args(0, None))
    return [a for j in range(0, len(video) - 1, 2) if video[j] == "-tag:v:0"
            for a in video[j:j + 2]]


def _temp(output: Path, tail: str) -> Path:
    """A hidden name beside OUTPUT (same folder: the final rename is atomic)."""
    return output.parent / f".{output.stem}.{secrets.token_hex(4)}.part{tail}"


def _on_progress(progress, offset: float, total: float):
    """An ``on_line`` for ``-progress pipe:1`` calling ``progress(done, total)``."""
    if progress is None:
        return None

    def on_line(line: str) -> None:
        key, _, value = line.partition("=")
        if key == "out_time_us" and value.strip().lstrip("-").isdigit():
            done = offset + max(0, int(value)) / 1e6
            progress(min(done, total), total)

    return on_line


def encode_file(source: str | os.PathLike, output: str | os.PathLike, settings: Settings,
                crf: int | None = None, *, scenes: Scenes | None = None,
                force: bool = False, ffmpeg: str | None = None,
                progress: Callable[[float, float], None] | None = None,
                chunks: bool = False, keep: bool = False) -> EncodeResult:
    """Encode ``source`` into ``output`` at one CRF or at a CRF per scene.

    Args:
        source: the input video; it is only read.
        output: the file to write; its extension picks the container (.mkv, .mp4, .mov,
            .webm, or anything ffmpeg knows). Never the input itself.
        settings: encoder, preset, options, pixel format and filter (as the ladder used).
        crf: one CRF for the whole input; or
        scenes: ``(start_s, end_s, crf)`` per scene, in order, covering the input (times
            from the first frame, as ``cpllm-ladder scenes`` gives them).
        force: replace an existing ``output``.
        ffmpeg: the ffmpeg binary (see :func:`~.ffmpeg.find_ffmpeg`).
        progress: called with ``(done_seconds, total_seconds)`` as the encode advances.
        chunks: with ``scenes`` and libx264, encode each scene as a chunk and join them, as
            for the encoders without CRF zones. Zones are one pass, but x264's rate control
            carries state across their edges, so a scene can end a little below the quality
            its probes measured; chunks are encoded as probed.
        keep: copy the input's video stream instead of encoding it (``cpllm-ladder``'s
            keep: a pick that needs more bits than the input has); neither ``crf`` nor
            ``scenes`` then. The other streams are copied as always.

    Returns:
        The :class:`EncodeResult`.

    Raises:
        VideoNotFoundError, EmptyInputError, NoVideoStreamError, VideoDecodeError: a bad
            input (from :func:`~.ladder.inspect`).
        OutputExistsError: ``output`` exists and ``force`` is False.
        LadderArgumentError: bad CRF or scenes, OUTPUT is the input, or the container
            cannot hold the encoder's video or the source's audio.
        FfmpegError: ffmpeg failed (its message quoted); ``output`` is left as it was.
    """
    t0 = time.perf_counter()
    src = inspect(source, WHERE)
    out = Path(output)
    ff.get_encoder(settings.encoder, f"{WHERE} --encoder")  # fails before anything runs
    if keep and (crf is not None or scenes is not None):
        raise LadderArgumentError(message(
            WHERE, "no CRF when the input's video is kept", "keep with a crf or scenes",
            "pass keep=True alone, or a crf without keep"))
    if not keep and (crf is None) == (scenes is None):
        raise LadderArgumentError(message(
            WHERE, "exactly one of crf (one CRF) and scenes (a CRF per scene)",
            "both" if scenes is not None else "neither", "pass --crf N or --scenes FILE"))
    check_output(src.path, out, force)
    kind = _kind(out)
    exe = ff.find_ffmpeg(ffmpeg)
    st = _streams(src.path)
    if keep or crf is not None:
        crf = None if keep else _check_crf(settings, crf)
        bounds = None
    else:
        bounds = _bounds(scenes, settings, st, src.duration)
        scenes = [(float(a), float(b), int(c)) for a, b, c in scenes]
        if len(scenes) == 1:
            bounds = None  # one scene is one CRF
    single = bounds is None or (settings.encoder == "libx264" and not chunks)
    kept = src.codec if keep else None
    others = _others(st, kind, settings.encoder, 0 if single else 1, kept)
    threads = ff.cpus()
    parts: Path | None = None
    head = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    tail = ["-progress", "pipe:1", "-nostats"]

    def make(tmp: Path) -> None:
        nonlocal parts
        if keep:
            ff.run_ffmpeg([*head, "-i", str(src.path), "-map", f"0:{st.video}", *others,
                           "-c:v:0", "copy", *_tag(settings, kept), *tail, str(tmp)],
                          f"{WHERE}: copying the input's video",
                          _on_progress(progress, 0.0, src.duration))
        elif single:
            if bounds is None:
                use, level = settings, crf if crf is not None else scenes[0][2]
            else:  # x264 zones: one pass whose CRF changes at the scene cuts
                zones = "/".join(f"{bounds[n]},{bounds[n + 1] - 1},crf={c}"
                                 for n, (_, _, c) in enumerate(scenes))
                opts = dict(settings.options)
                opts["x264-params"] = ":".join(
                    p for p in (opts.get("x264-params"), f"zones={zones}") if p)
                use = replace(settings, options=tuple(opts.items()))
                # the CRF outside zones (none are left): the scenes' time-weighted mean
                level = round(sum((b - a) * c for a, b, c in scenes)
                              / sum(b - a for a, b, _ in scenes))
            # the probes' filter (vfilter and the even crop) and encoder options, aimed at
            # the video alone: the other streams are copied
            ff.run_ffmpeg(use.command(exe, src.path, tmp, level, threads,
                                      video=f"0:{st.video}", streams=others,
                                      vfilter=use.chain, first_only=True, outputs=tail),
                          f"{WHERE} at CRF {level}" if bounds is None else
                          f"{WHERE} with {len(scenes)} scene CRFs (x264 zones)",
                          _on_progress(progress, 0.0, src.duration))
        else:
            parts = _temp(out, "")
            parts.mkdir()
            names = _encode_chunks(exe, src.path, st, settings, scenes,
                                   bounds, parts, threads, progress, src.duration)
            (parts / "list.txt").write_text("".join(f"file '{n}'\n" for n in names))
            tag = _tag(settings)
            shift = ["-itsoffset", f"{st.origin:.6f}"] if st.origin > 5e-4 else []
            # The video's tags come from the chunks (encoder); its language and title from
            # the source. (-map_metadata:s:v:0 would stop the default copy of the others'.)
            labels = [a for k, v in st.tags.items() for a in ("-metadata:s:v:0", f"{k}={v}")]
            labels += ["-disposition:v:0", "default"] if st.default else []
            ff.run_ffmpeg([*head, *shift, "-f", "concat", "-safe", "0",
                           "-i", str(parts / "list.txt"), "-i", str(src.path),
                           "-map", "0:v:0", *others, "-c:v:0", "copy", *tag, *labels,
                           str(tmp)], f"{WHERE}: joining {len(names)} scene chunks")
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ff.FfmpegError(message(WHERE, "ffmpeg to write the output",
                                         "no output file", "run the ffmpeg command by hand"))

    try:
        atomic(out, make)  # output is left as it was unless ffmpeg succeeds
    finally:
        if parts is not None:
            shutil.rmtree(parts, ignore_errors=True)
    if progress is not None:
        progress(src.duration, src.duration)
    size = out.stat().st_size
    return EncodeResult(out, size, round(time.perf_counter() - t0, 2), crf,
                        scenes if crf is None else None, settings.encoder, settings.public(),
                        round(size * 8 / src.duration / 1000, 1), src.duration, keep)


def _encode_chunks(exe: str, src: Path, st: _Streams, settings: Settings, scenes: Scenes,
                   bounds: list[int], folder: Path, threads: int, progress,
                   total: float) -> list[str]:
    """Encode scene ``n`` (frames ``bounds[n] .. bounds[n + 1] - 1``) to its own chunk.

    Each chunk is cut with ``-ss`` before ``-i`` (a fast seek, then decoding to the exact
    frame) and ``-t``, both half a frame before the frame times, so that each frame falls
    in exactly one chunk; ``-frames:v`` caps the count where no filter changes it. Chunks
    are MP4: exact timestamps (Matroska rounds to milliseconds), any of the encoders.
    """
    fps = float(st.rate)
    names = []
    last = len(scenes) - 1
    for n, (_, _, c) in enumerate(scenes):
        f0, count = bounds[n], bounds[n + 1] - bounds[n]
        seek = [] if f0 == 0 else ["-ss", f"{st.origin + (f0 - 0.5) / fps:.6f}"]
        # without -ss, -t runs from the first frame; with it, from the seek point
        span = (count - 0.5) / fps if f0 == 0 else count / fps
        until = [] if n == last else ["-t", f"{span:.6f}"]
        cap = [] if n == last or settings.vfilter else ["-frames:v", str(count)]
        chain = f"setpts=PTS-STARTPTS,{settings.chain}"
        name = f"scene{n:05d}.mp4"
        ff.run_ffmpeg(settings.command(exe, src, folder / name, c, threads,
                                       inputs=[*seek, *until], video=f"0:{st.video}",
                                       streams=["-an", "-sn", "-dn", "-map_metadata", "-1"],
                                       vfilter=chain,
                                       outputs=["-force_key_frames", "expr:eq(n,0)", *cap,
                                                "-progress", "pipe:1", "-nostats"]),
                      f"{WHERE}: scene {n} (frames {f0}..{f0 + count - 1}) at CRF {c}",
                      _on_progress(progress, f0 / fps, total))
        names.append(name)
    return names


# --- progress bar -------------------------------------------------------------------------


class _Bar:
    """One line redrawn with carriage returns: bar, percent, speed, ETA."""

    def __init__(self, stream, width: int = 28, every: float = 0.25):
        self.stream, self.width, self.every = stream, width, every
        self.t0 = time.monotonic()  # made just before the encode starts
        self.last = -1e9
        self.shown = 0
        self.ended = False

    def __call__(self, done: float, total: float) -> None:
        now = time.monotonic()
        end = total > 0 and done >= total
        if self.ended or (not end and now - self.last < self.every):
            return
        self.last = now
        frac = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
        elapsed = now - self.t0
        speed = done / elapsed if elapsed > 0 else 0.0
        fill = int(frac * self.width)
        bar = "#" * fill + "-" * (self.width - fill)
        when = (f"{clock(elapsed)} elapsed" if end else
                f"ETA {clock((total - done) / speed if speed > 0 else None)}")
        text = f"[{bar}] {frac * 100:5.1f}%  {speed:5.2f}x  {when}"
        pad = " " * max(0, self.shown - len(text))  # wipe what a longer line left
        self.shown = len(text)
        self.stream.write(f"\r{text}{pad}" + ("\n" if end else ""))
        self.stream.flush()
        self.ended = end

    def close(self) -> None:
        """End the line (after an interrupted encode)."""
        if self.shown and not self.ended:
            self.stream.write("\n")
            self.stream.flush()
            self.ended = True


def progress_bar(stream=None) -> Callable[[float, float], None]:
    """A ``progress`` for :func:`encode_file` drawing one line on ``stream`` (stderr):
    ``[#####-----]  45.2%   3.10x  ETA 0:42``, redrawn at most four times a second and
    ended with a newline at 100 % (call its ``close()`` to end it early)."""
    return _Bar(stream or sys.stderr)

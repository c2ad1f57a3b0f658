"""ffmpeg for the ladder and the training data: finding it, running it, the encoder table, VMAF.

One place for what both the runtime (``cpllm-ladder``) and the training package
(``cpllm-variants``) need, so that a probe encode of the ladder and a training variant are
made by the same encoder settings and measured by the same VMAF chain. Nothing here needs
torch.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cpllm_plugin.errors import (
    CpllmError,
    MissingExtraError,
    VideoNotFoundError,
    message,
)

CRF_LEVELS = tuple(range(15, 54, 2))  # the paper's 20 libx264 levels, 15..53
VMAF_MODEL = "vmaf_v0.6.1"  # libvmaf's built-in model, 1080p viewing at 3 picture heights
VMAF_MIN_SIDE = 18  # found by trial: libvmaf 3.x crashes on a side of 17 or fewer pixels
PSNR_CAP = 100.0  # dB; identical inputs have infinite PSNR, JSON has no infinity


class FfmpegError(CpllmError, RuntimeError):
    """ffmpeg could not be found, lacks a needed filter, or failed on a file."""


class UnknownEncoderError(CpllmError, ValueError):
    """An encoder name that is not in :data:`ENCODERS`."""


# --- ffmpeg -------------------------------------------------------------------------------


def find_ffmpeg(ffmpeg: str | os.PathLike | None = None) -> str:
    """The ffmpeg to use: ``ffmpeg`` if given, else ``$CPLLM_FFMPEG``, else imageio-ffmpeg's.

    imageio-ffmpeg's static build has libx264 and libvmaf with built-in models; Debian's
    ffmpeg has no libvmaf.
    """
    ffmpeg = ffmpeg or os.environ.get("CPLLM_FFMPEG")
    if ffmpeg:
        path = Path(ffmpeg)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        import shutil

        found = shutil.which(str(ffmpeg))
        if found:
            return found
        raise FfmpegError(message(
            "find_ffmpeg()", "an executable ffmpeg", f"{str(ffmpeg)!r}, which is not one",
            "give the path of an ffmpeg binary, or leave it out to use imageio-ffmpeg's"))
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MissingExtraError(message(
            "find_ffmpeg()", "the Python package 'imageio_ffmpeg' (extra 'train')",
            "ImportError", "pip install 'cpllm-plugin[train]', or pass ffmpeg=PATH")) from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=8)
def _filters(ffmpeg: str) -> frozenset[str]:
    out = subprocess.run([ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True,
                         errors="replace", check=False).stdout
    return frozenset(line.split()[1] for line in out.splitlines()
                     if len(line.split()) > 2 and line.split()[2].count("->") == 1)


def has_libvmaf(ffmpeg: str) -> bool:
    """True when ``ffmpeg`` was built with the libvmaf filter."""
    return "libvmaf" in _filters(ffmpeg)


def _require_libvmaf(ffmpeg: str, where: str) -> None:
    if not has_libvmaf(ffmpeg):
        raise FfmpegError(message(
            where, "an ffmpeg built with libvmaf", f"{ffmpeg} (no libvmaf filter)",
            "use imageio-ffmpeg's binary (the default), or pass measure=False "
            "(--no-measure) to make ranking-only rows without VMAF"))


_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


def run_ffmpeg(args: Sequence[str], where: str,
               on_line: Callable[[str], None] | None = None) -> str:
    """Run one ffmpeg command; return its stderr, raise :class:`FfmpegError` on failure.

    The process is registered until it ends, so :func:`stop_all` can end it from a signal
    handler even when it runs in a worker thread (a SIGTERM reaches this process only, not
    its children).

    Args:
        args: the whole command line, ffmpeg first (never a shell string).
        where: the caller, for the error message.
        on_line: called with each line of stdout as it comes (``-progress pipe:1``).
    """
    proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    with _live_lock:
        _live.add(proc)
    err: list[str] = []
    # stderr is drained by a thread so that a chatty ffmpeg never blocks on a full pipe.
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        for line in proc.stdout:
            if on_line:
                on_line(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        with _live_lock:
            _live.discard(proc)
        reader.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    stderr = "".join(err)
    if proc.returncode != 0:
        raise FfmpegError(message(
            where, "ffmpeg to succeed", f"exit code {proc.returncode}: {_relevant(stderr)}",
            "check that the input plays (ffprobe FILE) and that this ffmpeg has the encoder"))
    return stderr


# ffmpeg 7+ follows the cause of a failure with thread-teardown lines; they say nothing.
_NOISE = re.compile(r"Terminating thread|Task finished with error|Error sending frames to "
                    r"consumers|before EOF|Nothing was written into output file|Conversion failed")


def _relevant(stderr: str, lines: int = 4) -> str:
    """The lines of ffmpeg's stderr that say what went wrong (errors first, else the tail)."""
    text = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    text = [ln for ln in text if not _NOISE.search(ln)] or text
    bad = [ln for ln in text if re.search(r"error|invalid|unknown|no such|not |unable|fail",
                                          ln, re.IGNORECASE)]
    return " | ".join((bad or text)[-lines:]) or "no output"


def stop_all() -> None:
    """Kill every ffmpeg that :func:`run_ffmpeg` started and that still runs."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        try:
            proc.kill()
        except OSError:
            pass


def cpus() -> int:
    """CPU cores this process may use: ``$CPLLM_CPUS`` when set (``cpllm batch`` sets it to a
    worker's share, which Ray does not pin), else its affinity mask (containers, taskset)."""
    env = os.environ.get("CPLLM_CPUS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """ffmpeg processes at once by default: one per usable core (each runs one thread)."""
    return cpus()


def threads_per_job(jobs: int) -> int:
    """Threads per ffmpeg process so that ``jobs`` processes together use every core once."""
    return max(1, cpus() // max(1, jobs))


even_crop = "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0"  # 4:2:0 needs even sizes; keep the top left


# --- encoders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoder:
    """How :func:`encode` drives one ffmpeg video encoder at constant quality.

    Attributes:
        name: ffmpeg's encoder name (``-c:v NAME``); also the manifest's ``codec``.
        crf_flag: the option that takes the quality level (higher is worse for all of them).
        preset_flag: the option that takes the speed preset.
        preset: the default preset, as ffmpeg takes it.
        crf_range: ``(lowest, highest)`` level the encoder accepts.
        ladder: the default levels of :func:`make_variants`, best quality first.
        extra: further output options, always passed.
        threads: output options that cap the encoder at ``{n}`` threads.
        search: ``(lowest, highest)`` level ``cpllm-ladder`` searches by default: from
            visually lossless for most content to clearly damaged.
        start: the ladder's first probe, near where this encoder meets VMAF 95 on typical
            1080p content (the search moves from there).
        codec: the format it writes, as FFmpeg's decoders name it (an input already in it
            can be kept as it is: ``cpllm-ladder``'s keep).
    """

    name: str
    crf_flag: str
    preset_flag: str
    preset: str
    crf_range: tuple[int, int]
    ladder: tuple[int, ...]
    extra: tuple[str, ...] = ()
    threads: tuple[str, ...] = ("-threads", "{n}")
    search: tuple[int, int] = (15, 51)
    start: int = 25
    codec: str = ""

    def levels(self, count: int = 20) -> tuple[int, ...]:
        """``count`` levels spread evenly over :attr:`search` (libx264: the paper's 20)."""
        if self.name == "libx264" and count == len(CRF_LEVELS):
            return CRF_LEVELS
        lo, hi = self.search
        return tuple(sorted({round(lo + (hi - lo) * i / (count - 1)) for i in range(count)}))

    def args(self, crf: int, preset: str | None = None, threads: int = 1) -> list[str]:
        """The output options for one encode at ``crf`` (``preset`` None: the default);
        :func:`video_args` without user options."""
        return video_args(self, crf, preset, threads)


# One row per encoder. Presets are fast enough for a 2-core machine; ladders span as much of
# libx264 CRF 15..51's quality range as each encoder can, with more levels where its VMAF
# moves (VMAF per CRF and preset speeds: docs/experiments.md, "Encoder presets and ladders").
ENCODERS: dict[str, Encoder] = {e.name: e for e in (
    # The paper's encoder and ladder. CRF above 51 is clamped to 51 on 8-bit video (CRF 53
    # gives the bytes of CRF 51; the sha256 shows it).
    Encoder("libx264", "-crf", "-preset", "medium", (0, 63), CRF_LEVELS, search=(15, 51),
            start=24, codec="h264"),
    # x265 "fast": libx264 medium's speed class ("medium" costs much more for a small gain).
    # pools=N sizes its thread pool (set by x265 itself otherwise); hvc1 is for Apple players.
    Encoder("libx265", "-crf", "-preset", "fast", (0, 51), (15, 23, 29, 35, 39, 43, 47, 51),
            extra=("-tag:v", "hvc1"), threads=("-x265-params", "pools={n}:log-level=error"),
            search=(15, 51), start=26, codec="hevc"),
    # SVT-AV1 preset 8: fast enough for 1-2 cores (the slower presets are not). lp=N caps its
    # threads ("level of parallelism"; it does not follow -threads).
    Encoder("libsvtav1", "-crf", "-preset", "8", (1, 63), (20, 32, 42, 50, 55, 59, 61, 63),
            threads=("-svtav1-params", "lp={n}"), search=(20, 63), start=40, codec="av1"),
    # libvpx-vp9: -b:v 0 makes -crf constant quality (else it is capped by a default
    # bitrate); -deadline good -cpu-used 4 is its usual fast two-pass-free setting, row-mt
    # lets its threads work on rows of one frame.
    Encoder("libvpx-vp9", "-crf", "-cpu-used", "4", (0, 63), (15, 27, 37, 45, 51, 55, 59, 63),
            extra=("-b:v", "0", "-deadline", "good", "-row-mt", "1"), search=(15, 63),
            start=40, codec="vp9"),
)}


def get_encoder(codec: str, where: str = "get_encoder()") -> Encoder:
    """The :data:`ENCODERS` entry of ``codec``; a named error listing them otherwise."""
    if codec in ENCODERS:
        return ENCODERS[codec]
    import difflib

    close = difflib.get_close_matches(codec, list(ENCODERS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownEncoderError(message(where, f"an encoder of {sorted(ENCODERS)}", repr(codec),
                                    f"{hint}add a row to ENCODERS for another encoder"))


# --- the encode command -------------------------------------------------------------------
# Every constant-quality encode (training ladders, catalog uploads, rendered originals, the
# ladder's probes, the final encode and its scene chunks) is built here, so that a training
# variant and a probe at the same encoder, preset and CRF get the same encoder options.

# Stream options of an encode that keeps the video alone: no audio, subtitles, data streams,
# metadata or chapters.
DROP_ALL = ("-an", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1")


def video_args(encoder: Encoder | str, crf: int, preset: str | None = None,
               threads: int | None = None, options: Sequence[tuple[str, str]] = (),
               pix_fmt: str | None = None) -> list[str]:
    """The video encoder's output options for one encode at ``crf``.

    In order: encoder, preset (None: the table's), CRF, the table's extra options, the thread
    cap (``threads`` None: none), the user's ``(key, value)`` options as ``-key value`` and
    ``-pix_fmt``. A user option named like a thread-cap option that ends in ``-params``
    (``x265-params``, ``svtav1-params``) is merged into it after the cap (``pools=2:...``)
    instead of being passed twice (ffmpeg would keep only the last).
    """
    t = encoder if isinstance(encoder, Encoder) else get_encoder(encoder, "video_args()")
    out = ["-c:v", t.name, t.preset_flag, str(preset or t.preset), t.crf_flag, str(crf),
           *t.extra]
    capped = ([a.replace("{n}", str(threads)) for a in t.threads]
              if threads is not None else [])
    user = dict(options)
    for i in range(0, len(capped), 2):
        key = capped[i].lstrip("-")
        if key in user and key.endswith("-params"):
            # Keep the table's thread cap and add the user's parameters after it.
            capped[i + 1] = f"{capped[i + 1]}:{user.pop(key)}"
    out += capped
    for key, value in user.items():
        out += [f"-{key}", value]
    if pix_fmt:
        out += ["-pix_fmt", pix_fmt]
    return out


def first_video_only(args: Sequence[str]) -> list[str]:
    """Encoder options aimed at video output 0 only, so streams copied beside it (cover
    pictures) keep theirs: ``-c:v`` becomes ``-c:v:0``, ``-pix_fmt`` ``-pix_fmt:v:0``."""
    out = list(args)
    for j in range(0, len(out) - 1, 2):
        key = out[j]
        if key.endswith(":v"):
            out[j] = f"{key}:0"
        elif key in ("-pix_fmt", "-r", "-s", "-aspect"):
            out[j] = f"{key}:v:0"
    return out


def encode_args(ffmpeg: str, src: str | os.PathLike, dst: str | os.PathLike, crf: int,
                encoder: Encoder | str = "libx264", *, preset: str | None = None,
                options: Sequence[tuple[str, str]] = (), threads: int | None = None,
                pix_fmt: str | None = None, vfilter: str | None = None,
                graph: str | None = None, video: str = "0:v:0",
                inputs: Sequence[str] = (), streams: Sequence[str] = (),
                fps_mode: str | None = "passthrough", first_only: bool = False,
                outputs: Sequence[str] = (), fmt: str | None = None) -> list[str]:
    """The whole ffmpeg command of one constant-quality encode of ``src`` into ``dst``.

    ``ffmpeg -nostdin -hide_banner -loglevel error -y INPUTS -i SRC [-filter_complex GRAPH]
    -map VIDEO STREAMS [-vf VFILTER] [-fps_mode MODE] VIDEO_ARGS OUTPUTS [-f FMT] DST``,
    where VIDEO_ARGS is :func:`video_args` (encoder, preset, CRF, the table's options, the
    thread cap, the user's options, pixel format).

    Args:
        ffmpeg: the ffmpeg binary.
        src, dst: input and output file.
        crf, encoder, preset, options, threads, pix_fmt: see :func:`video_args`
            (``threads``: the encoder's thread cap, None: none).
        vfilter: the video filter chain (None: none).
        graph: a ``-filter_complex`` whose output ``video`` (a label such as ``[v]``) is
            encoded instead of a stream of ``src``.
        video: the video stream (or ``graph`` output) mapped.
        inputs: input options, before ``-i`` (``-threads``, ``-ss``, ``-t``).
        streams: what else the output keeps or drops, after the video's ``-map``
            (:data:`DROP_ALL`: the video alone, no metadata; or the maps and options of the
            streams copied beside it).
        fps_mode: ``-fps_mode`` (None: ffmpeg's default for the container).
        first_only: other streams are copied beside the video: the filter, ``-fps_mode`` and
            the encoder options name output stream ``v:0`` (:func:`first_video_only`).
        outputs: further output options, after the encoder's (``-frames:v``, ``-progress``).
        fmt: the output container (None: from ``dst``'s extension).
    """
    args = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
            "-i", str(src)]
    if graph:
        args += ["-filter_complex", graph]
    args += ["-map", video, *streams]
    if vfilter:
        args += ["-filter:v:0" if first_only else "-vf", vfilter]
    if fps_mode:
        args += ["-fps_mode:v:0" if first_only else "-fps_mode", fps_mode]
    codec = video_args(encoder, crf, preset, threads, options, pix_fmt)
    args += first_video_only(codec) if first_only else codec
    args += [*outputs, *(["-f", fmt] if fmt else []), str(dst)]
    return args


def _even_size(path: Path) -> tuple[int, int]:
    """Display size of a video, rounded down to even numbers (as :data:`even_crop` crops)."""
    from cpllm_plugin.video import probe

    info = probe(path)
    return info.width - info.width % 2, info.height - info.height % 2


# x264 lossless: several times faster than FFV1, any 8/10-bit 4:2:x format.
LOSSLESS = ("-c:v", "libx264", "-qp", "0", "-preset", "ultrafast")


def write_lossless(write: Callable[[list[str]], None], threads: int, raw: bool = True) -> None:
    """Call ``write(codec_args)`` with each lossless codec in turn until one succeeds.

    The order: raw frames (nothing to decode when the cut is read again; Matroska refuses
    some formats, such as 10-bit YUV), x264 ``-qp 0``, then FFV1 (formats x264 lacks).
    The last failure is raised.
    """
    t = ["-threads", str(threads)]
    codecs = ([["-c:v", "rawvideo"]] if raw else []) + [[*LOSSLESS, *t], ["-c:v", "ffv1", *t]]
    for i, codec in enumerate(codecs):
        try:
            write(codec)
            return
        except FfmpegError:
            if i == len(codecs) - 1:
                raise

VMAF_FRAMES = 96  # automatic subsampling still measures VMAF on at least this many frames


def auto_subsample(frames: int) -> int:
    """VMAF on every n-th frame such that at least :data:`VMAF_FRAMES` frames are measured.

    A 10 s clip at 30 fps gets n = 3 (100 frames). Subsampling moves VMAF little and saves
    much of a measurement's time (docs/experiments.md, "VMAF on every n-th frame"); libvmaf
    still feeds its motion feature every frame.
    """
    return max(1, int(frames) // VMAF_FRAMES)


def measure_fr(ref: str | os.PathLike, dist: str | os.PathLike, ffmpeg: str | None = None,
               threads: int | None = None, subsample: int | None = 1,
               psnr: bool = True, size: tuple[int, int] | None = None
               ) -> tuple[float, float | None]:
    """Full-reference VMAF and PSNR of ``dist`` against ``ref``, in one ffmpeg pass.

    Both are compared at the reference's size (even-cropped): a smaller ``dist`` (a
    downscaled degraded original) is upscaled with bicubic, so its loss of resolution counts.

    Args:
        ref: the clean video (the source, or a degraded original's reference).
        dist: the variant or degraded original.
        ffmpeg: the ffmpeg binary (see :func:`find_ffmpeg`); needs libvmaf.
        threads: threads for decoding, filtering and libvmaf (default: every usable core).
        subsample: measure every n-th frame for VMAF (1: all; None: :func:`auto_subsample`).
        psnr: also measure PSNR (False: VMAF alone, as a VMAF-driven CRF search runs it).
        size: compare at this even ``(width, height)`` instead of the reference's (ab-av1
            upscales small pictures to 1080p for VMAF's 1080p model).

    Returns:
        ``(vmaf, psnr)``: VMAF v0.6.1 mean over frames (0-100) and PSNR in dB (capped at 100;
        None without ``psnr``).
    """
    ffmpeg = find_ffmpeg(ffmpeg)
    ref, dist = Path(ref), Path(dist)
    where = f"measure_fr({dist.name!r} against {ref.name!r})"
    for p in (ref, dist):
        if not p.is_file():
            raise VideoNotFoundError(message(where, "two video files", f"missing {p}",
                                             "check both paths"))
    _require_libvmaf(ffmpeg, where)
    w, h = size or _even_size(ref)
    if min(w, h) < VMAF_MIN_SIDE:  # libvmaf crashes (SIGSEGV) on smaller pictures
        raise FfmpegError(message(where, f"pictures of at least {VMAF_MIN_SIDE}x{VMAF_MIN_SIDE} "
                                  "(libvmaf's smallest)", f"{w}x{h}",
                                  "measure a larger video, or pick without VMAF: "
                                  "cpllm-ladder --mode predict or --mode score"))
    if subsample is None:
        from cpllm_plugin.video import probe

        subsample = auto_subsample(probe(dist).frame_count)
    n = str(threads or threads_per_job(1))
    # The same chain for both inputs; frame n is re-timed to n/25 s so frames pair by index.
    chain = f"{even_crop},scale={w}:{h}:flags=bicubic,format=yuv420p,settb=1/25,setpts=N"
    with tempfile.TemporaryDirectory(prefix="cpllm-vmaf-") as tmp:
        log = Path(tmp) / "vmaf.json"  # a plain path: no characters to escape in the graph
        head = (f"[0:v]{chain}[d];[1:v]{chain}[r];[r]split[r1][r2];[d][r1]psnr=shortest=1[dp];"
                f"[dp][r2]" if psnr else f"[0:v]{chain}[dp];[1:v]{chain}[r2];[dp][r2]")
        graph = (f"{head}libvmaf=model=version={VMAF_MODEL}:log_fmt=json:log_path={log}"
                 f":n_threads={n}:n_subsample={subsample}:shortest=1")
        err = run_ffmpeg([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "info",
                           "-filter_complex_threads", n, "-threads", n, "-i", str(dist),
                           "-threads", n, "-i", str(ref), "-lavfi", graph,
                           "-f", "null", "-"], where)
        vmaf = _parse_vmaf(log, where)
    return vmaf, (_parse_psnr(err, where) if psnr else None)


def _parse_vmaf(log: Path, where: str) -> float:
    try:
        data = json.loads(log.read_text())
    except (OSError, ValueError) as exc:
        raise FfmpegError(message(where, "libvmaf's JSON log", f"{type(exc).__name__}: {exc}",
                                  "run the ffmpeg command by hand to see what failed")) from None
    pooled = (data.get("pooled_metrics") or {}).get("vmaf") or {}
    if isinstance(pooled.get("mean"), (int, float)):
        return float(pooled["mean"])
    frames = [f.get("metrics", {}).get("vmaf") for f in data.get("frames", [])]
    frames = [v for v in frames if isinstance(v, (int, float))]
    if not frames:
        raise FfmpegError(message(where, "VMAF values in libvmaf's log", "no frames",
                                  "check that both videos decode (ffprobe FILE)"))
    return float(sum(frames) / len(frames))


_PSNR_RE = re.compile(r"PSNR y:\S+ u:\S+ v:\S+ average:(\S+)")


def _parse_psnr(stderr: str, where: str) -> float:
    found = _PSNR_RE.findall(stderr)
    if not found:
        raise FfmpegError(message(where, "ffmpeg's PSNR summary line", "none in its output",
                                  "check that both videos decode (ffprobe FILE)"))
    value = found[-1]
    return PSNR_CAP if value in ("inf", "nan") else min(float(value), PSNR_CAP)

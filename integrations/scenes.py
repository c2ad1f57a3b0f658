"""Per-shot CRFs: find the shots of an input, pick a CRF for each, and say how to encode them.

``cpllm-ladder scenes INPUT`` runs three steps:

1. **Shots** (:func:`detect_shots`). ffmpeg decodes the input once, shrinks each picture
   to :data:`DETECT_WIDTH` pixels wide and runs its ``scdet`` filter, which scores how much
   each frame differs from the one before (0-100); a frame scoring ``threshold`` or more
   starts a new shot. Shots shorter than ``min_seconds`` are merged into a neighbour
   across the weaker of their two cuts: encoders need a few frames, and the scorer at
   least one sample. The shots cover the input exactly: frame numbers are the decoder's
   frame indices (what an encoder counts), times are the first frame's timestamp.
2. **Picks** (:func:`pick_scenes`). Each shot is its own :class:`~.ladder.Ladder` whose
   samples lie inside the shot, searched for the highest CRF meeting the target. A shot
   where no CRF does is reported (``met=False``) at the lowest CRF tried instead of
   stopping the run.
3. **Encoding.** For libx264 :func:`zones` gives x264's ``zones`` option: one encode whose
   CRF changes at the cuts. x265 zones only take ``q=`` (a fixed QP) or ``b=`` (a bitrate
   factor) through ffmpeg, so a per-shot CRF there, and with every other encoder, is done
   by encoding each shot on its own and joining the pieces (``encode --per-scene``);
   :func:`zones` raises :class:`NoZonesError` saying so, and :func:`has_zones` tells
   before. :func:`single_crf` is the one CRF that would meet the target in every shot,
   the baseline a per-shot encode saves against.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cpllm_plugin.errors import VideoDecodeError, message

from . import ffmpeg as ff
from .ladder import (
    DEFAULT_VMAF,
    MAX_PROBES,
    NO_REFERENCE,
    Ladder,
    LadderArgumentError,
    LadderError,
    NoCrfMeetsTargetError,
    Pick,
    Probe,
    Progress,
    Settings,
    Source,
    inspect,
    plan_samples,
    predict_samples,
    run_mode,
)

THRESHOLD = 10.0  # scdet's own default; cuts in Big Buck Bunny score 11-31, pans stay below 5
MIN_SECONDS = 1.0
SHORTEST = 0.5  # the ladder's shortest sample (plan_samples refuses less)
DETECT_WIDTH = 320  # scdet compares mean differences: a small picture gives the same cuts
ZONE_ENCODERS = ("libx264",)
EDGE = 0.25  # frames: how far before a shot's first frame its window starts (see window)


class NoZonesError(LadderError, ValueError):
    """The encoder has no per-frame CRF zones: per-shot CRFs need chunked encoding."""


# --- shots --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One shot: ``start`` and ``end`` in seconds, its first frame and its frame count.

    ``start`` is the timestamp of the first frame (0 for the first shot, counted from the
    stream's first frame); ``end`` is the next shot's ``start``, or the input's duration.
    Frames ``first_frame .. first_frame + frames - 1`` belong to the shot.
    """

    start: float
    end: float
    first_frame: int
    frames: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def last_frame(self) -> int:
        return self.first_frame + self.frames - 1


@dataclass(frozen=True)
class Cut:
    """A frame where scdet saw a new shot begin, and how strongly (0-100)."""

    frame: int
    time: float
    score: float


def window(shot: Shot, fps: float) -> tuple[float, float]:
    """The shot's span moved a quarter of a frame earlier, for cutting it with ``-ss``/``-t``.

    ffmpeg keeps the frames whose timestamps lie in ``[ss, ss + t)``. An edge exactly on a
    frame's timestamp, printed to milliseconds, may land just after it and drop that frame
    (or take the next shot's first one). Half a frame early is no better: the cut's first
    frame then sits half a frame after ``ss`` and is rounded to one frame late in the
    output's 1/fps time base, which then declares a frame more than it holds. A quarter
    frame early, both edges lie between frames and the first frame keeps time 0.
    """
    early = EDGE / fps if fps > 0 else 0.0
    return max(0.0, shot.start - early), shot.end - early


# metadata=print writes "frame:48   pts:24576   pts_time:2" and then "lavfi.scd.time=2";
# scdet itself logs "lavfi.scd.score: 22.798, lavfi.scd.time: 2" for the same frame.
_FRAME_RE = re.compile(r"\bframe:(\d+)\s+pts:\S+\s+pts_time:(\S+)")
_SCORE_RE = re.compile(r"lavfi\.scd\.score:\s*([-\d.]+),\s*lavfi\.scd\.time:\s*(\S+)")


def parse_cuts(log: str) -> list[Cut]:
    """The cuts in ffmpeg's log of ``scdet`` followed by ``metadata=print`` (see above)."""
    scores = {t: float(s) for s, t in _SCORE_RE.findall(log)}
    cuts = {}
    for frame, t in _FRAME_RE.findall(log):
        cuts[int(frame)] = Cut(int(frame), float(t), scores.get(t, 100.0))
    return [cuts[f] for f in sorted(cuts) if f > 0]


def merge_short(cuts: Sequence[Cut], duration: float, min_seconds: float) -> list[Cut]:
    """Drop cuts until no shot is shorter than ``min_seconds`` (or one shot is left).

    The shortest shot goes first; of its two cuts the weaker (lower scdet score) is
    dropped, so it joins the neighbour it resembles most.
    """
    kept = sorted(cuts, key=lambda c: c.frame)
    while kept:
        edges = [0.0, *(c.time for c in kept), duration]
        spans = [b - a for a, b in zip(edges, edges[1:], strict=False)]
        i = min(range(len(spans)), key=spans.__getitem__)
        if spans[i] >= min_seconds:
            break
        # Shot i lies between cut i-1 (its start) and cut i (its end).
        sides = [j for j in (i - 1, i) if 0 <= j < len(kept)]
        del kept[min(sides, key=lambda j: kept[j].score)]
    return kept


def shots_from_cuts(cuts: Sequence[Cut], frames: int, duration: float) -> list[Shot]:
    """Shots between the cuts, covering frames ``0 .. frames - 1`` and ``0 .. duration`` s."""
    starts = [(0, 0.0)] + [(c.frame, c.time) for c in cuts]
    ends = [(c.frame, c.time) for c in cuts] + [(frames, duration)]
    return [Shot(round(t0, 6), round(t1, 6), f0, f1 - f0)
            for (f0, t0), (f1, t1) in zip(starts, ends, strict=True)]


def detect_shots(path: str | os.PathLike | Source, ffmpeg: str | None = None,
                 threshold: float = THRESHOLD, min_seconds: float = MIN_SECONDS,
                 progress: Progress | None = None) -> list[Shot]:
    """The shots of a video, in order, covering it exactly (see the module doc).

    Args:
        path: the input (or its :class:`~.ladder.Source`).
        ffmpeg: the ffmpeg binary (default: :func:`~.ffmpeg.find_ffmpeg`'s).
        threshold: scdet score (0-100) at which a frame starts a new shot; lower finds
            more cuts (and false ones in fast motion).
        min_seconds: shortest shot kept; shorter ones merge into a neighbour. At least
            :data:`SHORTEST` s, the ladder's shortest sample.
        progress: called with a line now and then (stderr in the CLI).

    Raises:
        LadderArgumentError: ``threshold`` or ``min_seconds`` out of range.
        VideoDecodeError: ffmpeg decoded no frame.
        FfmpegError: ffmpeg failed.
    """
    where = "cpllm-ladder scenes"
    if not 0 < threshold <= 100:
        raise LadderArgumentError(message(
            "--threshold", "a scene-change score in (0, 100]", f"{threshold:g}",
            f"use the default {THRESHOLD:g}, lower to find more cuts"))
    if not min_seconds >= SHORTEST:
        raise LadderArgumentError(message(
            "--min-shot", f"at least {SHORTEST:g} s (a shot must hold one ladder sample)",
            f"{min_seconds:g}", f"use --min-shot {MIN_SECONDS:g}"))
    src = path if isinstance(path, Source) else inspect(path, where)
    exe = ff.find_ffmpeg(ffmpeg)
    say = progress or (lambda _line: None)
    width = min(DETECT_WIDTH, src.width)
    width -= width % 2
    # PTS-STARTPTS: times count from the first frame, as -ss does on the input.
    chain = (f"setpts=PTS-STARTPTS,scale={width}:-2:flags=bilinear,"
             f"scdet=threshold={threshold:g},metadata=mode=print:key=lavfi.scd.time")
    state = {"frames": 0, "shown": -1}

    def on_line(line: str) -> None:
        key, _, value = line.partition("=")
        if key == "frame" and value.strip().isdigit():
            state["frames"] = int(value)
        elif key == "out_time_us" and value.strip().lstrip("-").isdigit():
            done = max(0, int(value)) / 1e6
            tenth = int(10 * done / src.duration) if src.duration > 0 else 0
            if tenth > state["shown"] and tenth < 10:
                state["shown"] = tenth
                say(f"finding shots: {done:.0f} of {src.duration:.0f} s")

    log = ff.run_ffmpeg(
        [exe, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
         "-progress", "pipe:1", "-i", str(src.path), "-map", "0:v:0", "-an", "-sn", "-dn",
         "-fps_mode", "passthrough",
         "-vf", chain, "-f", "null", "-"],
        f"{where}: finding the shots of {src.path.name}", on_line)
    frames = state["frames"]
    if frames <= 0:
        raise VideoDecodeError(message(
            where, "a video whose frames decode", f"{src.path}: no frame decoded",
            "check that it plays (ffprobe FILE); re-mux it: ffmpeg -i IN -c copy OUT.mkv"))
    cuts = [c for c in parse_cuts(log) if c.frame < frames]
    kept = merge_short(cuts, src.duration, min_seconds)
    shots = shots_from_cuts(kept, frames, src.duration)
    say(f"{len(cuts)} cut(s) at scdet >= {threshold:g}; {len(shots)} shot(s) of at least "
        f"{min_seconds:g} s")
    return shots


# --- picks --------------------------------------------------------------------------------


@dataclass
class ScenePick:
    """The CRF picked for one shot.

    ``met`` is False when no CRF searched meets the target: ``crf`` is then the lowest CRF
    tried (the most bits the search spent), ``score`` its score, and ``pick`` None.
    """

    index: int
    shot: Shot
    crf: int
    score: float
    source_score: float
    target: float
    predicted_kbps: float
    encodes: int
    met: bool
    pick: Pick | None = None
    probes: list[Probe] = field(default_factory=list)
    vmaf: float | None = None
    measure: str = "score"  # what ``target`` is: a score, or a VMAF level against the input

    def to_dict(self) -> dict:
        """One NDJSON object (``type: "scene"``)."""
        d = {"type": "scene", "index": self.index, "start": self.shot.start,
             "end": self.shot.end, "first_frame": self.shot.first_frame,
             "frames": self.shot.frames, "crf": self.crf, "score": self.score,
             "source_score": self.source_score, "target": self.target,
             "target_measure": self.measure, "predicted_kbps": self.predicted_kbps,
             "encodes": self.encodes, "met": self.met}
        if self.vmaf is not None:
            d["vmaf"] = self.vmaf
        return d


def pick_scenes(source, shots: Sequence[Shot], settings: Settings, scorer, min_score: float,
                max_drop: float | None = None, pool: str = "mean",
                cache: str | os.PathLike | None = None, ffmpeg: str | None = None,
                vmaf: bool = False, progress: Progress | None = None,
                max_probes: int = MAX_PROBES, mode: str = "score",
                vmaf_level: float = DEFAULT_VMAF,
                guard: float | None = None, drop_noise: bool = False) -> list[ScenePick]:
    """Pick a CRF for each shot: its own ladder, with samples inside the shot.

    Args:
        source: the input path, or its :class:`~.ladder.Source`.
        shots: from :func:`detect_shots`.
        settings, scorer, pool, cache, ffmpeg, vmaf, max_probes: as for the
            :class:`~.ladder.Ladder` and :func:`~.ladder.pick`.
        min_score, max_drop: the score target (:class:`~.ladder.Target`), resolved per
            shot against the shot's own source score (``mode="score"``).
        mode: one of :data:`~.ladder.MODES` (:func:`~.ladder.run_mode`); ``auto`` and
            ``predict`` read the input's bitrate and noise inside the shot's samples;
            ``guard`` is ``auto``'s model guard (:func:`~.ladder.guard_crf`), ``drop_noise``
            its lift on noisy shots (:func:`~.ladder.lift_crf`).
        progress: called with one line per step, prefixed ``shot i/n:``.

    Returns:
        One :class:`ScenePick` per shot, in order. A shot where no CRF meets the target has
        ``met=False`` and the lowest CRF tried; the others still get their picks.
    """
    src = source if isinstance(source, Source) else inspect(source, "cpllm-ladder scenes")
    if not shots:
        raise LadderArgumentError(message(
            "pick_scenes()", "at least one shot", "none", "pass detect_shots(INPUT)"))
    say = progress or (lambda _line: None)
    out = []
    for i, shot in enumerate(shots):
        tag = f"shot {i + 1}/{len(shots)}"
        if shot.duration < SHORTEST:
            raise LadderArgumentError(message(
                f"pick_scenes() {tag}", f"shots of at least {SHORTEST:g} s",
                f"{shot.duration:.3f} s at {shot.start:.3f} s",
                f"detect the shots with min_seconds >= {SHORTEST:g}"))
        samples = plan_samples(src.duration, window=window(shot, src.fps))
        if mode == "predict":  # as for a whole input (Job.ladder): the rule's key frames
            samples = predict_samples(samples, scorer, settings.encoder)
        with Ladder(src, settings, scorer, samples=samples, pool=pool, cache=cache,
                    ffmpeg=ffmpeg, vmaf=vmaf or mode not in NO_REFERENCE,
                    progress=lambda line, tag=tag: say(f"{tag}: {line}")) as ladder:
            say(f"{tag}: {shot.start:.2f}-{shot.end:.2f} s, {shot.frames} frames")
            try:
                p = run_mode(ladder, mode, min_score, max_drop, vmaf_level, max_probes,
                             guard=guard, drop_noise=drop_noise)
            except NoCrfMeetsTargetError as err:
                low = ladder.scored(min(ladder.probes))
                s0, _ = ladder.source_score()
                target = err.target if err.target is not None else min_score
                say(f"{tag}: no CRF meets {target:.3f}; using the lowest tried, {low.crf}")
                out.append(ScenePick(i, shot, low.crf, low.score, s0, target, low.kbps,
                                     ladder.encodes, False, None,
                                     sorted(ladder.probes.values(), key=lambda q: q.crf),
                                     low.vmaf, "score" if mode == "score" else "vmaf"))
                continue
            out.append(ScenePick(i, shot, p.crf, p.score, p.source_score, p.target.value,
                                 p.predicted_kbps, p.encodes, True, p, p.probes, p.vmaf,
                                 p.target.measure))
    return out


def single_crf(picks: Sequence[ScenePick]) -> int:
    """The one CRF meeting the target in every shot: the lowest of the per-shot picks.

    A shot with ``met=False`` counts with the lowest CRF tried for it, so the result then
    misses the target there too (as every CRF searched did).
    """
    if not picks:
        raise LadderArgumentError(message("single_crf()", "at least one pick", "none",
                                          "pass pick_scenes(...)"))
    return min(p.crf for p in picks)


def has_zones(encoder: str) -> bool:
    """True when :func:`zones` can express per-shot CRFs for ``encoder`` (libx264 only)."""
    return encoder in ZONE_ENCODERS


def zones(picks: Sequence[ScenePick], encoder: str = "libx264") -> str:
    """x264's zones option for the picks: ``F0,F1,crf=N/F2,F3,crf=M`` (inclusive frames).

    Pass it as ``-x264-params zones=...`` (ffmpeg) or ``--zones ...`` (x264). Every shot
    gets a zone, so the encode's own ``-crf`` only matters for frames beyond the last shot.

    Raises:
        NoZonesError: any other encoder. x265's zones take only ``q=`` (constant QP) and
            ``b=`` (bitrate factor) - ``crf=`` is misread - and its ``zonefile`` is not
            passed on by ffmpeg; SVT-AV1 and libvpx have no CRF zones. Their per-shot CRFs
            are encoded shot by shot and joined (``encode --per-scene``).
    """
    ff.get_encoder(encoder, "cpllm-ladder scenes --encoder")
    if not has_zones(encoder):
        raise NoZonesError(message(
            "cpllm-ladder scenes", f"an encoder with CRF zones ({', '.join(ZONE_ENCODERS)})",
            f"{encoder}, whose zones cannot set a CRF",
            "encode each shot at its CRF and join them: cpllm-ladder encode --per-scene"))
    return "/".join(f"{p.shot.first_frame},{p.shot.last_frame},crf={p.crf}"
                    for p in sorted(picks, key=lambda q: q.shot.first_frame))


def parse_zones(text: str) -> list[tuple[int, int, int]]:
    """``(first, last, crf)`` of each zone of a :func:`zones` string."""
    out = []
    for part in filter(None, text.split("/")):
        m = re.fullmatch(r"(\d+),(\d+),crf=(\d+)", part.strip())
        if not m:
            raise LadderArgumentError(message(
                "zones", "zones like 'F0,F1,crf=N/F2,F3,crf=M'", repr(part),
                "write each zone as FIRST,LAST,crf=N"))
        out.append(tuple(int(g) for g in m.groups()))
    return out


def summary(picks: Sequence[ScenePick], encoder: str) -> dict:
    """The closing NDJSON object (``type: "scenes"``): counts, the single CRF, the zones.

    ``predicted_kbps`` is the per-shot picks' rate, weighted by shot length.
    """
    secs = sum(p.shot.duration for p in picks) or 1.0
    d = {"type": "scenes", "shots": len(picks), "met": all(p.met for p in picks),
         "unmet": [p.index for p in picks if not p.met], "single_crf": single_crf(picks),
         "predicted_kbps": round(sum(p.predicted_kbps * p.shot.duration for p in picks)
                                 / secs, 1),
         "encoder": encoder}
    if has_zones(encoder):
        d["zones"] = zones(picks, encoder)
    else:
        d["zones"] = None
        d["note"] = (f"{encoder} has no CRF zones: encode the shots one by one "
                     "(cpllm-ladder encode --per-scene)")
    return d

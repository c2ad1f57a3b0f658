"""A catalog benchmark of CRF pickers, judged against the clean master.

What a viewer gets is the encode compared with the clean master, which a platform never has:
it re-encodes whatever it was given, and most of what it is given is already degraded. This
module builds such a catalog from the dev split (the benchmark; never from training sources),
or the same kinds of inputs from training sources (``split="train"``: what ``predict`` mode's
rule is fitted on, ``training/picker.py``), measures every input's ladder against both the
master and the input itself, and replays CRF-picking policies on those ladders:

- **inputs**: every clean dev master as it is, the corpus' degraded dev originals, and
  uploads made from each dev master of 540p and up (:data:`KINDS`: earlier libx264 or
  libx265 encodes at CRF 30-40, a soft down-and-up scaled copy, a noisy copy, an earlier
  encode after a downscale); each master gets :data:`PER_SOURCE` of them in turn.
- **ladders**: each input encoded at :data:`LEVELS`; each encode measured with VMAF against
  the master and against the input, and scored by the model (the scores the real tool's
  probe sees); values between levels are interpolated (VMAF and score linearly, size in log);
  :func:`pin` measures more levels where each input's cheapest success falls.
- **truth**: a pick succeeds when its encode keeps what the input had: VMAF against the
  master at least ``min(95, T - 5)``, T the input's own VMAF against the master (a clean
  master's T is 100 by definition: there this is the VMAF-95 rule). Its cost is its size
  over the cheapest success on that input's ladder.

Everything is resumable: uploads and rows already written are kept. Layout under ``DATA``::

    DATA/corpus/          the dev originals (cpllm-corpus, dev ids only)
    DATA/uploads/<id>.mp4 the made uploads
    DATA/inputs.jsonl     one row per input: kind, master, T, the input's own frame scores
    DATA/ladder.jsonl     one row per (input, CRF): bytes, VMAF both ways, frame scores
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpllm_plugin.errors import CpllmError, message

LEVELS = (15, 19, 23, 27, 31, 35, 39, 43, 47, 51)  # every other paper level, 4 CRF apart
KEY_FRAMES = 8  # what cpllm-ladder scores on a 2 s input (one whole-input sample)
MIN_SIDE = 540  # uploads are made from masters of 540p and up
PER_SOURCE = 2  # upload kinds per master
TRUTH_LEVEL, TRUTH_MARGIN = 95.0, 5.0

# Upload kinds, in the order masters take them. Each is (name, how): "enc" an earlier
# encode (codec, CRFs taken in turn), "soft" a down-and-up scale kept at high quality,
# "noise" sensor-like noise kept at high quality, "down" an earlier encode after a downscale.
KINDS = ("x264", "soft", "x265", "noisy", "down")
EARLIER_CRFS = (30, 33, 36, 39)
KEEP_CRF = 16  # "kept at high quality": soft and noisy copies


class CatalogError(CpllmError, RuntimeError):
    """The catalog cannot be built or read."""


# --- building ---------------------------------------------------------------------------


def upload_plan(masters: Sequence[dict]) -> list[dict]:
    """Which uploads to make: ``PER_SOURCE`` kinds per master of :data:`MIN_SIDE` and up,
    taken in turn from :data:`KINDS` so every kind is covered about equally; the earlier
    encodes' CRFs and the scale factors also rotate."""
    out, k = [], 0
    big = [m for m in masters if min(m["width"], m["height"]) >= MIN_SIDE]
    for i, m in enumerate(big):
        for j in range(PER_SOURCE):
            kind = KINDS[k % len(KINDS)]
            k += 1
            crf = EARLIER_CRFS[(i + j) % len(EARLIER_CRFS)]
            if kind in ("x264", "x265"):
                spec = {"codec": "lib" + kind, "crf": crf}
            elif kind == "soft":
                spec = {"factor": (2.0, 3.0)[i % 2], "crf": KEEP_CRF}
            elif kind == "noisy":
                spec = {"noise": (10, 16)[i % 2], "crf": KEEP_CRF}
            else:
                spec = {"factor": 2.0, "crf": crf - 4}
            tag = "_".join(f"{v:g}" if isinstance(v, float) else str(v)
                           for k_, v in spec.items() if k_ != "codec")
            out.append({"id": f"{m['source']}~{kind}_{tag}", "source": m["source"],
                        "kind": kind, "spec": spec})
    return out


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def make_upload(master: Path, out: Path, up: dict, width: int, height: int,
                ffmpeg: str, threads: int = 1) -> Path:
    """Write one upload of ``master`` (see :func:`upload_plan`) atomically."""
    from cpllm_plugin.files import atomic
    from cpllm_plugin.integrations.ffmpeg import encode_args, get_encoder, run_ffmpeg

    kind, spec = up["kind"], up["spec"]
    vf, codec = [], "libx264"
    if kind in ("x264", "x265"):
        codec = spec["codec"]
    elif kind == "soft":
        f = spec["factor"]
        vf = [f"scale={_even(width / f)}:{_even(height / f)}:flags=bicubic",
              f"scale={width - width % 2}:{height - height % 2}:flags=bilinear"]
    elif kind == "noisy":
        # Temporal luma noise with weaker chroma noise, fresh every frame, like a sensor.
        n = spec["noise"]
        vf = [f"noise=c0s={n}:c0f=t:c1s={n // 2}:c1f=t:c2s={n // 2}:c2f=t"]
    elif kind == "down":
        vf = [f"scale={_even(width / spec['factor'])}:{_even(height / spec['factor'])}"
              ":flags=bicubic"]
    vf.append("crop=trunc(iw/2)*2:trunc(ih/2)*2")
    enc = get_encoder(codec, "make_upload()")
    n = str(threads)

    def write(tmp: Path) -> None:
        # The command of the training ladders and cpllm-ladder's probes (encode_args).
        run_ffmpeg(encode_args(ffmpeg, master, tmp, spec["crf"], enc, threads=threads,
                               pix_fmt="yuv420p", vfilter=",".join(vf), inputs=["-threads", n],
                               streams=["-an", "-map_metadata", "-1"], fmt="mp4"),
                   f"make_upload({up['id']})")

    return atomic(out, write)


class _Rows:
    """An append-only JSONL file, safe from threads; rows already there are kept."""

    def __init__(self, path: Path, key: Callable[[dict], tuple]):
        self.path, self.key = path, key
        self.lock = threading.Lock()
        self.rows = read_jsonl(path)
        self.done = {key(r) for r in self.rows}

    def add(self, row: dict) -> None:
        with self.lock:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.rows.append(row)
            self.done.add(self.key(row))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by an interrupted run is measured again
    return out


def ladder_file(codec: str = "libx264") -> str:
    """The ladder rows' file name for an encoder (libx264's keeps the original name)."""
    return "ladder.jsonl" if codec == "libx264" else f"ladder-{codec}.jsonl"


def build(data: str | os.PathLike, scorer, levels: Sequence[int] = LEVELS, jobs: int = 2,
          ffmpeg: str | None = None, progress: Callable[[str], None] | bool = True,
          only: Iterable[str] | None = None,
          codec: str = "libx264", split: str = "dev",
          corpus: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """Build (or finish) the catalog under ``data``; returns ``(inputs, ladder rows)``.

    Args:
        data: the catalog folder (outside the repository).
        scorer: frame scores of video files (:class:`~cpllm_plugin.integrations.ladder.Scorer`
            or a stand-in with ``id`` and ``__call__(paths, key_frames)``).
        levels: the CRFs of every input's ladder.
        jobs: ffmpeg processes at a time (one thread each).
        ffmpeg: the ffmpeg binary (needs libvmaf).
        progress: True for lines on stderr, or a callable taking a line.
        only: measure only the inputs made from these sources (masters, their degraded
            originals and uploads; the same inputs as in the whole catalog).
        codec: the ladders' encoder (its default preset); the inputs are the same for all.
        split: ``"dev"`` for the benchmark; ``"train"`` builds the same kinds of inputs from
            training sources, the only catalog a picker's constants may be fitted on.
        corpus: an existing corpus folder to take the originals from (its
            ``sources.jsonl``, as the recipe's corpus stage wrote it) instead of building one
            under ``data/corpus``.
    """
    from cpllm_plugin.console import progress_printer
    from cpllm_plugin.integrations.ffmpeg import find_ffmpeg, measure_fr
    from cpllm_plugin.video import probe

    from .corpus import build_corpus, read_split
    from .manifest import read_manifest

    say = progress_printer(progress)
    data = Path(data)
    ffmpeg = find_ffmpeg(ffmpeg)
    if split not in ("dev", "train"):
        raise CatalogError(message("the catalog's split", '"dev" or "train"', repr(split),
                                   "pass split='dev' (the benchmark) or 'train'"))
    keep = set(only) if only is not None else None
    if corpus is None:
        ids = sorted(k for k, v in read_split().items() if v == split)
        items = build_corpus(data / "corpus", only=ids, ffmpeg=ffmpeg, progress=say)
        corpus = data / "corpus"
    else:
        items = read_manifest(Path(corpus) / "sources.jsonl")
    corpus = Path(corpus).resolve()
    origin = {i.source: corpus / i.path for i in items if i.split == split}
    masters, inputs = [], []
    for i in items:
        if i.split != split:
            continue
        info = probe(origin[i.source])
        row = {"source": i.source, "path": str(origin[i.source]), "width": info.width,
               "height": info.height}
        if i.reference:
            parent = i.source.split("__")[0]
            inputs.append({**row, "id": i.source, "source": parent, "kind": "degraded",
                           "master": str(origin[parent])})
        else:
            masters.append(row)
            inputs.append({**row, "id": i.source, "kind": "master", "master": row["path"]})
    by_source = {m["source"]: m for m in masters}
    # The plan runs over every master, so a subset has the same uploads as the whole catalog.
    for up in upload_plan(masters):
        if keep is not None and up["source"] not in keep:
            continue
        m = by_source[up["source"]]
        out = data / "uploads" / f"{up['id']}.mp4"
        if not out.is_file():
            say(f"upload {up['id']}")
            make_upload(Path(m["path"]), out, up, m["width"], m["height"], ffmpeg)
        inputs.append({**up, "path": str(out.resolve()), "master": m["path"]})

    if keep is not None:
        inputs = [i for i in inputs if i["source"] in keep]
    book = _Rows(data / "inputs.jsonl", lambda r: (r["id"],))
    ladder = _Rows(data / ladder_file(codec), lambda r: (r["id"], r["crf"]))
    work = data / "work"
    work.mkdir(parents=True, exist_ok=True)

    def measure_input(inp: dict) -> None:
        info = probe(inp["path"])
        t = (100.0 if inp["kind"] == "master" else
             measure_fr(inp["master"], inp["path"], ffmpeg, 1, subsample=1, psnr=False)[0])
        scores = scorer([inp["path"]], [KEY_FRAMES])[0]
        book.add({**inp, "width": info.width, "height": info.height, "fps": info.fps,
                  "frames": info.frame_count, "duration": info.duration,
                  "codec": info.codec, "bytes": Path(inp["path"]).stat().st_size,
                  "vmaf_master": round(t, 3), "frame_scores": [float(v) for v in scores],
                  **readings(inp["path"])})

    def rung(inp: dict, crf: int) -> None:
        ladder.add(_rung(inp, crf, codec, work, scorer, ffmpeg))

    firsts = [(measure_input, (i,)) for i in inputs if (i["id"],) not in book.done]
    rungs = [(rung, (i, c)) for i in inputs for c in levels if (i["id"], c) not in ladder.done]
    # The whole catalog in a shuffled order, so a partial one already spans every kind; a
    # subset input by input, so whole ladders are ready early (a report needs whole ones).
    if keep is None:
        np.random.default_rng(0).shuffle(rungs)
    todo = firsts + rungs
    total = len(inputs) * (1 + len(levels))
    say(f"catalog: {len(inputs)} inputs ({sum(i['kind'] == 'master' for i in inputs)} "
        f"masters), {len(todo)} of {total} measurements to do")
    done = [0]

    def run(task) -> None:
        fn, args = task
        fn(*args)
        done[0] += 1
        if done[0] % 20 == 0:
            say(f"catalog: {done[0]} of {len(todo)}")

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, todo))
    return with_readings(data), read_jsonl(data / ladder_file(codec))


def _rung(inp: dict, crf: int, codec: str, work: Path, scorer, ffmpeg: str) -> dict:
    """One ladder row: ``inp`` encoded at ``crf`` (one thread), its size, VMAF against the
    master and against the input, and the model's frame scores; the encode is deleted."""
    from cpllm_plugin.integrations.ffmpeg import measure_fr

    from .variants import encode

    out = work / f"{inp['id']}_{codec}_crf{crf}.mp4"
    encode(inp["path"], out, crf, codec, ffmpeg=ffmpeg, threads=1)
    try:
        vm = measure_fr(inp["master"], out, ffmpeg, 1, subsample=1, psnr=False)[0]
        vi = vm if inp["kind"] == "master" else measure_fr(
            inp["path"], out, ffmpeg, 1, subsample=1, psnr=False)[0]
        scores = scorer([str(out)], [KEY_FRAMES])[0]
        return {"id": inp["id"], "crf": crf, "bytes": out.stat().st_size,
                "vmaf_master": round(vm, 3), "vmaf_input": round(vi, 3),
                "frame_scores": [float(v) for v in scores]}
    finally:
        out.unlink(missing_ok=True)


def pin_crf(c: Curve) -> int | None:
    """The next CRF to measure on ``c``'s ladder to pin its cheapest success to one CRF: the
    middle of the gap between its highest measured CRF that keeps what the input had and the
    next measured one above it, which does not (None: pinned already, no measured CRF keeps
    it, or none above fails). VMAF between rungs is read off a straight line, which VMAF
    against CRF is not, so the cheapest success, the denominator of every cost on that input,
    can be a CRF off, and a pick next to it a CRF's worth of bits."""
    measured = sorted(c.rungs)
    ok = [k for k in measured if c.success(k)]
    if not ok:
        return None
    above = [k for k in measured if k > ok[-1]]
    if not above or above[0] - ok[-1] <= 1:
        return None
    return (ok[-1] + above[0]) // 2


def pin_pick(c: Curve, search: Policy) -> int | None:
    """The next CRF to measure on ``c``'s ladder so that ``search``'s pick, where a measure
    read off the ladder crosses a level (a VMAF search, ``auto`` and its guard), is read off
    measured rungs: the pick and the CRF above it (None: both are, or it keeps the input or
    picks nothing). A line under-reads VMAF between rungs, which holds a replayed search up
    to a CRF under the real tool's, whose probes are encodes at whole CRFs."""
    crf = search(c)
    if crf is None or crf == KEEP:
        return None
    for k in (crf, crf + 1):
        if k <= c.crfs[-1] and k not in c.rungs:
            return int(k)
    return None


def pin(data: str | os.PathLike, scorer, codec: str = "libx264", jobs: int = 2,
        ffmpeg: str | None = None, progress: Callable[[str], None] | bool = True,
        only: Iterable[str] | None = None, searches: Sequence[Policy] = ()) -> int:
    """Measure more rungs of a built catalog's ``codec`` ladders, by bisection, until every
    input's cheapest success lies between two measured CRFs one apart (:func:`pin_crf`; two
    rungs an input with rungs 4 apart), and every pick of ``searches`` and the CRF above it
    are measured rungs (:func:`pin_pick`), so that a pick is judged on the encodes the real
    tool would make. ``only``: these sources' inputs alone. The rows join the ladder file
    (resumable), so every report reads them. Returns the rungs measured."""
    from cpllm_plugin.console import progress_printer
    from cpllm_plugin.integrations.ffmpeg import find_ffmpeg

    say = progress_printer(progress)
    data = Path(data)
    ffmpeg = find_ffmpeg(ffmpeg)
    keep = set(only) if only is not None else None
    inputs = [i for i in with_readings(data) if keep is None or i["source"] in keep]
    by_id = {i["id"]: i for i in inputs}
    ladder = _Rows(data / ladder_file(codec), lambda r: (r["id"], r["crf"]))
    work = data / "work"
    work.mkdir(parents=True, exist_ok=True)
    total = 0
    while True:
        todo = []
        for c in curves(inputs, ladder.rows, codec):
            ks = {pin_crf(c)} | {pin_pick(c, p) for p in searches}
            todo += [(by_id[c.id], k) for k in sorted(ks - {None})]
        if not todo:
            break
        say(f"pin: {len(todo)} rungs")
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda t: ladder.add(_rung(*t, codec, work, scorer, ffmpeg)), todo))
        total += len(todo)
    say(f"pin: every cheapest success and pick on measured rungs ({total} rungs measured)")
    return total


def _scored_encode(src: str, out: Path, crf: int, codec: str, scorer, ffmpeg: str,
                   preset: str | None = None) -> tuple[int, list[float]]:
    """Encode ``src`` at ``crf`` (one thread, as the ladders), score the encode and delete it:
    ``(bytes, frame scores)``, what :func:`rescore` and :func:`fast_probes` keep of a rung."""
    from .variants import encode

    encode(src, out, crf, codec, preset=preset, ffmpeg=ffmpeg, threads=1)
    try:
        return out.stat().st_size, [float(v) for v in scorer([str(out)], [KEY_FRAMES])[0]]
    finally:
        out.unlink(missing_ok=True)


def scores_file(model_id: str) -> str:
    """The file :func:`rescore` writes for a model (its id, made safe for a file name)."""
    return "scores-" + "".join(ch if ch.isalnum() or ch in "-_." else "_"
                               for ch in model_id) + ".jsonl"


def rescore(data: str | os.PathLike, scorer, codec: str = "libx264",
            keep: Callable[[str], bool] | None = None, jobs: int = 2,
            ffmpeg: str | None = None, progress: Callable[[str], None] | bool = True) -> Path:
    """Score a built catalog's inputs and their ``codec`` ladders again with another model,
    keeping every measured size and VMAF: each rung is encoded again (the same settings, one
    thread) and scored only, which costs the encodes but none of the VMAF runs. ``keep``: the
    sources to rescore (by the input's ``source``; None: all). Writes (and resumes)
    :func:`scores_file` of ``scorer.id`` in ``data``: one row per input (``crf`` None) and per
    rung, ``{"id", "codec", "crf", "frame_scores"}``; :func:`with_scores` reads it."""
    from cpllm_plugin.console import progress_printer
    from cpllm_plugin.integrations.ffmpeg import find_ffmpeg

    say = progress_printer(progress)
    data = Path(data)
    ffmpeg = find_ffmpeg(ffmpeg)
    inputs = [i for i in read_jsonl(data / "inputs.jsonl") if keep is None or keep(i["source"])]
    ids = {i["id"] for i in inputs}
    rows = [r for r in read_jsonl(data / ladder_file(codec)) if r["id"] in ids]
    path = data / scores_file(scorer.id)
    book = _Rows(path, lambda r: (r["id"], r["codec"], r["crf"]))
    work = data / "work" / "rescore"
    work.mkdir(parents=True, exist_ok=True)
    by_id = {i["id"]: i for i in inputs}

    def first(inp: dict) -> None:
        scores = scorer([inp["path"]], [KEY_FRAMES])[0]
        book.add({"id": inp["id"], "codec": None, "crf": None,
                  "frame_scores": [float(v) for v in scores]})

    def rung(row: dict) -> None:
        _, scores = _scored_encode(by_id[row["id"]]["path"],
                                   work / f"{row['id']}_{codec}_crf{row['crf']}.mp4",
                                   row["crf"], codec, scorer, ffmpeg)
        book.add({"id": row["id"], "codec": codec, "crf": row["crf"], "frame_scores": scores})

    todo = ([(first, i) for i in inputs if (i["id"], None, None) not in book.done]
            + [(rung, r) for r in rows if (r["id"], codec, r["crf"]) not in book.done])
    say(f"rescore with {scorer.id}: {len(inputs)} inputs, {len(todo)} of "
        f"{len(inputs) + len(rows)} to score")
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda t: t[0](t[1]), todo))
    return path


def probes_file(codec: str, preset: str, model_id: str) -> str:
    """The file :func:`fast_probes` writes for an encoder, preset and model."""
    return scores_file(f"probes-{codec}-{preset}-{model_id}")[len("scores-"):]


def fast_probes(data: str | os.PathLike, scorer, codec: str, preset: str,
                crfs: Sequence[int], keep: Callable[[str], bool] | None = None,
                jobs: int = 2, ffmpeg: str | None = None,
                progress: Callable[[str], None] | bool = True) -> Path:
    """Encode every input of a built catalog at ``crfs`` with ``codec`` at ``preset`` (one
    thread, as the ladders) and score each encode: the probes of a ``predict`` rule that
    probes at a faster preset than the pick's. ``keep``: the sources to probe (None: all;
    a fold's held-out model probes its own fold). Writes (and resumes) :func:`probes_file`
    in ``data``: one row per (input, CRF), ``{"id", "codec", "preset", "crf", "bytes",
    "frame_scores"}``; :func:`with_probes` reads it."""
    from cpllm_plugin.console import progress_printer
    from cpllm_plugin.integrations.ffmpeg import find_ffmpeg

    say = progress_printer(progress)
    data = Path(data)
    ffmpeg = find_ffmpeg(ffmpeg)
    inputs = [i for i in read_jsonl(data / "inputs.jsonl") if keep is None or keep(i["source"])]
    path = data / probes_file(codec, preset, scorer.id)
    book = _Rows(path, lambda r: (r["id"], r["crf"]))
    work = data / "work" / "probes"
    work.mkdir(parents=True, exist_ok=True)

    def one(inp: dict, crf: int) -> None:
        size, scores = _scored_encode(inp["path"], work / f"{inp['id']}_{codec}_{preset}_crf"
                                      f"{crf}.mp4", crf, codec, scorer, ffmpeg, preset)
        book.add({"id": inp["id"], "codec": codec, "preset": preset, "crf": crf,
                  "bytes": size, "frame_scores": scores})

    todo = [(i, c) for i in inputs for c in crfs if (i["id"], c) not in book.done]
    say(f"probes {codec} {preset} with {scorer.id}: {len(inputs)} inputs, {len(todo)} of "
        f"{len(inputs) * len(crfs)} to do")
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda t: one(*t), todo))
    return path


def mean_at(frames, key_frames: int | None = None) -> float:
    """The mean of ``frames`` (one input's scores at :data:`KEY_FRAMES`, or an already pooled
    score), or of the ``key_frames`` of them spread as the tool spreads its key frames:
    what a scoring at fewer key frames reads, to a frame or two."""
    from cpllm_plugin.preprocess import key_frame_indices

    f = np.atleast_1d(np.asarray(frames, dtype=np.float64))
    if key_frames is not None:
        f = f[key_frame_indices(len(f), key_frames)]
    return float(f.mean())


def with_probes(inputs: Sequence[dict], files: Sequence[Path], codec: str,
                preset: str) -> list[dict]:
    """``inputs``, each with ``probes``: ``{crf: (bytes, frame scores)}`` of its
    :func:`fast_probes` at ``preset`` (from any of ``files``); inputs with none are left out,
    so a rule that reads them is never fitted or replayed on a missing probe."""
    got: dict[str, dict[int, tuple[float, list[float]]]] = {}
    for f in files:
        for r in read_jsonl(Path(f)):
            if r["codec"] == codec and r["preset"] == preset:
                got.setdefault(r["id"], {})[int(r["crf"])] = (
                    float(r["bytes"]), [float(v) for v in r["frame_scores"]])
    return [{**i, "probes": got[i["id"]]} for i in inputs if i["id"] in got]


def with_scores(inputs: Sequence[dict], rows: Sequence[dict], files: Sequence[Path],
                codec: str = "libx264") -> tuple[list[dict], list[dict]]:
    """``inputs`` and their ``codec`` ladder ``rows`` with the frame scores of :func:`rescore`
    files (one per model: each fold's model scores its own fold's inputs), and only those
    inputs whose every score is there: a rule fitted on them reads no score of another
    model."""
    got: dict[tuple, list[float]] = {}
    for f in files:
        for r in read_jsonl(Path(f)):
            if r["codec"] in (None, codec):
                got[(r["id"], r["codec"], r["crf"])] = r["frame_scores"]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["id"], []).append(r)
    ins, out = [], []
    for i in inputs:
        rs = by.get(i["id"], [])
        keys = [(i["id"], None, None)] + [(i["id"], codec, r["crf"]) for r in rs]
        if not rs or any(k not in got for k in keys):
            continue
        ins.append({**i, "frame_scores": got[keys[0]]})
        out += [{**r, "frame_scores": got[k]} for r, k in zip(rs, keys[1:], strict=True)]
    return ins, out


# What the catalog reads of each input's pixels, as the tool reads its input (``stream``):
# luma noise (``predict``, ``--drop-noise``) and fine detail (``auto``'s soft-copy rule).
READINGS = ("noise", "detail")


def readings(path: str | os.PathLike, keys: Sequence[str] = READINGS) -> dict[str, float]:
    """``keys`` of :data:`READINGS` read off the video at ``path``."""
    from cpllm_plugin.integrations import stream

    return {k: round(getattr(stream, k)(path), 3) for k in keys}


def with_readings(data: str | os.PathLike) -> list[dict]:
    """The catalog's inputs, each with its :data:`READINGS`; inputs measured before a field
    existed get it now, and the file is rewritten once."""
    from cpllm_plugin.files import write_atomic

    path = Path(data) / "inputs.jsonl"
    rows = read_jsonl(path)
    if all(k in r for r in rows for k in READINGS):
        return rows
    rows = [{**r, **readings(r["path"], [k for k in READINGS if k not in r])} for r in rows]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


# --- replaying policies -----------------------------------------------------------------


@dataclass
class Curve:
    """One input's ladder at every integer CRF between its lowest and highest level."""

    id: str
    kind: str
    source: str
    t: float  # the input's VMAF against the master (100 for a master)
    s0: float  # the model's score of the input itself
    info: dict
    crfs: np.ndarray
    vm: np.ndarray  # VMAF of the encode against the master
    vi: np.ndarray  # ... against the input
    score: np.ndarray  # the model's score of the encode
    bytes: np.ndarray
    rungs: dict = field(default_factory=dict)  # measured CRF -> that encode's frame scores
    codec: str = "libx264"  # the ladder's encoder

    @property
    def required(self) -> float:
        """VMAF against the master a pick must keep: ``min(95, T - 5)``."""
        return min(TRUTH_LEVEL, self.t - TRUTH_MARGIN)

    def at(self, crf: float) -> int:
        return int(np.clip(round(crf), self.crfs[0], self.crfs[-1])) - int(self.crfs[0])

    def success(self, crf: int) -> bool:
        return bool(self.vm[self.at(crf)] >= self.required - 1e-9)

    @property
    def reachable(self) -> bool:
        """Some CRF of the ladder keeps what the input had (else every policy fails it)."""
        return bool((self.vm >= self.required - 1e-9).any())

    @property
    def cheapest(self) -> float:
        ok = self.vm >= self.required - 1e-9
        if not ok.any():
            raise CatalogError(message(f"catalog input {self.id}", "a CRF that keeps what "
                                       "the input had", "none on its ladder",
                                       "add lower CRFs to the ladder"))
        return float(self.bytes[ok].min())

    def cost(self, crf: int) -> float:
        return float(self.bytes[self.at(crf)] / self.cheapest)

    def percent(self, crf: int) -> float:
        """The encode's size as a percentage of the input's (ab-av1's encoded percent)."""
        return float(100 * self.bytes[self.at(crf)] / self.info["bytes"])


def curves(inputs: Sequence[dict], rows: Sequence[dict],
           codec: str = "libx264") -> list[Curve]:
    """Interpolate every input's measured levels to every integer CRF between them
    (``codec``: the ladders' encoder)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["id"], []).append(r)
    out = []
    for inp in inputs:
        rs = sorted(by.get(inp["id"], []), key=lambda r: r["crf"])
        if len(rs) < 2:
            continue
        lv = np.array([r["crf"] for r in rs], dtype=np.float64)
        crfs = np.arange(int(lv[0]), int(lv[-1]) + 1)

        def lin(key, rs=rs, lv=lv, crfs=crfs):
            return np.interp(crfs, lv, [r[key] for r in rs])

        score = np.interp(crfs, lv, [float(np.mean(r["frame_scores"])) for r in rs])
        size = np.exp(np.interp(crfs, lv, [math.log(max(r["bytes"], 1)) for r in rs]))
        out.append(Curve(inp["id"], inp["kind"], inp["source"], float(inp["vmaf_master"]),
                         float(np.mean(inp["frame_scores"])), inp, crfs,
                         lin("vmaf_master"), lin("vmaf_input"), score, size,
                         {int(r["crf"]): r["frame_scores"] for r in rs}, codec))
    return out


def highest_meeting(crfs: np.ndarray, values: np.ndarray, target: float) -> int | None:
    """The highest CRF whose non-increasing fit of ``values`` meets ``target`` (the search's
    answer when it pins the crossing; None when even the lowest CRF misses)."""
    from cpllm_plugin.integrations.search import best_passing

    # The tolerance keeps an interpolated value that lands on the target a pass.
    return best_passing(dict(zip(map(int, crfs), map(float, values), strict=True)),
                        target - 1e-9)


# A policy's answer when it keeps the input as it is (no re-encode): what a viewer gets is
# the input itself, which keeps what it had by definition, at the input's own size.
KEEP = "keep"

Policy = Callable[[Curve], "int | str | None"]


@dataclass(frozen=True)
class Result:
    """A policy over a set of inputs: success share and mean cost (a miss that cannot pick
    anything counts as a failure at the lowest CRF's cost)."""

    name: str
    n: int
    success: float
    cost: float
    picks: dict
    median: float = float("nan")  # the typical input's cost, which a few outliers do not move


def outcome(policy: Policy, c: Curve) -> tuple[int | str | None, bool, float]:
    """``(pick, success, cost)`` of ``policy`` on one input, as :func:`judge` counts it."""
    crf = policy(c)
    if crf is None:
        return None, False, c.cost(int(c.crfs[0]))
    if crf == KEEP:
        return KEEP, True, float(c.info["bytes"] / c.cheapest)
    return crf, c.success(crf), c.cost(crf)


def judge(name: str, policy: Policy, cs: Sequence[Curve]) -> Result:
    wins, costs, picks = [], [], {}
    for c in cs:
        picks[c.id], won, cost = outcome(policy, c)
        wins.append(won)
        costs.append(cost)
    nan = float("nan")
    return Result(name, len(cs), float(np.mean(wins)) if cs else nan,
                  float(np.mean(costs)) if cs else nan, picks,
                  float(np.median(costs)) if cs else nan)


def fixed(crf: int) -> Policy:
    return lambda c: crf


def vmaf_search(level: float) -> Policy:
    """ab-av1's crf-search: the highest CRF whose VMAF against the input meets ``level``."""
    return lambda c: highest_meeting(c.crfs, c.vi, level)


def keep_input(policy: Policy, percent: float,
               codec: str | Collection[str] | None = None) -> Policy:
    """``policy``, but the input is kept as it is where the pick would cost more than
    ``percent`` of its size (``cpllm-ladder``'s keep, and ab-av1's gate); with ``codec``
    (FFmpeg's name of the encoder's format, ``h264``, as ``--keep-same-codec`` keeps; or
    several, the tool's default), only an input already in one of them."""
    codecs = {codec} if isinstance(codec, str) else codec

    def gated(c: Curve) -> int | str | None:
        crf = policy(c)
        if crf in (None, KEEP) or (codecs is not None and c.info.get("codec") not in codecs):
            return crf
        return KEEP if c.percent(crf) > percent else crf
    return gated


def cheapest_fixed(cs: Sequence[Curve], share: float, crfs: Iterable[int] = range(15, 52),
                   wrap: Callable[[Policy], Policy] | None = None) -> Result | None:
    """The fixed CRF with the fewest bits that succeeds on at least ``share`` of ``cs``
    (``wrap``: each fixed CRF as ``wrap`` changes it, e.g. :func:`keep_input`)."""
    best = None
    for crf in crfs:
        r = judge(f"fixed CRF {crf}", (wrap or (lambda q: q))(fixed(crf)), cs)
        if r.success >= share - 1e-9 and (best is None or r.cost < best.cost):
            best = r
    return best


def score_rule(min_score: float, max_drop: float | None) -> Policy:
    """``cpllm-ladder --mode score``: the highest CRF whose predicted score meets the lower
    of ``min_score`` and the input's own score less ``max_drop``."""
    from cpllm_plugin.integrations.search import Target

    def policy(c: Curve) -> int | None:
        t = Target.resolve(min_score, max_drop, c.s0)
        return highest_meeting(c.crfs, c.score, t.value)

    return policy


GROUPS = ("master", "degraded", "x264", "x265", "soft", "noisy", "down")


def groups(cs: Sequence[Curve]) -> dict[str, list[Curve]]:
    """The report's rows: clean masters, each upload kind, all uploads, the whole catalog
    (the corpus' degraded dev originals count as uploads)."""
    out = {g: [c for c in cs if c.kind == g] for g in GROUPS}
    out["uploads"] = [c for c in cs if c.kind != "master"]
    out["catalog"] = list(cs)
    return {k: v for k, v in out.items() if v}


def plot_tradeoff(series: dict[str, list[tuple[float, float]]], path: str | os.PathLike,
                  title: str = "", size: tuple[int, int] = (900, 560),
                  xlabel: str = "median bits over the cheapest success on each input's ladder "
                  "(1.0 = that encode every time)") -> Path:
    """PNG of success share (y) against bit cost (x), one curve per policy; a single point
    is drawn as a marker. Written to a temporary name, then renamed."""
    from PIL import Image, ImageDraw

    from cpllm_plugin.files import atomic
    from cpllm_plugin.integrations.plot import font

    # Ten distinct colours (the tab10 palette), so no two curves of a plot share one.
    colours = [(31, 119, 180), (230, 120, 20), (44, 160, 44), (214, 39, 40),
               (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
               (188, 189, 34), (23, 190, 207)]
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    x0, x1, y0, y1 = 70, w - 30, 50, h - 60
    costs = [c for pts in series.values() for c, _ in pts]
    cx0, cx1 = 0.6, max(1.6, min(3.0, max(costs) + 0.05))

    def px(cost: float, share: float) -> tuple[float, float]:
        cost = min(max(cost, cx0), cx1)
        return x0 + (cost - cx0) / (cx1 - cx0) * (x1 - x0), y1 - share * (y1 - y0)

    d.text((x0, 16), title, fill="black", font=font(15))
    for i in range(11):
        y = px(cx0, i / 10)[1]
        d.line([(x0, y), (x1, y)], fill=(230, 230, 230))
        d.text((x0 - 8, y), f"{i * 10}%", fill="black", font=font(12), anchor="rm")
    c = cx0
    while c <= cx1 + 1e-9:
        x = px(c, 0)[0]
        d.line([(x, y0), (x, y1)], fill=(230, 230, 230))
        d.text((x, y1 + 8), f"{c:.1f}", fill="black", font=font(12), anchor="mt")
        c += 0.2
    d.text(((x0 + x1) / 2, h - 22), xlabel, fill="black", font=font(12), anchor="mm")
    d.text((14, y0 - 24), "success", fill="black", font=font(12))
    for i, (name, pts) in enumerate(series.items()):
        col = colours[i % len(colours)]
        xy = [px(*p) for p in sorted(pts)]
        if len(xy) > 1:
            d.line(xy, fill=col, width=2)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        d.text((x1 - 250, y0 + 10 + 18 * i), f"- {name}", fill=col, font=font(13))
    out = Path(path)
    return atomic(out, lambda tmp: img.save(tmp, format="PNG"))


def score_linear(calibration: dict[float, float], level: float, margin: float,
                 fallback_drop: float) -> Policy:
    """The score rule with the drop measured in VMAF units through the calibration
    (:func:`~cpllm_plugin.integrations.ladder.linear_target`); a source scored below the
    calibrated range keeps within ``fallback_drop`` of its own score."""
    from cpllm_plugin.integrations.ladder import linear_target

    def policy(c: Curve) -> int | None:
        t = linear_target(c.s0, calibration, level, margin)
        return highest_meeting(c.crfs, c.score, c.s0 - fallback_drop if t is None else t)

    return policy


_SHIPPED = object()  # an auto_rule constant not overridden: the shipped one (None turns it off)


def auto_rule(gap: float | None = None, step: float | None = None,
              floor: float | None = None, guard: float | None | object = _SHIPPED,
              spare: float | None | object = _SHIPPED, drop_noise: bool = False,
              lift: tuple[float, float] | None = None, guard_scale: str | None = None
              ) -> Policy:
    """``cpllm-ladder --mode auto`` (:func:`~cpllm_plugin.integrations.ladder.pick_auto`)
    replayed: the VMAF-95 crossing against the input, the input's equivalent CRF from a
    log-bitrate line through the ladder near it, the search again at the lowered level, and
    the model's guard (the pick no higher than where its score falls ``guard`` below its score
    of the input); with ``drop_noise`` (``--drop-noise``) first its lift on a noisy input;
    neither on an input with ``spare`` times the bits of its re-encode at the crossing or more
    (:func:`richness`).
    ``gap``, ``step``, ``floor``, ``guard``, ``spare``: override the shipped constants
    (sweeps, the fit; ``guard=None`` turns the model's cap off, as ``--guard 0`` does, and
    leaves the lift; ``spare=None`` has it spare no input). ``lift``: the lift's (luma noise, fall)
    instead of the shipped :data:`~cpllm_plugin.integrations.ladder.AUTO_LIFT_NOISE` and
    ``AUTO_LIFT``; it turns the lift on. ``guard_scale``: the scale ``guard`` is read on
    (:func:`~cpllm_plugin.integrations.ladder.guard_floor`; None: the shipped one)."""
    from cpllm_plugin.integrations import ladder as lad

    over = {k: v for k, v in (("at", gap), ("step", step), ("floor", floor)) if v is not None}
    fall = lad.AUTO_GUARD if guard is _SHIPPED else guard
    spare = lad.AUTO_SPARE if spare is _SHIPPED else spare
    if lift is None and drop_noise:
        lift = (lad.AUTO_LIFT_NOISE, lad.AUTO_LIFT)

    def policy(c: Curve) -> int | None:
        crf = level_pick(c, over)
        if crf is None or not (fall or lift) or lad.spared(richness(c), spare):
            return crf
        return guarded(c, lifted(c, crf, lift), fall, guard_scale)

    return policy


def lifted(c: Curve, crf: int, lift: tuple[float, float] | None) -> int:
    """``crf`` raised, on an input whose luma noise is ``lift[0]`` or more (None: never), to
    the highest CRF whose model score stays within ``lift[1]`` of the input's
    (:func:`~cpllm_plugin.integrations.ladder.lift_crf`): ``auto --drop-noise``'s lift."""
    noise = c.info.get("noise")
    if lift is None or noise is None or noise < lift[0]:
        return crf
    held = held_at(c, c.s0 - lift[1])
    return crf if held is None else max(crf, held)


def input_gap(c: Curve) -> tuple[int | None, float | None]:
    """``(c95, gap)``: the VMAF-95 crossing against the input (None: no CRF of the ladder
    reaches it) and how far above it the input's equivalent CRF lies, read off a log-bitrate
    line through the ladder within 6 CRF of the crossing, where the search's probes sit (None:
    no line), as :func:`~cpllm_plugin.integrations.ladder.pick_auto` reads it."""
    from cpllm_plugin.integrations import ladder as lad

    c95 = highest_meeting(c.crfs, c.vi, lad.AUTO_LEVEL)
    ref = c95 if c95 is not None else int(c.crfs[0])
    near = np.abs(c.crfs - ref) <= 6
    ceq = lad.equivalent_crf(dict(zip(map(int, c.crfs[near]), c.bytes[near], strict=True)),
                             float(c.info["bytes"]))
    return c95, None if ceq is None else ceq - ref


def richness(c: Curve) -> float | None:
    """The input's size over its re-encode's at the VMAF-95 crossing against it (None: no
    CRF of the ladder reaches it), as ``pick_auto`` reads it off its probes."""
    from cpllm_plugin.integrations import ladder as lad

    c95 = vmaf_search(lad.AUTO_LEVEL)(c)
    return None if c95 is None else 100 / c.percent(c95)


def level_pick(c: Curve, over: dict | None = None) -> int:
    """``auto``'s pick before the guard: the highest CRF at its level of VMAF against the
    input, or the ladder's lowest CRF where not even the floor is kept (``over``:
    :func:`~cpllm_plugin.integrations.ladder.auto_level`'s constants)."""
    from cpllm_plugin.integrations import ladder as lad

    c95, gap = input_gap(c)
    over = {"soft": lad.soft_rule(c.codec), **(over or {})}  # a sweep's rule reads any codec
    level = lad.auto_level(gap, c95 is not None, c.info.get("detail"), **over)
    if level == lad.AUTO_LEVEL:
        return c95
    crf = highest_meeting(c.crfs, c.vi, level)
    return int(c.crfs[0]) if crf is None else crf


def guarded(c: Curve, crf: int, fall: float | None, scale: str | None = None) -> int:
    """``crf`` capped at :func:`guard_held` (:func:`~cpllm_plugin.integrations.ladder.
    guard_crf`; None: no cap, and none when no CRF holds; 0 is none too)."""
    held = guard_held(c, fall, scale)
    return crf if held is None else min(crf, held)


def guard_held(c: Curve, fall: float | None, scale: str | None = None) -> int | None:
    """The highest CRF whose model score stays at the guard's floor, ``fall`` below the
    input's own on ``scale`` (:func:`~cpllm_plugin.integrations.ladder.guard_floor`; None
    with no guard, or when none does): where :func:`guarded` caps any pick of ``c``."""
    from cpllm_plugin.integrations import ladder as lad

    return held_at(c, lad.guard_floor(c.s0, fall, scale)) if fall else None


def held_at(c: Curve, floor: float) -> int | None:
    """The highest CRF whose model score stays at ``floor`` or above (None: none does)."""
    return highest_meeting(c.crfs, c.score, floor)


def frames_kept(c: Curve, probes: Sequence[int], fast: bool = False) -> bool:
    """Whether :func:`probe_reads` can read ``c``'s ``probes`` at fewer key frames: fast
    probes keep their frame scores; off the ladder only its measured rungs do (between them
    the score is interpolated from pooled means)."""
    return fast or all(p in c.rungs for p in probes)


def probe_reads(c: Curve, probes: Sequence[int], fast: bool = False,
                key_frames: int | None = None) -> tuple[dict[int, float], list[float]]:
    """``({crf: bytes}, [score])`` of an input's probes: off its ladder (whole-input encodes:
    the catalog's inputs are as short as one sample), or with ``fast`` off its
    :func:`fast_probes` (:func:`with_probes`); scores at ``key_frames`` (:func:`mean_at`;
    off the ladder only where :func:`frames_kept`)."""
    if not fast:
        if key_frames is not None and not frames_kept(c, probes):
            raise CatalogError(message(
                f"catalog input {c.id}", f"probes at CRF {list(probes)} on measured rungs, "
                f"for a rule read at {key_frames} key frames",
                f"rungs at {sorted(c.rungs)}", "build the ladders with those CRFs among "
                "--levels, or fit that rule with probes at a preset of its own "
                "(--probe-preset)"))
        return ({p: float(c.bytes[c.at(p)]) for p in probes},
                [float(c.score[c.at(p)]) if key_frames is None
                 else mean_at(c.rungs[p], key_frames) for p in probes])
    got = c.info.get("probes", {})
    if any(p not in got for p in probes):
        raise CatalogError(message(
            f"catalog input {c.id}", f"fast probes at CRF {list(probes)}",
            f"those at {sorted(got)}", "measure them with python -m "
            "cpllm_plugin.training.picker --probes MODEL (or catalog.fast_probes)"))
    return {p: got[p][0] for p in probes}, [mean_at(got[p][1], key_frames) for p in probes]


def predict_features(c: Curve, probes: Sequence[int], encoder: str = "libx264",
                     fast: bool = False, key_frames: int | None = None) -> dict[str, float]:
    """:func:`cpllm_plugin.integrations.predict.features` of an input, as ``predict`` mode
    reads its probes (:func:`probe_reads`) and the input, at ``key_frames``."""
    from cpllm_plugin.integrations import predict

    rates, scores = probe_reads(c, probes, fast, key_frames)
    s0 = c.s0 if key_frames is None else mean_at(c.info["frame_scores"], key_frames)
    e = predict.equivalent_crf(rates, float(c.info["bytes"]), encoder)
    pixels = c.info["width"] * c.info["height"] * max(int(c.info["frames"]), 1)
    return predict.features(e, float(c.info["noise"]), rates[probes[0]] * 8 / pixels,
                            int(c.info["height"]), s0, scores, encoder)


def predict_rule(p, margin: float | None = None) -> Policy:
    """``cpllm-ladder --mode predict`` replayed with the rule ``p``
    (:class:`~cpllm_plugin.integrations.predict.Predictor`) on its encoder's ladders (and,
    for a rule with its own preset, the inputs' :func:`fast_probes`); ``margin`` overrides
    its own."""
    def policy(c: Curve) -> int | None:
        return p.crf(predict_features(c, p.probes, p.encoder, p.preset is not None,
                                      p.key_frames),
                     int(c.crfs[0]), int(c.crfs[-1]), margin)

    return policy


def size_errors(ratio: Sequence[float]) -> dict:
    """How far reported sizes lie from the encodes' (``ratio``: reported over actual, one
    per pick): the median ratio, the spread of its log2, the 10th and 90th percentiles and
    the share within 30% either way."""
    r = np.asarray(ratio, dtype=np.float64)
    lr = np.log2(r)
    return {"median": round(float(np.median(r)), 3), "log2_sd": round(float(np.std(lr)), 3),
            "p10": round(float(np.percentile(r, 10)), 3),
            "p90": round(float(np.percentile(r, 90)), 3),
            "within_30": round(float(np.mean(np.abs(lr) <= np.log2(1.3))), 3)}


def predict_sizes(p, cs: Sequence[Curve]) -> list[float]:
    """``cpllm-ladder --mode predict``'s reported size at its pick over the ladder's size
    there, for each of ``cs``, with the rule ``p`` (for :func:`size_errors`)."""
    out, fast = [], p.preset is not None
    for c in cs:
        x = predict_features(c, p.probes, p.encoder, fast, p.key_frames)
        crf = p.crf(x, int(c.crfs[0]), int(c.crfs[-1]))
        rates, _ = probe_reads(c, p.probes, fast, p.key_frames)
        out.append(p.rate(rates, float(crf), x) / float(c.bytes[c.at(crf)]))
    return out


def cheapest_success_crf(c: Curve) -> int:
    """The highest CRF of the ladder that keeps what the input had (what ``predict`` mode
    learns to predict)."""
    ok = c.vm >= c.required - 1e-9
    return int(c.crfs[ok].max())

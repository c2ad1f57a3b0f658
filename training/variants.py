"""Compression variants of source videos, their full-reference metrics and pseudo-scores.

:func:`make_variants` encodes every source at a ladder of CRFs of one encoder
(:data:`ENCODERS`), measures each variant against its source or its reference
(:func:`measure_fr`: VMAF and PSNR in one ffmpeg pass), maps VMAF to a 1-5 pseudo-score
(:func:`pseudo_score`) and writes ``OUT_DIR/manifest.jsonl``; it resumes where it stopped.
:func:`shorten` cuts originals for a cheaper ladder; :func:`read_lsvq_csv` reads LSVQ's label
CSVs.

The design (layout, encoding and measuring chains, references, the pseudo-score formulas,
identical encodes): docs/data.md, "Variants", "Measuring" and "Pseudo-scores".
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from cpllm_plugin.console import Progress, progress_printer
from cpllm_plugin.errors import (
    CpllmError,
    VideoNotFoundError,
    message,
)
from cpllm_plugin.files import atomic
from cpllm_plugin.hashing import sha256_file
from cpllm_plugin.integrations.ffmpeg import (  # noqa: F401  (re-exported)
    DROP_ALL,
    ENCODERS,
    LOSSLESS,
    PSNR_CAP,
    VMAF_FRAMES,
    VMAF_MODEL,
    Encoder,
    FfmpegError,
    UnknownEncoderError,
    _require_libvmaf,
    auto_subsample,
    default_jobs,
    encode_args,
    find_ffmpeg,
    get_encoder,
    has_libvmaf,
    measure_fr,
    write_lossless,
)
from cpllm_plugin.integrations.ffmpeg import (
    even_crop as _EVEN,
)
from cpllm_plugin.integrations.ffmpeg import (
    run_ffmpeg as _run_ffmpeg,
)
from cpllm_plugin.integrations.ffmpeg import (
    threads_per_job as _threads,
)

from .manifest import (
    Item,
    ManifestError,
    map_scale,
    read_manifest,
    resolve,
    write_manifest,
)

LSVQ_SCALE = (0.0, 100.0)  # LSVQ publishes MOS on 0-100
MANIFEST_NAME = "manifest.jsonl"


class DataArgumentError(CpllmError, ValueError):
    """An argument is out of range (CRF levels, job count, ...)."""


class LabelFileError(CpllmError, ValueError):
    """A label file (LSVQ-style CSV) is malformed."""


class MissingVideosError(CpllmError, FileNotFoundError):
    """Videos named by a label file or manifest are not on disk."""


# ffmpeg, the encoder table and VMAF live in cpllm_plugin.integrations.ffmpeg (the
# runtime ladder uses them too); they are re-exported here for the training code.


def encode(src: str | os.PathLike, dst: str | os.PathLike, crf: int, codec: str = "libx264",
           preset: str | None = None, ffmpeg: str | None = None,
           threads: int | None = None) -> Path:
    """Encode the first video stream of ``src`` at ``crf`` into ``dst`` (MP4), atomically.

    ffmpeg writes ``dst``'s folder under a temporary name that is renamed only on success,
    so an existing ``dst`` is always a complete encode.

    Args:
        src: the source video.
        dst: the MP4 to write.
        crf: the quality level (see :data:`ENCODERS` for each encoder's range).
        codec: an encoder of :data:`ENCODERS`.
        preset: its speed preset (None: the table's default).
        ffmpeg: the ffmpeg binary (see :func:`find_ffmpeg`).
        threads: threads for decoding, filtering and encoding (default: every usable core).
    """
    ffmpeg = find_ffmpeg(ffmpeg)
    src, dst = Path(src), Path(dst)
    where = f"encode({src.name!r}, crf={crf})"
    enc = get_encoder(codec, where)
    if not src.is_file():
        raise VideoNotFoundError(message(where, "a source video file", f"missing {src}",
                                         "check the source path in the manifest"))
    n = str(threads or _threads(1))
    # The command of cpllm-ladder's probes (encode_args), so a variant is encoded as a probe.
    atomic(dst, lambda tmp: _run_ffmpeg(encode_args(
        ffmpeg, src, tmp, crf, enc, preset=preset, threads=int(n), pix_fmt="yuv420p",
        vfilter=_EVEN, inputs=["-filter_threads", n, "-threads", n], streams=DROP_ALL,
        fmt="mp4"), where))
    return dst


def _write(dst: Path, fmt: str, args: list[str], where: str) -> None:
    """Run ffmpeg ``args`` into ``dst`` (container ``fmt``) through :func:`atomic`."""
    atomic(dst, lambda tmp: _run_ffmpeg([*args, "-f", fmt, str(tmp)], where))


def shorten(sources: Sequence[Item], out_dir: str | os.PathLike, seconds: float | None,
            min_frames: int = 16, ffmpeg: str | None = None, jobs: int | None = None,
            progress: Progress | bool = True) -> list[Item]:
    """Cut the first ``seconds`` of every original, losslessly (raw), for a cheaper ladder.

    Each cut holds the first ``max(round(seconds * fps), min_frames)`` frames (never more
    than the source has), so its pixels are the source's; ``seconds=None`` copies every
    frame (a ladder of whole originals then decodes raw frames instead of the original's
    codec for each encode and each VMAF run). A row's ``reference`` (a degraded original's
    clean parent) is kept as it is: VMAF pairs frames by index and stops at the shorter
    input, so a short variant is measured against its parent's first frames. Resumable: a
    cut already on disk is kept (cuts are written under a temporary name).

    Returns:
        the items with ``path`` pointing at the cuts (absolute).
    """
    from cpllm_plugin.video import probe

    where = "shorten()"
    if seconds is not None and seconds <= 0:
        raise DataArgumentError(message(where, "seconds > 0 or None (whole)", repr(seconds),
                                        "pass the length of the cuts in seconds"))
    ffmpeg = find_ffmpeg(ffmpeg)
    say = progress_printer(progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = default_jobs() if jobs is None else jobs
    threads = str(_threads(jobs))
    todo, items = [], []
    for o in sources:
        dst = out / f"{_folder(o.source)}.mkv"
        items.append(replace(o, path=str(dst.resolve()), sha256=None))
        if not dst.is_file():
            todo.append((o, dst))
    length = "whole" if seconds is None else f"{seconds:g} s"
    say(f"shorten: {len(sources) - len(todo)} of {len(sources)} cuts ({length}) "
        f"already on disk, {len(todo)} to cut")

    def cut(o: Item, dst: Path) -> float:
        t = time.perf_counter()
        frames = []  # a whole copy takes what the decoder gives, not a count from the header
        if seconds is not None:
            info = probe(o.path)
            n = min(max(int(round(seconds * info.fps)), min_frames), info.frame_count)
            frames = ["-frames:v", str(n)]
        head = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads",
                threads, "-i", str(o.path), "-map", "0:v:0", "-an", "-sn", "-dn",
                "-map_metadata", "-1", "-fps_mode", "passthrough", *frames]
        # Raw frames where Matroska takes them: every encode and VMAF run of the ladder
        # reads the cut again, and decoding lossless H.264 cost about as much as a fast encode.
        write_lossless(lambda codec: _write(dst, "matroska", [*head, *codec],
                                            f"{where}: cutting {o.source!r}"), int(threads))
        return time.perf_counter() - t

    _parallel(todo, cut, jobs, say, "cut", lambda a, dt: f"{a[0].source}: {dt:.1f} s")
    return items


# --- pseudo-scores ------------------------------------------------------------------------


def pseudo_score(vmaf: float | None, source_mos: float | None = None) -> float | None:
    """A variant's score on 1-5 from its VMAF (and its source's MOS, 1-5, when known).

    Without MOS: ``1 + 4 * v / 100``; with MOS ``m``: ``1 + (m - 1) * v / 100`` (never above
    the source). ``v`` is clipped to [0, 100]; no VMAF gives None (ranking loss only).
    """
    if vmaf is None:
        return None
    v = min(max(float(vmaf), 0.0), 100.0) / 100.0
    if source_mos is None:
        return round(1.0 + 4.0 * v, 6)
    m = min(max(float(source_mos), 1.0), 5.0)
    return round(1.0 + (m - 1.0) * v, 6)


# --- the ladder ---------------------------------------------------------------------------


def _folder(source: str) -> str:
    """A file-system-safe folder name for a source id (unique: a hash is added if changed)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._") or "source"
    if safe != source:
        safe += "-" + hashlib.sha1(source.encode()).hexdigest()[:6]
    return safe


def variant_path(out_dir: str | Path, source: str, codec: str, crf: int) -> Path:
    """Where :func:`make_variants` writes the variant of ``source`` at ``crf``."""
    return Path(out_dir) / _folder(source) / f"{codec}_crf{crf:02d}.mp4"


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())


class _Writer:
    """Writes the manifest while work goes on: at most every ``every`` seconds, and never
    spending more than about 5% of the time writing (large manifests take a while)."""

    def __init__(self, path: Path, rows: Callable[[], list[Item]], every: float = 2.0):
        self.path, self.rows, self.every = path, rows, every
        self.lock = threading.Lock()
        self.next = 0.0

    def __call__(self, force: bool = False) -> None:
        with self.lock:
            if force or time.monotonic() >= self.next:
                t = time.monotonic()
                write_manifest(self.path, self.rows())
                self.next = time.monotonic() + max(self.every, 20 * (time.monotonic() - t))


def _load_sources(sources: Sequence[Item] | str | os.PathLike) -> tuple[list[Item], Path | None]:
    if isinstance(sources, (str, os.PathLike)):
        return read_manifest(sources), Path(sources)
    return list(sources), None


def make_variants(sources: Sequence[Item] | str | os.PathLike, out_dir: str | os.PathLike,
                  crfs: Iterable[int] | None = None, codec: str = "libx264",
                  preset: str | None = None, ffmpeg: str | None = None,
                  jobs: int | None = None, measure: bool = True,
                  progress: Progress | bool = True, vmaf_subsample: int | None = None,
                  merge: bool = True) -> list[Item]:
    """Encode every source at every CRF, measure the variants, write the manifest.

    Args:
        sources: items (originals; only ``original=True`` rows are used) or the path of a
            manifest holding them. Paths (``path`` and ``reference``) of a manifest resolve
            against its folder; paths of items as given (absolute, or relative to the
            current directory).
        out_dir: where variants and ``manifest.jsonl`` go.
        crfs: quality levels (default: the encoder's ladder in :data:`ENCODERS`; for libx264
            the paper's 15, 17, ..., 53).
        codec: an encoder of :data:`ENCODERS`.
        preset: its preset (default: the table's).
        ffmpeg: ffmpeg binary (default: ``$CPLLM_FFMPEG``, else imageio-ffmpeg's).
        jobs: ffmpeg processes at once (default: one per usable core); each gets
            ``cores // jobs`` threads, so the machine is never oversubscribed.
        measure: measure VMAF and PSNR against the source or reference (needs libvmaf).
        progress: True for lines on stderr, False for none, or a callable taking a line.
        vmaf_subsample: measure VMAF on every n-th frame (None: :func:`auto_subsample`).
        merge: keep the rows of other encoders that an earlier run wrote into ``out_dir``'s
            manifest for these sources (their files must still be there).

    Returns:
        The manifest's items: each original followed by its variants in (codec, CRF) order.
        Of ``codec``, the manifest holds exactly the requested levels; of other codecs, what
        an earlier run left (with ``merge``). An earlier manifest is otherwise read only to
        reuse its measurements and annotations.
    """
    where = "make_variants()"
    say = progress_printer(progress)
    enc = get_encoder(codec, where)
    crfs = sorted({int(c) for c in (enc.ladder if crfs is None else crfs)})
    lo, hi = enc.crf_range
    if not crfs or crfs[0] < lo or crfs[-1] > hi:
        raise DataArgumentError(message(where, f"CRF levels in {lo}..{hi} for {codec}",
                                        repr(crfs), f"pass e.g. crfs={list(enc.ladder)}, or "
                                        "leave crfs out for that ladder"))
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise DataArgumentError(message(where, "jobs >= 1", repr(jobs), "pass jobs=1 or more"))
    if vmaf_subsample is not None and vmaf_subsample < 1:
        raise DataArgumentError(message(where, "vmaf_subsample >= 1 or None", repr(vmaf_subsample),
                                        "pass 1 to measure every frame, None for automatic"))
    ffmpeg = find_ffmpeg(ffmpeg)
    if measure:
        _require_libvmaf(ffmpeg, where)
    items, manifest = _load_sources(sources)
    originals = [i for i in items if i.original]
    if not originals:
        raise ManifestError(message(where, "at least one original (original=true)",
                                    "none", "list the source videos, one row each"))
    dupes = sorted(s for s, n in Counter(i.source for i in originals).items() if n > 1)
    if dupes:
        raise ManifestError(message(where, "one original per source id", f"duplicates {dupes}",
                                    "give every source its own id"))

    def file_of(p: str) -> Path:
        return resolve(manifest, Item(p, "")) if manifest else Path(p)

    files = {o.source: file_of(o.path) for o in originals}
    refs = {o.source: file_of(o.reference) for o in originals if o.reference}
    missing = [str(p) for p in (*files.values(), *refs.values()) if not p.is_file()]
    if missing:
        raise MissingVideosError(message(
            where, "every source video (and reference) on disk", f"{len(missing)} missing, "
            f"first: {missing[:3]}", "fix the paths (a manifest's relative paths start at its "
            "folder)"))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST_NAME
    old_rows = read_manifest(path) if path.is_file() else []
    old = {i.path: i for i in old_rows}

    # Originals: hashed; a source whose bytes changed since the last run is encoded again,
    # and a source whose reference is such a source is measured again.
    say(f"hashing {len(originals)} sources")
    rows: dict[str, Item] = {}
    stale: set[str] = set()
    orig_rel: dict[str, str] = {}  # source -> its original's row
    ref_rel: dict[str, str | None] = {}  # source -> the reference of its rows (None: itself)
    heights: dict[str, int] = {}  # source -> display height of its variants (even)
    for o in originals:
        rel = _rel(files[o.source], out)
        sha = sha256_file(files[o.source])
        prev = old.get(rel)
        if prev is not None and prev.sha256 not in (None, sha):
            stale.add(o.source)
        ref_rel[o.source] = _rel(refs[o.source], out) if o.source in refs else None
        height = _height(files[o.source])
        heights[o.source] = height - height % 2
        row = replace(o, path=rel, sha256=sha, reference=ref_rel[o.source],
                      height=o.height or height)
        rows[rel] = _keep_annotations(row, prev)
        orig_rel[o.source] = rel
    by_rel = {rel: s for s, rel in orig_rel.items()}
    remeasure = stale | {s for s, r in ref_rel.items() if by_rel.get(r) in stale}

    def against(source: str) -> Path:
        """The file the rows of ``source`` are measured against."""
        return refs.get(source, files[source])

    # Variants: the requested ladder of ``codec``, and (merge) other codecs' rows on disk.
    variants: dict[str, Item] = {}
    for o in originals:
        for crf in crfs:
            dst = variant_path(out, o.source, codec, crf)
            rel = _rel(dst, out)
            if o.source in stale and dst.exists():
                dst.unlink()
            row = Item(rel, o.source, split=o.split, original=False, codec=codec, crf=crf,
                       tag=o.tag, reference=ref_rel[o.source], height=heights[o.source])
            variants[rel] = _keep_annotations(row, old.get(rel))
    if merge:
        kept, gone = _merge_other_codecs(old_rows, variants, {o.source: o for o in originals},
                                         out, codec, stale, ref_rel, heights)
        if kept or gone:
            say(f"merge: kept {kept} rows of other codecs from {path}"
                + (f", dropped {len(gone)} (file gone or source changed; first: {gone[:2]})"
                   if gone else ""))

    def all_rows() -> list[Item]:
        by_source: dict[str, list[Item]] = {}
        for r in rows.values():
            by_source.setdefault(r.source, []).append(r)
        return [r for o in originals for r in sorted(by_source[o.source],
                                                     key=lambda r: (not r.original,
                                                                    r.codec or "", r.crf or 0))]

    writer = _Writer(path, all_rows)
    threads = _threads(jobs)

    # Phase 1: encode what is missing (parallel), hash every variant.
    todo = [(rel, row) for rel, row in variants.items() if not (out / rel).is_file()]
    say(f"encode: {len(variants) - len(todo)} of {len(variants)} variants already on disk, "
        f"{len(todo)} to encode with {codec} {enc.preset_flag} {preset or enc.preset} "
        f"({jobs} at a time, {threads} thread{'s' if threads > 1 else ''} each)")

    def do_encode(rel: str, row: Item) -> float:
        t = time.perf_counter()
        encode(files[row.source], out / rel, row.crf, codec, preset, ffmpeg, threads)
        return time.perf_counter() - t

    _parallel(todo, do_encode, jobs, say, "encode", lambda a, dt: f"{_label(a[1])}: {dt:.1f} s")
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:  # hashing is I/O bound
        hashes = pool.map(sha256_file, [out / rel for rel in variants])
        for (rel, row), sha in zip(variants.items(), hashes, strict=True):
            rows[rel] = replace(row, sha256=sha)
    writer(force=True)

    # Phase 2: measure each distinct (reference, file) once: every variant, and every
    # original that has a reference; reuse measurements of unchanged files.
    targets = {rel: against(rows[rel].source) for rel in variants}
    targets.update({orig_rel[s]: refs[s] for s in refs})
    same: dict[tuple[str, str], list[str]] = {}  # (reference, sha256) -> rows of that file
    for rel, ref in targets.items():
        same.setdefault((str(ref), rows[rel].sha256), []).append(rel)
    ceiling = _ceilings(originals, files, refs)
    done: dict[tuple[str, str], tuple[float, float]] = {}
    for rel, ref in targets.items():
        prev, row = old.get(rel), rows[rel]
        if (prev is not None and prev.sha256 == row.sha256 and prev.vmaf is not None
                and prev.psnr is not None and prev.reference == row.reference
                and row.source not in remeasure):
            done[(str(ref), row.sha256)] = (prev.vmaf, prev.psnr)
    if measure:
        todo_m, seen = [], set(done)
        for rel, ref in targets.items():
            key = (str(ref), rows[rel].sha256)
            if key not in seen:
                seen.add(key)
                todo_m.append((rel, rows[rel], ref))
        say(f"measure: {len(targets) - len(todo_m)} of {len(targets)} files known "
            f"(already measured, or identical to another file), {len(todo_m)} to measure "
            f"(VMAF {VMAF_MODEL} + PSNR, VMAF on every "
            f"{vmaf_subsample or 'n-th (auto)'} frame)")

        lock = threading.Lock()

        def do_measure(rel: str, row: Item, ref: Path) -> float:
            t = time.perf_counter()
            result = measure_fr(ref, out / rel, ffmpeg, threads, vmaf_subsample)
            with lock:  # keep finished measurements on disk as they come
                done[(str(ref), row.sha256)] = result
                _fill(rows, same[(str(ref), row.sha256)], result, ceiling)
            writer()
            return time.perf_counter() - t

        _parallel(todo_m, do_measure, jobs, say, "measure",
                  lambda a, dt: f"{_label(a[1])}: VMAF "
                  f"{done[(str(a[2]), a[1].sha256)][0]:.2f}, PSNR "
                  f"{done[(str(a[2]), a[1].sha256)][1]:.2f} dB, {dt:.1f} s")
    for key, rels in same.items():
        _fill(rows, rels, done.get(key, (None, None)), ceiling)
    writer(force=True)
    say(f"wrote {path} ({len(rows)} rows)")
    return all_rows()


def _label(row: Item) -> str:
    return f"{row.source} " + ("original" if row.original else f"{row.codec} crf {row.crf}")


def _height(path: Path) -> int:
    """Display height of a video (after rotation), from its headers."""
    from cpllm_plugin.video import probe

    return probe(path).height


def _merge_other_codecs(old_rows: list[Item], variants: dict[str, Item],
                        originals: dict[str, Item], out: Path, codec: str, stale: set[str],
                        ref_rel: dict[str, str | None], heights: dict[str, int]
                        ) -> tuple[int, list[str]]:
    """Add an earlier run's variant rows of other codecs to ``variants`` (in place).

    Rows of sources not in this run are left out; rows whose file is gone are dropped; the
    files of a source whose bytes changed are deleted (they encode the old bytes). Kept rows
    follow their source's split, tag and reference, and are measured again when the
    reference changed. Returns the number kept and the paths dropped.
    """
    kept, gone = 0, []
    for prev in old_rows:
        if prev.original or prev.codec == codec or prev.source not in originals \
                or prev.path in variants:
            continue
        f = out / prev.path
        if prev.source in stale:
            if f.is_file() and f.resolve().is_relative_to(out.resolve()):
                f.unlink()
            gone.append(prev.path)
            continue
        if not f.is_file():
            gone.append(prev.path)
            continue
        o = originals[prev.source]
        variants[prev.path] = replace(prev, split=o.split, tag=o.tag,
                                      reference=ref_rel[prev.source],
                                      height=prev.height or heights[prev.source])
        kept += 1
    return kept, gone


def _ceilings(originals: list[Item], files: dict[str, Path], refs: dict[str, Path]
              ) -> dict[str, float | None]:
    """Per source, the MOS that caps its pseudo-scores (see :func:`pseudo_score`).

    A source without reference: its own MOS. A source with one: the MOS of the original
    whose file is that reference (its clean parent), else None (VMAF's own scale).
    """
    by_file = {files[o.source].resolve(): o for o in originals}
    out: dict[str, float | None] = {}
    for o in originals:
        if o.source in refs:
            parent = by_file.get(refs[o.source].resolve())
            out[o.source] = parent.mos if parent is not None else None
        else:
            out[o.source] = o.mos
    return out


def _keep_annotations(row: Item, prev: Item | None) -> Item:
    """Carry descriptions and opinion scores of an earlier run's row into a row without them."""
    if prev is None:
        return row
    if row.description is None and prev.description is not None:
        row = replace(row, description=prev.description,
                      description_generated=prev.description_generated)
    if row.mos is None and prev.mos is not None:
        row = replace(row, mos=prev.mos, mos_raw=prev.mos_raw, mos_scale=prev.mos_scale)
    return row


def _fill(rows: dict[str, Item], rels: list[str], measured: tuple[float | None, float | None],
          ceiling: dict[str, float | None]) -> None:
    """Put a file's ``(vmaf, psnr)`` and the pseudo-score into its rows ``rels``."""
    vmaf, psnr = measured
    for rel in rels:
        r = rows[rel]
        rows[rel] = replace(r, vmaf=vmaf, psnr=psnr,
                            pseudo=pseudo_score(vmaf, ceiling[r.source]))


def _parallel(tasks: list[tuple], fn: Callable[..., float], jobs: int, say: Progress,
              what: str, line: Callable[[tuple, float], str]) -> None:
    """Run ``fn(*task)`` for every task, ``jobs`` at a time, with a progress line each."""
    if not tasks:
        return
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(fn, *t): t for t in tasks}
        try:
            for n, fut in enumerate(cf.as_completed(futures), 1):
                dt = fut.result()
                elapsed = time.perf_counter() - t0
                eta = elapsed / n * (len(tasks) - n)
                say(f"[{what} {n}/{len(tasks)}] {line(futures[fut], dt)} "
                    f"(elapsed {elapsed:.0f} s, left ~{eta:.0f} s)")
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# --- real opinion scores ------------------------------------------------------------------

_VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".webm", ".avi")


def read_lsvq_csv(csv_path: str | os.PathLike, video_dir: str | os.PathLike,
                  split: str | None = None, scale: tuple[float, float] = LSVQ_SCALE,
                  missing: str = "error") -> list[Item]:
    """Read an LSVQ-style label CSV into manifest items with real MOS.

    LSVQ's public label files (``labels_train_test.csv``, ``labels_test_1080p.csv``) have a
    header row with at least ``name`` (for example ``yfcc-batch1/11819``: the video is
    ``VIDEO_DIR/yfcc-batch1/11819.mp4``) and ``mos`` (0-100), plus ``height``, ``width``,
    ``frame_number``, patch coordinates and patch MOS (``mos_p1`` ...), which are not used;
    ``labels_train_test.csv`` also has ``is_test``. Any CSV with ``name`` and ``mos`` columns
    works.

    Args:
        csv_path: the label file.
        video_dir: the folder the names are relative to.
        split: the split of every row; None takes it from ``is_test`` (true: ``"test"``,
            false: ``"train"``), or ``"train"`` without that column.
        scale: the (low, high) range of ``mos``; mapped linearly to 1-5.
        missing: ``"error"`` raises :class:`MissingVideosError` naming how many videos are
            missing and the first few; ``"skip"`` leaves them out with a warning.

    Returns:
        One original per row: ``path`` (absolute), ``source`` = ``name``, ``mos_raw``,
        ``mos_scale`` and ``mos`` on 1-5.
    """
    csv_path, video_dir = Path(csv_path), Path(video_dir)
    where = f"read_lsvq_csv({str(csv_path)!r})"
    if missing not in ("error", "skip"):
        raise DataArgumentError(message(where, "missing='error' or 'skip'", repr(missing),
                                        "pick one of them"))
    if not csv_path.is_file():
        raise LabelFileError(message(where, "a CSV label file", "no such file",
                                     "check the path"))
    if not video_dir.is_dir():
        raise MissingVideosError(message(where, "a folder of videos", f"{video_dir} "
                                         "(not a folder)", "pass the folder the names are "
                                         "relative to"))
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        need = [c for c in ("name", "mos") if c not in cols]
        if need:
            raise LabelFileError(message(where, "a header with columns 'name' and 'mos'",
                                         f"columns {cols[:8]}", f"add {need} (LSVQ layout)"))
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    items, lost = [], []
    for n, r in enumerate(rows, 2):
        try:
            raw = float(r["mos"])
        except ValueError:
            raise LabelFileError(message(f"{csv_path}:{n}", "a number in column 'mos'",
                                         repr(r["mos"]), "fix or delete that row")) from None
        if not r["name"]:
            raise LabelFileError(message(f"{csv_path}:{n}", "a video name in column 'name'",
                                         "an empty cell", "fix or delete that row"))
        path = _find_video(video_dir, r["name"])
        if path is None:
            lost.append(r["name"])
            continue
        row_split = split or ("test" if r.get("is_test", "").lower() in ("1", "true", "yes")
                              else "train")
        items.append(Item(str(path.resolve()), r["name"], split=row_split, mos_raw=raw,
                          mos_scale=tuple(scale), mos=map_scale(raw, scale)))
    if lost:
        text = message(where, f"every video under {video_dir}",
                       f"{len(lost)} of {len(rows)} missing, first: {lost[:5]}",
                       "download them, point video_dir at the right folder, or pass "
                       "missing='skip'")
        if missing == "error":
            raise MissingVideosError(text)
        import warnings

        warnings.warn(text, stacklevel=2)
    return items


def _find_video(video_dir: Path, name: str) -> Path | None:
    p = video_dir / name
    if p.is_file():
        return p
    for ext in _VIDEO_EXTS:
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return None

"""Evaluate a model with the paper's criteria: SRCC, PLCC and the flip rate (Tables 1-3).

:func:`evaluate` scores every video of one split of a manifest with
``cpllm_plugin.load_model(model, backend).score(path)`` and reports, in one table:

- SRCC and PLCC against MOS on the rows that have one; when no row of the split has a MOS,
  against VMAF (the variants' VMAF against their sources), and the result says which;
- the flip rate as in Table 3: over all pairs of variants of one source (and codec) whose
  CRFs differ by d in {2, 4, 6, 8, 10, 20}, the fraction ranked wrongly (the lower CRF must
  score strictly higher; ties count as wrong; identical files, e.g. CRF 53 = 51, are
  skipped), plus the overall rate over every pair;
- the same numbers for the full-reference baselines VMAF and PSNR (their flip rates from
  their own values), for context. A baseline is not correlated with itself;
- the model's flip rates per resolution class of the source (``<=480p``, ``540p``,
  ``720p``, ``1080p``, by ``height``) and per codec;
- SRCC against VMAF within a source (mean over sources, over the variants of one codec,
  libx264 by default) next to the pooled SRCC over all variants;
- the number of ties (equal scores of distinct files of one source; they count as flips);
- for degraded originals (originals with a ``reference``), how often they score below their
  clean parent.

All of these come from :func:`statistics`, a pure function of the rows and the scores.

Scores are cached per model id, key frame count and file sha256 in a JSON file, so a re-run
only scores new files. Outputs: a JSON-ready dict, a markdown table
(:func:`markdown_table`) and a PNG plot of predicted score against CRF, one line per source
(:func:`plot_scores`, drawn with Pillow).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from cpllm_plugin.console import progress_printer
from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.files import write_atomic
from cpllm_plugin.hashing import sha256_file

from .manifest import Item, ManifestError, read_manifest, resolve
from .metrics import FLIP_DIFFS, flip_rate, plcc, srcc

CACHE_NAME = "scores-cache.json"


class EvaluationError(CpllmError, ValueError):
    """The manifest or split has nothing to evaluate."""


def _clean(x):
    """NaN and infinities to None, recursively: JSON has neither."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class ScoreCache:
    """Scores keyed by ``model id | key frames`` and file sha256, kept in a JSON file."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.data: dict[str, dict[str, float]] = {}
        if self.path and self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                self.data = {}  # a damaged cache is only a slower run

    def get(self, key: str, sha: str) -> float | None:
        return self.data.get(key, {}).get(sha)

    def put(self, key: str, sha: str, score: float) -> None:
        self.data.setdefault(key, {})[sha] = score

    def save(self) -> None:
        if self.path is None:
            return
        write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))


def select_split(items: Sequence[Item], split: str | None, where: str) -> list[Item]:
    """Rows of ``split`` (None or ``"all"``: every row); a named error when there are none."""
    if split in (None, "all"):
        chosen = list(items)
    else:
        chosen = [i for i in items if i.split == split]
    if not chosen:
        have = sorted({i.split for i in items})
        raise EvaluationError(message(where, f"rows in split {split!r}",
                                      f"none (splits present: {have})",
                                      "pick one of those splits, or --split all"))
    return chosen


# Resolution classes of a source by its display height: (name, lowest, highest) in pixels.
RESOLUTION_CLASSES = (("<=480p", 0, 480), ("540p", 481, 576), ("720p", 577, 900),
                      ("1080p", 901, 1 << 30))


def resolution_class(height: int | None) -> str:
    """``"<=480p"``, ``"540p"`` (481-576), ``"720p"`` (577-900), ``"1080p"`` (>900) or
    ``"unknown"`` (no height)."""
    if height is None:
        return "unknown"
    return next(name for name, lo, hi in RESOLUTION_CLASSES if lo <= height <= hi)


def flip_groups(items: Sequence[Item], values: Sequence[float | None],
                keep: Callable[[Item], bool] = lambda i: True) -> list[list]:
    """``(crf, value, sha256)`` of each scored variant, one list per source and codec, as
    :func:`~.metrics.flip_rate` takes them."""
    groups: dict[tuple[str, str], list] = {}
    for v, i in zip(values, items, strict=True):
        if v is not None and not i.original and i.crf is not None and keep(i):
            groups.setdefault((i.source, i.codec or ""), []).append((i.crf, v, i.sha256))
    return list(groups.values())


def _row(name: str, kind: str, values: list[float | None], items: list[Item],
         truth: list[float | None], truth_name: str) -> dict:
    pairs, seen = [], set()
    for v, t, i in zip(values, truth, items, strict=True):
        if v is not None and t is not None and (i.source, i.sha256) not in seen:
            seen.add((i.source, i.sha256))  # an identical file (CRF 53 = 51) counts once
            pairs.append((v, t))
    row = {"name": name, "kind": kind, "n": len(pairs), "srcc": None, "plcc": None,
           "flip": flip_rate(flip_groups(items, values))}
    if name.lower() == truth_name:
        row["note"] = "the reference of the correlations"
    elif len(pairs) >= 2:
        row["srcc"] = srcc(*zip(*pairs, strict=True))
        row["plcc"] = plcc(*zip(*pairs, strict=True))
    return row


def _source_heights(items: Sequence[Item]) -> dict[str, int | None]:
    """Per source, the height of its original row, else of any of its rows, else None."""
    out: dict[str, int | None] = {}
    for i in sorted(items, key=lambda i: not i.original):  # originals first
        if out.get(i.source) is None:
            out[i.source] = i.height
    return out


def srcc_vs_vmaf(items: Sequence[Item], values: Sequence[float | None],
                 codec: str | None) -> dict:
    """SRCC against VMAF within each source and pooled over sources, both over the variants
    of ``codec`` (None: every codec)."""
    per: dict[str, dict[str, tuple[float, float]]] = {}  # source -> sha -> (value, vmaf)
    for v, i in zip(values, items, strict=True):
        if v is None or i.vmaf is None or i.original or (codec is not None and i.codec != codec):
            continue
        per.setdefault(i.source, {})[i.sha256 or i.path] = (v, i.vmaf)  # identical files: once
    within: dict[str, float] = {}
    for source, files in per.items():
        v, t = zip(*files.values(), strict=True) if files else ((), ())
        if len(files) < 2 or len(set(t)) < 2:
            continue  # nothing to rank: one file, or VMAF equal on all
        r = srcc(v, t)
        within[source] = 0.0 if math.isnan(r) else r  # one score for all: no ranking at all
    p = [pair for files in per.values() for pair in files.values()]
    return {"within_source": sum(within.values()) / len(within) if within else None,
            "sources": len(within),
            "pooled": srcc(*zip(*p, strict=True)) if len(p) >= 2 else None,
            "n": len(p), "per_source": within}


def scale_by_source(items: Sequence[Item], values: Sequence[float | None],
                    codec: str | None) -> dict:
    """Where the absolute scale goes wrong, source by source, over the variants of ``codec``.

    A model can rank every ladder right (SRCC within a source near 1) and still place whole
    sources too high or too low, which is what the pooled SRCC and a CRF picked at one score
    suffer from. Per source: ``bias``, the mean of score minus target (MOS or pseudo-score)
    over its variants that have one, and ``without``, the pooled SRCC against VMAF with that
    source left out (:func:`srcc_vs_vmaf`'s counting). ``spread`` is the standard deviation
    of the biases across sources.

    ``pooled_clean`` and ``pooled_degraded`` pool the clean sources and the degraded
    originals (sources whose original has a ``reference``) apart (None: no such source).
    The truth of the two differs in kind: a clean source's variants are measured against
    the source itself, so a natively soft, noisy or tiny one is "excellent" at a low CRF,
    while a degraded original of the same look is measured against its clean parent and is
    "poor". A no-reference model sees only the look, so the two parts pull its scale in
    opposite directions; apart, they show which one a model trades for the other.
    """
    per: dict[str, dict[str, float]] = {}
    for v, i in zip(values, items, strict=True):
        if (v is None or i.target is None or i.original
                or (codec is not None and i.codec != codec)):
            continue
        per.setdefault(i.source, {})[i.sha256 or i.path] = v - i.target
    bias = {s: sum(d.values()) / len(d) for s, d in per.items()}

    def pooled_over(keep: Callable[[str], bool]) -> float | None:
        """The pooled SRCC over the sources that ``keep`` accepts."""
        pick = [(i, v) for i, v in zip(items, values, strict=True) if keep(i.source)]
        return srcc_vs_vmaf([i for i, _ in pick], [v for _, v in pick], codec)["pooled"]

    pooled = srcc_vs_vmaf(items, values, codec)["pooled"]
    out = {source: {"bias": b, "n": len(per[source]),
                    "without": pooled_over(lambda s, left=source: s != left)}
           for source, b in sorted(bias.items(), key=lambda kv: kv[1])}
    mean = sum(bias.values()) / len(bias) if bias else None
    spread = (sum((b - mean) ** 2 for b in bias.values()) / len(bias)) ** 0.5 if bias else None
    degraded = {i.source for i in items if i.original and i.reference}
    return {"codec": codec, "pooled": pooled, "spread": spread,
            "pooled_clean": pooled_over(lambda s: s not in degraded),
            "pooled_degraded": pooled_over(lambda s: s in degraded) if degraded else None,
            "per_source": out}


def _ties(items: Sequence[Item], scores: Sequence[float | None]) -> dict:
    """Pairs of distinct files of one source with equal scores, among all such pairs."""
    files: dict[str, dict[str, float]] = {}
    for s, i in zip(scores, items, strict=True):
        if s is not None:
            files.setdefault(i.source, {})[i.sha256 or i.path] = s
    tied = total = 0
    for per in files.values():
        values = list(per.values())
        for a in range(len(values)):
            for b in range(a + 1, len(values)):
                total += 1
                tied += values[a] == values[b]
    return {"count": tied, "pairs": total}


def _degraded(items: Sequence[Item], scores: Sequence[float | None]) -> dict:
    """How often a degraded original scores below its clean parent (strictly)."""
    def norm(p: str) -> str:
        return os.path.normpath(p)

    parents = {norm(i.path): (i, s) for i, s in zip(items, scores, strict=True) if i.original}
    pairs, missing = [], 0
    for i, s in zip(items, scores, strict=True):
        if not (i.original and i.reference) or s is None:
            continue
        parent = parents.get(norm(i.reference))
        if parent is None or parent[1] is None:
            missing += 1
            continue
        pairs.append({"source": i.source, "parent": parent[0].source, "score": s,
                      "parent_score": parent[1], "below": s < parent[1]})
    below = sum(p["below"] for p in pairs)
    return {"count": len(pairs), "below_parent": below,
            "rate": below / len(pairs) if pairs else None, "missing_parent": missing,
            "pairs": pairs}


def statistics(items: Sequence[Item], scores: Sequence[float | None], name: str = "model",
               within_codec: str | None = "libx264") -> dict:
    """Every number of the evaluation, from the rows and the model's scores; no I/O.

    Args:
        items: manifest rows (one split); ``height`` should be set (see :func:`evaluate`).
        scores: the model's score of each row, in the same order (None: not scored).
        name: the model's name in ``rows``.
        within_codec: the codec whose variants "SRCC within a source" ranks and the
            resolution classes compare (None: all).

    Returns:
        A dict with

        - ``truth``: ``"mos"`` or ``"vmaf"``; ``rows``: the model, VMAF and PSNR, each
          ``{"name", "kind", "n", "srcc", "plcc", "flip"}`` (``flip`` as
          :func:`~cpllm_plugin.training.metrics.flip_rate` returns it);
        - ``by_resolution``: one entry per class of :data:`RESOLUTION_CLASSES` (and
          ``"unknown"`` if a source has no height) ``{"name", "sources", "videos", "flip"}``,
          the model's flip rates over the ``within_codec`` variants of the sources of that
          class (by the source's height);
        - ``by_codec``: the same per codec present, ``name`` being the codec;
        - ``srcc_vs_vmaf``: ``{"codec", "model": S, "psnr": S}`` where S is
          ``{"within_source": mean over sources of SRCC against VMAF over the source's
          variants of codec, "sources": n, "pooled": SRCC against VMAF over those variants
          of every source (distinct files), "n": files, "per_source": {source: SRCC}}``
          (the ``rows`` correlate every row of every codec). A source whose
          variants all get one score counts as 0;
        - ``ties``: ``{"count", "pairs"}``: pairs of distinct files of one source with equal
          model scores (they count as flips), among all such pairs;
        - ``degraded_originals``: ``{"count", "below_parent", "rate", "missing_parent",
          "pairs"}``: originals with a ``reference`` whose parent (the original row whose
          ``path`` is that reference) is in ``items``, and how many score strictly below it;
        - ``scale``: the model's bias per source, the pooled SRCC without each source, and
          pooled over clean sources and degraded originals apart, over the ``within_codec``
          variants (see :func:`scale_by_source`).
    """
    items, scores = list(items), list(scores)
    if len(items) != len(scores):
        raise EvaluationError(message("statistics()", "one score per row",
                                      f"{len(items)} rows and {len(scores)} scores",
                                      "pass the scores in the order of the rows"))
    has_mos = any(i.mos is not None for i in items)
    truth_name = "mos" if has_mos else "vmaf"
    truth = [i.mos if has_mos else i.vmaf for i in items]
    rows = [
        _row(name, "model", scores, items, truth, truth_name),
        _row("VMAF", "full-reference", [i.vmaf for i in items], items, truth, truth_name),
        _row("PSNR", "full-reference", [i.psnr for i in items], items, truth, truth_name),
    ]
    cls = {s: resolution_class(h) for s, h in _source_heights(items).items()}
    names = [n for n, _, _ in RESOLUTION_CLASSES]
    names += ["unknown"] if "unknown" in cls.values() else []
    # Classes compare one ladder (the paper's libx264 one by default): pooling the other
    # codecs' shorter ladders in would weigh each class by its codec mix.
    by_resolution = [_subset(c, items, scores, lambda i, c=c: cls[i.source] == c and (
        within_codec is None or i.original or i.codec == within_codec)) for c in names]
    codecs = sorted({i.codec for i in items if not i.original and i.codec})
    by_codec = [_subset(c, items, scores, lambda i, c=c: i.codec == c) for c in codecs]
    within = {"codec": within_codec,
              "model": srcc_vs_vmaf(items, scores, within_codec),
              "psnr": srcc_vs_vmaf(items, [i.psnr for i in items], within_codec)}
    return {"truth": truth_name, "rows": rows, "by_resolution": by_resolution,
            "by_codec": by_codec, "srcc_vs_vmaf": within, "ties": _ties(items, scores),
            "degraded_originals": _degraded(items, scores),
            "scale": scale_by_source(items, scores, within_codec)}


def _subset(name: str, items: list[Item], scores: list, keep: Callable[[Item], bool]) -> dict:
    chosen = [i for i in items if keep(i)]
    return {"name": name, "sources": len({i.source for i in chosen}), "videos": len(chosen),
            "flip": flip_rate(flip_groups(items, scores, keep))}


def evaluate(model, manifest: str | os.PathLike, key_frames: int | None = None,
             backend="auto", split: str | None = "dev",
             cache: str | os.PathLike | None = None,
             progress: Callable[[str], None] | bool = True,
             within_codec: str | None = "libx264") -> dict:
    """Score one split of a manifest and compute SRCC, PLCC and flip rates.

    Args:
        model: a model name, a model directory or a loaded ``cpllm_plugin.Model``.
        manifest: the JSONL manifest (see ``training/manifest.py``).
        key_frames: key frames per video (default: the model's).
        backend: ``"auto"``, ``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, or options such as
            ``backends.ORT(precision="int8")`` (see ``cpllm_plugin.backends.choose``).
        split: which split to evaluate (``"dev"`` by default; None or ``"all"`` for all rows).
        cache: the score cache file (None: no cache).
        progress: True for lines on stderr, False for none, or a callable taking a line.
        within_codec: the codec of "SRCC within a source" (None: every codec).

    Returns:
        A JSON-ready dict: ``model``, ``backend``, ``split``, ``truth`` (``"mos"`` or
        ``"vmaf"``), ``rows`` (the model, then VMAF and PSNR: ``srcc``, ``plcc``, ``n``,
        ``flip``), ``by_resolution``, ``by_codec``, ``srcc_vs_vmaf``, ``ties`` and
        ``degraded_originals`` (see :func:`statistics`), and ``videos`` (one entry per row
        of the split with its score and height). Rows of a source without any ``height``
        get the height of its first file (probed).
    """
    import cpllm_plugin

    where = "evaluate()"
    say = progress_printer(progress)
    manifest = Path(manifest)
    items = select_split(read_manifest(manifest), split, where)
    paths = [resolve(manifest, i) for i in items]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ManifestError(message(where, "every video of the split on disk",
                                    f"{len(missing)} missing, first: {missing[:3]}",
                                    "re-run cpllm-variants / cpllm-corpus, or fix the paths"))
    m = cpllm_plugin.load_model(model, backend)
    count = key_frames or m.config.key_frames
    key = f"{m.id}|{m.backend.name}|M={count}"  # int8 and fp32 scores must not mix
    store = ScoreCache(cache)
    items = [i if i.sha256 else _with_sha(i, p) for i, p in zip(items, paths, strict=True)]
    scores: list[float] = []
    t0, fresh = time.perf_counter(), 0
    for n, (i, p) in enumerate(zip(items, paths, strict=True), 1):
        s = store.get(key, i.sha256)
        if s is None:
            t = time.perf_counter()
            s = m.score(p, key_frames=count).score
            store.put(key, i.sha256, s)
            fresh += 1
            if fresh % 10 == 0:
                store.save()
            say(f"[score {n}/{len(items)}] {i.source} "
                f"{'original' if i.original else f'{i.codec} crf {i.crf}'}: {s:.3f} "
                f"({time.perf_counter() - t:.1f} s)")
        scores.append(s)
    store.save()
    say(f"scored {fresh} videos, {len(items) - fresh} from the cache "
        f"({time.perf_counter() - t0:.0f} s)")

    items = _with_heights(items, paths)
    stats = statistics(items, scores, m.id, within_codec)
    videos = [{"path": i.path, "source": i.source, "original": i.original, "codec": i.codec,
               "crf": i.crf, "sha256": i.sha256, "score": s, "mos": i.mos, "vmaf": i.vmaf,
               "psnr": i.psnr, "pseudo": i.pseudo, "height": i.height,
               "reference": i.reference} for i, s in zip(items, scores, strict=True)]
    return _clean({
        "type": "evaluation", "model": m.id, "backend": m.backend.name,
        "manifest": str(manifest), "split": split or "all", "key_frames": count,
        "sources": len({i.source for i in items}), "videos_n": len(items),
        "flip_diffs": list(FLIP_DIFFS), **stats, "videos": videos,
    })


def _with_heights(items: list[Item], paths: list[Path]) -> list[Item]:
    """Rows of sources without any ``height`` get the probed height of one of their files."""
    from cpllm_plugin.video import probe

    known = {s: h for s, h in _source_heights(items).items() if h is not None}
    out = []
    for i, p in zip(items, paths, strict=True):
        if i.height is None and i.source not in known:
            known[i.source] = probe(p).height
        out.append(i if i.height is not None else replace(i, height=known[i.source]))
    return out


def _with_sha(item: Item, path: Path) -> Item:
    return replace(item, sha256=sha256_file(path))


# --- reporting ----------------------------------------------------------------------------


def _num(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def markdown_table(result: dict) -> str:
    """The result as a markdown table with a caption (the format of the paper's tables)."""
    diffs = result["flip_diffs"]
    truth = "MOS" if result["truth"] == "mos" else "VMAF (no MOS in this split)"
    n = next((r["n"] for r in result["rows"] if r["kind"] == "model"), 0)
    lines = [
        f"Split `{result['split']}` of `{result['manifest']}`: {result['sources']} sources, "
        f"{result['videos_n']} videos, {result['key_frames']} key frames per video. "
        f"SRCC/PLCC against {truth} on {n} videos; FR = flip rate (lower is better).",
        "",
        "| model | SRCC | PLCC | " + " | ".join(f"FR d={d}" for d in diffs) + " | FR all |",
        "|---|---:|---:|" + "---:|" * (len(diffs) + 1),
    ]
    for r in result["rows"]:
        name = f"{r['name']} ({result['backend']})" if r["kind"] == "model" else \
            f"{r['name']} (full reference)"
        f = r["flip"]
        lines.append(f"| {name} | {_num(r['srcc'])} | {_num(r['plcc'])} | "
                     + " | ".join(_num(f[f"d{d}"], True) for d in diffs)
                     + f" | {_num(f['overall'], True)} |")
    f = result["rows"][0]["flip"]
    lines += ["", "Pairs: " + ", ".join(f"d={d}: {f[f'pairs_d{d}']}" for d in diffs)
              + f", all: {f['pairs']}. Ties count as wrong; identical files are skipped."]
    codec = (result.get("srcc_vs_vmaf") or {}).get("codec")
    for key, title in (("by_resolution", "source resolution"), ("by_codec", "codec")):
        groups = [g for g in result.get(key, []) if g["sources"]]
        if not groups:
            continue
        scope = f" ({codec} variants)" if key == "by_resolution" and codec else ""
        lines += ["", f"Flip rate of the model by {title}{scope}:", "",
                  f"| {title} | sources | pairs | "
                  + " | ".join(f"FR d={d}" for d in diffs) + " | FR all |",
                  "|---|---:|---:|" + "---:|" * (len(diffs) + 1)]
        for g in groups:
            f = g["flip"]
            lines.append(f"| {g['name']} | {g['sources']} | {f['pairs']} | "
                         + " | ".join(_num(f[f"d{d}"], True) for d in diffs)
                         + f" | {_num(f['overall'], True)} |")
    w = result.get("srcc_vs_vmaf")
    if w:
        m, p = w["model"], w["psnr"]
        lines += ["", f"SRCC against VMAF within a source ({w['codec'] or 'every codec'}): "
                  f"model {_num(m['within_source'])}, PSNR {_num(p['within_source'])} "
                  f"(mean over {m['sources']} sources); pooled over those variants: model "
                  f"{_num(m['pooled'])}, PSNR {_num(p['pooled'])} ({m['n']} files)."]
    sc = result.get("scale")
    if sc and sc["per_source"]:
        per = sc["per_source"]
        ends = list(per.items())
        ends = ends[:3] + ends[-3:] if len(ends) > 6 else ends
        top = max(((s, b["without"]) for s, b in per.items() if b["without"] is not None),
                  key=lambda sw: sw[1], default=None)
        lines += ["", "Absolute scale: mean score minus target per source "
                  f"({sc['codec'] or 'every codec'} variants), standard deviation "
                  f"{_num(sc['spread'])} across sources; lowest and highest: "
                  + ", ".join(f"{s} {b['bias']:+.2f}" for s, b in ends) + "."
                  + (f" Pooled SRCC {_num(sc['pooled'])}; with one source left out, at most "
                     f"{_num(top[1])} (without {top[0]})." if top else "")]
        if sc.get("pooled_degraded") is not None:
            lines[-1] += (f" Pooled apart: clean sources {_num(sc['pooled_clean'])}, degraded "
                          f"originals {_num(sc['pooled_degraded'])} (their truth differs in "
                          "kind: VMAF against the source itself, or against a clean parent).")
    t = result.get("ties")
    if t:
        lines += ["", f"Ties: {t['count']} of {t['pairs']} pairs of distinct files of one "
                  "source got equal scores (counted as flips above)."]
    d = result.get("degraded_originals")
    if d and (d["count"] or d["missing_parent"]):
        lines += ["", f"Degraded originals scored below their clean parent: "
                  f"{d['below_parent']} of {d['count']} ({_num(d['rate'], True)})"
                  + (f"; {d['missing_parent']} without their parent in this split"
                     if d["missing_parent"] else "") + "."]
    return "\n".join(lines) + "\n"


_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    span = max(hi - lo, 1e-9)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    out, t = [], start
    while t <= hi + step * 1e-6:
        if t >= lo - step * 1e-6:
            out.append(round(t, 10))
        t += step
    return out


def plot_scores(result: dict, path: str | os.PathLike, size: tuple[int, int] = (960, 560)
                ) -> Path:
    """PNG of predicted score against CRF, one line per source (and codec), with a legend.

    Args:
        result: the dict from :func:`evaluate`.
        path: the PNG to write.
        size: ``(width, height)`` in pixels.
    """
    from cpllm_plugin.errors import require

    require("PIL", "train", "plot_scores()")
    from PIL import Image, ImageDraw

    lines: dict[str, list[tuple[int, float]]] = {}
    codecs = {v["codec"] for v in result["videos"] if v["crf"] is not None}
    for v in result["videos"]:
        if v["crf"] is not None and v["score"] is not None:
            label = v["source"] + (f" ({v['codec']})" if len(codecs) > 1 else "")
            lines.setdefault(label, []).append((v["crf"], v["score"]))
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    from cpllm_plugin.integrations.plot import font as _font
    from cpllm_plugin.integrations.plot import scale

    font, small = _font(15), _font(12)
    left, right, top, bottom = 70, 230, 48, 58
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    d.text((left, 14), f"{result['model']}: predicted score vs CRF "
           f"(split {result['split']})", fill="black", font=font)
    if not lines:
        d.text((x0 + 10, (y0 + y1) // 2), "no variants with a CRF in this split",
               fill="black", font=font)
        img.save(path)
        return Path(path)
    crfs = [c for pts in lines.values() for c, _ in pts]
    ys = [s for pts in lines.values() for _, s in pts]
    px, (cx0, cx1, sy0, sy1) = scale((x0, y0, x1, y1), crfs, ys, 0.08, 0.02)
    grid = (225, 225, 225)
    for t in _ticks(sy0, sy1):
        y = px(cx0, t)[1]
        d.line([(x0, y), (x1, y)], fill=grid)
        d.text((x0 - 8, y), f"{t:g}", fill="black", font=small, anchor="rm")
    for t in _ticks(cx0, cx1, 10):
        if t != int(t):
            continue
        x = px(t, sy0)[0]
        d.line([(x, y0), (x, y1)], fill=grid)
        d.text((x, y1 + 6), f"{int(t)}", fill="black", font=small, anchor="mt")
    d.rectangle([x0, y0, x1, y1], outline="black")
    d.text(((x0 + x1) / 2, h - 18), "CRF", fill="black", font=font, anchor="mm")
    d.text((12, (y0 + y1) / 2 - 60), "score", fill="black", font=font)
    for n, (label, pts) in enumerate(sorted(lines.items())):
        color = _PALETTE[n % len(_PALETTE)]
        xy = [px(c, s) for c, s in sorted(pts)]
        if len(xy) > 1:
            d.line(xy, fill=color, width=2)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        ly = y0 + 6 + n * 20
        if ly < y1:
            d.line([(x1 + 14, ly + 7), (x1 + 40, ly + 7)], fill=color, width=3)
            d.text((x1 + 46, ly), label[:24], fill="black", font=small)
    img.save(path)
    return Path(path)


def write_report(result: dict, out_dir: str | os.PathLike,
                 json_out: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``scores_vs_crf.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": Path(json_out) if json_out else out / "eval.json",
             "markdown": out / "eval.md", "plot": out / "scores_vs_crf.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(markdown_table(result))
    plot_scores(result, paths["plot"])
    return paths

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
  their own values), for context. A baseline is not correlated with itself.

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

from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.hashing import sha256_file

from .manifest import Item, ManifestError, read_manifest, resolve
from .metrics import FLIP_DIFFS, flip_rate, plcc, srcc
from .variants import progress_printer

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.replace(self.path)


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


def _row(name: str, kind: str, values: list[float | None], items: list[Item],
         truth: list[float | None], truth_name: str) -> dict:
    pairs, seen = [], set()
    for v, t, i in zip(values, truth, items, strict=True):
        if v is not None and t is not None and (i.source, i.sha256) not in seen:
            seen.add((i.source, i.sha256))  # an identical file (CRF 53 = 51) counts once
            pairs.append((v, t))
    groups: dict[tuple[str, str], list] = {}
    for v, i in zip(values, items, strict=True):
        if v is not None and not i.original and i.crf is not None:
            groups.setdefault((i.source, i.codec or ""), []).append((i.crf, v, i.sha256))
    row = {"name": name, "kind": kind, "n": len(pairs), "srcc": None, "plcc": None,
           "flip": flip_rate(groups.values())}
    if name.lower() == truth_name:
        row["note"] = "the reference of the correlations"
    elif len(pairs) >= 2:
        row["srcc"] = srcc(*zip(*pairs, strict=True))
        row["plcc"] = plcc(*zip(*pairs, strict=True))
    return row


def evaluate(model, manifest: str | os.PathLike, key_frames: int | None = None,
             backend="auto", split: str | None = "dev",
             cache: str | os.PathLike | None = None,
             progress: Callable[[str], None] | bool = True) -> dict:
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

    Returns:
        A JSON-ready dict: ``model``, ``backend``, ``split``, ``truth`` (``"mos"`` or
        ``"vmaf"``), ``rows`` (the model, then VMAF and PSNR: ``srcc``, ``plcc``, ``n``,
        ``flip``) and ``videos`` (one entry per row of the split with its score).
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

    has_mos = any(i.mos is not None for i in items)
    truth_name = "mos" if has_mos else "vmaf"
    truth = [i.mos if has_mos else i.vmaf for i in items]
    rows = [
        _row(m.id, "model", scores, items, truth, truth_name),
        _row("VMAF", "full-reference", [i.vmaf for i in items], items, truth, truth_name),
        _row("PSNR", "full-reference", [i.psnr for i in items], items, truth, truth_name),
    ]
    videos = [{"path": i.path, "source": i.source, "original": i.original, "codec": i.codec,
               "crf": i.crf, "sha256": i.sha256, "score": s, "mos": i.mos, "vmaf": i.vmaf,
               "psnr": i.psnr, "pseudo": i.pseudo} for i, s in zip(items, scores, strict=True)]
    return _clean({
        "type": "evaluation", "model": m.id, "backend": m.backend.name,
        "manifest": str(manifest), "split": split or "all", "key_frames": count,
        "truth": truth_name, "sources": len({i.source for i in items}), "videos_n": len(items),
        "flip_diffs": list(FLIP_DIFFS), "rows": rows, "videos": videos,
    })


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


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


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
    cx0, cx1 = min(crfs) - 1, max(crfs) + 1
    pad = max((max(ys) - min(ys)) * 0.08, 0.02)
    sy0, sy1 = min(ys) - pad, max(ys) + pad

    def px(c: float, s: float) -> tuple[float, float]:
        return (x0 + (c - cx0) / (cx1 - cx0) * (x1 - x0),
                y1 - (s - sy0) / (sy1 - sy0) * (y1 - y0))

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

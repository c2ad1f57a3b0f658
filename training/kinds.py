"""Train the kind-of-footage head (``kind.json``, read by :mod:`cpllm_plugin.footage`).

One command rebuilds it from a corpus built by ``cpllm-corpus``::

    python -m cpllm_plugin.training.kinds --corpus data/corpus --out cpllm_plugin/models/cpllm-lite

Steps, each resumable (files under ``--work``, default ``CORPUS/kinds``):

1. variants: every train source's original (those of ``sources.jsonl`` and of
   ``kind_sources.jsonl``, the real camera clips kept for this head only), libx264
   (veryfast) at CRF 23, 35 and 45 and a half-size copy (CRF 23), so the head holds up on
   degraded input; every dev source's original and CRF 30 and 42 (preset medium; what
   ``bench/bench_kinds.py`` reports).
2. features: :func:`cpllm_plugin.footage.video_features` of each video's key frames, the very
   function ``describe()`` calls, cached one ``.npy`` per video.
3. fit: softmax regression with L2 on train sources only, class-balanced, on the main
   principal components of the encoder channels and the pixel statistics; the number of
   components, the L2 strength and the confidence threshold are chosen by cross-validation
   grouped by source content: the setting with the best class-balanced log-loss, then the
   lowest threshold at which at least 90% of the named are right, counted per video and
   class-balanced
   (a degraded original with its parent, photos shared by a pan and a slideshow), never on
   dev.

Class of each source: the style word of its corpus tag (:data:`CLASS_OF_STYLE`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpllm_plugin.configs import DEFAULT_MODEL
from cpllm_plugin.console import progress_printer
from cpllm_plugin.errors import CpllmError, message

from .manifest import read_manifest

# Corpus style word (training/describe.py STYLES) -> kind (cpllm_plugin.footage.KINDS).
CLASS_OF_STYLE = {"camera": "camera", "cgi": "animation", "animation": "animation",
                  "screen": "screen", "game": "game", "photo pan": "still",
                  "painting": "still", "slideshow": "slideshow"}

# (name, CRF or None for the original, scale of the frame size)
TRAIN_VARIANTS = (("orig", None, 1), ("crf23", 23, 1), ("crf35", 35, 1), ("crf45", 45, 1),
                  ("half", 23, 2))
DEV_VARIANTS = (("orig", None, 1), ("crf30", 30, 1), ("crf42", 42, 1))
# Train variants encode at veryfast (a quarter of medium's time on 2 cores); dev keeps the
# table's preset, so the dev numbers are on encodes the head was not tuned to.
TRAIN_PRESET = "veryfast"
LAMBDAS = (3.0, 10.0, 30.0, 100.0, 300.0)
COMPONENTS = (8, 16, 32)  # principal components of the encoder channels the fit sees
TARGET = 0.9  # right among the named, class-balanced, out of fold
FOLDS = 5


class KindsError(CpllmError, RuntimeError):
    """The kind head cannot be trained from what was given."""


@dataclass(frozen=True)
class Video:
    source: str
    split: str
    kind: str
    variant: str
    path: Path
    group: str


def kind_of_tag(tag: str | None) -> str | None:
    """The kind of a corpus tag such as ``"photo pan: a cup"``; None without a style word."""
    from .describe import split_tag

    style, _ = split_tag(tag)
    return CLASS_OF_STYLE.get(style) if style else None


def content_groups(sources: Sequence[str]) -> dict[str, str]:
    """``{source: group}``: sources made from the same picture or file share a group (a
    degraded original with its parent, a slideshow with the pans of its photos), so
    cross-validation never sees one content on both sides."""
    from .corpus import Clip, Degraded, Pan, Slideshow, recipe

    rec = recipe()
    parent = {s: s for s in sources}

    def root(s):
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    by_key: dict[str, str] = {}
    for s in sources:
        r = rec.get(s)
        keys = ([r.parent] if isinstance(r, Degraded) else list(r.images)
                if isinstance(r, Slideshow) else [r.image] if isinstance(r, Pan)
                else [r.member] if isinstance(r, Clip) and "moviepy" not in r.package
                else [])
        if isinstance(r, Clip) and r.scene:  # takes of one scene in different files
            keys.append("scene:" + r.scene)
        if isinstance(r, Degraded) and r.parent in parent:
            parent[root(s)] = root(r.parent)
            continue
        for k in keys:
            if k in by_key:
                parent[root(s)] = root(by_key[k])
            else:
                by_key[k] = s
    return {s: root(s) for s in sources}


def plan(corpus: Path, work: Path, splits: Sequence[str] = ("train", "dev")) -> list[Video]:
    """The videos of each split's sources (see the module's doc), with their kinds: those of
    ``sources.jsonl`` and, where the corpus has one, of the sources for this head only
    (``kind_sources.jsonl``, :attr:`~.corpus.Clip.kinds_only`)."""
    from .corpus import KIND_MANIFEST

    rows = read_manifest(corpus / "sources.jsonl")
    if (corpus / KIND_MANIFEST).is_file():
        rows += read_manifest(corpus / KIND_MANIFEST)
    rows = [r for r in rows if r.original]
    rows = [r for r in rows if r.split in splits]
    if not rows:
        raise KindsError(message(str(corpus / "sources.jsonl"), f"originals of {list(splits)}",
                                 "none", "build the corpus first: cpllm-corpus DATA"))
    groups = content_groups([r.source for r in rows])
    out = []
    for r in rows:
        kind = kind_of_tag(r.tag)
        if kind is None:
            continue
        for name, crf, _ in (TRAIN_VARIANTS if r.split == "train" else DEV_VARIANTS):
            path = (corpus / r.path if crf is None
                    else work / "videos" / r.source / f"{name}.mp4")
            out.append(Video(r.source, r.split, kind, name, path, groups[r.source]))
    return out


def _variant(v: Video) -> tuple[int | None, int]:
    table = dict((n, (c, s)) for n, c, s in (*TRAIN_VARIANTS, *DEV_VARIANTS))
    return table[v.variant]


def make_videos(videos: Sequence[Video], corpus: Path, jobs: int = 1,
                say: Callable[[str], None] = print) -> int:
    """Encode the variants not yet on disk; returns how many were made."""
    from concurrent.futures import ThreadPoolExecutor

    from cpllm_plugin.files import atomic

    from .variants import _run_ffmpeg, encode, encode_args, find_ffmpeg

    originals = {v.source: v.path for v in videos if v.variant == "orig"}
    todo = [v for v in videos if v.variant != "orig" and not v.path.is_file()]
    exe = find_ffmpeg(None)

    def one(v: Video) -> None:
        crf, scale = _variant(v)
        v.path.parent.mkdir(parents=True, exist_ok=True)
        src = originals[v.source]
        preset = TRAIN_PRESET if v.split == "train" else None
        if scale == 1:
            encode(src, v.path, crf, "libx264", preset=preset, ffmpeg=exe, threads=1)
        else:
            f = f"scale=trunc(iw/{2 * scale})*2:trunc(ih/{2 * scale})*2"
            atomic(v.path, lambda tmp: _run_ffmpeg(encode_args(
                exe, src, tmp, crf, "libx264", preset=preset, threads=1, pix_fmt="yuv420p",
                vfilter=f,
                inputs=["-threads", "1"], streams=["-an", "-map_metadata", "-1"], fmt="mp4"),
                f"downscale {v.source}"))

    t = time.time()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for i, _ in enumerate(pool.map(one, todo), 1):
            if i % 20 == 0 or i == len(todo):
                say(f"variants: {i}/{len(todo)} encoded ({time.time() - t:.0f} s)")
    return len(todo)


def pixel_version() -> str:
    """Names the pixel statistics, so a change to them is recomputed, not read stale."""
    import hashlib

    from cpllm_plugin import footage

    text = json.dumps([footage.PIXEL_FEATURES, footage.WORK, PIXEL_REVISION])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


PIXEL_REVISION = 1  # bump when footage.pixel_stats computes differently under the same names


def feature_paths(v: Video, work: Path) -> tuple[Path, Path]:
    """Where a video's two feature parts are cached: encoder (pooled tokens) and pixels."""
    d = work / "features" / v.source
    return d / f"{v.variant}.ctx.npy", d / f"{v.variant}.pix-{pixel_version()}.npy"


def extract(videos: Sequence[Video], work: Path, model=DEFAULT_MODEL,
            say: Callable[[str], None] = print) -> np.ndarray:
    """``(N, F)`` features of ``videos`` (:func:`cpllm_plugin.footage.video_features`, in its
    two parts), read from the cache or computed and cached."""
    from cpllm_plugin import footage
    from cpllm_plugin.api import load_model
    from cpllm_plugin.files import atomic

    def save(p: Path, x: np.ndarray) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic(p, lambda tmp: np.save(open(tmp, "wb"), x))

    m = None
    rows, t, made = [], time.time(), 0
    for v in videos:
        pc, pp = feature_paths(v, work)
        if not (pc.is_file() and pp.is_file()):
            if m is None:
                m = load_model(model, backend="torch", device="cpu")
            k = m.key_frames(str(v.path), where="kinds")
            if not pc.is_file():
                save(pc, footage.decoder_context(m, k.frames))
            if not pp.is_file():
                save(pp, footage.pixel_stats(k.frames))
            made += 1
            if made % 20 == 0:
                say(f"features: {made} videos ({(time.time() - t) / made:.2f} s each)")
        rows.append(np.concatenate([np.load(pc), np.load(pp)]))
    if made:
        say(f"features: {made} videos in {time.time() - t:.0f} s "
            f"({(time.time() - t) / made:.2f} s each), {len(videos) - made} cached")
    return np.stack(rows)


# --- the fit ----------------------------------------------------------------------------------


def class_weights(y: np.ndarray, groups: Sequence[str], n_classes: int) -> np.ndarray:
    """Per-sample weights: each class weighs the same in total, and within a class each
    source group the same (one photo's five variants are one example, not five)."""
    groups = np.asarray(groups)
    w = np.zeros(len(y))
    present = [c for c in range(n_classes) if (y == c).any()]
    for c in present:
        idx = np.flatnonzero(y == c)
        gs = np.unique(groups[idx])
        for g in gs:
            j = idx[groups[idx] == g]
            w[j] = 1.0 / (len(gs) * len(j))
    return w * len(y) / w.sum()


def fit_softmax(X: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int, lam: float,
                steps: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(F, C)`` and bias ``(C,)`` of a softmax regression on standardised ``X``:
    weighted cross-entropy + ``lam / 2 * |W|^2`` (mean over samples), by Adam."""
    n, f = X.shape
    W, b = np.zeros((f, n_classes)), np.zeros(n_classes)
    Y = np.eye(n_classes)[y]
    mw, vw, mb, vb = (np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b))
    lr, b1, b2 = 0.05, 0.9, 0.999
    wn = (w / w.sum())[:, None]
    for t in range(1, steps + 1):
        z = X @ W + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - Y) * wn
        gW = X.T @ g + lam / n * W
        gb = g.sum(axis=0)
        mw = b1 * mw + (1 - b1) * gW
        vw = b2 * vw + (1 - b2) * gW ** 2
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb ** 2
        step = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        W -= step * mw / (np.sqrt(vw) + 1e-8)
        b -= step * mb / (np.sqrt(vb) + 1e-8)
    return W, b


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    return mean, np.where(scale > 1e-6, scale, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def folds(groups: Sequence[str], y: np.ndarray, k: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Fold of each sample: whole groups, spread so every class lands in several folds."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(groups), int)
    uniq = list(dict.fromkeys(groups))
    first = {g: int(y[np.flatnonzero(groups == g)[0]]) for g in uniq}
    at = 0
    for c in sorted(set(first.values())):
        gs = [g for g in uniq if first[g] == c]
        rng.shuffle(gs)
        for g in gs:
            fold[groups == g] = at % k
            at += 1
    return fold


def fit_head(X: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int, lam: float,
             k: int, context_dim: int):
    """Softmax on the first ``k`` principal components of the standardised encoder channels
    (``X[:, :context_dim]``) and the standardised pixel statistics: 1280 channels from 70
    groups of sources overfit, their main directions do not. Every step is linear, so the
    result folds back into one ``(mean, scale, weights (F, C), bias)`` on raw features."""
    mean, scale = standardise(X)
    Z = (X - mean) / scale
    _, _, vt = np.linalg.svd(Z[:, :context_dim], full_matrices=False)
    k = min(k, len(vt))
    proj = np.zeros((X.shape[1], k + X.shape[1] - context_dim))
    proj[:context_dim, :k] = vt[:k].T
    proj[context_dim:, k:] = np.eye(X.shape[1] - context_dim)
    R = Z @ proj
    m2, s2 = standardise(R)
    W, b = fit_softmax((R - m2) / s2, y, w, n_classes, lam)
    Wf = proj @ (W / s2[:, None])
    return mean, scale, Wf, b - (m2 / s2) @ W


def out_of_fold(X, y, groups, n_classes, lam, k=32, context_dim=None, folds_k=None
                ) -> np.ndarray:
    """Probabilities of every train sample from a head fitted without its fold."""
    groups = np.asarray(groups)
    context_dim = X.shape[1] if context_dim is None else context_dim
    n = min(folds_k or FOLDS, len(set(groups)))
    f = folds(groups, y, n)
    P = np.zeros((len(y), n_classes))
    for i in range(n):
        tr, te = f != i, f == i
        mean, scale, W, b = fit_head(X[tr], y[tr], class_weights(y[tr], groups[tr], n_classes),
                                     n_classes, lam, k, context_dim)
        P[te] = _softmax((X[te] - mean) / scale @ W + b)
    return P


def choose_threshold(P: np.ndarray, y: np.ndarray, w: np.ndarray, target: float = TARGET
                     ) -> tuple[float, float, float]:
    """The lowest confidence threshold whose named answers are right at least ``target`` of
    the time, class-balanced (``w``) and plain; returns it, the balanced share named and the
    balanced share right among the named."""
    conf, right = P.max(axis=1), P.argmax(axis=1) == y
    best = (1.0, 0.0, 1.0)
    for t in np.unique(np.round(conf, 3)):
        named = conf >= t
        if not named.any():
            continue
        prec_w = (w * right)[named].sum() / w[named].sum()
        if prec_w >= target and right[named].mean() >= target:
            return float(t), float(w[named].sum() / w.sum()), float(prec_w)
    return best


def summary(P: np.ndarray, y: np.ndarray, classes: Sequence[str], threshold: float) -> dict:
    """Per class: videos, share named, share right among named, and what they were named."""
    conf, top = P.max(axis=1), P.argmax(axis=1)
    out = {}
    for c, name in enumerate(classes):
        i = y == c
        if not i.any():
            continue
        named = i & (conf >= threshold)
        out[name] = {"videos": int(i.sum()), "named": float(named.sum() / i.sum()),
                     "right": (float((top[named] == c).mean()) if named.any() else None),
                     "as": {classes[j]: int((top[named] == j).sum())
                            for j in range(len(classes)) if (top[named] == j).any()}}
    named = conf >= threshold
    out["all"] = {"videos": len(y), "named": float(named.mean()),
                  "right": float((top[named] == y[named]).mean()) if named.any() else None}
    return out


def train(X: np.ndarray, videos: Sequence[Video], context_dim: int,
          lambdas: Sequence[float] | None = None, components: Sequence[int] | None = None,
          say: Callable[[str], None] = print):
    """Fit the head on ``videos`` (train split) and return it with the cross-validation."""
    from cpllm_plugin import footage

    classes = tuple(k for k in footage.KINDS if any(v.kind == k for v in videos))
    y = np.array([classes.index(v.kind) for v in videos])
    groups = [v.group for v in videos]
    w = class_weights(y, groups, len(classes))
    scores = {}
    for k in components or COMPONENTS:
        for lam in lambdas or LAMBDAS:
            P = out_of_fold(X, y, groups, len(classes), lam, k, context_dim)
            nll = float(-(w * np.log(P[np.arange(len(y)), y] + 1e-12)).sum() / w.sum())
            acc = float((w * (P.argmax(axis=1) == y)).sum() / w.sum())
            thr = choose_threshold(P, y, w)
            scores[(k, lam)] = (nll, acc, P, thr)
            say(f"cv: {k} components, lambda {lam:g}: balanced log-loss {nll:.3f}, "
                f"balanced accuracy {acc:.3f}; at threshold {thr[0]:.3f} named {thr[1]:.1%} "
                f"(balanced), right {thr[2]:.1%}")
    # The setting with the best log-loss (a proper score, so it rewards honest
    # probabilities), then its own threshold. Picking the setting that names the most at
    # the target instead takes the luckiest of 15 threshold estimates: on train it named
    # more, on dev its named were right 83% of the time (docs/model-card.md).
    k, lam = min(scores, key=lambda key: scores[key][0])
    P = scores[(k, lam)][2]
    threshold, named, right = scores[(k, lam)][3]
    say(f"cv: {k} components, lambda {lam:g}, threshold {threshold:.3f}: named {named:.1%} "
        f"(balanced), right {right:.1%} of those named")
    mean, scale, W, b = fit_head(X, y, w, len(classes), lam, k, context_dim)
    cv = {"components": k, "lambda": lam, "threshold": threshold, "balanced_named": named,
          "balanced_right": right, "per_kind": summary(P, y, classes, threshold),
          "grid": {f"{kk}/{ll:g}": {"log_loss": v[0], "accuracy": v[1], "threshold": v[3][0],
                                     "named": v[3][1], "right": v[3][2]}
                   for (kk, ll), v in scores.items()}}
    return classes, mean, scale, W, b, threshold, (k, lam), cv


def build(corpus: str | os.PathLike, out: str | os.PathLike, work: str | os.PathLike | None = None,
          model: str = DEFAULT_MODEL, jobs: int = 1,
          progress: Callable[[str], None] | bool = True) -> dict:
    """Make the variants, extract the features, fit and write ``out/kind.json``."""
    from cpllm_plugin import footage
    from cpllm_plugin.configs import get_config

    say = progress_printer(progress)
    corpus, out = Path(corpus), Path(out)
    work = Path(work) if work else corpus / "kinds"
    cost = {}
    t = time.time()
    videos = plan(corpus, work, ("train",))
    per_kind = {k: len({v.group for v in videos if v.kind == k}) for k in footage.KINDS}
    per_kind = {k: n for k, n in per_kind.items() if n}
    if len(per_kind) < 2 or min(per_kind.values()) < 2:
        raise KindsError(message(
            f"kinds.build({str(corpus)!r})", "train sources of at least two kinds of footage, "
            "each from two different pictures or files", f"{per_kind}",
            "build the whole corpus (cpllm-corpus) or tag more sources"))
    made = make_videos(videos, corpus, jobs, say)
    cost["variants"] = time.time() - t
    say(f"step variants: {made} encoded, {cost['variants']:.0f} s")
    t = time.time()
    X = extract(videos, work, model, say)
    cost["features"] = time.time() - t
    say(f"step features: {len(videos)} videos, {cost['features']:.0f} s")
    t = time.time()
    context_dim = X.shape[1] - len(footage.PIXEL_FEATURES)
    classes, mean, scale, W, b, threshold, (k, lam), cv = train(X, videos, context_dim, say=say)
    cost["fit"] = time.time() - t
    say(f"step fit: {cost['fit']:.0f} s")
    from cpllm_plugin.configs import MODELS
    from cpllm_plugin.modeldir import read_config

    backbone = (get_config(model) if model in MODELS else read_config(model)[0]).high.backbone
    sources = sorted({v.source for v in videos})
    head = footage.Head(classes, mean, scale, W, b, threshold, backbone, context_dim, {
                            "trained_on": f"{len(sources)} train sources of the corpus "
                                          f"(training/split.json), {len(videos)} videos: "
                                          + ", ".join(n for n, _, _ in TRAIN_VARIANTS),
                            "components": k, "lambda": lam,
                            "cv_balanced_named": round(cv["balanced_named"], 4),
                            "cv_balanced_right": round(cv["balanced_right"], 4),
                            "features": "mean high-level tokens of the middle key frame, "
                                        "then " + ", ".join(footage.PIXEL_FEATURES),
                            "recipe": "python -m cpllm_plugin.training.kinds"})
    path = footage.save_head(head, out)
    say(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    report = {"cv": cv, "cost_s": cost, "classes": list(classes)}
    (work / "cv.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cpllm_plugin.training.kinds",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="data/corpus", help="folder built by cpllm-corpus")
    ap.add_argument("--out", default=None,
                    help="model directory to write kind.json into (default: the packaged "
                         "cpllm-lite)")
    ap.add_argument("--work", default=None, help="variants and features (default CORPUS/kinds)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model whose encoder is read")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="encodes at a time")
    a = ap.parse_args(argv)
    from cpllm_plugin.configs import packaged

    out = a.out or packaged(DEFAULT_MODEL)
    try:
        build(a.corpus, out, a.work, a.model, a.jobs)
    except CpllmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

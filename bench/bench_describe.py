"""Descriptions of the same dev variants by several model directories, counted side by side.

    python bench/bench_describe.py cpllm_plugin/models/cpllm-lite other/model --data data/full

Every model describes the same ``--count`` libx264 dev variants (spread evenly over the
shipped graph's scores, as ``cpllm-recipe --stage eval`` picks them) with the same scores
(the shipped graph's, through ONNX Runtime), so only the adapter and its prompt differ. Per
model: how many name their score's band, are at most one band off, have three sentences,
name the frames' format, name the kind of footage of the source's tag, and share a content
word with the tag (``training.cached.describe_agreement``). Needs the recipe's dev ladders
(``cpllm-recipe --stage corpus --stage ladder``). Progress on stderr; ``--json`` writes every
description.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from machine import describe  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ("agree", "near", "three_sentences", "format", "kind", "content")


@click.command()
@click.argument("models", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "data" / "recipe", help="The recipe's data folder.")
@click.option("--count", type=click.IntRange(1), default=30, show_default=True,
              help="Dev variants described by each model.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the counts and every description here.")
def main(models, data, count, json_out):
    """The same dev variants described by each of MODELS (model directories)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    import cpllm_plugin
    from cpllm_plugin.model import io
    from cpllm_plugin.training.cached import describe_agreement
    from cpllm_plugin.training.manifest import Item, read_manifest

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    dev = data / "ladder-dev" / "manifest.jsonl"
    if not dev.is_file():
        sys.exit(f"missing {dev}: run cpllm-recipe --data {data} --stage corpus --stage ladder")
    rows = read_manifest(dev)
    tags = {i.source: i.tag for i in rows if i.original}
    pool = [Item(i.path, i.source, split="dev", tag=tags.get(i.source)) for i in rows
            if not i.original and i.codec == "libx264"]
    shipped = cpllm_plugin.load_model(cpllm_plugin.DEFAULT_MODEL, backend="onnxruntime")
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    say(f"scoring {len(pool)} dev variants with {shipped.id} to pick {count}")
    scores = np.array([shipped.score(str(dev.parent / i.path)).score for i in pool])
    order = np.argsort(scores)
    pick = order[np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int)]
    items, picked = [pool[i] for i in pick], scores[pick].tolist()
    report = {"machine": describe(), "scored_by": shipped.id, "models": {}}
    for path in models:
        model = io.load(path, with_decoder=True).eval()
        res = describe_agreement(model, dev, items, picked, count=len(items), progress=say)
        report["models"][str(path)] = res
    click.echo(f"# {len(items)} libx264 dev variants, scores by {shipped.id}; "
               f"{report['machine']['cpu']}, {report['machine']['cores']} cores")
    click.echo(f"{'model':<40} " + " ".join(f"{c:>15}" for c in COUNTS))
    for name, res in report["models"].items():
        click.echo(f"{name[-40:]:<40} " + " ".join(
            f"{res[c]:>10} / {res['tagged' if c in ('kind', 'content') else 'n']:<2}"
            for c in COUNTS))
    if json_out:
        json_out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""What the content sentence can say: the ImageNet groups of ``cpllm_plugin.text`` on every
original of the corpus, beside each source's tag.

    python bench/bench_content.py --corpus data/recipe/corpus [--json data/content.json]

For each group (``text.GROUPS``): its threshold, and the train originals whose summed
probability comes within 0.3 of it (at most 8), highest first, each with its tag, so the
rule that set the thresholds can be read off: the highest train source the phrase is false
for, plus 0.2 (docs/experiments.md, "Content from the ImageNet head"). Then every dev
original with the groups ``describe()`` would name and its tag. The probabilities are the
key frames' mean, as ``describe()`` computes them (centre squares at 224 through the frozen
encoder's head).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


@click.command()
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=ROOT / "data" / "recipe" / "corpus", help="Folder built by cpllm-corpus.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write every original's group scores here.")
@click.option("--window", type=float, default=0.3, show_default=True,
              help="List train originals scoring at least threshold minus this.")
@click.option("--top", type=int, default=8, show_default=True,
              help="At most this many of them per group.")
def main(corpus: Path, json_out: Path | None, window: float, top: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import cpllm_plugin
    from cpllm_plugin import text

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = [json.loads(line) for line in (corpus / "sources.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("original", True)]
    m = cpllm_plugin.load_model(cpllm_plugin.DEFAULT_MODEL, "torch")
    net = m.backend.net
    for n, r in enumerate(rows):
        k = m.key_frames(str(corpus / r["path"]), where="bench_content")
        prob = net.content_probabilities(k.frames)
        if prob is None:
            sys.exit(f"{m.id}: its encoder has no ImageNet head; nothing to name")
        p = prob.float().mean(0).numpy()
        r["groups"] = text.group_scores(p)
        r["named"] = [g.name for g in text.content_groups(p)]
        click.echo(f"[{n + 1}/{len(rows)}] {r['source']}: {r['named']}", err=True)
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    click.echo(f"# {m.id}: {len(train)} train and {len(dev)} dev originals")
    for g in text.GROUPS:
        near = sorted((r for r in train if r["groups"][g.name] >= g.threshold - window),
                      key=lambda r: -r["groups"][g.name])
        click.echo(f"\n## {g.name} ({g.phrase!r}): threshold {g.threshold:.2f}")
        for r in near[:top]:
            mark = "named" if r["groups"][g.name] >= g.threshold else "     "
            click.echo(f"  {r['groups'][g.name]:.2f} {mark} {r['source']}: {r['tag']}")
    click.echo("\n## dev originals: what the content sentence names")
    for r in dev:
        said = ", ".join(f"{x} {r['groups'][x]:.2f}" for x in r["named"]) or "-"
        click.echo(f"  {r['source']}: {said}  | {r['tag']}")
    if json_out:
        json_out.write_text(json.dumps({"model": m.id, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

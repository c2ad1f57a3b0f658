"""Descriptions of dev variants: several adapters side by side, or what describe() says checked
against the files and the tags.

    python bench/bench_describe.py cpllm_plugin/models/cpllm-lite other/model --data data/full
    python bench/bench_describe.py --dev-corpus data/corpus --out data/describe-dev

The second form (issue 38) encodes every dev source of the corpus at two libx264 CRFs into
``--out``, describes each variant with the shipped model and checks each sentence against what
is known without the model: the format words against the file's own size and rate, the kind
of footage against the source's tag (per kind: named %, right where named %), every word
(:func:`cpllm_plugin.text.non_words`), the band word against the score's band; it times each
description against today's code path (the decoder writing all three sentences,
``CPLLM.describe_text``) on the same variants in the same process, and against the quality
sentence written alone (without the first two sentences before it). ``--sheet`` saves a contact
sheet: the middle key frame of 30 variants with the content sentence, to be checked by eye.

The first form:

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
CRFS = (23, 38)


@click.command()
@click.argument("models", nargs=-1,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "data" / "recipe", help="The recipe's data folder.")
@click.option("--count", type=click.IntRange(1), default=30, show_default=True,
              help="Dev variants described by each model.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the counts and every description here.")
@click.option("--dev-corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Check describe() on this corpus's dev sources instead.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "data" / "describe-dev", show_default=True,
              help="Where the dev variants, report.json and the contact sheet go.")
@click.option("--old-every", type=click.IntRange(0), default=2, show_default=True,
              help="Time today's code path on every n-th variant (0: never).")
@click.option("--alone-every", type=click.IntRange(0), default=2, show_default=True,
              help="Write the quality sentence alone on every n-th variant (0: never).")
@click.option("--sheet/--no-sheet", default=True, show_default=True,
              help="Save contact-sheet.png of 30 variants with their content sentences.")
@click.option("--only", default=None,
              help="Dev source ids, comma-separated: describe these again and keep the other "
                   "rows of --out's report.json (after a change that touches a few).")
def main(models, data, count, json_out, dev_corpus, out, old_every, alone_every, sheet, only):
    """The same dev variants described by each of MODELS (model directories)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if dev_corpus is not None:
        return truth(dev_corpus, out, old_every, alone_every, sheet,
                     only.split(",") if only else None)
    if not models:
        raise click.UsageError("give MODELS, or --dev-corpus")
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


# --- what describe() says, checked (issue 38) -----------------------------------------


def variants(corpus: Path, out: Path, say) -> list[dict]:
    """Each dev source of ``corpus`` at :data:`CRFS` (libx264, the table's preset), made once."""
    from cpllm_plugin.training.kinds import kind_of_tag
    from cpllm_plugin.training.variants import encode

    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (corpus / "sources.jsonl").read_text().splitlines()]
    found = []
    for r in rows:
        if r["split"] != "dev":
            continue
        for crf in CRFS:
            dst = out / f"{r['source']}_crf{crf}.mp4"
            if not dst.is_file():
                say(f"encoding {dst.name}")
                encode(corpus / r["path"], dst, crf, threads=1)
            found.append({"source": r["source"], "crf": crf, "path": str(dst),
                          "tag": r["tag"], "kind": kind_of_tag(r["tag"])})
    return found


def _old(m, k):
    """Today's describe() after reading the key frames: score, then the decoder writes all
    three sentences (kept as CPLLM.describe_text for training's agreement check)."""
    from cpllm_plugin import api

    result = m.score_key_frames(k)
    visual, facts = api._decoder_inputs(m, k)
    return m.backend.net.describe_text(visual, result.score, facts=facts), result


def truth(corpus: Path, out: Path, old_every: int, alone_every: int, sheet: bool,
          only: list[str] | None = None) -> None:
    import time

    import torch

    import cpllm_plugin
    from cpllm_plugin import api, text
    from cpllm_plugin.configs import frame_format, quality_word
    from cpllm_plugin.footage import KINDS
    from cpllm_plugin.training.describe import quality_word_in
    from cpllm_plugin.video import probe

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    items = variants(corpus, out, say)
    kept: dict = {}
    if only:
        # the other sources' rows stand as measured; n keeps each item's place in the list,
        # so --old-every and --alone-every pick the same variants as a whole run
        kept = {(r["source"], r["crf"]): r
                for r in json.loads((out / "report.json").read_text())["rows"]}
    m = cpllm_plugin.load_model(cpllm_plugin.DEFAULT_MODEL, "torch", decoder=True)
    net = m.backend.net
    cpllm_plugin.describe(items[0]["path"], model=m)  # warm: tokenizer words, kind head
    rows = []
    for n, it in enumerate(items):
        if only and it["source"] not in only:
            rows.append(kept[(it["source"], it["crf"])])
            continue
        info = probe(it["path"])
        t0 = time.perf_counter()
        k = m.key_frames(it["path"], where="bench")
        result, seen, visual, prompt_facts = api._look(m, k)
        first = api._written(seen)
        tries: list = []
        third = net.quality_text(visual, result.score, " ".join(first), prompt_facts,
                                 attempts=tries)
        new_s = time.perf_counter() - t0
        said = " ".join([*first, third])
        row = {**it, "score": result.score, "band": quality_word(result.score), "text": said,
               "seconds": new_s, "kind_named": seen.kind,
               "kind_top": getattr(seen.guess, "top", None),
               "kind_confidence": getattr(seen.guess, "confidence", None),
               "groups": [g.name for g in text.content_groups(seen.content)],
               "width": info.width, "height": info.height, "fps": info.fps,
               "attempts": [list(a) for a in tries],
               "plain": third != (tries[-1][0] if tries else None)}
        # the format, judged against the file's own header, not against format_words
        want = frame_format(info.width, info.height)
        row["format_right"] = f" in {want} format at {text.fps_words(info.fps)}." in first[1]
        shape = "portrait" if info.height > info.width else "square" \
            if info.height == info.width else "landscape"
        row["orientation_right"] = f" {shape} format" in first[1]
        row["non_words"] = text.non_words(said, net.known_words())
        row["band_right"] = quality_word_in(said) == row["band"]
        row["three"] = len(text.sentences_of(said)) == 3
        row["kind_phrase_right"] = (KINDS[seen.kind] in first[1]) if seen.kind else \
            first[1].startswith("It is a video in ")
        if old_every and n % old_every == 0:
            t0 = time.perf_counter()
            k = m.key_frames(it["path"], where="bench")
            old_text, _ = _old(m, k)
            row["old_seconds"] = time.perf_counter() - t0
            row["old_text"] = old_text
            row["old_non_words"] = text.non_words(old_text, net.known_words())
            row["old_band_right"] = quality_word_in(old_text) == row["band"]
        if alone_every and n % alone_every == 0:
            # the quality sentence after nothing, and after the first two sentences in the
            # training descriptions' words (no frame rate)
            style = text.DECODER_STYLES.get(seen.kind, "a video")
            like = f"{first[0]} It is {style} in {frame_format(seen.width, seen.height)} format."
            for name, written in (("alone", ""), ("trainlike", like)):
                tries = []
                said3 = net.quality_text(visual, result.score, written, prompt_facts,
                                         attempts=tries)
                row[name] = said3
                row[f"{name}_band_right"] = quality_word_in(said3) == row["band"]
                row[f"{name}_non_words"] = text.non_words(said3, net.known_words())
                row[f"{name}_plain"] = said3 != tries[-1][0]
                row[f"{name}_attempts"] = [list(a) for a in tries]
        rows.append(row)
        say(f"[{n + 1}/{len(items)}] {it['source']} crf{it['crf']} {new_s:.1f}s "
            f"{row.get('old_seconds', float('nan')):.1f}s: {said}")
        if not only:  # progress; with --only the kept rows stay until the end
            (out / "report.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    report = {"machine": describe(), "model": m.id, "crfs": CRFS, "rows": rows,
              "kinds": summarise(rows)}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    if sheet:
        contact_sheet(m, rows, out / "contact-sheet.png")


def summarise(rows: list[dict]) -> dict:
    """Per kind of the tag (and "all"): counts of each check."""
    out = {}
    for kind in sorted({r["kind"] for r in rows}) + ["all"]:
        rs = [r for r in rows if kind in ("all", r["kind"])]
        named = [r for r in rs if r["kind_named"]]
        timed = [r for r in rs if "old_seconds" in r]
        out[kind] = {
            "n": len(rs), "format": sum(r["format_right"] for r in rs),
            "orientation": sum(r["orientation_right"] for r in rs),
            "kind_named": len(named), "kind_right": sum(r["kind_named"] == r["kind"]
                                                        for r in named),
            "non_words": sum(len(r["non_words"]) for r in rs),
            "band": sum(r["band_right"] for r in rs), "three": sum(r["three"] for r in rs),
            "content_named": sum(bool(r["groups"]) for r in rs),
            "timed": len(timed),
            "all_seconds": sum(r["seconds"] for r in rs),
            "seconds": sum(r["seconds"] for r in timed),
            "old_seconds": sum(r["old_seconds"] for r in timed),
            "old_non_words": sum(len(r["old_non_words"]) for r in timed),
            "old_band": sum(r["old_band_right"] for r in timed),
            "plain": sum(r["plain"] for r in rs),
            "first_try": sum(len(r["attempts"]) == 1 and not r["plain"] for r in rs),
            "alone": sum("alone" in r for r in rs),
        }
        paired = [r for r in rs if "alone" in r]
        for name in ("alone", "trainlike"):
            out[kind][f"{name}_band"] = sum(r[f"{name}_band_right"] for r in paired)
            out[kind][f"{name}_plain"] = sum(r[f"{name}_plain"] for r in paired)
            out[kind][f"{name}_first_try"] = sum(
                len(r[f"{name}_attempts"]) == 1 and not r[f"{name}_plain"] for r in paired)
        out[kind]["follow_on_paired"] = {
            "band": sum(r["band_right"] for r in paired),
            "plain": sum(r["plain"] for r in paired),
            "first_try": sum(len(r["attempts"]) == 1 and not r["plain"] for r in paired)}
    return out


def print_table(report: dict) -> None:
    m = report["machine"]
    click.echo(f"# {len(report['rows'])} libx264 dev variants (CRF {report['crfs']}), "
               f"{report['model']}; {m['cpu']}, {m['cores']} cores, load {m['load_average']}")
    click.echo("| kind | n | format right | orientation right | kind named | right where named "
               "| non-words | band word | content named | s / description (today's) |")
    click.echo("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    pct = lambda a, b: f"{100 * a / b:.0f}%" if b else "–"  # noqa: E731
    for kind, c in report["kinds"].items():
        ratio = c["seconds"] / c["old_seconds"] if c["old_seconds"] else float("nan")
        per = max(c["timed"], 1)
        click.echo(f"| {kind} | {c['n']} | {pct(c['format'], c['n'])} | "
                   f"{pct(c['orientation'], c['n'])} | {pct(c['kind_named'], c['n'])} | "
                   f"{pct(c['kind_right'], c['kind_named'])} | {c['non_words']} | "
                   f"{c['band']} / {c['n']} | {c['content_named']} / {c['n']} | "
                   + (f"{c['seconds'] / per:.1f} ({c['old_seconds'] / per:.1f}; x{ratio:.2f})"
                      if c["timed"] else  # --old-every 0: today's path not timed
                      f"{c.get('all_seconds', 0) / c['n']:.1f} (not timed)") + " |")
    a = report["kinds"]["all"]
    click.echo(f"today's path on {a['timed']}: non-words {a['old_non_words']}, band word "
               f"{a['old_band']} / {a['timed']}")
    click.echo(f"the decoder's quality sentence kept on {a['n'] - a['plain']} / {a['n']} "
               f"(first try {a['first_try']}), the plain one on {a['plain']}")
    f = a["follow_on_paired"]
    click.echo(f"on the same {a['alone']}: after the two sentences: band {f['band']}, plain "
               f"{f['plain']}, first try {f['first_try']}; alone: band {a['alone_band']}, "
               f"plain {a['alone_plain']}, first try {a['alone_first_try']}; after them in the "
               f"training words: band {a['trainlike_band']}, plain {a['trainlike_plain']}, "
               f"first try {a['trainlike_first_try']}")


def contact_sheet(m, rows: list[dict], path: Path, count: int = 30) -> None:
    """The middle key frame of ``count`` variants (spread over the list), each with its
    source, kind guess and content sentence under it, 5 to a row."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from cpllm_plugin import text

    pick = np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int)
    cell, pad, font = (320, 180), 64, ImageFont.load_default(size=13)
    cols = 5
    sheet = Image.new("RGB", (cols * cell[0], -(-len(pick) // cols) * (cell[1] + pad)), "white")
    for j, i in enumerate(pick):
        r = rows[i]
        k = m.key_frames(r["path"], where="sheet")
        frame = Image.fromarray(k.frames[len(k.frames) // 2])
        frame.thumbnail(cell)
        x, y = (j % cols) * cell[0], (j // cols) * (cell[1] + pad)
        sheet.paste(frame, (x + (cell[0] - frame.width) // 2, y))
        content = text.sentences_of(r["text"])[0].removeprefix("The video shows ")
        lines = [f"{j + 1}. {r['source']} crf{r['crf']} [{r['kind_named'] or '-'}]",
                 *_wrap(content, 48)]
        draw = ImageDraw.Draw(sheet)
        for li, line in enumerate(lines[:4]):
            draw.text((x + 4, y + cell[1] + 2 + 15 * li), line, fill="black", font=font)
        rows[i]["sheet"] = j + 1
    sheet.save(path)


def _wrap(s: str, width: int) -> list[str]:
    out, line = [], ""
    for w in s.split():
        if len(line) + len(w) + 1 > width and line:
            out.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return [*out, line] if line else out


if __name__ == "__main__":
    main()

"""Can the model's own embeddings, compared with the source's, find a source's VMAF-95 CRF?

    python bench/bench_reference.py --data data/full                 # the shipped model
    python bench/bench_reference.py --data data/full --model data/full/model

``cpllm-ladder`` has the source at hand, as a VMAF search does, so it could compare each
encode with it in the model's own feature space instead of scoring the encode alone: a
learned full-reference read-out. This measures whether that would land closer to the CRF
where VMAF crosses 95 than the no-reference score does (the ladder's accuracy goal).

Per video, from the recipe's feature cache (``cpllm-recipe --dev-every 1 --stage cache``
builds the dev part): the pooled context embedding ``u`` and pixel embedding ``v`` of each
key frame, and the score. Per encode E of a source S (key frames at the same positions):
the score drop, the distances ``|u_E - u_S|`` and ``|v_E - v_S|`` and the cosine distance
of ``v``. Read-outs fitted to VMAF on the training ladders (ridge; a small MLP) and, for
comparison, one threshold per signal chosen leave-one-source-out on the dev ladders
themselves. Each read-out's crossing of 95 on each clean dev libx264 ladder (its curve made
monotone) is compared with VMAF's own; the fixed-CRF baseline is the median crossing of the
other sources, as in ``bench_ladder.py``. Prints a table to stdout, progress to stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import click  # noqa: E402
import numpy as np  # noqa: E402
from bench_ladder import crossing_crf  # noqa: E402  (bench/ is on sys.path)
from machine import describe  # noqa: E402

from cpllm_plugin.configs import DEFAULT_MODEL, PACKAGED_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def embeddings(model_dir: Path, data: Path) -> dict:
    """Per split: ``u``, ``v`` (N, M, D), scores ``s`` (N, M) and the manifest rows."""
    import torch

    from cpllm_plugin.model import io
    from cpllm_plugin.training.cached import CachedSet, _pixels, eval_mode
    from cpllm_plugin.training.frozen import FROZEN_BLOCKS, FeatureCache
    from cpllm_plugin.training.manifest import read_manifest

    model = io.load(model_dir, with_decoder=False)
    sc = model.scorer
    # The cache is keyed by the frozen weights as trained (float32); a shipped model stores
    # them in float16, so its key differs while its features are the same to rounding.
    fresh = io.build(model.config, with_decoder=False)
    cache = FeatureCache(fresh.scorer, model.config, data / "cache", blocks=FROZEN_BLOCKS,
                         key_frames=model.config.key_frames)
    out = {}
    for split, manifest, codecs in (
            ("train", data / "ladder-train-1s" / "manifest.jsonl",
             {"libx264", "libx265", "libsvtav1"}),
            ("dev", data / "ladder-dev" / "manifest.jsonl", {"libx264"})):
        items = [i for i in read_manifest(manifest) if i.original or i.codec in codecs]
        try:
            cs = CachedSet(manifest, items, cache, FROZEN_BLOCKS)
        except Exception as exc:  # noqa: BLE001 (a bench: say what to build, then stop)
            sys.exit(f"{split}: {exc}\nbuild it: cpllm-recipe --data {data} --dev-every 1 "
                     "--stage cache")
        u, v, s = [], [], []
        with torch.no_grad(), eval_mode(sc):
            for a in range(0, len(items), 16):
                stem = cs.stem[a:a + 16].float()
                n, m = stem.shape[:2]
                uu = sc.high_proj(cs.ctx[a:a + 16].flatten(0, 1))[:, None]
                vv = _pixels(sc, FROZEN_BLOCKS, stem.flatten(0, 1))
                s.append(sc.head_score(uu, vv).view(n, m).numpy())
                u.append(uu[:, 0].view(n, m, -1).numpy())
                v.append(vv.mean(dim=1).view(n, m, -1).numpy())
                print(f"\r{split}: {a + n}/{len(items)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        out[split] = dict(u=np.concatenate(u), v=np.concatenate(v), s=np.concatenate(s),
                          rows=items)
    return out


def pairs(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """Indices of encodes and of their own original; degraded originals' rows are left
    out (their VMAF is against a clean parent, not against the original compared here)."""
    orig = {r.source: i for i, r in enumerate(d["rows"]) if r.original}
    keep = [(i, orig[r.source]) for i, r in enumerate(d["rows"])
            if not r.original and r.reference is None and r.vmaf is not None
            and r.source in orig]
    return np.array([k[0] for k in keep]), np.array([k[1] for k in keep])


def signals(d: dict, e: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    u, v, q = d["u"], d["v"], d["s"]

    def cos(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    qe, qs = q[e].mean(1), q[s].mean(1)
    return {"score drop": qs - qe,
            "pixel embedding distance": np.linalg.norm(v[e] - v[s], axis=-1).mean(1),
            "pixel cosine distance": 1 - cos(v[e], v[s]).mean(1),
            "context distance": np.linalg.norm(u[e] - u[s], axis=-1).mean(1),
            "low score": -qe}


def features(d: dict, e: np.ndarray, s: np.ndarray, kind: str) -> np.ndarray:
    sig = signals(d, e, s)
    q = d["s"]
    scalars = np.stack([*sig.values(), q[s].mean(1)], 1)
    if kind == "scalars":
        return scalars
    v, u = d["v"], d["u"]
    return np.concatenate([(v[e] - v[s]).mean(1), v[s].mean(1), u[s].mean(1), scalars], 1)


def ridge(x: np.ndarray, y: np.ndarray, lam: float):
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    reg = lam * np.eye(z.shape[1])
    reg[-1, -1] = 0
    w = np.linalg.solve(z.T @ z + reg, z.T @ y)
    return lambda xx: np.c_[(xx - mu) / sd, np.ones(len(xx))] @ w


def mlp(x: np.ndarray, y: np.ndarray, steps: int = 3000):
    import torch

    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = torch.tensor((x - mu) / sd, dtype=torch.float32)
    ys = torch.tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(xs.shape[1], 64), torch.nn.ReLU(),
                              torch.nn.Dropout(0.2), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-3)
    for _ in range(steps):
        b = torch.randint(0, len(xs), (256,))
        loss = torch.nn.functional.smooth_l1_loss(net(xs[b]).squeeze(-1), ys[b], beta=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return lambda xx: net(torch.tensor((xx - mu) / sd, dtype=torch.float32)
                          ).squeeze(-1).detach().numpy()


def ladders(d: dict, e: np.ndarray, values: np.ndarray) -> dict[str, list[tuple]]:
    """Per source: sorted ``(crf, vmaf, value)`` of its libx264 encodes."""
    by: dict[str, list[tuple]] = {}
    for k, i in enumerate(e):
        r = d["rows"][i]
        if r.codec == "libx264":
            by.setdefault(r.source, []).append((r.crf, r.vmaf, float(values[k])))
    return {src: sorted(p) for src, p in by.items()}


def predicted_crossing(pts: list[tuple], level: float = 95.0) -> float:
    """Where a predicted VMAF curve (made monotone) falls through ``level``."""
    run, mono = np.inf, []
    for c, _, p in pts:
        run = min(run, p)
        mono.append((c, run))
    return float(pts[0][0]) if mono[0][1] < level else crossing_crf(mono, level)


def threshold_crossing(pts: list[tuple], thr: float) -> float:
    """Where a rising signal (made monotone) first passes ``thr``."""
    crfs = [c for c, _, _ in pts]
    sig = np.maximum.accumulate([x for _, _, x in pts])
    above = np.flatnonzero(sig > thr)
    if not len(above):
        return float(crfs[-1])
    j = above[0]
    if j == 0:
        return float(crfs[0])
    t = (thr - sig[j - 1]) / (sig[j] - sig[j - 1] + 1e-12)
    return crfs[j - 1] + t * (crfs[j] - crfs[j - 1])


def verdict(name: str, truth: dict[str, float], hat: dict[str, float]) -> None:
    d = np.array([hat[s] - truth[s] for s in truth])
    print(f"{name:56} {int((np.abs(d) <= 2).sum()):>3}/{len(d):<3} {np.median(d):+7.1f} "
          f"{np.abs(d).mean():7.1f}")


@click.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "data" / "recipe", help="The recipe's data folder.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              default=PACKAGED_DIR / DEFAULT_MODEL, show_default=True)
def main(data: Path, model_dir: Path) -> None:
    """Full-reference read-outs of the model's embeddings against VMAF's 95 crossing."""
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"# {describe()}")
    emb = embeddings(model_dir, data)
    tr, dv = emb["train"], emb["dev"]
    te, ts = pairs(tr)
    de, ds = pairs(dv)
    y = np.clip([tr["rows"][i].vmaf for i in te], 0, 100)
    truth = {}
    for src, pts in ladders(dv, de, np.zeros(len(de))).items():
        c = crossing_crf([(crf, vm) for crf, vm, _ in pts])
        if c is not None:
            truth[src] = c
    print(f"# {len(te)} training encodes, {len(truth)} clean dev ladders with a crossing")
    print(f"{'read-out':56} {'within 2':>7} {'median':>7} {'mean|d|':>7}")
    fixed = {s: round(float(np.median([c for t, c in truth.items() if t != s])))
             for s in truth}
    verdict("one fixed CRF (median of the other sources)", truth, fixed)
    for kind in ("scalars", "embeddings"):
        xtr, xdv = features(tr, te, ts, kind), features(dv, de, ds, kind)
        for name, fit in ((f"ridge on {kind}, fitted to training VMAF", ridge(xtr, y, 100.0)),
                          (f"MLP on {kind}, fitted to training VMAF", mlp(xtr, y))):
            lad = ladders(dv, de, fit(xdv))
            verdict(name, truth, {s: predicted_crossing(lad[s]) for s in truth})
    for name, sig in signals(dv, de, ds).items():
        lad = ladders(dv, de, sig)
        at = {}  # each source's signal at its own crossing
        for s in truth:
            crfs = [c for c, _, _ in lad[s]]
            at[s] = float(np.interp(truth[s], crfs, np.maximum.accumulate(
                [x for _, _, x in lad[s]])))
        hat = {s: threshold_crossing(lad[s], float(np.median([a for t, a in at.items()
                                                               if t != s])))
               for s in truth}
        verdict(f"{name}, one threshold (leave-one-out)", truth, hat)


if __name__ == "__main__":
    main()

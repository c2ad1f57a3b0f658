"""Preprocessing speed: ms per key frame of ``preprocess.prepare`` at common input sizes.

    python bench/bench_preprocess.py                          # cpllm-lite, 360p to 2160p
    python bench/bench_preprocess.py --placement detail       # the detail placement alone
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/bench_preprocess.py   # one thread

Each size is a random uint8 RGB frame (the resize costs the same for any content), run once
to warm up caches, then timed ``--repeats`` times; the best run is kept, the median shown.
Each patch placement is timed in the same run; ``x grid`` is its time over the grid's.
numpy's BLAS threads follow the environment, so set the thread variables before starting.
The machine is described first. Results go to stdout as a table (or NDJSON with ``--json``).
"""

from __future__ import annotations

import json
import time

import click
from machine import describe  # bench/ is on sys.path: these run as scripts

from cpllm_plugin.configs import DEFAULT_MODEL

SIZES = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920), "2160p": (2160, 3840)}


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Config whose geometry (view, fit, patches) is used.")
@click.option("--size", "sizes", multiple=True, type=click.Choice(list(SIZES)),
              default=list(SIZES), show_default=True, help="Input sizes to measure.")
@click.option("--frames", type=int, default=4, show_default=True,
              help="Key frames per prepare() call.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed calls (best kept).")
@click.option("--placement", "placements", multiple=True, type=click.Choice(["grid", "detail"]),
              default=["grid", "detail"], show_default=True, help="Patch placements to time.")
@click.option("--json", "as_json", is_flag=True, help="NDJSON to stdout.")
def main(model, sizes, frames, repeats, placements, as_json):
    """Measure preprocessing speed of the MODEL geometry on this machine."""
    import dataclasses

    import numpy as np

    from cpllm_plugin.configs import get_config
    from cpllm_plugin.preprocess import prepare

    cfg = get_config(model)
    info = describe()
    threads = " ".join(f"{k}={v}" for k, v in info["threads"].items() if v) or "threads unset"
    click.echo(json.dumps({"type": "machine", **info}) if as_json else
               f"# {info['cpu']}, {info['cores']} cores, load {info['load_average']}, "
               f"numpy {info['numpy']}, {threads}")
    if not as_json:
        click.echo(f"{'size':<6} {'input':>10} {'placement':>9} {'frames/s':>9} "
                   f"{'ms/frame':>9} {'median':>9} {'x grid':>7}")
    rng = np.random.default_rng(0)
    for name in sizes:
        h, w = SIZES[name]
        x = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
        base = None
        for placement in placements:
            geo = dataclasses.replace(cfg, placement=placement)
            prepare(x, geo)  # warm-up: weight caches, allocations
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                prepare(x, geo)
                times.append((time.perf_counter() - t) / frames)
            best, median = min(times), sorted(times)[len(times) // 2]
            base = best if placement == "grid" else base
            row = {"size": name, "height": h, "width": w, "model": model, "frames": frames,
                   "placement": placement, "frames_per_s": 1 / best, "ms_per_frame": 1e3 * best,
                   "median_ms_per_frame": 1e3 * median,
                   "vs_grid": best / base if base else None}
            if as_json:
                click.echo(json.dumps({"type": "bench", **row}))
            else:
                ratio = f"{row['vs_grid']:.2f}" if base else "-"
                click.echo(f"{name:<6} {f'{w}x{h}':>10} {placement:>9} "
                           f"{row['frames_per_s']:>9.1f} {row['ms_per_frame']:>9.1f} "
                           f"{row['median_ms_per_frame']:>9.1f} {ratio:>7}")


if __name__ == "__main__":
    main()

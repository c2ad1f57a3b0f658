"""Scoring speed: frames/s, ms/frame and peak memory for torch and ONNX Runtime (fp32, int8).

    python bench/bench_scoring.py                          # shipped, cpllm-lite, cpllm-paper
    python bench/bench_scoring.py --model shipped --model cpllm-lite --batch 8 --threads 2

Each model is exported once (``cpllm_plugin.export.onnx.export``, parity checked); each
backend then runs in its own spawned process so its peak resident memory (``VmHWM``) is
its own. The model columns time ``Backend.run`` on prepared inputs; the last column times
scoring decoded 1080p frames end to end: ``preprocess.prepare`` plus the run; the column
after it times ``Model.score`` of a 2 s 1080p H.264 clip (decode 5 key frames, prepare, run):
seconds per 5-key-frame variant, what a CRF ladder pays per probe. ``shipped`` is the trained
default model as it ships in the package (its ONNX graph keeps float16-stored weights and
unfolded BatchNorm); ``cpllm-lite`` is a fresh export of the same architecture, the baseline
to read ``shipped`` against in one run. ``cpllm-paper``
is built with random weights at its full size (SigLIP so400m/14 at 448, VideoPrism base on
the patches): no weights of it can be obtained here. The machine is described first. Results
go to stdout as a table (or NDJSON with ``--json``), progress to stderr.

On a GPU, ``--backend torch-cuda`` (and ``onnxruntime-cuda-fp32`` where ``onnxruntime-gpu`` is
installed) time the same calls there; the CPU backends in the same run are their baseline:

    python bench/bench_scoring.py --model shipped --backend torch --backend torch-cuda
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import click
from machine import describe  # bench/ is on sys.path: these run as scripts

from cpllm_plugin.configs import DEFAULT_MODEL, packaged


def machine() -> dict:
    """The machine (see machine.py) plus memory, runtime versions and the GPU."""
    import onnxruntime
    import psutil

    try:
        import torch

        tv, cuda = torch.__version__, (torch.cuda.get_device_name(0)
                                       if torch.cuda.is_available() else None)
    except ImportError:
        tv, cuda = None, None
    return {**describe(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "onnxruntime": onnxruntime.__version__,
            "ort_providers": onnxruntime.get_available_providers(), "torch": tv, "gpu": cuda}


def peak_mib() -> float:
    """Peak resident memory of this process in MiB.

    VmHWM belongs to this process's own address space; ``ru_maxrss`` would also carry the
    parent's peak at fork time (Linux keeps it across exec), i.e. the export's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _random_paper():
    """cpllm-paper at full size with random weights (overrides make the build random)."""
    from cpllm_plugin.configs import BACKBONES, EncoderConfig, get_config

    cfg = get_config("cpllm-paper")
    for side in ("high", "low"):
        enc = getattr(cfg, side)
        # The full-size architecture given as overrides: the loader builds it with random
        # weights instead of asking for a local weights directory.
        full = dict(BACKBONES[enc.backbone].hf_config)
        setattr(cfg, side, EncoderConfig(enc.backbone, overrides=full))
    return cfg


def _clip(folder: Path) -> Path:
    """A 2 s 1080p H.264 clip (a pan across a photo) for the end-to-end column."""
    from fractions import Fraction

    import av
    import numpy as np
    import skimage.data

    img = np.asarray(skimage.data.astronaut())
    big = np.kron(img, np.ones((4, 4, 1), np.uint8))  # 2048x2048
    path = folder / "clip1080.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 1920, 1080, "yuv420p"
        st.time_base = Fraction(1, 25)
        st.options = {"crf": "23", "preset": "veryfast"}
        for i in range(50):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[400:1480, i * 2:i * 2 + 1920]),
                                           format="rgb24")
            f.pts = i
            c.mux(st.encode(f))
        c.mux(st.encode())
    return path


def _export(name: str, folder: Path, say, onnx: bool = True) -> Path:
    from cpllm_plugin.export import onnx as ex
    from cpllm_plugin.model import io

    if name == "shipped":
        found = packaged(DEFAULT_MODEL)
        if found is None:
            raise click.UsageError(f"no trained {DEFAULT_MODEL} in the package (run make model)")
        return found
    if Path(name).is_dir():  # a model directory as it is (torch weights, ONNX graphs)
        return Path(name)

    src = folder / f"{name}-torch"
    cfg = _random_paper() if name == "cpllm-paper" else name
    io.save(io.build(cfg, with_decoder=False), src)
    if not onnx:  # only torch backends asked for
        return src
    out = folder / name
    t = time.perf_counter()
    m = ex.export(src, out, precisions=("fp32", "int8"), key_frames=2, log=say)
    say(f"bench: exported {name} in {time.perf_counter() - t:.0f} s "
        f"(fp32 diff {m['precisions']['fp32']['max_abs_diff']:.2g}, "
        f"int8 diff {m['precisions']['int8']['max_abs_diff']:.2g})")
    return out


def _child(model_dir: str, backend: str, batches: list[int], threads: int, repeats: int,
           clip: str, queue) -> None:
    """Runs in a spawned process: time one backend at each batch size, report peak RSS."""
    import numpy as np

    rows = []
    try:
        if backend.startswith("torch"):
            import torch

            torch.set_num_threads(threads)
            from cpllm_plugin.backends import TorchBackend

            be = TorchBackend(model_dir, device="cuda" if backend == "torch-cuda" else "cpu",
                              batch_size=max(batches))
        else:
            from cpllm_plugin.backends import ORT, OrtBackend

            *_, prec = backend.split("-")
            be = OrtBackend(model_dir, ORT(threads=threads, precision=prec,
                                           batch_size=max(batches),
                                           device="cuda" if "-cuda-" in backend else "cpu"))
        from cpllm_plugin import preprocess

        cfg = be.config
        rng = np.random.default_rng(0)
        hd = np.repeat(rng.integers(0, 256, (1, 1080, 1920, 3), dtype=np.uint8),
                       max(batches), axis=0)  # one draw: no int64 temporary of them all
        from cpllm_plugin.api import Model

        model = Model(model_dir, be)  # scoring a file as score() does, once per backend
        model.score(clip, key_frames=5)
        variant = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.score(clip, key_frames=5)
            variant.append(time.perf_counter() - t)
        for b in batches:
            views = rng.random((b, 3, cfg.view_size, cfg.view_size), dtype=np.float32)
            patches = rng.random((b, cfg.num_patches, 3, cfg.patch_size, cfg.patch_size),
                                 dtype=np.float32)
            be.run(views, patches)  # warm-up: allocations, kernel choice
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                be.run(views, patches)
                times.append(time.perf_counter() - t)
            best = min(times)
            whole = []
            for _ in range(repeats):
                t = time.perf_counter()
                x = preprocess.prepare(hd[:b], cfg, workers=os.cpu_count() or 1)  # as score()
                be.run(x.views, x.patches)
                whole.append(time.perf_counter() - t)
            rows.append({"batch": b, "frames_per_s": b / best, "ms_per_frame": 1e3 * best / b,
                         "variant_1080p_s": min(variant),
                         "with_1080p_prepare_frames_per_s": b / min(whole),
                         "median_ms_per_frame": 1e3 * sorted(times)[len(times) // 2] / b,
                         "peak_rss_mib": peak_mib()})
        queue.put({"rows": rows})
    except Exception as exc:  # reported in the table rather than killing the whole run
        queue.put({"rows": rows, "error": f"{type(exc).__name__}: {exc}"})


@click.command()
@click.option("--model", "models", multiple=True,
              default=["shipped", DEFAULT_MODEL, "cpllm-paper"], show_default=True,
              help="Models to measure ('shipped': the trained model in the package; or a "
                   "model directory).")
@click.option("--backend", "backends", multiple=True, show_default=True,
              default=["torch", "onnxruntime-fp32", "onnxruntime-int8"],
              type=click.Choice(["torch", "onnxruntime-fp32", "onnxruntime-int8", "torch-cuda",
                                 "onnxruntime-cuda-fp32", "onnxruntime-cuda-fp16"]))
@click.option("--batch", "batches", multiple=True, type=int, default=[1, 8, 32],
              show_default=True, help="Key frames per call.")
@click.option("--threads", type=int, default=os.cpu_count(), show_default=True,
              help="Intra-op threads for torch and ONNX Runtime.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs (best kept).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where exports go (default: a temporary folder, removed afterwards).")
@click.option("--json", "as_json", is_flag=True, help="NDJSON to stdout.")
def main(models, backends, batches, threads, repeats, workdir, as_json):
    """Measure scoring speed of MODELS on this machine."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    info = machine()
    click.echo(json.dumps({"type": "machine", **info}) if as_json else
               f"# {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, load "
               f"{info['load_average']}, onnxruntime {info['onnxruntime']}, torch "
               f"{info['torch']}, GPU {info['gpu']}, threads {threads}")
    if not as_json:
        click.echo(f"{'model':<12} {'backend':<17} {'batch':>5} {'frames/s':>9} "
                   f"{'ms/frame':>9} {'peak MiB':>9} {'+1080p prep fr/s':>17} "
                   f"{'s/variant':>9}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        clip = str(_clip(Path(tmp)))
        for name in models:
            model_dir = _export(name, Path(tmp), say,
                                onnx=any(b.startswith("onnxruntime") for b in backends))
            label = Path(name).name if Path(name).is_dir() else name
            for backend in backends:
                q = ctx.Queue()
                p = ctx.Process(target=_child, args=(str(model_dir), backend, list(batches),
                                                     threads, repeats, clip, q))
                p.start()
                res = q.get()
                p.join()
                for r in res["rows"]:
                    if as_json:
                        click.echo(json.dumps({"type": "bench", "model": label,
                                               "backend": backend, "threads": threads, **r}))
                    else:
                        click.echo(f"{label:<12} {backend:<17} {r['batch']:>5} "
                                   f"{r['frames_per_s']:>9.2f} {r['ms_per_frame']:>9.1f} "
                                   f"{r['peak_rss_mib']:>9.0f} "
                                   f"{r['with_1080p_prepare_frames_per_s']:>17.2f} "
                                   f"{r['variant_1080p_s']:>9.2f}")
                if "error" in res:
                    click.echo(f"{label:<12} {backend:<17} error: {res['error']}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Training speed: seconds per step of cpllm-lite's training loop, CPU against CUDA in one run.

    python bench/bench_training.py                      # CPU, and CUDA where there is a GPU
    python bench/bench_training.py --device cuda --batch 8 --batch 128 --steps 6

It runs ``training/train.py``'s own loop (``train()`` on ``training/configs/lite.toml``: all
three losses, LoRA rank 4 on q/k/v, Adam, bf16 autocast on CUDA) over a ladder made here:
pans across photographs at 540x960, 2 s at 25 fps, each encoded at several libx264 CRFs with
a pseudo-score and an 80-character description. The decoder is a random Gemma 3 270M of the
real shape (18 layers, width 640, vocabulary 262,144), so the run needs no weights package and
costs what the real decoder costs; its byte tokenizer turns the description into about as many
tokens as Gemma's would for the recipe's three sentences. Key frames are decoded once and
kept (``cache_frames``), so a step measures the model, not the video decoder; the first step
(allocations, kernel choice, the high encoder's token cache filling) is left out.

Printed per device and batch: seconds per step, samples per second, peak memory, and on CUDA
the speed-up in samples per second over the CPU run of this same process (one batch,
``--cpu-batch``; the shared machines drift by 25% in absolute speed, a ratio does not).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # media.py: pans across photographs, encoded in-process
from bench_scoring import peak_mib  # noqa: E402
from machine import describe  # noqa: E402

GEMMA3_270M_SHAPE = {  # Gemma 3 270M's config, random weights
    "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
    "sliding_window": 512, "vocab_size": 262144,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
}
PHOTOS = ("coffee", "rocket", "astronaut", "chelsea")
CRFS = (18, 26, 34, 42)


def make_ladder(folder: Path) -> Path:
    """4 photos x 4 CRFs of 540x960 pans (50 frames), with scores and descriptions."""
    from media import write_ladder

    return write_ladder(folder, PHOTOS, CRFS, 50, 540, 960,
                        "A slow pan over a photo. Fine detail in the light. "
                        "Some blocking in the flat areas.", mos=lambda crf: 5.0 - (crf - 18) / 8)


def one_run(manifest: Path, out: Path, device: str, batch: int, steps: int,
            micro: int = 0) -> dict:
    import torch

    from cpllm_plugin.training.train import load_config, train

    shape = json.dumps(GEMMA3_270M_SHAPE)
    cfg = load_config(ROOT / "training" / "configs" / "lite.toml", [
        f"manifest={manifest}", f"out={out}", f"device={device}", f"batch_size={batch}",
        f"steps={steps + 1}", f"micro_batch={micro if micro < batch else 0}", "epochs=1",
        "log_every=1", "checkpoint_every=0",
        "cache_frames=true", "cache_dir=", "model_overrides.decoder=tiny-gemma",
        f"model_overrides.decoder_overrides={shape}"])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - t0
    with (out / "log.csv").open() as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    per_step = (seconds[-1] - seconds[0]) / (len(seconds) - 1)  # after the first step
    row = {"device": device, "batch": batch, "micro_batch": cfg.micro_batch or batch,
           "steps": len(seconds) - 1,
           "s_per_step": per_step, "samples_per_s": batch / per_step, "wall_s": wall,
           "first_step_s": seconds[0], "losses": [summary[k] for k in ("l1", "l2", "l3")],
           "peak_rss_mib": peak_mib()}
    if device.startswith("cuda"):
        row["gpu"] = torch.cuda.get_device_name(torch.device(device))
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


@click.command()
@click.option("--device", "devices", multiple=True,
              help="cpu, cuda, cuda:1 ... (default: cpu, and cuda where there is a GPU).")
@click.option("--batch", "batches", multiple=True, type=int, default=[8], show_default=True,
              help="Samples per step (the paper trains at 128).")
@click.option("--steps", type=int, default=4, show_default=True,
              help="Timed steps per run (after one untimed step).")
@click.option("--cpu-steps", type=int, default=2, show_default=True,
              help="Timed steps on the CPU, where a step takes long.")
@click.option("--cpu-batch", type=int, default=None,
              help="The one batch the CPU runs (default: the smallest --batch).")
@click.option("--micro-batch", "micro", type=int, default=0, show_default=True,
              help="Samples per forward/backward for larger batches (0: whole batches).")
@click.option("--threads", type=int, default=os.cpu_count(), show_default=True,
              help="torch intra-op threads on the CPU.")
@click.option("--json", "as_json", is_flag=True, help="NDJSON to stdout.")
def main(devices, batches, steps, cpu_steps, cpu_batch, micro, threads, as_json):
    """Measure seconds per training step of cpllm-lite on this machine."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)
    if not devices:
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    info = describe()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    click.echo(json.dumps({"type": "machine", **info, "gpu": gpu, "torch": torch.__version__,
                           "threads": threads}) if as_json else
               f"# {info['cpu']}, {info['cores']} cores, torch {torch.__version__}, GPU {gpu}, "
               f"{threads} threads")
    if not as_json:
        click.echo(f"{'device':<8} {'batch':>5} {'micro':>5} {'steps':>5} {'s/step':>8} "
                   f"{'samples/s':>10} {'vs cpu':>7} {'peak GPU MiB':>13} {'peak RSS MiB':>13}")
    cpu_batch = cpu_batch or min(batches)
    cpu_rate = None  # samples/s on the CPU, the baseline of every GPU row
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        manifest = make_ladder(Path(tmp))
        click.echo(f"bench: ladder of {len(PHOTOS) * len(CRFS)} videos made in "
                   f"{time.perf_counter() - t:.0f} s", err=True)
        for device in devices:
            for batch in [cpu_batch] if device == "cpu" else batches:
                n = cpu_steps if device == "cpu" else steps
                click.echo(f"bench: {device}, batch {batch}, {n} + 1 steps", err=True)
                try:
                    row = one_run(manifest, Path(tmp) / f"run-{device}-{batch}", device, batch,
                                  n, micro)
                except torch.OutOfMemoryError:  # the next, smaller or other device may fit
                    click.echo(f"{device:<8} {batch:>5} out of memory")
                    torch.cuda.empty_cache()
                    continue
                if device == "cpu":
                    cpu_rate = row["samples_per_s"]
                elif cpu_rate:
                    row["speedup_vs_cpu"] = row["samples_per_s"] / cpu_rate
                if as_json:
                    click.echo(json.dumps({"type": "bench", **row}))
                else:
                    up = row.get("speedup_vs_cpu")
                    click.echo(f"{device:<8} {batch:>5} {row['micro_batch']:>5} {row['steps']:>5} "
                               f"{row['s_per_step']:>8.3f} {row['samples_per_s']:>10.2f} "
                               f"{f'{up:.1f}x' if up else '':>7} "
                               f"{row.get('peak_gpu_mib', float('nan')):>13.0f} "
                               f"{row['peak_rss_mib']:>13.0f}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()

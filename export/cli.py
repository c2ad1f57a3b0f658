"""``cpllm-export CHECKPOINT OUT_DIR``: ONNX export with parity check (and a TensorRT engine).

The manifest goes to stdout as JSON (one line with ``--json``, else a short summary); progress
goes to stderr. Exit codes: 0 exported, 1 a named error (parity failure included), 2 bad usage.
"""

from __future__ import annotations

import json
import warnings

import click

from cpllm_plugin.console import progress_printer, run_command

from . import onnx as export_onnx


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--precision", "-p", "precisions", multiple=True, show_default=True,
              type=click.Choice(list(export_onnx.FILES)), default=list(export_onnx.FILES),
              help="Graphs to write (fp32 is always written and checked).")
@click.option("--video", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Real clip for the parity check (default: the bundled samples/sample.mp4).")
@click.option("--key-frames", "-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Key frames of --video compared between torch and ONNX Runtime.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=export_onnx.TOLERANCE,
              show_default=True, help="Largest fp32 score difference accepted.")
@click.option("--opset", type=click.IntRange(min=13), default=export_onnx.OPSET,
              show_default=True, help="ONNX opset.")
@click.option("--exporter", type=click.Choice(export_onnx.EXPORTERS), default="torchscript",
              show_default=True, help="torch's ONNX exporter: torchscript (deprecated by "
              "torch, made the shipped graphs) or dynamo (torch.export; needs onnxscript; "
              "opset 18 or more).")
@click.option("--trt", "build_trt", is_flag=True,
              help="Also build the TensorRT engine into the cache (needs tensorrt and a GPU).")
@click.option("--fp16-engine", is_flag=True, help="With --trt: build from the fp16 graph.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as one JSON line.")
def main(checkpoint, out_dir, precisions, video, key_frames, tolerance, opset, exporter,
         build_trt, fp16_engine, as_json):
    """Export CHECKPOINT (model directory or registered name) to OUT_DIR for ONNX Runtime."""
    say = progress_printer(True)

    def go() -> dict:
        warnings.filterwarnings("ignore", module="torch.onnx")
        exported = (*precisions, "fp16") if build_trt and fp16_engine \
            and "fp16" not in precisions else precisions
        manifest = export_onnx.export(
            checkpoint, out_dir, precisions=tuple(exported), video=video,
            key_frames=key_frames, opset=opset, tolerance=tolerance, log=say,
            exporter=exporter)
        if build_trt:
            from cpllm_plugin.backends import TRT, Exported
            from cpllm_plugin.trt import build_engine

            prec = "fp16" if fp16_engine else "fp32"
            model = Exported(out_dir, prec, "cpllm-export --trt")
            path = build_engine(model.path, model.sha256, TRT(fp16=fp16_engine))
            say(f"cpllm-export: TensorRT engine {path}")
        return manifest

    manifest = run_command(go)
    if as_json:
        click.echo(json.dumps(manifest))
        return
    click.echo(f"{out_dir}\t{manifest['model_id']}")
    for prec, r in manifest["precisions"].items():
        click.echo(f"  {prec}\t{r['file']}\tmax |diff| vs torch {r['max_abs_diff']:.3g}")


if __name__ == "__main__":
    main()

"""ONNX export: parity with torch on real frames, the manifest, checksums and the CLI."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import pan_frames, write_video

import cpllm_plugin as cp
from cpllm_plugin import errors, preprocess
from cpllm_plugin.export import onnx as ex
from cpllm_plugin.export.cli import main as cli
from cpllm_plugin.model import io

pytestmark = [pytest.mark.filterwarnings("ignore:model .* untrained quality head"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    ex.export("cpllm-tiny", out, frames=pan_frames(3))
    return out


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory, lite_scorer):
    # From a saved model directory, as a trained model would come.
    src = io.save(lite_scorer, tmp_path_factory.mktemp("ckpt") / "lite")
    out = tmp_path_factory.mktemp("export") / "lite"
    ex.export(src, out, precisions=("fp32", "fp16", "int8"),
              frames=pan_frames(3, 360, 640, photo="astronaut"))
    return out


def test_tiny_export_is_a_model_directory_with_a_full_manifest(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "manifest.json", "model.safetensors", "model.onnx",
            "model.fp16.onnx", "model.int8.onnx"} <= names
    m = ex.read_manifest(tiny_dir)
    assert m["model_id"] == io.model_id(io.build("cpllm-tiny", with_decoder=False))
    assert m["opset"] == ex.OPSET and m["score_range"] == [1.0, 5.0]
    assert m["inputs"] == [
        {"name": "views", "shape": ["batch", 3, 448, 448], "dtype": "float32"},
        {"name": "patches", "shape": ["batch", 8, 3, 224, 224], "dtype": "float32"}]
    assert m["preprocessing"]["fit"] == [540, 1080] and m["preprocessing"]["num_patches"] == 8
    assert set(m["versions"]) >= {"cpllm", "torch", "onnx", "onnxruntime", "python"}
    p = m["precisions"]
    assert p["fp32"]["passed"] and p["fp32"]["max_abs_diff"] <= 1e-4
    assert 0 < p["fp16"]["max_abs_diff"] < 1e-2 and 0 < p["int8"]["max_abs_diff"] < 0.05
    config = json.loads((tiny_dir / "config.json").read_text())
    for name, entry in m["files"].items():
        assert config["files"][name] == entry["sha256"]
        assert (tiny_dir / name).stat().st_size == entry["bytes"]


def test_lite_parity_within_1e4_and_the_batch_axis_is_dynamic(lite_dir, lite_scorer):
    m = ex.read_manifest(lite_dir)
    assert m["precisions"]["fp32"]["max_abs_diff"] <= 1e-4
    assert m["precisions"]["int8"]["max_abs_diff"] < 0.05
    assert 0 < m["precisions"]["fp16"]["max_abs_diff"] < 1e-2
    assert m["model_id"] == io.model_id(lite_scorer)
    _same_scores_at_other_batches(lite_dir / "model.onnx", lite_scorer, atol=1e-4)


def _same_scores_at_other_batches(graph, model, atol: float) -> None:
    """ONNX Runtime at batch 1 and 3 (exported at 2) scores other frames as torch does."""
    x = preprocess.prepare(pan_frames(3, 270, 480, photo="chelsea"), model.config)
    with torch.no_grad():
        ref = model.scorer(torch.from_numpy(x.views), torch.from_numpy(x.patches)).numpy()
    for batch in (1, 3):
        got = ex.ort_scores(graph, x.views, x.patches, batch=batch)
        np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
        assert np.all((got > 1) & (got < 5))


def test_int8_quantises_the_context_encoder_and_leaves_the_pixel_encoder_fp32(lite_dir, tiny_dir):
    import onnx

    q = ex.read_manifest(lite_dir)["precisions"]["int8"]["quantization"]
    assert q["method"] == "static" and q["calibration_frames"] == 3
    nodes = onnx.load(str(lite_dir / "model.int8.onnx")).graph.node
    high = [n.op_type for n in nodes if n.name.startswith("/high/")]
    low = [n.op_type for n in nodes if n.name.startswith("/low/")]
    assert high.count("QLinearConv") > 40 and "Conv" not in high
    assert low.count("Conv") > 40 and not any(op.startswith("QLinear") for op in low)
    assert ex.read_manifest(tiny_dir)["precisions"]["int8"]["quantization"]["method"] == "dynamic"
    tiny = onnx.load(str(tiny_dir / "model.int8.onnx")).graph.node
    assert any(n.op_type == "MatMulInteger" and n.name.startswith("/high/") for n in tiny)
    assert not any(n.op_type == "MatMulInteger" and n.name.startswith("/low/") for n in tiny)


def test_dynamo_exporter_matches_torch_and_quantises_the_same_nodes(lite_scorer, tmp_path):
    import onnx

    # torch deprecated the TorchScript exporter; the torch.export one must give the same
    # graph contract: exact fp32 parity, a dynamic batch axis, /high/ and /low/ node names
    # for int8, and float16 storage only where it is lossless (its optimiser folds
    # BatchNorm into the convolutions, so those weights stay float32).
    src = io.save(lite_scorer, tmp_path / "ckpt")
    out = tmp_path / "dynamo"
    m = ex.export(src, out, precisions=("fp32", "int8"), exporter="dynamo", store_half=True,
                  frames=pan_frames(3, 360, 640, photo="astronaut"))
    assert m["opset"] == ex.DYNAMO_OPSET and "dynamo=True" in m["versions"]["exporter"]
    assert m["precisions"]["fp32"]["max_abs_diff"] <= 1e-5
    assert m["precisions"]["int8"]["max_abs_diff"] < 0.05
    _same_scores_at_other_batches(out / "model.onnx", lite_scorer, atol=1e-5)
    graph = onnx.load(str(out / "model.onnx")).graph
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)
    assert all(n.name.startswith("/") for n in graph.node if n.op_type == "Conv")
    nodes = onnx.load(str(out / "model.int8.onnx")).graph.node
    high = [n.op_type for n in nodes if n.name.startswith("/high/")]
    low = [n.op_type for n in nodes if n.name.startswith("/low/")]
    assert high.count("QLinearConv") > 40 and "Conv" not in high
    assert low.count("Conv") > 40 and not any(op.startswith("QLinear") for op in low)


def test_float16_storage_converts_only_lossless_weights(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    exact = np.arange(2048, dtype=np.float32) / 8  # float16 values
    folded = exact + np.float32(1e-4)  # what folding a BatchNorm makes of them
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "a"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2048])],
        [numpy_helper.from_array(exact, "a"), numpy_helper.from_array(folded, "b")])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert ex.halve_weights(path) == 1
    kept = {t.name: t.data_type for t in onnx.load(str(path)).graph.initializer}
    assert kept == {"a__fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT}
    import onnxruntime as ort

    z = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros(2048, np.float32)})[0]
    np.testing.assert_array_equal(z, exact + folded)


def test_score_through_onnxruntime_equals_torch_on_a_real_clip(lite_dir, tmp_path):
    clip = write_video(tmp_path / "pan.mp4", pan_frames(30, 240, 426), fps=25)
    a = cp.score(clip, model=lite_dir, backend="onnxruntime", key_frames=3)
    b = cp.score(clip, model=lite_dir, backend="torch", key_frames=3)
    assert (a.backend, b.backend) == ("onnxruntime", "torch") and a.model == b.model
    np.testing.assert_allclose(a.frame_scores, b.frame_scores, atol=1e-4, rtol=0)


def test_a_corrupted_onnx_file_is_refused_by_checksum(tiny_dir, tmp_path):
    bad = shutil.copytree(tiny_dir, tmp_path / "bad")
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(errors.ModelFileError, match=r"model.onnx with sha256 .* corrupt"):
        cp.load_model(bad, backend="onnxruntime")


def test_a_parity_failure_fails_the_export_and_leaves_nothing(tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(ex.ParityError, match="within 1e-12 of torch"):
        ex.export("cpllm-tiny", out, precisions=("fp32",), frames=pan_frames(2),
                  tolerance=1e-12)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_exports_and_names_errors(tmp_path):
    clip = write_video(tmp_path / "c.mp4", pan_frames(12), fps=25)
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["cpllm-tiny", str(out), "-p", "fp32", "--video", str(clip),
                                 "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["model_id"].startswith("cpllm-tiny@") and set(m["precisions"]) == {"fp32"}
    assert "max |ONNX Runtime - torch|" in r.stderr
    r = CliRunner().invoke(cli, ["cpllm-tinny", str(tmp_path / "x"), "--video", str(clip)])
    assert r.exit_code == 1 and "error:" in r.stderr and "cpllm-tiny" in r.stderr
    r = CliRunner().invoke(cli, ["cpllm-tiny", str(tmp_path / "x"), "-p", "int4"])
    assert r.exit_code == 2


def test_paper_architecture_exports_with_its_position_embeddings(tmp_path):
    # SigLIP at 448 and VideoPrism on 8 patches of 224, one layer each: the sizes they are
    # built for, so no antialiased position-embedding resize (which ONNX cannot express).
    cfg = cp.configs.get_config("cpllm-paper")
    cfg.high.overrides = {"num_hidden_layers": 1, "hidden_size": 96, "intermediate_size": 192,
                          "num_attention_heads": 2}
    cfg.low.overrides = {"num_spatial_layers": 1, "num_temporal_layers": 1, "hidden_size": 96,
                         "intermediate_size": 192, "num_attention_heads": 2}
    src = io.save(io.build(cfg, with_decoder=False), tmp_path / "paper")
    m = ex.export(src, tmp_path / "out", precisions=("fp32", "int8"), frames=pan_frames(2))
    assert m["precisions"]["fp32"]["max_abs_diff"] <= 1e-4
    assert m["precisions"]["int8"]["quantization"]["method"] == "dynamic"

"""Runtime backends: the auto order, named errors, no torch on the ONNX path, threads."""

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from media import pan_frames

import cpllm_plugin as cp
from cpllm_plugin import api, backends, errors, preprocess
from cpllm_plugin.backends import ORT
from cpllm_plugin.export import onnx as ex

pytestmark = [pytest.mark.filterwarnings("ignore:model .* untrained quality head"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    ex.export("cpllm-tiny", out, precisions=("fp32", "int8"), frames=pan_frames(3))
    return out


def test_auto_picks_onnxruntime_for_an_export_and_torch_for_a_name(tiny_dir):
    assert backends.available()[-2:] == ["onnxruntime", "torch"]  # no GPU here
    assert backends.resolve(tiny_dir) == backends.available()[0].removesuffix("-cuda")  # same order
    assert backends.resolve("cpllm-tiny") == "torch"
    r = cp.score(pan_frames(8), model=tiny_dir, key_frames=2)
    assert r.backend == backends.resolve(tiny_dir)
    assert cp.score(pan_frames(8), model="cpllm-tiny", key_frames=2).backend == "torch"


def test_auto_drives_a_gpu_through_torch_when_onnxruntime_has_no_cuda(tiny_dir, tmp_path,
                                                                      monkeypatch):
    import json
    import shutil

    import torch

    monkeypatch.setattr(backends, "gpu_count", lambda: 1)  # a GPU, the plain onnxruntime wheel
    monkeypatch.setattr(backends, "_ort_cuda", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backends.resolve(tiny_dir) == "torch" and "torch-cuda" in backends.available()
    only_onnx = tmp_path / "only-onnx"  # an export without the torch weights
    shutil.copytree(tiny_dir, only_onnx)
    conf = json.loads((only_onnx / "config.json").read_text())
    conf["files"] = {k: v for k, v in conf["files"].items() if k != "model.safetensors"}
    (only_onnx / "config.json").write_text(json.dumps(conf))
    (only_onnx / "model.safetensors").unlink()
    assert backends.resolve(only_onnx) == "onnxruntime"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch build
    assert backends.resolve(tiny_dir) == "onnxruntime"
    monkeypatch.setattr(backends, "gpu_count", lambda: 0)
    assert backends.resolve(tiny_dir) == "onnxruntime"


def test_options_objects_and_keywords_select_the_same_graph(tiny_dir):
    frames = pan_frames(8)
    fp32 = cp.load_model(tiny_dir, backend=ORT(threads=1)).score(frames, 2)
    same = cp.load_model(tiny_dir, backend="onnxruntime", threads=1).score(frames, 2)
    int8 = cp.load_model(tiny_dir, backend=ORT(threads=1, precision="int8")).score(frames, 2)
    assert np.array_equal(fp32.frame_scores, same.frame_scores)
    assert 0 < np.abs(int8.frame_scores - fp32.frame_scores).max() < 0.05
    assert fp32.model == int8.model == ex.read_manifest(tiny_dir)["model_id"]
    # Same model, different graph: results say which one scored.
    assert (fp32.backend, int8.backend) == ("onnxruntime", "onnxruntime-int8")


def test_every_backend_says_which_device_it_runs_on(tiny_dir):
    # The VapourSynth filter batches by it and describe places its tensors by it, so it must
    # be on the Backend contract, not guessed from class names or providers.
    assert backends.create(ORT(device="cpu"), tiny_dir).device == "cpu"
    assert backends.create("torch", "cpllm-tiny", device="cpu").device == "cpu"
    for cls in (backends.TorchBackend, backends.OrtBackend, backends.TrtBackend):
        assert issubclass(cls, backends.Backend) and isinstance(cls.device, str)
    if backends.gpu_count() == 0:  # the auto choices of a machine without a GPU
        assert backends.create("auto", tiny_dir).device == "cpu"
        assert backends.create("auto", "cpllm-tiny").device == "cpu"


@pytest.mark.parametrize("name, precision, want", [
    ("auto", "fp32", "auto"), ("torch", "fp32", "torch"),
    ("auto", "int8", ORT(precision="int8")), ("onnxruntime", "fp16", ORT(precision="fp16")),
    ("tensorrt", "fp16", backends.TRT(fp16=True)),
])
def test_command_line_backend_and_precision_become_load_model_options(name, precision, want):
    assert backends.choose(name, precision) == want


@pytest.mark.parametrize("name, precision, error", [
    ("torch", "int8", errors.BackendError), ("tensorrt", "int8", errors.BackendError),
    ("auto", "int4", errors.UnknownNameError),
])
def test_impossible_backend_and_precision_pairs_are_named(name, precision, error):
    with pytest.raises(error, match="precision"):
        backends.choose(name, precision)


@pytest.mark.parametrize("call, error, text", [
    (lambda d: cp.load_model("cpllm-tiny", backend="onnxruntime"),
     errors.BackendError, "cpllm-export MODEL OUT_DIR"),
    (lambda d: cp.load_model(d, backend=ORT(precision="fp16")),
     errors.BackendError, "--precision fp16"),
    (lambda d: cp.load_model(d, backend=ORT(precision="fp8")),
     errors.UnknownNameError, "precision one of"),
    (lambda d: cp.load_model(d, backend="onnxruntime", thread=2),
     errors.BackendError, "options among"),
    (lambda d: cp.load_model(d, backend=ORT(device="gpu")),
     errors.UnknownNameError, "device 'auto', 'cpu' or 'cuda'"),
    (lambda d: cp.load_model(d, backend="tensorrt"),
     errors.CpllmError, "tensorrt|GPU"),
])
def test_explicit_choices_that_cannot_run_name_the_fix(tiny_dir, call, error, text):
    if text == "tensorrt|GPU" and backends.gpu_count() and "tensorrt" in backends.available():
        pytest.skip("TensorRT and a GPU are present here")
    with pytest.raises(error, match=text):
        call(tiny_dir)


def test_onnxruntime_scoring_never_imports_torch(tiny_dir, tmp_path):
    # A fresh interpreter where importing torch fails outright.
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import cpllm_plugin as cp
        frames = np.load({str(tmp_path / "f.npy")!r})
        r = cp.score(frames, model={str(tiny_dir)!r}, key_frames=2)
        assert "torch" not in sys.modules, "torch was imported"
        print(r.backend, r.score)
    """)
    np.save(tmp_path / "f.npy", pan_frames(6))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    name, score = out.stdout.split()
    assert name == "onnxruntime" and 1 < float(score) < 5


def test_concurrent_calls_equal_sequential_ones(tiny_dir):
    m = cp.load_model(tiny_dir, backend=ORT(threads=1, batch_size=2))
    inputs = [preprocess.prepare(pan_frames(3, photo=p), m.config)
              for p in ("coffee", "astronaut", "chelsea", "rocket")]
    sequential = [m.backend.run(x.views, x.patches) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            together = list(pool.map(lambda x: m.backend.run(x.views, x.patches), inputs * 2))
            for a, b in zip(together, sequential * 2, strict=True):
                assert np.array_equal(a, b)
    # One session per graph file, shared by every backend object made for it.
    assert backends.OrtBackend(tiny_dir, threads=1).session is m.backend.session


def test_score_many_batches_several_videos_like_single_calls(tiny_dir):
    videos = [pan_frames(9, photo="coffee"), pan_frames(5, photo="rocket"), pan_frames(7)]
    m = cp.load_model(tiny_dir, backend="onnxruntime")
    many = api.score_many(videos, model=tiny_dir, backend="onnxruntime", key_frames=3)
    small = m.score_many(videos, key_frames=3, batch=2)  # flushes mid-way
    for v, a, b in zip(videos, many, small, strict=True):
        one = m.score(v, 3)
        np.testing.assert_allclose(a.frame_scores, one.frame_scores, atol=1e-6)
        np.testing.assert_allclose(b.frame_scores, one.frame_scores, atol=1e-6)
        assert a.frame_indices.tolist() == one.frame_indices.tolist()


@pytest.mark.gpu
def test_torch_backend_on_cuda_matches_cpu():
    x = preprocess.prepare(pan_frames(6), cp.get_config("cpllm-tiny"))
    cpu = backends.create("torch", "cpllm-tiny", device="cpu").run(x.views, x.patches)
    gpu = backends.create("torch", "cpllm-tiny")  # CUDA is the default where there is one
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.run(x.views, x.patches), cpu, atol=1e-4, rtol=0)


@pytest.mark.gpu
def test_onnxruntime_cuda_matches_cpu(tiny_dir):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    x = preprocess.prepare(pan_frames(6), cp.get_config("cpllm-tiny"))
    cuda = backends.create(ORT(device="cuda"), tiny_dir)
    assert cuda.providers[0] == "CUDAExecutionProvider" and cuda.device == "cuda"
    assert "onnxruntime-cuda" in backends.available()
    cpu = backends.create(ORT(device="cpu"), tiny_dir).run(x.views, x.patches)
    np.testing.assert_allclose(cuda.run(x.views, x.patches), cpu, atol=1e-4, rtol=0)

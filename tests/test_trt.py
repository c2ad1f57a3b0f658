"""TensorRT engine cache and backend: runs where TensorRT and an NVIDIA GPU exist."""

import importlib.util

import numpy as np
import pytest
from media import pan_frames

from cpllm_plugin import backends, errors, preprocess, trt
from cpllm_plugin.backends import TRT

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(
    not (HAVE_TRT and backends.gpu_count() > 0),
    reason="needs the tensorrt package and an NVIDIA GPU (TensorRT's libraries cannot be "
           "installed from PyPI alone; see docs/backends.md, \"GPUs\")")


def test_engine_names_carry_checksum_shapes_precision_version_and_gpu():
    sha = "ab" * 32
    a = trt.engine_name(sha, TRT(), "10.9.0", "NVIDIA H100 80GB HBM3")
    assert a == "abababababababab_b1-8-32_fp32_trt10.9.0_NVIDIA-H100-80GB-HBM3.engine"
    others = {trt.engine_name("cd" * 32, TRT(), "10.9.0", "NVIDIA H100 80GB HBM3"),
              trt.engine_name(sha, TRT(max_batch=16), "10.9.0", "NVIDIA H100 80GB HBM3"),
              trt.engine_name(sha, TRT(fp16=True), "10.9.0", "NVIDIA H100 80GB HBM3"),
              trt.engine_name(sha, TRT(), "11.0.0", "NVIDIA H100 80GB HBM3"),
              trt.engine_name(sha, TRT(), "10.9.0", "NVIDIA L4")}
    assert len(others) == 5 and a not in others


@pytest.mark.parametrize("opts", [TRT(min_batch=4, opt_batch=2), TRT(workspace=0)])
def test_bad_profiles_are_named_errors(opts):
    with pytest.raises(errors.BackendError, match="TRT"):
        trt._check(opts)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from cpllm_plugin.export import onnx as ex

    out = tmp_path_factory.mktemp("export") / "tiny"
    ex.export("cpllm-tiny", out, precisions=("fp32", "fp16"), frames=pan_frames(3))
    return out


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("fp16, tol", [(False, 1e-3), (True, 2e-2)])
def test_tensorrt_engine_matches_onnxruntime_and_is_cached(tiny_dir, tmp_path, fp16, tol):
    opts = TRT(fp16=fp16, min_batch=1, opt_batch=2, max_batch=4, cache_dir=str(tmp_path))
    be = backends.create(opts, tiny_dir)
    assert be.device == "cuda:0"
    x = preprocess.prepare(pan_frames(6), be.config)
    ref = backends.create("onnxruntime", tiny_dir).run(x.views, x.patches)
    np.testing.assert_allclose(be.run(x.views, x.patches), ref, atol=tol, rtol=0)
    engines = list(tmp_path.glob("*.engine"))
    assert len(engines) == 1 and ("fp16" if fp16 else "fp32") in engines[0].name
    stamp = engines[0].stat().st_mtime_ns
    backends.create(opts, tiny_dir)  # second load: from the cache
    assert engines[0].stat().st_mtime_ns == stamp

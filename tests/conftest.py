"""Shared test set-up: offline, one thread, and models built once where tests only read them."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")  # 10-20x faster for small models on 2 cores

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lite_scorer():
    """cpllm-lite's scoring path with the real EfficientNet-Lite0 weights (read only)."""
    from cpllm_plugin.model import io

    return io.build("cpllm-lite", with_decoder=False).eval()


@pytest.fixture
def tiny_model():
    """A fresh cpllm-tiny with its random tiny Gemma decoder and LoRA."""
    from cpllm_plugin.model import io

    return io.build("cpllm-tiny").eval()


@pytest.fixture(scope="session")
def ffmpeg_exe():
    """Path of the static ffmpeg shipped by imageio-ffmpeg (tests that need it skip without)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, with the reason, where the CUDA driver sees no GPU."""
    if not any("gpu" in item.keywords for item in items):
        return
    from cpllm_plugin.backends import gpu_count

    if gpu_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU: run `pytest -m gpu` on a machine with one")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""Runtime-specific options: execution providers, OpenVINO devices, hints and cache."""

from __future__ import annotations

import pytest

from drifa_edge.errors import UnsupportedBackendError
from drifa_edge.runtimes import onnxruntime as ort_runtime
from drifa_edge.runtimes import openvino as ov_runtime
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_onnxruntime_picks_cuda_when_present_else_cpu():
    assert ort_runtime._providers(None, [CPU]) == ("cpu", [CPU])
    assert ort_runtime._providers(None, [CUDA, CPU]) == ("cuda:0", [(CUDA, {"device_id": 0}), CPU])
    assert ort_runtime._providers("cpu", [CUDA, CPU]) == ("cpu", [CPU])


def test_onnxruntime_tensorrt_ep_with_cuda_and_cpu_fallbacks():
    device, providers = ort_runtime._providers("tensorrt:1", [TRT, CUDA, CPU])
    assert device == "tensorrt:1"
    assert providers == [(TRT, {"device_id": 1}), (CUDA, {"device_id": 1}), CPU]


def test_onnxruntime_refuses_a_missing_or_unknown_provider():
    with pytest.raises(UnsupportedBackendError, match="onnxruntime-gpu"):
        ort_runtime._providers("cuda:0", [CPU])
    with pytest.raises(UnsupportedBackendError, match="Did you mean 'cuda'"):
        ort_runtime._providers("cudaa", [CPU])


def test_openvino_device_names():
    assert ov_runtime._device_name(None, ["CPU"]) == "CPU"
    assert ov_runtime._device_name("cpu", ["CPU"]) == "CPU"
    assert ov_runtime._device_name("GPU.1", ["CPU", "GPU.0", "GPU.1"]) == "GPU.1"
    assert ov_runtime._device_name("AUTO:GPU,CPU", ["CPU"]) == "AUTO:GPU,CPU"
    with pytest.raises(UnsupportedBackendError, match="NPU.*not available"):
        ov_runtime._device_name("NPU", ["CPU"])


class FakeCore:
    def __init__(self, supported):
        self.supported = supported

    def get_property(self, device, name):
        assert name == "SUPPORTED_PROPERTIES"
        return self.supported


def test_openvino_compile_config_per_precision_and_hint():
    core = FakeCore(["PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS"])
    fp32 = ov_runtime._compile_config(core, "CPU", RuntimeOptions(threads=2))
    assert fp32 == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": "2",
    }
    bf16 = ov_runtime._compile_config(core, "CPU", RuntimeOptions(precision="bf16", hint="throughput"))
    assert bf16 == {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "bf16"}
    assert (
        ov_runtime._compile_config(core, "CPU", RuntimeOptions(precision="int8"))["INFERENCE_PRECISION_HINT"]
        == "f32"
    )
    npu = ov_runtime._compile_config(FakeCore(["PERFORMANCE_HINT"]), "NPU", RuntimeOptions(threads=2))
    assert npu == {"PERFORMANCE_HINT": "LATENCY"}  # only what the device understands


def test_openvino_model_cache_is_used(tiny_artifacts, tmp_path):
    pytest.importorskip("openvino")
    cache = tmp_path / "ov-cache"
    open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=1, extra={"cache_dir": str(cache)}))
    assert any(cache.iterdir())


def test_onnxruntime_refuses_bf16(tiny_artifacts):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UnsupportedBackendError, match="openvino for bf16"):
        open_runtime("onnxruntime", tiny_artifacts[1], RuntimeOptions(precision="bf16"))


def test_a_build_the_folder_lacks_is_a_clear_error(tiny_artifacts):
    pytest.importorskip("openvino")
    from drifa_edge.errors import ArtifactError

    with pytest.raises(ArtifactError, match="openvino-int8/prefix.xml: not found"):
        open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(precision="int8"))


def test_onnxruntime_seed_option_makes_the_mask_stream_repeatable(tiny_artifacts):
    pytest.importorskip("onnxruntime")
    import numpy as np

    def first_logits(seed):
        rt = open_runtime("onnxruntime", tiny_artifacts[1], RuntimeOptions(threads=1, extra={"seed": seed}))
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((3, t.channels, 32, 32)).astype(np.float32) for t in rt.card.model.tasks]
        return rt.run_suffix(rt.run_prefix(xs))[0]

    np.testing.assert_array_equal(first_logits(5), first_logits(5))
    assert np.abs(first_logits(5) - first_logits(6)).max() > 1e-4

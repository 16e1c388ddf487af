"""Runtime-specific options: execution providers, OpenVINO devices, hints and cache."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError, UnsupportedBackendError
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
        "SNIPPETS_MODE": "DISABLE",  # CPU default (memory), though not in SUPPORTED_PROPERTIES
    }
    bf16 = ov_runtime._compile_config(core, "CPU", RuntimeOptions(precision="bf16", hint="throughput"))
    assert bf16 == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": "bf16",
        "SNIPPETS_MODE": "DISABLE",
    }
    assert (
        ov_runtime._compile_config(core, "CPU", RuntimeOptions(precision="int8"))["INFERENCE_PRECISION_HINT"]
        == "f32"
    )
    npu = ov_runtime._compile_config(FakeCore(["PERFORMANCE_HINT"]), "NPU", RuntimeOptions(threads=2))
    assert npu == {"PERFORMANCE_HINT": "LATENCY"}  # only what the device understands
    kept = ov_runtime._compile_config(core, "CPU", RuntimeOptions(extra={"snippets": "enable"}))
    assert "SNIPPETS_MODE" not in kept
    with pytest.raises(ConfigError, match="snippets must be one of"):
        ov_runtime._compile_config(core, "CPU", RuntimeOptions(extra={"snippets": "off"}))


class RejectingCore:
    """compile_model refuses SNIPPETS_MODE the way an OpenVINO without the property would."""

    def __init__(self, message="Unsupported property SNIPPETS_MODE by CPU plugin"):
        self.message, self.configs = message, []

    def compile_model(self, target, device, config):
        self.configs.append(dict(config))
        if "SNIPPETS_MODE" in config:
            raise RuntimeError(self.message)
        return ("compiled", target)


def test_openvino_compiles_without_snippets_mode_when_refused(caplog):
    core = RejectingCore()
    config = {"PERFORMANCE_HINT": "LATENCY", "SNIPPETS_MODE": "DISABLE"}
    assert ov_runtime.compile_with_fallback(core, "m.xml", "CPU", config) == ("compiled", "m.xml")
    assert core.configs == [config, {"PERFORMANCE_HINT": "LATENCY"}]
    assert "SNIPPETS_MODE not accepted" in caplog.text
    other = RejectingCore("out of memory")  # any other error is the caller's to report
    with pytest.raises(RuntimeError, match="out of memory"):
        ov_runtime.compile_with_fallback(other, "m.xml", "CPU", {"SNIPPETS_MODE": "DISABLE"})
    assert len(other.configs) == 1


def test_openvino_snippets_off_keeps_the_suffix_output(tiny_artifacts):
    """Snippets off is the same function: the deterministic suffix of the tiny build agrees
    with Snippets on (OpenVINO's default) to float32 round-off."""
    ov = pytest.importorskip("openvino")
    import numpy as np

    xml = tiny_artifacts[1] / "openvino" / "suffix_det.xml"
    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape(
        {p.get_any_name(): [3, *(d.get_length() for d in p.get_partial_shape()[1:])] for p in model.inputs}
    )
    rng = np.random.default_rng(0)  # static rows, as the runtime compiles the suffix (Snippets need them)
    feed = {
        p.get_any_name(): rng.standard_normal(
            [3, *(d.get_length() for d in p.get_partial_shape()[1:])]
        ).astype(np.float32)
        for p in model.inputs
    }
    outs = []
    for snippets in ("enable", "disable"):
        config = ov_runtime._compile_config(
            core, "CPU", RuntimeOptions(threads=1, extra={"snippets": snippets})
        )
        compiled = ov_runtime.compile_with_fallback(core, model, "CPU", config)
        assert ("SNIPPETS_MODE" in config) == (snippets == "disable")
        result = compiled.create_infer_request().infer(feed)
        outs.append([np.array(result[o]) for o in compiled.outputs])
        kinds = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()]
        assert ("Subgraph" in kinds) == (snippets == "enable")  # the property took effect
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


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


def test_openvino_streams_default_and_split():
    assert ov_runtime.suffix_streams("CPU", RuntimeOptions(threads=2)) == 2
    assert ov_runtime.suffix_streams("CPU", RuntimeOptions(threads=1)) == 1
    assert ov_runtime.suffix_streams("CPU", RuntimeOptions(threads=16)) == 4  # capped
    assert ov_runtime.suffix_streams("CPU", RuntimeOptions(threads=16, streams=8)) == 8  # asked for
    assert ov_runtime.suffix_streams("GPU", RuntimeOptions(threads=2)) == 1
    assert ov_runtime.suffix_streams("CPU", RuntimeOptions(threads=2, hint="throughput")) == 1
    assert ov_runtime.split_rows(30, 2) == (2, 15)
    assert ov_runtime.split_rows(7, 2) == (2, 4)  # 4 + 3, the second part padded by one row
    assert ov_runtime.split_rows(1, 4) == (1, 1)
    assert ov_runtime.split_rows(10, 4) == (4, 3)  # 3 + 3 + 3 + 1
    with pytest.raises(UnsupportedBackendError, match="streams must be >= 1"):
        RuntimeOptions(streams=0)
    core = FakeCore(["PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "NUM_STREAMS"])
    assert ov_runtime._compile_config(core, "CPU", RuntimeOptions(), streams=2) == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": "f32",
        "NUM_STREAMS": "2",
        "SNIPPETS_MODE": "DISABLE",
    }


def _features(rt, rows, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((1, t.channels, 32, 32)).astype(np.float32) for t in rt.card.model.tasks]
    return [np.repeat(f, rows, axis=0) for f in rt.run_prefix(xs)]


@pytest.mark.parametrize("rows", [1, 7, 30])
@pytest.mark.parametrize("static", [True, False])
def test_openvino_streams_match_one_request_without_dropout(tiny_artifacts, rows, static):
    """Split over streams (padded static parts or dynamic parts), the rows come back in order
    and equal to one request's: the deterministic suffix makes it exact up to float rounding."""
    pytest.importorskip("openvino")
    import numpy as np

    extra = {"dropout": "off", "static_shapes": static}
    one = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=2, streams=1, extra=extra))
    two = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=2, streams=3, extra=extra))
    assert two.streams == 3 and one.streams == 1
    rng = np.random.default_rng(1)
    feats = [f + rng.standard_normal(f.shape).astype(np.float32) for f in _features(one, rows)]  # rows differ
    for a, b in zip(one.run_suffix(feats), two.run_suffix(feats), strict=True):
        assert a.shape == b.shape == (rows, a.shape[1])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert (two._single is not None) == (rows == 1)  # a single row runs as one request, all threads


def test_openvino_row_counts_beyond_the_static_ones_share_one_dynamic_graph(tiny_artifacts):
    """Varying row counts (adaptive T, a batch's last call) compile at most STATIC_ROW_COUNTS
    static graphs, then run on one dynamic graph, never recompiling; every count stays exact."""
    pytest.importorskip("openvino")
    import numpy as np

    extra = {"dropout": "off"}
    one = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=2, streams=1, extra=extra))
    two = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=2, streams=2, extra=extra))
    rng = np.random.default_rng(2)
    counts = [8, 6, 4, 10, 5, 12, 8, 3]  # parts of 4, 3, 2, 5, 3, 6, 4, 2 rows
    for rows in counts:
        feats = [f + rng.standard_normal(f.shape).astype(np.float32) for f in _features(one, rows)]
        for a, b in zip(
            one._run(one._single_request(), one._features, feats, one._logits),
            two.run_suffix(feats),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    static = sorted(k for k in two._parts if k is not None)
    assert static == [2, 3, 4]  # the first three part sizes met
    assert None in two._parts and len(two._parts) == ov_runtime.STATIC_ROW_COUNTS + 1
    dynamic, _ = two._parts[None]
    assert not dynamic.input(0).get_partial_shape().is_static


def test_openvino_streams_draw_their_own_masks(tiny_artifacts):
    """Every row of an MC call gets its own mask, also across streams and calls: identical
    input rows never give identical logits (two requests replaying one mask stream would)."""
    pytest.importorskip("openvino")
    import numpy as np

    rt = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=2, streams=2))
    feats = _features(rt, 30)
    rows = np.concatenate([np.concatenate(rt.run_suffix(feats), axis=1) for _ in range(2)])  # (60, K)
    gaps = np.abs(rows[:, None] - rows[None]).max(-1)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() > 1e-6, "two MC rows share a mask"

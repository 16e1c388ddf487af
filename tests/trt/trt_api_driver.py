"""Run drifa-edge's TensorRT code against strict autospecs of NVIDIA's real classes.

Started by ``test_trt_api.py`` in a subprocess whose ``import tensorrt`` is a real
bindings wheel over stand-in libraries (see ``real_bindings.py``). ``trt.Builder``,
``trt.OnnxParser`` and ``trt.Runtime`` are replaced by
``create_autospec(<real class>, spec_set=True)``; every object they hand out is a
strict autospec of the real interface (IBuilderConfig, INetworkDefinition, ITensor,
IOptimizationProfile, ICudaEngine, IExecutionContext). Enums (BuilderFlag,
NetworkDefinitionCreationFlag, MemoryPoolType, DataType, TensorIOMode) stay real.
So a removed, renamed or misspelled attribute, read or written, raises
AttributeError here, as it would on the GPU machine.

Usage: python trt_api_driver.py SCENARIO JSON_ARGS ; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from unittest import mock

import numpy as np


def strict(cls):
    return mock.create_autospec(cls, spec_set=True, instance=True)


def flag_names(trt, calls) -> list[str]:
    names = []
    for call in calls:
        (flag,) = call.args
        names.append(trt.BuilderFlag(flag).name)
    return names


def fake_builder(trt, inputs: dict[str, tuple[int, ...]]):
    """Patch trt.Builder / trt.OnnxParser; return the strict doubles to inspect."""
    builder_cls = mock.create_autospec(trt.Builder, spec_set=True)
    parser_cls = mock.create_autospec(trt.OnnxParser, spec_set=True)
    builder, parser = builder_cls.return_value, parser_cls.return_value
    network, config = strict(trt.INetworkDefinition), strict(trt.IBuilderConfig)
    profile = strict(trt.IOptimizationProfile)
    tensors = []
    for name, shape in inputs.items():
        t = strict(trt.ITensor)
        t.name, t.shape = name, shape
        tensors.append(t)
    network.num_inputs = len(tensors)
    network.get_input.side_effect = lambda i: tensors[i]
    builder.create_network.return_value = network
    builder.create_builder_config.return_value = config
    builder.create_optimization_profile.return_value = profile
    builder.num_DLA_cores = 2
    builder.build_serialized_network.return_value = b"serialized-engine"
    parser.parse_from_file.return_value = True
    parser.num_errors = 0
    return builder_cls, parser_cls, network, config, profile


def scenario_build(trt, args: dict) -> dict:
    """build_engine on a graph file the test wrote; report what was set on the doubles."""
    from drifa_edge.export import tensorrt as export_trt

    builder_cls, parser_cls, network, config, opt = fake_builder(
        trt, {k: tuple(v) for k, v in args["inputs"].items()}
    )
    profile = export_trt.TensorRTProfile(target=args["target"], **args.get("profile", {}))
    shapes = {k: tuple(tuple(s) for s in v) for k, v in args["shapes"].items()}
    with mock.patch.object(trt, "Builder", builder_cls), mock.patch.object(trt, "OnnxParser", parser_cls):
        if args.get("force_path"):  # the pre-11 code path, to prove this harness catches it
            weak = export_trt.build_path

            with mock.patch.object(export_trt, "build_path", lambda major, precision: weak(10, precision)):
                record = export_trt.build_engine(
                    args["onnx"], args["engine"], profile, args["precision"], shapes
                )
        else:
            record = export_trt.build_engine(args["onnx"], args["engine"], profile, args["precision"], shapes)
    builder = builder_cls.return_value
    (create_flags,) = builder.create_network.call_args.args
    return {
        "record": record,
        "set_flag": flag_names(trt, config.set_flag.call_args_list),
        "create_network_flags": int(create_flags),
        "strongly_typed_bit": int(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)),
        "memory_pool": [
            [trt.MemoryPoolType(c.args[0]).name, int(c.args[1])]
            for c in config.set_memory_pool_limit.call_args_list
        ],
        "set_shape": [[c.args[0], *[list(s) for s in c.args[1:]]] for c in opt.set_shape.call_args_list],
        "engine_bytes": Path(args["engine"]).read_bytes().decode(),
    }


def scenario_export(trt, args: dict) -> dict:
    """export_tensorrt end to end (prepare, build both engines, build.json, card) through strict
    doubles; each parsed network gets the inputs of the ONNX file it was given."""
    import onnx

    from drifa_edge.export import tensorrt as export_trt
    from drifa_edge.runtimes import tensorrt as rt

    builder_cls = mock.create_autospec(trt.Builder, spec_set=True)
    builder = builder_cls.return_value
    real_parser = trt.OnnxParser  # strict doubles are made from it while trt.OnnxParser is patched
    configs, networks = [], []

    def create_network(flags):
        network = strict(trt.INetworkDefinition)
        networks.append((int(flags), network))
        return network

    def create_config():
        config = strict(trt.IBuilderConfig)
        configs.append(config)
        return config

    def parser_for(network, logger):
        parser = strict(real_parser)

        def parse(path):
            tensors = []
            for i in onnx.load(path, load_external_data=False).graph.input:
                t = strict(trt.ITensor)
                t.name = i.name
                t.shape = tuple(d.dim_value if d.dim_value else -1 for d in i.type.tensor_type.shape.dim)
                tensors.append(t)
            network.num_inputs = len(tensors)
            network.get_input.side_effect = lambda k: tensors[k]
            return True

        parser.parse_from_file.side_effect = parse
        return parser

    builder.create_network.side_effect = create_network
    builder.create_builder_config.side_effect = create_config
    builder.create_optimization_profile.side_effect = lambda: strict(trt.IOptimizationProfile)
    builder.build_serialized_network.return_value = b"serialized-engine"
    parser_cls = mock.create_autospec(trt.OnnxParser, spec_set=True, side_effect=parser_for)
    gpu = {"index": 0, "name": "Stand-in GPU", "compute_capability": "8.9"}
    with (
        mock.patch.object(trt, "Builder", builder_cls),
        mock.patch.object(trt, "OnnxParser", parser_cls),
        mock.patch.object(rt, "cuda_device_info", lambda index=0: gpu),
    ):
        summary = export_trt.export_tensorrt(
            args["export"], args["target"], args["precision"], args.get("calib"), subset=4, check=False
        )
    folder = Path(summary["folder"])
    return {
        "summary": summary,
        "files": sorted(p.name for p in folder.iterdir()),
        "build": json.loads((folder / "build.json").read_text()),
        "set_flag": [flag_names(trt, c.set_flag.call_args_list) for c in configs],
        "create_network_flags": [f for f, _ in networks],
    }


class HostCuda:
    """Host-memory stand-in for the runtime's CUDA helper: numpy buffers, no device."""

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}

    def device_count(self) -> int:
        return 1

    def device_info(self, index: int) -> dict:
        return {"index": index, "name": "Stand-in GPU", "compute_capability": "8.9"}

    def set_device(self, index: int) -> None:
        pass

    def stream(self):
        return None, 0

    def alloc(self, nbytes: int):
        buf = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return buf, buf.ctypes.data

    def to_device(self, buffer, array, stream) -> None:
        buffer[0][: array.nbytes] = array.reshape(-1).view(np.uint8)

    def to_host(self, array, buffer, stream) -> None:
        array.reshape(-1).view(np.uint8)[:] = buffer[0][: array.nbytes]

    def synchronize(self, stream) -> None:
        pass

    def free(self, buffer) -> None:
        pass


def fake_engine(trt, cuda: HostCuda, io: dict, rows: tuple[int, int, int]):
    """A strict ICudaEngine whose execution context copies each input's sum per row to the outputs.

    ``io``: name -> {"mode": "input"|"output", "shape": per-row shape, "sums": input name}.
    """
    engine, context = strict(trt.ICudaEngine), strict(trt.IExecutionContext)
    names = list(io)
    engine.num_io_tensors = len(names)
    engine.get_tensor_name.side_effect = lambda i: names[i]
    mode = {"input": trt.TensorIOMode.INPUT, "output": trt.TensorIOMode.OUTPUT}
    engine.get_tensor_mode.side_effect = lambda n: mode[io[n]["mode"]]
    engine.get_tensor_dtype.side_effect = lambda n: trt.DataType.FLOAT
    engine.get_tensor_profile_shape.side_effect = lambda n, p: [(r, *io[n]["shape"]) for r in rows]
    engine.create_execution_context.return_value = context
    shapes = {n: (rows[2], *io[n]["shape"]) for n in names}
    addresses: dict[str, int] = {}

    def set_input_shape(name, shape):
        shapes[name] = tuple(shape)
        for n, spec in io.items():
            if spec["mode"] == "output":
                shapes[n] = (shape[0], *spec["shape"])
        return True

    def set_tensor_address(name, address):
        addresses[name] = int(address)
        return True

    def execute(stream):
        for n, spec in io.items():
            if spec["mode"] != "output":
                continue
            src = spec["sums"]
            a = (
                cuda.buffers[addresses[src]]
                .view(np.float32)[: int(np.prod(shapes[src]))]
                .reshape(shapes[src])
            )
            out = cuda.buffers[addresses[n]].view(np.float32)
            k = int(np.prod(shapes[n][1:]))
            out[: shapes[n][0] * k] = np.repeat(a.reshape(len(a), -1).sum(axis=1), k)
        return True

    context.set_input_shape.side_effect = set_input_shape
    context.get_tensor_shape.side_effect = lambda n: shapes[n]
    context.set_tensor_address.side_effect = set_tensor_address
    context.execute_async_v3.side_effect = execute
    return engine


def scenario_runtime(trt, args: dict) -> dict:
    """Open the TensorRT runtime on a tiny export and run prefix + suffix through strict engines."""
    from drifa_edge.artifact import layout
    from drifa_edge.artifact.card import read_card
    from drifa_edge.runtimes import tensorrt as rt
    from drifa_edge.runtimes.base import RuntimeOptions

    export_dir = Path(args["export"])
    card = read_card(export_dir, verify=False)
    tasks = card.model.tasks
    side = card.model.image_size
    cuda = HostCuda()
    prefix_io = {
        layout.image_name(t.name): {"mode": "input", "shape": (t.channels, side, side)} for t in tasks
    }
    prefix_io.update(
        {
            layout.feature_name(t.name): {
                "mode": "output",
                "shape": (2, 2),
                "sums": layout.image_name(t.name),
            }
            for t in tasks
        }
    )
    suffix_io = {layout.feature_name(t.name): {"mode": "input", "shape": (2, 2)} for t in tasks}
    suffix_io.update(
        {
            layout.logits_name(t.name): {
                "mode": "output",
                "shape": (len(t.classes),),
                "sums": layout.feature_name(t.name),
            }
            for t in tasks
        }
    )
    engines = iter(
        [fake_engine(trt, cuda, prefix_io, (1, 2, 3)), fake_engine(trt, cuda, suffix_io, (1, 4, 5))]
    )
    runtime_cls = mock.create_autospec(trt.Runtime, spec_set=True)
    runtime_cls.return_value.deserialize_cuda_engine.side_effect = lambda data: next(engines)
    folder = Path(args["folder"])
    for name in ("prefix.engine", "suffix.engine"):
        (folder / name).write_bytes(b"stand-in")
    build = {
        "tensorrt": trt.__version__,
        "gpu": cuda.device_info(0),
        "precision": "fp16",
        "masks": "graph",
        "profile": {"dla_core": args.get("dla_core", -1)},
    }
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((7, t.channels, side, side), dtype=np.float32) for t in tasks]
    features = [np.full((9, 2, 2), i + 1.0, dtype=np.float32) for i in range(len(tasks))]
    with mock.patch.object(trt, "Runtime", runtime_cls), mock.patch.object(rt, "_cuda", lambda: cuda):
        runtime = rt.TensorRTRuntime(card, folder, build, RuntimeOptions(precision="fp16", device="cuda:0"))
        prefix = runtime.run_prefix(images)  # 7 rows through a profile of max 3: 3 calls
        logits = runtime.run_suffix(features)  # 9 rows through a profile of max 5: 2 calls
        dla = runtime_cls.return_value.DLA_core if args.get("dla_core", -1) >= 0 else None
        runtime.close()
    expected = [im.reshape(len(im), -1).sum(axis=1) for im in images]
    return {
        "prefix_shapes": [list(f.shape) for f in prefix],
        "prefix_max_error": max(
            float(np.abs(f[:, 0, 0] - e).max()) for f, e in zip(prefix, expected, strict=True)
        ),
        "logits": [lg.tolist() for lg in logits],
        "dla_core": dla,
    }


def main() -> None:
    scenario, raw = sys.argv[1], sys.argv[2]
    import tensorrt as trt

    try:
        result = {"ok": True, "version": trt.__version__, **SCENARIOS[scenario](trt, json.loads(raw))}
    except Exception as e:  # reported to the test, which decides
        result = {
            "ok": False,
            "version": trt.__version__,
            "error": type(e).__name__,
            "message": str(e),
            "traceback": traceback.format_exc()[-2000:],
        }
    print(json.dumps(result, default=str))


SCENARIOS = {"build": scenario_build, "runtime": scenario_runtime, "export": scenario_export}

if __name__ == "__main__":
    main()

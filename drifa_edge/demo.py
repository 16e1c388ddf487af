"""The end-to-end demo on the built-in synthetic set: the main job of a fresh install.

train -> export (ONNX + OpenVINO, MC dropout kept, checked against PyTorch) -> INT8
(NNCF) -> drift gate of INT8 against FP32 -> predict a few cases from image files ->
bench table. Every step is the same library call the CLI command makes; the demo
only chains them and collects a summary. No data or network needed.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import ConfigError

# Same values as train/demo.toml (tests/test_demo.py keeps the two equal).
DEMO_RECIPE: dict[str, Any] = {
    "image_size": 64,
    "width": 0.25,
    "epochs": 15,
    "batch_size": 16,
    "lr": 3e-3,
    "gamma": 0.5,
    "early_stopping_patience": 5,
    "bn_momentum": 0.1,
    "pairing": "index",
    "augment": True,
    "mc_samples": 10,
    "referral_rate": 0.1,
    "seed": 0,
    "threads": 1,
}
DEMO_DATA = ["synthetic"]
STEPS = ("train", "export", "int8", "check", "predict", "bench")
# `drifa-edge demo --quick`: a first prediction with uncertainty in about a minute on two cores;
# a smaller, shorter training than the demo recipe (its accuracy is not the point), then predict.
QUICK_RECIPE: dict[str, Any] = {"image_size": 32, "width": 0.125, "epochs": 3}
QUICK_STEPS = ("train", "predict")
# written first into a demo's folder: only a folder holding it is removed by ``replace=True``
MARKER_FILE = ".drifa-edge-demo"


@dataclass
class DemoResult:
    out: Path
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    bench: Any = None  # the BenchResult, for the table
    predictions: Any = None  # the PredictSummary of the predict step, for its table

    def add(self, step: str, seconds: float, **info: Any) -> None:
        self.steps[step] = {"seconds": round(seconds, 1), **info}


def _write_cases(out: Path, card, n: int = 4, seed: int = 0) -> Path:
    """A few synthetic test cases as PNG files plus a manifest, as a user would bring them."""
    from PIL import Image

    from drifa_edge.data.sources import load_datasets

    sets = load_datasets(DEMO_DATA, seed=seed)
    folder = out / "cases"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        row = {"case_id": f"case-{i:02d}"}
        for task in card.task_names:
            test = sets[task].subset("test")
            img = np.asarray(test.load(i))
            pixels = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            pil = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            path = folder / f"{row['case_id']}_{task}.png"
            pil.save(path)
            row[task] = path.name
        rows.append(row)
    # one broken file, to show that a bad case is reported and the batch goes on
    broken = {"case_id": "case-broken"}
    for task in card.task_names:
        broken[task] = rows[0][task]
    (folder / "broken.png").write_bytes(b"not a png")
    broken[card.task_names[0]] = "broken.png"
    rows.append(broken)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case_id", *card.task_names])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def run_demo(
    out: str | Path,
    epochs: int | None = None,
    samples: int = 30,
    steps: tuple[str, ...] = STEPS,
    log: Callable[[str], None] = print,
    *,
    recipe: dict[str, Any] | None = None,
    replace: bool = False,
) -> DemoResult:
    """Run the pipeline into ``out`` (empty or absent; with ``replace``, a folder an earlier
    demo wrote is removed first); returns what each step produced. ``recipe`` overrides
    :data:`DEMO_RECIPE` (``--quick`` passes :data:`QUICK_RECIPE` with :data:`QUICK_STEPS`)."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.data.sources import load_datasets
    from drifa_edge.training.config import load_config
    from drifa_edge.training.loop import train

    out = Path(out)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ConfigError(f"unknown demo steps {sorted(unknown)}; choose from {list(STEPS)}")
    settings = {**DEMO_RECIPE, **(recipe or {})}
    # before anything is written; epochs=None: the recipe's, 0 or less refused by TrainConfig
    cfg = load_config(None, {**settings, "epochs": settings["epochs"] if epochs is None else epochs})
    _clear_output(out, replace)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text("written by drifa-edge demo; --replace may remove this folder\n")
    numbered = [s for s in STEPS if s in steps]

    def header(step: str) -> str:
        return f"[{numbered.index(step) + 1}/{len(numbered)}]"

    result = DemoResult(out)
    ckpt, export_dir = out / "checkpoint", out / "export"

    t = time.perf_counter()
    log(f"{header('train')} train a small DRIFA-Net on the synthetic set (2 modalities: RGB derm, gray scan)")
    train(load_datasets(DEMO_DATA, seed=cfg.seed), cfg, ckpt, progress=True)
    card = read_card(ckpt)
    test = card.metrics.get("test", {})
    result.add(
        "train",
        time.perf_counter() - t,
        checkpoint=str(ckpt),
        test_accuracy={
            k: round(v.get("accuracy", float("nan")), 3) for k, v in test.items() if isinstance(v, dict)
        },
        test_macro_f1={
            k: round(v.get("macro_f1", float("nan")), 3) for k, v in test.items() if isinstance(v, dict)
        },
    )

    if "export" in steps:
        from drifa_edge.export import export_all

        t = time.perf_counter()
        log(f"{header('export')} export to ONNX and OpenVINO with MC dropout kept, checked against PyTorch")
        exported = export_all(ckpt, export_dir, openvino=True, check=True)
        result.add("export", time.perf_counter() - t, folder=str(export_dir), checks=exported.checks)

    if "int8" in steps and "export" in steps:
        from drifa_edge.quantize.config import QuantizeConfig
        from drifa_edge.quantize.nncf import quantize_openvino

        t = time.perf_counter()
        log(f"{header('int8')} INT8 OpenVINO build (NNCF) calibrated on synthetic training images")
        quantize_openvino(export_dir, DEMO_DATA, QuantizeConfig(subset=64))
        log("      and an ONNX Runtime INT8 build (onnxruntime static quantization, QDQ)")
        from drifa_edge.quantize.onnxrt import quantize_onnx

        quantize_onnx(export_dir, DEMO_DATA, QuantizeConfig(backend="onnx", method="ort", subset=64))
        result.add("int8", time.perf_counter() - t, builds=["openvino-int8", "onnx-int8"])

    if "check" in steps and "int8" in steps:
        from drifa_edge.drift.check import run_check

        t = time.perf_counter()
        log(
            f"{header('check')} drift gate: OpenVINO INT8 against PyTorch FP32, "
            "noise model from the two runs' MC draws"
        )
        report = run_check(
            ckpt,
            export_dir,
            DEMO_DATA,
            samples=samples,
            out=out / "check",
            cand_runtime="openvino",
            cand_precision="int8",
        )
        result.add("check", time.perf_counter() - t, passed=bool(report.passed), report=str(out / "check"))

    if "predict" in steps:
        from drifa_edge.inference.engine import EngineConfig
        from drifa_edge.inference.manifest import read_manifest
        from drifa_edge.inference.predict import predict_cases

        t = time.perf_counter()
        log(f"{header('predict')} predict cases from PNG files (one broken on purpose)")
        manifest = _write_cases(out, card)
        artifact = export_dir if "export" in steps else ckpt
        summary = predict_cases(
            artifact,
            read_manifest(manifest, card.task_names),
            out / "predictions.jsonl",
            engine_cfg=EngineConfig(samples=samples),
        )
        result.predictions = summary
        result.add(
            "predict",
            time.perf_counter() - t,
            ok=summary.ok,
            failed=summary.failed,
            output=str(out / "predictions.jsonl"),
        )

    if "bench" in steps and "export" in steps:
        from drifa_edge.bench.runner import run_bench

        t = time.perf_counter()
        log(
            f"{header('bench')} bench every runtime and precision of the export (T = {samples}, one case per call)"
        )
        bench = run_bench(
            export_dir,
            samples=(samples,),
            batches=(1,),
            out=out / "bench",
            checkpoint=ckpt,
            repeats=5,
            warmup=1,
        )
        result.bench = bench
        result.add("bench", time.perf_counter() - t, table=str(out / "bench"), rows=len(bench.rows))
    return result


def _clear_output(out: Path, replace: bool) -> None:
    """Refuse a non-empty ``out``, or with ``replace`` remove it when an earlier demo wrote it
    (it holds :data:`MARKER_FILE`); a folder the demo did not write is never removed."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if replace and (out / MARKER_FILE).is_file():
        import shutil

        shutil.rmtree(out)
        return
    if replace:
        raise ConfigError(
            f"{out} is not empty and was not written by 'drifa-edge demo', so --replace leaves it alone; "
            "choose another --out"
        )
    raise ConfigError(
        f"{out} is not empty (an earlier demo?); pass --replace to write the demo there again, "
        f"choose another --out, or with make: 'make clean' first, or 'make demo OUT=another-folder'"
    )

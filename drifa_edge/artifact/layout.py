"""Where every exported file lives, what its graph inputs are called, and the
bookkeeping that keeps ``model_card.json`` in step with the files (no heavy imports).

One export folder ``OUT``::

    OUT/model_card.json        checkpoint card + ``export`` section; ``files`` = sha256 of every file
    OUT/checks.json            results of the export checks, per runtime
    OUT/onnx/prefix.onnx       images -> features (deterministic, runs once per case)
    OUT/onnx/suffix.onnx       features -> logits, MC masks drawn in-graph (RandomUniformLike)
    OUT/onnx/suffix_det.onnx   features -> logits, dropout off
    OUT/onnx/suffix_masks.onnx features + one uniform per dropout -> logits (fixed masks, for parity)
                               (every suffix graph also outputs ``embedding``, the pooled features)
    OUT/ood.npz                the OOD density (optional; ``drifa-edge calibrate-ood``), hashed in the card
    OUT/openvino/<graph>.xml|.bin   the same four graphs as OpenVINO IR
    OUT/onnx-int8/, OUT/openvino-int8/, OUT/tensorrt-<target>-<precision>/   (quantized builds)

An ensemble is ``OUT/ensemble.json`` and one such folder per member
(:mod:`drifa_edge.artifact.ensemble`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.card import CARD_FILE, ModelCard, read_card, verify_files, write_card
from drifa_edge.errors import ArtifactError, BadInputError, UnsupportedBackendError
from drifa_edge.model.config import dropout_shapes

CHECKS_FILE = "checks.json"
GRAPHS = ("prefix", "suffix", "suffix_det", "suffix_masks")
# every precision a runtime may be asked for; each runtime's build folders below say which it has
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# TensorRT builds: their own engines per target and precision, from these ONNX graphs
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")
TENSORRT_GRAPHS = ("prefix", "suffix", "suffix_masks")
TENSORRT_BUILD_FILE = "build.json"
# runtime dropout mode -> the suffix graph that implements it
SUFFIX_FOR_MODE = {"mc": "suffix", "off": "suffix_det"}
# precision -> folder; fp32, bf16 and fp16 OpenVINO share the FP32 IR (the rest is a compile hint)
_ONNX_FOLDERS = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}
_OPENVINO_FOLDERS = {"fp32": "openvino", "bf16": "openvino", "fp16": "openvino", "int8": "openvino-int8"}


# ---- graph input / output names (by task, so a graph is self-describing) ----
def image_name(task: str) -> str:
    return f"image_{task}"


def feature_name(task: str) -> str:
    return f"feat_{task}"


def logits_name(task: str) -> str:
    return f"logits_{task}"


def uniform_name(index: int) -> str:
    return f"uniform_{index}"


# the suffix graphs' extra output: the pooled fused embedding (B, M * W3) the heads read,
# branch by branch in card task order (the OOD score's features, see drifa_edge.inference.ood)
EMBEDDING_NAME = "embedding"


def no_embedding_message(root: str | Path) -> str:
    return (
        f"{root}: the suffix graph has no {EMBEDDING_NAME!r} output (exported before drifa-edge "
        "returned pooled features), so the OOD score cannot be computed; re-export the checkpoint"
    )


# ---- folders and files ----
def onnx_folder(precision: str = "fp32") -> str:
    if precision not in _ONNX_FOLDERS:
        raise UnsupportedBackendError(
            f"ONNX artifacts exist in {sorted(_ONNX_FOLDERS)}, not {precision!r}; "
            "use --runtime openvino for bf16"
        )
    return _ONNX_FOLDERS[precision]


def openvino_folder(precision: str = "fp32") -> str:
    if precision not in _OPENVINO_FOLDERS:
        raise UnsupportedBackendError(
            f"OpenVINO artifacts exist in {sorted(_OPENVINO_FOLDERS)}, not {precision!r}"
        )
    return _OPENVINO_FOLDERS[precision]


def tensorrt_folder(target: str, precision: str) -> str:
    return f"tensorrt-{target}-{precision}"


def onnx_file(graph: str, precision: str = "fp32") -> str:
    """Relative path of one ONNX graph, e.g. ``onnx/prefix.onnx``."""
    _check_graph(graph)
    return f"{onnx_folder(precision)}/{graph}.onnx"


def openvino_files(graph: str, precision: str = "fp32") -> tuple[str, str]:
    """Relative paths (xml, bin) of one OpenVINO IR graph."""
    _check_graph(graph)
    stem = f"{openvino_folder(precision)}/{graph}"
    return f"{stem}.xml", f"{stem}.bin"


def _check_graph(graph: str) -> None:
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; one of {GRAPHS}")


def suffix_graph(dropout_mode: str) -> str:
    """The suffix graph a runtime loads for ``options.extra['dropout']``."""
    if dropout_mode not in SUFFIX_FOR_MODE:
        raise UnsupportedBackendError(
            f"dropout mode must be one of {sorted(SUFFIX_FOR_MODE)} for an exported graph, got "
            f"{dropout_mode!r} (fixed masks go through run_suffix(features, uniforms))"
        )
    return SUFFIX_FOR_MODE[dropout_mode]


# ---- integrity ----
def verified_card(root: str | Path, relpaths: list[str]) -> ModelCard:
    """The card of ``root`` after checking that each file in ``relpaths`` is vouched for by
    the card and matches its sha256. Refuses unknown, missing or modified files."""
    root = Path(root)
    card = read_card(root, verify=False)
    for rel in relpaths:
        if not (root / rel).is_file():
            raise ArtifactError(
                f"{root / rel}: not found; this folder lacks that build "
                f"(re-run 'drifa-edge export' with the matching options)"
            )
        if rel not in card.files:
            raise ArtifactError(
                f"{root / rel}: not listed in {root / CARD_FILE}, so its integrity cannot be checked; "
                "re-create the export instead of adding files by hand"
            )
    verify_files(card, root, only=list(relpaths))
    return card


def check_embedded_card(card: ModelCard, embedded_json: str | None, where: str) -> None:
    """The card embedded in a graph must describe the same model and preprocessing as
    ``model_card.json`` (the card itself is not hashed; this catches an edited card)."""
    if embedded_json is None:
        raise ArtifactError(f"{where}: no embedded model card; re-export it with 'drifa-edge export'")
    try:
        embedded = json.loads(embedded_json)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{where}: embedded model card is not valid JSON ({e})") from e
    outside = json.loads(card.to_json())  # the same JSON normalisation as the embedded copy
    for key in ("model", "preprocess"):
        if embedded.get(key) != outside[key]:
            raise ArtifactError(
                f"{where}: the '{key}' section of {CARD_FILE} differs from the card embedded at export; "
                "the card was edited. Re-create the export instead of editing it"
            )


def update_card(root: str | Path, export: dict[str, Any], hash_files: list[str]) -> ModelCard:
    """Merge ``export`` into the card's export section and (re)hash ``hash_files``."""
    card = read_card(root, verify=False)
    section = dict(card.export)
    section.update(export)
    return write_card(card.replace(export=section), root, hash_files=hash_files)


def check_uniforms(card: ModelCard, uniforms: Sequence[np.ndarray], rows: int) -> list[np.ndarray]:
    """Validate the fixed-mask inputs of ``suffix_masks``: one float32 array in [0, 1) per
    MC dropout, shaped (rows, C, H, W) in ``dropout_shapes`` order."""
    shapes = dropout_shapes(card.model)
    if len(uniforms) != len(shapes):
        raise BadInputError(f"need {len(shapes)} uniform arrays (one per MC dropout), got {len(uniforms)}")
    out = []
    for i, (u, shape) in enumerate(zip(uniforms, shapes, strict=True)):
        u = np.ascontiguousarray(u, dtype=np.float32)
        if u.shape != (rows, *shape):
            raise BadInputError(f"uniform {i}: expected shape {(rows, *shape)}, got {u.shape}")
        out.append(u)
    return out

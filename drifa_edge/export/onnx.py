"""ONNX export of DRIFA-Net with MC dropout kept.

The model is exported as four graphs (see :mod:`drifa_edge.artifact.layout`): the
deterministic ``prefix`` (run once per case) and three versions of the stochastic
``suffix``, which the engine runs on the prefix output tiled T times (T stays a
run-time choice; one call serves B*T rows):

- ``suffix``: every MC dropout is RandomUniformLike -> GreaterOrEqual -> Cast -> Mul,
  drawn afresh by the runtime on every call and for every row;
- ``suffix_det``: dropout off (deterministic parity);
- ``suffix_masks``: the uniforms are inputs ``uniform_<i>`` (fixed-mask parity).

Every graph has a dynamic batch axis, inputs/outputs named by task, and the model card
in its ``metadata_props``. Checks run at the end (:mod:`drifa_edge.export.checks`).
"""

from __future__ import annotations

import collections
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import ModelCard, package_versions, write_card
from drifa_edge.artifact.ensemble import ENSEMBLE_FILE, resolve_members
from drifa_edge.artifact.ood import OOD_FILE
from drifa_edge.errors import ConfigError, ExportError, missing_dependency
from drifa_edge.export import ExportResult, collect_files
from drifa_edge.export import checks as export_checks
from drifa_edge.model.config import dropout_shapes
from drifa_edge.progress import stage

try:
    import onnx
    import torch
    from torch import nn
except ImportError as e:  # export needs the [torch] and [onnx] extras
    raise missing_dependency(getattr(e, "name", None) or "torch", "torch,onnx") from e

from drifa_edge.artifact.checkpoint import load_checkpoint
from drifa_edge.model.dropout import dropouts, set_dropout_mode

log = logging.getLogger(__name__)

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
CARD_METADATA_KEY = "drifa_edge.model_card"
GRAPH_METADATA_KEY = "drifa_edge.graph"
RANDOM_OPS = ("RandomUniformLike", "RandomUniform", "RandomNormal", "RandomNormalLike", "Bernoulli")


@dataclass(frozen=True)
class ExportConfig:
    """How to export. ``exporter``: "torchscript" (``torch.onnx.export(dynamo=False)``,
    seconds) or "dynamo" (``torch.export``, slower); both emit RandomUniformLike for the masks."""

    opset: int | None = None
    exporter: str = "torchscript"
    check: bool = True
    checks: export_checks.CheckConfig = field(default_factory=export_checks.CheckConfig)

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.opset is not None and not 13 <= self.opset <= 23:
            raise ConfigError(f"opset must be in 13..23, got {self.opset}")

    @property
    def resolved_opset(self) -> int:
        return self.opset or DEFAULT_OPSET[self.exporter]

    def to_dict(self) -> dict[str, Any]:
        return {"opset": self.resolved_opset, "exporter": self.exporter, "check": self.check}


# ---- torch wrappers: positional tensors in, tuple out (what the exporters want) ----
class _Prefix(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net.forward_prefix(list(images)))  # M x (B, W0, H/4, W/4)


class _Suffix(_Prefix):
    def forward(self, *feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding = self.net.forward_suffix_features(list(feats))  # (B, M*W3)
        return (*self.net.forward_head(embedding), embedding)  # per task (B, K_t), then the embedding


class _SuffixMasks(_Prefix):
    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers = list(dropouts(self.net))
        feats, uniforms = inputs[: -len(layers)], inputs[-len(layers) :]
        for layer, u in zip(layers, uniforms, strict=True):
            layer.mode, layer.uniform = "external", u
        try:
            embedding = self.net.forward_suffix_features(list(feats))  # (B, M*W3)
            return (*self.net.forward_head(embedding), embedding)
        finally:
            for layer in layers:
                layer.mode, layer.uniform = "mc", None


class _Full(_Prefix):
    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net(list(images)))


def _graph_io(net: nn.Module, graph: str, batch: int = 2) -> tuple[nn.Module, tuple, list[str], list[str]]:
    """(wrapper, example inputs, input names, output names) of one graph."""
    cfg = net.cfg
    tasks = cfg.task_names
    gen = torch.Generator().manual_seed(0)
    images = tuple(
        torch.randn(batch, t.channels, cfg.image_size, cfg.image_size, generator=gen) for t in cfg.tasks
    )
    logits = [layout.logits_name(t) for t in tasks]
    if graph in ("prefix", "full"):
        wrapper = _Prefix(net) if graph == "prefix" else _Full(net)
        outputs = [layout.feature_name(t) for t in tasks] if graph == "prefix" else logits
        return wrapper, images, [layout.image_name(t) for t in tasks], outputs
    with torch.no_grad():
        feats = tuple(net.forward_prefix(list(images)))
    names = [layout.feature_name(t) for t in tasks]
    outputs = [*logits, layout.EMBEDDING_NAME]
    if graph in ("suffix", "suffix_det"):
        return _Suffix(net), feats, names, outputs
    uniforms = tuple(torch.rand(batch, *s, generator=gen) for s in dropout_shapes(cfg))
    names += [layout.uniform_name(i) for i in range(len(uniforms))]
    return _SuffixMasks(net), feats + uniforms, names, outputs


def _torch_export(
    wrapper: nn.Module, args: tuple, inputs: list[str], outputs: list[str], path: Path, config: ExportConfig
) -> None:
    kwargs: dict[str, Any] = {"input_names": inputs, "output_names": outputs}
    kwargs["opset_version"] = config.resolved_opset
    if config.exporter == "torchscript":
        kwargs["dynamic_axes"] = {n: {0: "batch"} for n in inputs + outputs}
    else:
        batch = torch.export.Dim("batch", min=1)
        kwargs["dynamic_shapes"] = (tuple({0: batch} for _ in args),)  # one entry for *args
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            program = torch.onnx.export(
                wrapper,
                args,
                str(path) if config.exporter == "torchscript" else None,
                dynamo=config.exporter == "dynamo",
                verbose=False,
                **kwargs,
            )
            if program is not None:
                program.save(str(path))
        except Exception as e:  # the exporters raise many unrelated types
            raise ExportError(f"torch.onnx.export ({config.exporter}) failed for {path.name}: {e}") from e


def _check_random_ops(model: onnx.ModelProto, graph: str, expected: int, path: Path) -> None:
    """The MC suffix must hold one RandomUniformLike per dropout; the others none."""
    counts = collections.Counter(n.op_type for n in model.graph.node)
    found = {op: counts[op] for op in RANDOM_OPS if counts[op]}
    want = {"RandomUniformLike": expected} if expected else {}
    if found != want:
        raise ExportError(
            f"{path}: expected random ops {want} in the {graph!r} graph, found {found}; the exporter "
            "changed how dropout is traced (try --exporter dynamo or another torch version)"
        )


def export_graph(net: nn.Module, graph: str, path: Path, config: ExportConfig, card_json: str) -> None:
    """Export one graph of ``net`` to ``path`` with the card in ``metadata_props``."""
    mode = "off" if graph == "suffix_det" else "mc"  # "mc" with no seed traces as RandomUniformLike
    set_dropout_mode(net, mode)
    wrapper, args, inputs, outputs = _graph_io(net, graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    _torch_export(wrapper, args, inputs, outputs, path, config)
    set_dropout_mode(net, "mc")
    model = onnx.load(str(path))
    expected = len(dropout_shapes(net.cfg)) if graph in ("suffix", "full") else 0
    _check_random_ops(model, graph, expected, path)
    onnx.helper.set_model_props(model, {CARD_METADATA_KEY: card_json, GRAPH_METADATA_KEY: graph})
    model.doc_string = f"drifa-edge {graph} graph of DRIFA-Net (MC dropout kept in 'suffix')"
    onnx.save(model, str(path))


def _export_card(card: ModelCard, checkpoint: Path, config: ExportConfig) -> ModelCard:
    """The checkpoint's card with an export section; ``files`` restarts empty (the export
    folder holds no weights file; their hashes move to ``export.source``)."""
    export = {
        "format": "onnx",
        "settings": config.to_dict(),
        "graphs": {g: layout.onnx_file(g) for g in layout.GRAPHS},
        "dynamic_axes": "axis 0 (batch) of every input and output",
        "io": {
            "prefix": "image_<task> (B,C,H,W) -> feat_<task>",
            "suffix": "feat_<task> -> logits_<task> (softmax + temperature applied by the engine), "
            "embedding (B, M*W3, the pooled features the heads read)",
            "suffix_masks": "feat_<task>, uniform_<i> in [0,1) shaped (B, *dropout_shapes[i]) -> "
            "logits_<task>, embedding",
        },
        "source": {"checkpoint": str(checkpoint.resolve()), "files": dict(card.files)},
        "versions": package_versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return card.replace(files={}, export=export)


def _export_member(checkpoint: Path, out: Path, config: ExportConfig) -> list[dict[str, Any]]:
    net, card = load_checkpoint(checkpoint)
    if card.model.dropout == 0.0:
        raise ExportError(f"{checkpoint}: the model has dropout p=0, so there is no MC dropout to export")
    out.mkdir(parents=True, exist_ok=True)
    card = _export_card(card, checkpoint, config)
    card_json = card.to_json()
    files = [layout.onnx_file(g) for g in layout.GRAPHS]
    for graph, rel in zip(layout.GRAPHS, files, strict=True):
        stage(f"ONNX export: {graph} graph -> {out / rel}")
        export_graph(net, graph, out / rel, config, card_json)
    (out / layout.CHECKS_FILE).unlink(missing_ok=True)
    if (checkpoint / OOD_FILE).is_file():  # the OOD density travels with the weights
        shutil.copyfile(checkpoint / OOD_FILE, out / OOD_FILE)
        files.append(OOD_FILE)
    write_card(card, out, hash_files=files)
    results = [export_checks.check_onnx_graphs(out)]
    if config.check:
        stage(f"ONNX parity and MC checks against PyTorch ({out})")
        results += export_checks.run_checks(checkpoint, out, "onnxruntime", config.checks)
    export_checks.record_checks(out, results)
    export_checks.raise_on_failure(out, results)
    return [r.to_dict() for r in results]


def export_onnx(
    checkpoint: Path,
    out: Path,
    opset: int | None = None,
    check: bool = True,
    *,
    exporter: str = "torchscript",
    check_config: export_checks.CheckConfig | None = None,
    force: bool = False,
) -> ExportResult:
    """Export a checkpoint (or an ensemble folder) to ``out``; check it unless ``check=False``.

    Raises :class:`UntrustedModelError` when a member's card flags a task at chance
    (unless ``force``) and :class:`ParityError` (after writing ``checks.json``) when a
    check fails."""
    from drifa_edge.export.trust import check_not_at_chance

    checkpoint, out = Path(checkpoint), Path(out)
    config = ExportConfig(opset, exporter, check, check_config or export_checks.CheckConfig())
    sources = resolve_members(checkpoint)
    check_not_at_chance(sources, force)
    names = [str(source.relative_to(checkpoint)) for source in sources]  # ["."] for a single model
    checks = {}
    for source, name in zip(sources, names, strict=True):
        checks[name] = _export_member(source, out / name, config)
    if names != ["."]:  # the same manifest (format, member names, metrics) as the checkpoint's
        shutil.copyfile(checkpoint / ENSEMBLE_FILE, out / ENSEMBLE_FILE)
    return ExportResult(out, tuple(out / n for n in names), collect_files(out), checks)


def export_full_graph(checkpoint: Path, path: Path, config: ExportConfig | None = None) -> None:
    """A plain single-graph export (images -> logits, MC masks in-graph), for comparison:
    T samples then cost T full passes. Not part of the standard layout."""
    net, card = load_checkpoint(checkpoint)
    export_graph(net, "full", Path(path), config or ExportConfig(check=False), card.to_json())

"""PyTorch runtime: runs a checkpoint folder eagerly (BatchNorm in eval, MC dropout on)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import UnsupportedBackendError, missing_dependency
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.runtimes.threads import CallThreads, apply_wait_policy, set_torch_threads

log = logging.getLogger(__name__)


def probe() -> dict[str, Any]:
    try:
        import torch
    except ImportError:  # not installed, or installed but broken (the message quotes the real error)
        return {"available": False, "reason": str(missing_dependency("torch", "torch"))}
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return {"available": True, "version": torch.__version__, "devices": devices}


class TorchRuntime:
    name = "torch"
    seedable = True

    def __init__(self, model, card, options: RuntimeOptions) -> None:
        import torch

        from drifa_edge.model.dropout import set_dropout_mode

        if options.precision not in ("fp32", "bf16"):
            raise UnsupportedBackendError(
                f"the torch runtime runs fp32 or bf16, not {options.precision!r}; "
                "export with 'drifa-edge export --openvino --int8' for INT8"
            )
        self._torch = torch
        self.device = options.device or "cpu"
        self.precision = options.precision
        self.card = card
        set_torch_threads(options.threads)
        # no --threads: follow the load call by call (runtimes.threads.CallThreads)
        self._call_threads = CallThreads() if options.extra.get("adapt_threads") else None
        self._dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.model = model.to(self.device, dtype=self._dtype).eval()
        self.channels_last = bool(options.extra.get("channels_last", True)) and self.device == "cpu"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._set_mode = set_dropout_mode
        self.mode = options.extra.get("dropout", "mc")
        set_dropout_mode(self.model, self.mode)

    def _tensor(self, a: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(a)).to(self.device, dtype=self._dtype)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=self._torch.channels_last)
        return t

    def reseed(self, seed: int | None) -> None:
        self._set_mode(self.model, self.mode, seed=seed)

    def _follow_load(self) -> None:
        if self._call_threads is not None:
            n = self._call_threads.threads()
            if n != self._torch.get_num_threads():
                self._torch.set_num_threads(n)

    def run_prefix(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._follow_load()
        with self._torch.inference_mode():
            feats = self.model.forward_prefix([self._tensor(x) for x in images])
        return [f.float().cpu().numpy() for f in feats]

    def run_suffix(
        self, features: Sequence[np.ndarray], uniforms: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        from drifa_edge.model.dropout import dropouts

        layers = list(dropouts(self.model))
        self._follow_load()
        with self._torch.inference_mode():
            if uniforms is not None:
                if len(uniforms) != len(layers):
                    raise ValueError(f"need {len(layers)} uniform arrays, got {len(uniforms)}")
                for layer, u in zip(layers, uniforms, strict=True):
                    layer.mode, layer.uniform = "external", self._tensor(u)
            try:
                logits = self.model.forward_suffix([self._tensor(f) for f in features])
            finally:
                if uniforms is not None:
                    for layer in layers:
                        layer.mode, layer.uniform = self.mode, None
        return [z.float().cpu().numpy() for z in logits]

    def run_suffix_embedding(self, features: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The MC suffix: (logits per task (N, K_t), pooled embedding (N, M*W3))."""
        self._follow_load()
        with self._torch.inference_mode():
            embedding = self.model.forward_suffix_features([self._tensor(f) for f in features])
            logits = self.model.forward_head(embedding)
        return [z.float().cpu().numpy() for z in logits], embedding.float().cpu().numpy()

    def close(self) -> None:
        self.model = None


def open_runtime(path: Path, options: RuntimeOptions) -> TorchRuntime:
    if not apply_wait_policy():  # OpenMP reads it when torch is first imported
        log.debug("torch was imported before drifa-edge set OMP_WAIT_POLICY=PASSIVE; set it yourself")
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise missing_dependency("torch", "torch") from e
    from drifa_edge.artifact.checkpoint import load_checkpoint

    model, card = load_checkpoint(path)
    return TorchRuntime(model, card, options)

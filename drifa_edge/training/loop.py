"""Train one DRIFA-Net: the authors' recipe, resumable, evaluated with MC dropout at the end.

Per epoch: BatchNorm in train mode and MC dropout active (``"mc"``, as the Keras
model's ``Dropout(training=True)``), loss = sum_t w_t * cross-entropy_t (w = gamma,
1 - gamma for two tasks), Adam. Then the val loss, computed deterministically
(BatchNorm in eval, dropout off: a noise-free signal for the LR schedule, early
stopping and the best checkpoint), drives ReduceLROnPlateau (Keras semantics:
absolute min_delta 1e-4), early stopping and the best checkpoint (``<out>/``:
model.safetensors + model_card.json). After every epoch ``<out>/last/`` holds
everything needed to resume (see :mod:`drifa_edge.training.state`).

Randomness: torch is reseeded from (seed, epoch) at the start of every epoch and
batches/flips come from numpy generators seeded the same way, so a resumed run
follows the uninterrupted run exactly (in single-thread, deterministic CPU runs).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.card import CARD_FILE, ModelCard
from drifa_edge.errors import ConfigError, DrifaError, missing_dependency
from drifa_edge.model.config import ModelConfig
from drifa_edge.training.config import TrainConfig
from drifa_edge.training.data import TrainingData, prepare_data

log = logging.getLogger(__name__)

PLATEAU_MIN_DELTA = 1e-4  # Keras ReduceLROnPlateau default, absolute
EVAL_BATCH = 64


def _torch():
    try:
        import torch
    except ImportError as e:
        raise missing_dependency("torch", "torch") from e
    return torch


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 100_003 + epoch) % (2**63 - 1)


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        return
    if (out / CARD_FILE).exists() or (out / "last").exists():
        raise ConfigError(
            f"--out {out} already holds a training run; pass --resume to continue it or choose a new folder"
        )


def build_card(data: TrainingData, cfg: TrainConfig) -> ModelCard:
    model_cfg = ModelConfig(
        tasks=data.task_specs(),
        image_size=cfg.image_size,
        width=cfg.width,
        dropout=cfg.dropout,
        bn_momentum=cfg.bn_momentum,
    )
    return ModelCard(
        model=model_cfg,
        preprocess=data.preprocess_specs(),
        data=data.provenance(),
        training={"config": cfg.to_dict(), "loss_weights": list(cfg.loss_weights(len(data.names)))},
    )


def _loss(torch, logits, labels, weights) -> Any:
    f = torch.nn.functional
    return sum(w * f.cross_entropy(z, y) for w, z, y in zip(weights, logits, labels, strict=True))


def validate(model, data: TrainingData, weights: tuple[float, ...]) -> dict[str, Any]:
    """Deterministic val loss (weighted) and per-task loss/accuracy over each task's cases once."""
    torch = _torch()
    from drifa_edge.model.dropout import set_dropout_mode

    model.eval()
    set_dropout_mode(model, "off")
    xs, ys = data.eval_rows("val")
    n = ys[0].size
    losses = [0.0] * len(xs)
    correct = [0] * len(xs)
    with torch.no_grad():
        for start in range(0, n, EVAL_BATCH):
            logits = model([torch.from_numpy(x[start : start + EVAL_BATCH]) for x in xs])
            for k, (z, y) in enumerate(zip(logits, ys, strict=True)):
                y = torch.from_numpy(y[start : start + EVAL_BATCH])
                keep = y >= 0
                if keep.any():
                    losses[k] += float(torch.nn.functional.cross_entropy(z[keep], y[keep], reduction="sum"))
                    correct[k] += int((z[keep].argmax(1) == y[keep]).sum())
    tasks = {}
    for k, name in enumerate(data.names):
        scored = int((ys[k] >= 0).sum())
        tasks[name] = {"loss": losses[k] / scored, "accuracy": correct[k] / scored}
    total = sum(w * tasks[name]["loss"] for w, name in zip(weights, data.names, strict=True))
    return {"loss": total, "tasks": tasks}


def train_epoch(model, optimizer, data: TrainingData, epoch: int, weights, bar=None) -> float:
    """One pass over the epoch's paired batches; returns the mean weighted training loss."""
    torch = _torch()
    from drifa_edge.model.dropout import set_dropout_mode

    model.train()
    set_dropout_mode(model, "mc")
    total, rows = 0.0, 0
    for xs, ys in data.train_batches(epoch):
        optimizer.zero_grad(set_to_none=True)
        logits = model([torch.from_numpy(x) for x in xs])
        loss = _loss(torch, logits, [torch.from_numpy(y) for y in ys], weights)
        if not torch.isfinite(loss):
            raise DrifaError(
                f"the training loss became {float(loss)} in epoch {epoch + 1}; lower --lr or check the data"
            )
        loss.backward()
        optimizer.step()
        total += loss.item() * ys[0].size
        rows += ys[0].size
        if bar is not None:
            bar()
    return total / max(rows, 1)


def train(sets: dict, cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train on 2-4 labelled sets (one per task) into ``out``; returns the checkpoint folder.

    ``resume=True`` continues from ``out/last`` (a finished run is only re-evaluated
    if its evaluation is missing)."""
    out = Path(out)
    _check_out(out, resume)
    return train_on(prepare_data(sets, cfg, progress=progress), cfg, out, resume, progress)


def train_on(data: TrainingData, cfg: TrainConfig, out: Path, resume: bool, progress: bool) -> Path:
    """:func:`train` on already prepared arrays (an ensemble prepares them once)."""
    torch = _torch()
    from drifa_edge.training.state import LAST_DIR, RunState, load_state, save_state

    _check_out(out, resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = data.with_config(cfg)
    card = build_card(data, cfg)
    model, optimizer, scheduler = _build(card, cfg)
    run = RunState()
    last = out / LAST_DIR
    if resume and (last / "state.json").exists():
        run = load_state(last, model, optimizer, scheduler, cfg.to_dict())
        log.info("resuming %s after epoch %d", out, run.epoch)
    elif resume:
        log.info("nothing to resume in %s; starting a new run", out)

    console = _console(progress)
    if not run.finished(cfg.epochs):
        run.evaluated = False
    while not run.finished(cfg.epochs):
        row = _fit_epoch(model, optimizer, scheduler, data, cfg, run, progress)
        if row["improved"]:
            from drifa_edge.artifact.checkpoint import save_checkpoint

            save_checkpoint(model, _training_card(card, run, "training"), out)
        save_state(last, model, optimizer, scheduler, run, cfg.to_dict())
        if console is not None:
            console.print(_epoch_line(row), highlight=False, soft_wrap=True)
        if run.stopped_early:
            log.info("early stopping after epoch %d (best %d)", run.epoch, run.best_epoch)

    if not run.evaluated:
        from drifa_edge.artifact.card import write_card
        from drifa_edge.training.evaluate import evaluate_checkpoint, summary

        evaluated = evaluate_checkpoint(out, data, cfg)
        write_card(_training_card(evaluated, run, "finished"), out)
        run.evaluated = True
        save_state(last, model, optimizer, scheduler, run, cfg.to_dict())
        log.info("test metrics: %s", summary(evaluated.metrics))
    return out


def _build(card: ModelCard, cfg: TrainConfig):
    """Model (seeded initialization), Adam and ReduceLROnPlateau with Keras semantics."""
    torch = _torch()
    from drifa_edge.model.drifa import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(card.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.min_lr,
        threshold=PLATEAU_MIN_DELTA,
        threshold_mode="abs",
    )
    return model, optimizer, scheduler


def _fit_epoch(
    model, optimizer, scheduler, data: TrainingData, cfg: TrainConfig, run, progress: bool
) -> dict:
    """Train one epoch, validate, step the LR schedule and the early-stopping counter;
    append the epoch to ``run.history`` and return it (with ``improved``)."""
    torch = _torch()
    epoch = run.epoch
    weights = cfg.loss_weights(len(data.names))
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    lr = optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    with _bar(progress, f"epoch {epoch + 1}/{cfg.epochs}", data.batches_per_epoch()) as bar:
        train_loss = train_epoch(model, optimizer, data, epoch, weights, bar)
    val = validate(model, data, weights)
    if not np.isfinite(val["loss"]):
        raise DrifaError(f"the validation loss became {val['loss']} in epoch {epoch + 1}; lower --lr")
    scheduler.step(val["loss"])
    improved = val["loss"] < run.best_val_loss
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val": val["tasks"],
        "lr": lr,
        "seconds": round(time.perf_counter() - started, 2),
    }
    run.history.append(row)
    run.epoch = epoch + 1
    if improved:
        run.best_val_loss, run.best_epoch, run.bad_epochs = val["loss"], epoch + 1, 0
    else:
        run.bad_epochs += 1
        patience = cfg.early_stopping_patience
        run.stopped_early = patience is not None and run.bad_epochs >= patience
    return {**row, "improved": improved}


def _epoch_line(row: dict) -> str:
    accs = " ".join(f"{n} {t['accuracy']:.3f}" for n, t in row["val"].items())
    return (
        f"epoch {row['epoch']:>3}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  acc {accs}  "
        f"lr {row['lr']:.1e}  {row['seconds']:.1f}s" + ("  *" if row["improved"] else "")
    )


def _training_card(card: ModelCard, run, status: str) -> ModelCard:
    epochs_run = len(run.history)
    seconds = [h["seconds"] for h in run.history]
    training = dict(card.training)
    training.update(
        {
            "status": status,
            "epochs_run": epochs_run,
            "best_epoch": run.best_epoch,
            "best_val_loss": run.best_val_loss,
            "stopped_early": run.stopped_early,
            "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
            "history": run.history,
        }
    )
    return card.replace(training=training)


def _console(progress: bool):
    if not progress:
        return None
    from rich.console import Console

    return Console(stderr=True)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


class _Bar:
    def __init__(self, description: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = self.progress.add_task(description, total=total)

    def __enter__(self):
        self.progress.start()
        return lambda: self.progress.advance(self.task)

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def _bar(enabled: bool, description: str, total: int):
    return _Bar(description, total) if enabled else _NoBar()

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
from drifa_edge.progress import listening, stage, status
from drifa_edge.runtimes.threads import set_torch_threads
from drifa_edge.training.config import TrainConfig
from drifa_edge.training.data import TrainingData, prepare_data
from drifa_edge.training.progress import epoch_bar, epoch_line, eta_seconds, progress_console

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


def _loss(torch, logits, labels, weights, class_weights=None) -> Any:
    """sum_t w_t * CE_t; with class weights CE_t is their weighted mean (PyTorch's definition:
    sum_i c_{y_i} * nll_i / sum_i c_{y_i})."""
    f = torch.nn.functional
    class_weights = class_weights or [None] * len(logits)
    return sum(
        w * f.cross_entropy(z, y, weight=c)
        for w, z, y, c in zip(weights, logits, labels, class_weights, strict=True)
    )


def _inputs(torch, xs, channels_last: bool) -> list:
    tensors = [torch.from_numpy(x) for x in xs]
    if channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    return tensors


def _balance_weights(data: TrainingData) -> list[np.ndarray | None]:
    """Class weights of the val loss: with any class balancing the training objective is a
    class-balanced cross-entropy, and so is the val loss that selects the checkpoint and drives
    the LR schedule (the stratified val split has the training split's class shares)."""
    if data.cfg.class_balance == "none":
        return [None] * len(data.names)
    return list(data.balanced_class_weights().values())


def validate(model, data: TrainingData, weights: tuple[float, ...]) -> dict[str, Any]:
    """Deterministic val loss (task-weighted; class-weighted when ``class_balance`` is not
    "none", see :func:`_balance_weights`) and per-task loss, accuracy, balanced accuracy and
    macro-F1 (sklearn.metrics) over each task's cases once (BatchNorm in eval, dropout off)."""
    torch = _torch()
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from drifa_edge.model.dropout import set_dropout_mode

    model.eval()
    set_dropout_mode(model, "off")
    xs, ys = data.eval_rows("val")
    n = ys[0].size
    losses = [0.0] * len(xs)
    preds = [np.empty(n, dtype=np.int64) for _ in xs]
    class_weights = [None if w is None else torch.from_numpy(w) for w in _balance_weights(data)]
    with torch.no_grad():
        for start in range(0, n, EVAL_BATCH):
            batch = _inputs(torch, [x[start : start + EVAL_BATCH] for x in xs], data.cfg.channels_last)
            logits = model(batch)
            for k, (z, y) in enumerate(zip(logits, ys, strict=True)):
                y = torch.from_numpy(y[start : start + EVAL_BATCH])
                keep = y >= 0
                preds[k][start : start + EVAL_BATCH] = z.argmax(1).numpy()
                if keep.any():
                    c = class_weights[k]
                    losses[k] += float(
                        torch.nn.functional.cross_entropy(z[keep], y[keep], weight=c, reduction="sum")
                    )
    tasks = {}
    for k, name in enumerate(data.names):
        keep = ys[k] >= 0
        y, p = ys[k][keep], preds[k][keep]
        c = class_weights[k]
        tasks[name] = {
            "loss": losses[k] / (int(keep.sum()) if c is None else float(c.numpy()[y].sum())),
            "accuracy": float(np.mean(y == p)),
            "balanced_accuracy": float(balanced_accuracy_score(y, p)),
            "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
        }
    total = sum(w * tasks[name]["loss"] for w, name in zip(weights, data.names, strict=True))
    return {"loss": total, "tasks": tasks}


def train_epoch(
    model, optimizer, data: TrainingData, epoch: int, weights, bar=None, precision: str = "fp32"
) -> float:
    """One pass over the epoch's paired batches; returns the mean weighted training loss.
    ``precision``: resolved ("fp32" or "bf16", see :mod:`drifa_edge.training.precision`)."""
    torch = _torch()
    from drifa_edge.model.dropout import set_dropout_mode
    from drifa_edge.training.precision import autocast

    model.train()
    set_dropout_mode(model, "mc")
    class_weights = [None if w is None else torch.from_numpy(w) for w in data.class_weights().values()]
    total, rows = 0.0, 0
    for xs, ys in data.train_batches(epoch):
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            logits = model(_inputs(torch, xs, data.cfg.channels_last))
        logits = [z.float() for z in logits]
        loss = _loss(torch, logits, [torch.from_numpy(y) for y in ys], weights, class_weights)
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
    status("building the model and the training batches")
    _torch()  # a missing torch is a clear error before anything is written
    from drifa_edge.training.state import LAST_DIR, RunState, load_state, save_state

    _check_out(out, resume)
    set_torch_threads(cfg.threads)  # None: what other processes leave free (runtimes.threads)
    data = data.with_config(cfg)
    card = build_card(data, cfg)
    model, optimizer, scheduler = _build(card, cfg)
    precision = _precision(cfg)
    card = card.replace(training={**card.training, **_setup(data, cfg, precision)})
    run = RunState()
    last = out / LAST_DIR
    if resume and (last / "state.json").exists():
        run = load_state(last, model, optimizer, scheduler, cfg.to_dict())
        log.info("resuming %s after epoch %d", out, run.epoch)
    elif resume:
        log.info("nothing to resume in %s; starting a new run", out)

    console = progress_console(progress)
    if not run.finished(cfg.epochs):
        run.evaluated = False
    while not run.finished(cfg.epochs):
        row = _fit_epoch(model, optimizer, scheduler, data, cfg, run, progress, precision)
        if row["improved"]:
            from drifa_edge.artifact.checkpoint import save_checkpoint

            save_checkpoint(model, _training_card(card, run, "training"), out)
        save_state(last, model, optimizer, scheduler, run, cfg.to_dict())
        if console is not None:
            line = epoch_line(row, eta_seconds(run, cfg.epochs))
            if listening():  # the command shows it among its stage lines (and times its silence)
                stage(line)
            else:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
        if run.stopped_early:
            log.info("early stopping after epoch %d (best %d)", run.epoch, run.best_epoch)

    if not run.evaluated:
        from drifa_edge.artifact.card import write_card
        from drifa_edge.training.evaluate import evaluate_checkpoint, summary

        stage(f"evaluating the best checkpoint (epoch {run.best_epoch}) on the test split")
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
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
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


def _precision(cfg: TrainConfig) -> str:
    from drifa_edge.training.precision import native_bf16, resolve_precision

    precision = resolve_precision(cfg.precision)
    if precision == "bf16" and not native_bf16():
        log.warning("precision bf16 on a CPU without AVX512-BF16 or AMX: emulated, likely slower than fp32")
    return precision


def _setup(data: TrainingData, cfg: TrainConfig, precision: str) -> dict[str, Any]:
    """What the card records about how the model was trained, beside the config."""
    weights = data.class_weights()
    return {
        "precision": precision,
        "class_balance": cfg.class_balance,
        "class_weights": {
            t: None if w is None else [round(float(v), 6) for v in w] for t, w in weights.items()
        },
        "class_counts": {s: data.class_counts(s) for s in ("train", "val", "test")},
        "batchnorm_statistics": (
            "recomputed over the training split before every validation and checkpoint "
            "(cumulative average, MC dropout masks on, fixed seed)"
            if cfg.recompute_bn
            else f"running average, momentum {cfg.bn_momentum}"
        ),
    }


def _fit_epoch(
    model,
    optimizer,
    scheduler,
    data: TrainingData,
    cfg: TrainConfig,
    run,
    progress: bool,
    precision: str = "fp32",
) -> dict:
    """Train one epoch, recompute BatchNorm statistics, validate, step the LR schedule and
    the early-stopping counter; append the epoch to ``run.history`` and return it (with
    ``improved``)."""
    torch = _torch()
    epoch = run.epoch
    weights = cfg.loss_weights(len(data.names))
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    lr = optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    with epoch_bar(progress, f"epoch {epoch + 1}/{cfg.epochs}", data.batches_per_epoch()) as bar:
        train_loss = train_epoch(model, optimizer, data, epoch, weights, bar, precision)
    status(f"epoch {epoch + 1}/{cfg.epochs}: BatchNorm statistics and validation")
    if cfg.recompute_bn:
        from drifa_edge.training.batchnorm import recompute_bn_statistics

        recompute_bn_statistics(model, data.bn_batches(EVAL_BATCH), channels_last=cfg.channels_last)
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

"""What a training run prints: one plain line per epoch, a transient bar on a terminal.

The epoch lines go to stderr through a rich Console with markup off (task names are
user text) and read the same in a log file; the bar is shown only on a terminal. The bar's
counter is also sent to :func:`drifa_edge.progress.status`, so that ``drifa-edge train``
repeats it (``still: epoch 3/60: batch 12 of 40``) in a log when an epoch is long.
"""

from __future__ import annotations

import numpy as np

from drifa_edge.progress import status


def eta_seconds(run, epochs: int) -> float:
    """Seconds left if every remaining epoch runs (early stopping may end the run sooner)."""
    if run.finished(epochs):
        return 0.0
    seconds = [h["seconds"] for h in run.history[-5:]]
    return float(np.mean(seconds)) * (epochs - run.epoch)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def epoch_line(row: dict, eta: float | None = None) -> str:
    """One plain line per epoch (also readable in a log file): losses, per-task val accuracy
    and balanced accuracy, learning rate, seconds, ETA; ``*`` marks a new best checkpoint."""
    tasks = "  ".join(
        f"{n} acc {t['accuracy']:.3f} bal {t.get('balanced_accuracy', float('nan')):.3f}"
        for n, t in row["val"].items()
    )
    line = (
        f"epoch {row['epoch']:>3}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  {tasks}  "
        f"lr {row['lr']:.1e}  {row['seconds']:.1f}s"
    )
    if eta is not None:
        line += f"  eta {_duration(eta)}"
    return line + ("  *" if row["improved"] else "")


def progress_console(progress: bool):
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
    """A transient bar on a terminal; nothing in a log file (the epoch lines say it all)."""

    def __init__(self, description: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        console = Console(stderr=True)
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task(description, total=total)
        self.description, self.total, self.done = description, total, 0

    def advance(self) -> None:
        self.progress.advance(self.task)
        self.done += 1
        status(f"{self.description}: batch {self.done} of {self.total}")

    def __enter__(self):
        self.progress.start()
        status(f"{self.description}: training, {self.total} batches")
        return self.advance

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def epoch_bar(enabled: bool, description: str, total: int):
    return _Bar(description, total) if enabled else _NoBar()

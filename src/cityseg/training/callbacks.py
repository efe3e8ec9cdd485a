"""Keras callbacks for `cityseg train`: progress lines, NaN guard, bundles, curves.

Keras' own progress bar prints a line per batch in logs and shows per-batch metric
means; users want one line per epoch with the epoch-level val mIoU and an ETA, and a run
directory that always holds a usable `best/` and a resumable `last/`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cityseg._tf import keras
from cityseg.fsutil import atomic_write_json
from cityseg.inference.bundle import save_bundle

logger = logging.getLogger(__name__)
SECONDS_COLUMN = "seconds"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EpochSeconds(keras.callbacks.Callback):
    """Adds each epoch's wall time (`seconds`, val included) to the epoch's logs.

    It runs before CSVLogger, so metrics.csv has a `seconds` column and `cityseg compare`
    can show any run's training time, not only a study's trials.
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs[SECONDS_COLUMN] = round(time.monotonic() - self._started, 2)


def csv_lacks_column(csv_path: Path, name: str) -> bool:
    """A metrics.csv (of a run being resumed) whose header has no `name` column: rows
    with one more value than its header would no longer read as a table."""
    if not csv_path.is_file():
        return False
    with csv_path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return bool(header) and name not in header


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch: losses, mIoU, the best so far and the time left."""

    def __init__(self, epochs: int, monitor: str, best: float | None = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.monitor = monitor
        self.best = best
        """Carried over from the checkpoint on resume, so "best" means the whole run's."""
        self._epoch_start = 0.0
        self._durations: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        took = time.monotonic() - self._epoch_start
        self._durations.append(took)
        value = logs.get(self.monitor)
        if value is not None and (self.best is None or value > self.best):
            self.best = float(value)
        left = (self.epochs - epoch - 1) * float(np.mean(self._durations[-3:]))
        logger.info(
            f"epoch {epoch + 1}/{self.epochs}  loss {_fmt(logs.get('loss'))}  "
            f"mIoU {_fmt(logs.get('miou'))}  val_loss {_fmt(logs.get('val_loss'))}  "
            f"val mIoU {_fmt(logs.get('val_miou'))}  best {_fmt(self.best)}  "
            f"{_duration(took)}/epoch  ETA {_duration(left)}"
        )


class NanGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers where, for a clear message."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.where: tuple[int, int] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


class RunCheckpoints(keras.callbacks.Callback):
    """Saves `last/` every epoch (with optimizer state) and `best/` when `monitor` improves.

    Without a `run_dir` (a worker other than the chief) it only keeps count, so that every
    worker's report agrees and nothing but the chief writes.
    """

    def __init__(
        self,
        run_dir: Path | None,
        card: Callable[[dict[str, Any]], dict[str, Any]],
        monitor: str,
        best: float | None = None,
        best_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.card = card
        self.monitor = monitor
        self.best = best
        self.best_epoch = best_epoch
        self.completed = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.completed = epoch + 1
        value = logs.get(self.monitor)
        if (
            value is not None
            and math.isfinite(float(value))
            and (self.best is None or float(value) > self.best)
        ):
            self.best, self.best_epoch = float(value), epoch + 1
            if self.run_dir is not None:
                save_bundle(self.model, self.run_dir / "best", self.card(self.summary(logs)))
        self.save_last(logs)

    def summary(self, logs: dict[str, Any]) -> dict[str, Any]:
        return {
            "epochs_completed": self.completed,
            "best_epoch": self.best_epoch,
            f"best_{self.monitor}": self.best,
            "last": {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))},
        }

    def save_last(self, logs: dict[str, Any] | None = None) -> None:
        if self.run_dir is None:
            return
        state = {"epoch": self.completed, "best": self.best, "best_epoch": self.best_epoch}

        def extras(folder: Path) -> None:
            save_optimizer(self.model.optimizer, folder / OPTIMIZER_STATE)
            atomic_write_json(folder / TRAIN_STATE, state)

        save_bundle(self.model, self.run_dir / "last", self.card(self.summary(logs or {})), extras)


OPTIMIZER_STATE = "optimizer.npz"
TRAIN_STATE = "state.json"


def save_optimizer(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    """Optimizer slots and step count, as plain arrays (never a pickled object)."""
    arrays = [np.asarray(v.numpy()) for v in optimizer.variables]
    with path.open("wb") as handle:
        np.savez(handle, *arrays)  # stored as arr_0, arr_1, ... in variable order


def restore_optimizer(
    optimizer: keras.optimizers.Optimizer, path: Path, variables: list[Any]
) -> None:
    optimizer.build(variables)
    with np.load(path, allow_pickle=False) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(
            f"{path} holds {len(values)} optimizer arrays, expected {len(optimizer.variables)}"
        )
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)


class Curves(keras.callbacks.Callback):
    """Redraws curves.png from metrics.csv after every epoch, so it is there mid-run."""

    def __init__(self, csv_path: Path, png_path: Path) -> None:
        super().__init__()
        self.csv_path = csv_path
        self.png_path = png_path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        plot_curves(self.csv_path, self.png_path)


def trim_metrics(csv_path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first `epochs` epochs.

    CSVLogger writes an epoch's row before `last/` is saved, so a run killed in between
    has one row more than its checkpoint; resuming re-runs that epoch and would log it
    twice.
    """
    if not csv_path.is_file():
        return
    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    column = header.index("epoch") if "epoch" in header else 0
    kept = [row for row in body if row and _epoch_of(row, column) < epochs]
    if len(kept) == len(body):
        return
    tmp = csv_path.with_suffix(".tmp.csv")
    with tmp.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    tmp.replace(csv_path)


def _epoch_of(row: list[str], column: int) -> int:
    try:
        return int(row[column])
    except (IndexError, ValueError):
        return 1 << 30  # a torn last line: dropped with the rows past the checkpoint


def _series(rows: list[dict[str, str]], name: str) -> list[float] | None:
    """A column as numbers, or None when any epoch lacks it.

    CSVLogger writes "NA" for keys an epoch did not log: without a val split every val_
    column is "NA", and such a curve is left out rather than drawn (or parsed) as numbers.
    """
    values = []
    for row in rows:
        try:
            value = float(row.get(name) or "nan")
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        values.append(value)
    return values


def plot_curves(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, names, title in (
        (left, ("loss", "val_loss"), "loss"),
        (right, ("miou", "val_miou"), "mean IoU"),
    ):
        for name in names:
            values = _series(rows, name)
            if values is not None:
                axis.plot(
                    epochs,
                    values,
                    marker="o",
                    label="val" if name.startswith("val_") else "train",
                )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.get_lines():
            axis.legend()
    figure.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(png_path)

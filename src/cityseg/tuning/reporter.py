"""The Keras callback between a training run and its Optuna trial.

Each epoch's score (val mIoU, or train mIoU without a val split) is reported to the
trial, which is what lets Optuna's pruner compare trials at equal epochs; when the
pruner says a trial is behind, training stops at the end of that epoch, with best/
and last/ saved as for any run. optuna-integration has such a callback, but it is one
more package for ten lines, and this one also prints the study's progress line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg._tf import keras
from cityseg.tuning.trial import write_record

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

SCORE_LABELS = {"val_miou": "val mIoU", "miou": "train mIoU"}


class TrialReporter(keras.callbacks.Callback):
    """Reports each epoch's score to `trial` and stops training when it is pruned."""

    def __init__(
        self,
        trial: optuna.Trial,
        run_dir: Path,
        *,
        epochs: int,
        prune: bool,
        best_so_far: Callable[[], float | None],
    ) -> None:
        super().__init__()
        self.trial = trial
        self.run_dir = run_dir
        self.epochs = epochs
        self.prune = prune
        self.best_so_far = best_so_far
        self.pruned_at: int | None = None
        """The epoch (1-based) after which the pruner stopped this trial."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        write_record(
            self.run_dir,
            study=self.trial.study.study_name,
            number=self.trial.number,
            params=dict(self.trial.params),
            state="running",
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        name = "val_miou" if logs.get("val_miou") is not None else "miou"
        value = logs.get(name)
        if value is None:
            return
        best = self.best_so_far()
        logger.info(
            f"  trial {self.trial.number + 1} epoch {epoch + 1}/{self.epochs}  "
            f"{SCORE_LABELS[name]} {float(value):.4f}  "
            f"study best {'-' if best is None else f'{best:.4f}'}"
        )
        if not self.prune:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True

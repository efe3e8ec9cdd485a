"""`cityseg.train` and `cityseg.Run`: a training run as an object, the run folder as its truth.

`cityseg train` leaves everything in `runs/train/<name>/` (config.json, metrics.csv,
best/, last/), and later commands find what they need there. A `Run` reads the same
files, so a run trained from a shell opens in a notebook the same as one trained from
Python, and a run still training shows its epochs so far on every read of `metrics`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.api._common import PathLike, optional_path, size_of
from cityseg.api.model import Model
from cityseg.config import DEFAULT_PROJECT, TrainConfig
from cityseg.errors import CitysegError, DataError, UsageError
from cityseg.inference.bundle import CARD_NAME
from cityseg.inference.predictor import newest_bundle
from cityseg.logs import api_messages
from cityseg.runs import CONFIG_NAME, run_config

if TYPE_CHECKING:
    from cityseg.training.train import TrainReport

METRICS_NAME = "metrics.csv"
STATE_PATH = Path("last") / "state.json"
KNOWN_COLUMNS = (
    "loss",
    "miou",
    "miou_nonvoid",
    "val_loss",
    "val_miou",
    "val_miou_nonvoid",
    "learning_rate",
)


class WorkerProcessError(CitysegError):
    """`cityseg.train` on a worker of a multi-worker run other than the chief: training
    finished, but only the chief writes (and so can return) the run folder."""

    def __init__(self, message: str, report: TrainReport) -> None:
        super().__init__(message)
        self.report = report
        """What this worker trained (its epochs), for a caller that reports it."""


@dataclass(frozen=True)
class EpochMetrics:
    """One row of metrics.csv; None where the epoch did not log the value (NA)."""

    epoch: int
    """1-based, as the training log and `best_epoch` count (metrics.csv counts from 0)."""
    loss: float | None
    miou: float | None
    miou_nonvoid: float | None
    val_loss: float | None
    val_miou: float | None
    val_miou_nonvoid: float | None
    learning_rate: float | None
    extra: dict[str, float | None] = dataclasses.field(default_factory=dict)
    """Columns logged by callbacks of your own, by name."""


@dataclass(frozen=True)
class RunMetrics:
    """A run's per-epoch history and its best epoch by the score it was selected on."""

    history: tuple[EpochMetrics, ...]
    monitor: str
    """val_miou, or miou for a dataset without a val split."""
    best_epoch: int | None
    best_score: float | None

    @property
    def epochs(self) -> int:
        return len(self.history)


class Run:
    """A training run folder (`runs/train/<name>/`), from `cityseg.train` or the CLI."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        config = run_config(self.path)
        if config is None:
            raise DataError(f"{self.path} is not a cityseg training run (no valid {CONFIG_NAME})")
        self._record = config
        self.report: TrainReport | None = None
        """What `cityseg.train` reported as it returned this run (epochs completed in
        this call, monitor, best score and epoch); None for a run opened from a folder,
        whose `metrics` say the same from its files."""

    @classmethod
    def newest(cls, project: PathLike = DEFAULT_PROJECT) -> Run:
        """The run whose best/ was written last, the one `Model()` opens."""
        return cls(newest_bundle(Path(project)).parent)

    @property
    def config(self) -> TrainConfig:
        """The settings it was trained with (what `--resume` continues with)."""
        from cityseg.training.train import config_from_json

        return config_from_json(self._record)

    @property
    def classes(self) -> list[str]:
        return [str(name) for name in self._record.get("classes", [])]

    @property
    def best(self) -> Model:
        """The bundle of the best epoch (what every command uses by default)."""
        return Model(self.path / "best", verbose=False)

    @property
    def last(self) -> Model:
        """The bundle of the last finished epoch (what `resume` continues from)."""
        return Model(self.path / "last", verbose=False)

    @property
    def exports(self) -> list[Model]:
        """Every export made from this run (`<run>/export/*`)."""
        folders = sorted(p.parent for p in (self.path / "export").glob(f"*/{CARD_NAME}"))
        return [Model(folder, verbose=False) for folder in folders]

    @property
    def metrics(self) -> RunMetrics:
        """Read afresh from metrics.csv and last/state.json on every access."""
        history = read_history(self.path / METRICS_NAME)
        monitor = "val_miou" if any(e.val_miou is not None for e in history) else "miou"
        best_epoch, best_score = _best(self.path / STATE_PATH, history, monitor)
        return RunMetrics(history, monitor, best_epoch, best_score)

    def __repr__(self) -> str:
        config = self._record
        arch = "-".join(str(config[k]) for k in ("arch", "backbone") if config.get(k))
        metrics = self.metrics
        best = (
            ""
            if metrics.best_score is None
            else (
                f", best {metrics.monitor} {metrics.best_score:.4f} at epoch {metrics.best_epoch}"
            )
        )
        return (
            f"Run({str(self.path)!r}, {arch}, {metrics.epochs}/{config.get('epochs')} epochs{best})"
        )


def read_history(path: Path) -> tuple[EpochMetrics, ...]:
    """metrics.csv as typed rows; a missing file (no epoch finished yet) is no rows."""
    if not path.is_file():
        return ()
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("epoch", "").isdigit()]
    return tuple(_epoch(row) for row in rows)


def _epoch(row: dict[str, str]) -> EpochMetrics:
    values = {name: _number(row.get(name)) for name in KNOWN_COLUMNS}
    extra = {k: _number(v) for k, v in row.items() if k not in (*KNOWN_COLUMNS, "epoch")}
    return EpochMetrics(epoch=int(row["epoch"]) + 1, extra=extra, **values)


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "nan")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _best(
    state_path: Path, history: Sequence[EpochMetrics], monitor: str
) -> tuple[int | None, float | None]:
    """From last/state.json, which the checkpoint writes; else the history's maximum (a
    run stopped before its first checkpoint, or an older layout)."""
    try:
        state = json.loads(state_path.read_text())
        return state.get("best_epoch"), state.get("best")
    except (OSError, ValueError, AttributeError):
        pass
    scored = [(getattr(e, monitor), e.epoch) for e in history if getattr(e, monitor) is not None]
    if not scored:
        return None, None
    score, epoch = max(scored, key=lambda item: (item[0], -item[1]))
    return epoch, score


# --------------------------------------------------------------------------- train


def train(
    config: TrainConfig | None = None,
    *,
    resume: PathLike | None = None,
    callbacks: Sequence[Any] = (),
    verbose: bool = True,
    **overrides: Any,
) -> Run:
    """Train as `cityseg train` does and return the run: `config` (default `TrainConfig()`)
    with `overrides` (any `TrainConfig` field, e.g. `epochs=5`, plus `size="256x512"` or
    `size=(256, 512)` for height and width; `crop="256x256"` or `(256, 256)` trains on
    random crops, see `cityseg.training.crops`). `resume` continues a run folder with its
    saved config, as `--resume`; `callbacks` are extra Keras callbacks; `verbose=False`
    keeps only the warnings of training's messages (its epoch lines among them). The
    returned run's `report` is what training reported.
    """
    from cityseg.training.train import train as train_run

    settings = with_overrides(config or TrainConfig(), overrides)
    with api_messages(verbose):
        report = train_run(settings, resume=optional_path(resume), callbacks=callbacks)
    if not report.wrote_run:
        raise WorkerProcessError(
            f"trained {report.epochs_completed} epoch(s) on this worker; the chief of the "
            "multi-worker run wrote the run folder, open it there with cityseg.Run(path)",
            report,
        )
    run = Run(report.run_dir)
    run.report = report
    return run


def with_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """`config` with `overrides` applied, strings turned into the fields' types (paths,
    enums) so that `data="data/x"` and `optimizer="sgd"` work as on the command line, and
    the choices held as plain strings (`arch`, `loss`, `aug`) given as their enums (the
    command's `Arch.fpn`) turned into those strings, as config.json stores them."""
    changes = dict(overrides)
    if "size" in changes:
        size = size_of(changes.pop("size"))
        if size is not None:
            changes["height"], changes["width"] = size
    if changes.get("crop") is not None:
        changes["crop"] = size_of(changes["crop"], "crop")
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise UsageError(
            f"unknown training setting(s) {', '.join(unknown)}; TrainConfig has "
            f"{', '.join(sorted(fields))} (and size)"
        )
    for name, value in changes.items():
        default = getattr(config, name)
        if isinstance(default, Path) and isinstance(value, str):
            changes[name] = Path(value)
        elif isinstance(default, Enum) and not isinstance(value, Enum):
            changes[name] = _choice(type(default), name, value)
        elif isinstance(value, Enum) and not isinstance(default, Enum):
            changes[name] = value.value
    return dataclasses.replace(config, **changes)


def _choice(kind: type[Enum], name: str, value: object) -> Enum:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise UsageError(f"{name}={value!r} is not one of {choices}") from None

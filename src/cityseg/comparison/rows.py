"""One row per run folder: what it trained, how it scored, or why it has no score.

Everything is read from the files a run leaves (config.json, metrics.csv, best/'s
card, trial.json of a tuning trial) and from the evaluations made of its best model
(`cityseg evaluate` folders, whose metrics.json names the model). A folder that lacks
any of them is still a row, with the reason, so a run that crashed, was pruned, or had
its files deleted half-way is seen rather than silently missing from the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityseg.api.run import Run
from cityseg.fsutil import read_json_object
from cityseg.inference.bundle import CARD_NAME
from cityseg.runs import CONFIG_NAME
from cityseg.training.segformer import is_segformer
from cityseg.tuning.trial import TRIAL_RECORD

METRICS_NAME = "metrics.csv"


@dataclass(frozen=True)
class Evaluations:
    """The newest evaluation of a model, by split, with its folder."""

    by_split: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunRow:
    """A run as compare shows it; None where a value is unknown for this run."""

    name: str
    path: Path
    status: str
    """complete, pruned, failed, running or incomplete."""
    reason: str | None = None
    arch: str | None = None
    backbone: str | None = None
    weights: str | None = None
    loss: str | None = None
    aug: str | None = None
    size: str | None = None
    epochs: int | None = None
    planned_epochs: int | None = None
    params: int | None = None
    gflops: float | None = None
    train_seconds: float | None = None
    val_miou: float | None = None
    val_dice: float | None = None
    class_iou: dict[str, float | None] = field(default_factory=dict)
    test_miou: float | None = None
    official_miou: float | None = None
    latency_ms: float | None = None

    @property
    def best_model(self) -> Path | None:
        model = self.path / "best"
        return model if (model / CARD_NAME).is_file() else None


def read_row(path: Path, name: str, evaluations: dict[Path, Evaluations]) -> RunRow:
    """The row of one run folder (see the module)."""
    row = RunRow(name=name, path=path, status="complete")
    trial = read_json_object(path / TRIAL_RECORD)
    config = read_json_object(path / CONFIG_NAME)
    if config is None:
        return _without_config(row, trial)
    _fill_config(row, config)
    _fill_trial(row, trial)  # first: a trial's fate is the reason that explains the rest
    _fill_history(row, path)
    _fill_card(row)
    _fill_evaluations(row, evaluations.get(_key(path), Evaluations()))
    return row


def _without_config(row: RunRow, trial: dict[str, Any] | None) -> RunRow:
    row.status = "incomplete"
    if trial is not None and trial.get("state") == "failed":
        row.status, row.reason = "failed", str(trial.get("reason", "failed"))
    elif any(row.path.iterdir()):
        row.reason = f"no {CONFIG_NAME}: files were deleted, or this is not a run folder"
    else:
        row.reason = "empty folder: the run stopped before its model was built"
    return row


def _fill_config(row: RunRow, config: dict[str, Any]) -> None:
    for name in ("arch", "backbone", "weights", "loss", "aug"):
        value = config.get(name)
        setattr(row, name, None if value is None else str(value))
    if config.get("arch") == "unet-scratch":
        row.backbone = f"{config.get('base_filters', '?')} filters"
    elif is_segformer(str(config.get("arch"))):
        row.backbone = None  # keras-hub's MiT encoder: config.json's backbone means nothing
    if config.get("height") and config.get("width"):
        row.size = f"{config['height']}x{config['width']}"
        crop = config.get("crop")
        if isinstance(crop, list) and len(crop) == 2:
            row.size += f" crop {crop[0]}x{crop[1]}"
    row.planned_epochs = config.get("epochs")


def _fill_history(row: RunRow, path: Path) -> None:
    if not (path / METRICS_NAME).is_file():
        _mark(row, "incomplete", f"no {METRICS_NAME}: no epoch finished")
        return
    metrics = Run(path).metrics
    row.epochs = metrics.epochs
    if not metrics.history:
        _mark(row, "incomplete", "no epoch finished")
        return
    seconds = [e.extra.get("seconds") for e in metrics.history]
    if seconds and all(s is not None for s in seconds):
        row.train_seconds = round(sum(s for s in seconds if s is not None), 1)
    if metrics.monitor == "val_miou":
        row.val_miou = metrics.best_score
    else:
        _mark(row, row.status, "no val scores: the dataset has no val split")
    if row.planned_epochs and row.epochs < row.planned_epochs and not (path / "last").is_dir():
        _mark(row, "incomplete", f"stopped after {row.epochs} of {row.planned_epochs} epochs")


def _fill_card(row: RunRow) -> None:
    model = row.best_model
    if model is None:
        _mark(row, "incomplete", "no best/ model: it was deleted, or no epoch was saved")
        return
    if read_json_object(model / CARD_NAME) is None:
        _mark(row, "incomplete", "best/ has no readable card: its files were damaged")


def _fill_evaluations(row: RunRow, evaluations: Evaluations) -> None:
    val = evaluations.by_split.get("val")
    if val is not None:
        scores = val.get("scores", {})
        row.val_dice = scores.get("mean_dice")
        row.class_iou = {
            name: values.get("iou") for name, values in scores.get("per_class", {}).items()
        }
    test = evaluations.by_split.get("test")
    if test is not None:
        row.test_miou = test.get("scores", {}).get("mean_iou")
        official = test.get("official") or {}
        row.official_miou = official.get("mean_iou")


def _fill_trial(row: RunRow, trial: dict[str, Any] | None) -> None:
    if trial is None:
        return
    state = str(trial.get("state", "running"))
    fate = _study_fate(row.path, trial)
    if state == "running" and fate is not None and fate[0] == "failed":
        _mark(row, "failed", fate[1] or "failed")
    elif state == "running":
        _mark(row, "running", "trial.json says running: still training, or its process died")
    elif state in ("pruned", "failed"):
        _mark(row, state, str(trial.get("reason", state)))
    if row.train_seconds is None and isinstance(trial.get("train_seconds"), (int, float)):
        row.train_seconds = float(trial["train_seconds"])
    latency = (trial.get("values") or {}).get("latency")
    if isinstance(latency, (int, float)):
        row.latency_ms = float(latency)


def _study_fate(path: Path, trial: dict[str, Any]) -> tuple[str, str | None] | None:
    from cityseg.comparison.studies import trial_fates

    number = trial.get("number")
    return trial_fates(path.parent).get(number) if isinstance(number, int) else None


def _mark(row: RunRow, status: str, reason: str) -> None:
    """Keep the first reason (the earliest thing that went wrong) and the worst status."""
    if row.status in ("complete", "incomplete") or status in ("failed", "pruned", "running"):
        row.status = status
    row.reason = row.reason or reason


def find_evaluations(folders: list[Path]) -> dict[Path, Evaluations]:
    """Every evaluation under `folders`, by the run folder of the model it scored; for a
    split scored twice, the newest (by file time) wins."""
    found: dict[Path, Evaluations] = {}
    for report in sorted(
        (p for folder in folders for p in folder.glob("**/metrics.json")),
        key=lambda p: p.stat().st_mtime,
    ):
        record = read_json_object(report)
        source = (record or {}).get("source") or {}
        if record is None or source.get("kind") != "model" or "split" not in record:
            continue
        run = _run_of_model(Path(str(source.get("model", ""))), report)
        if run is not None:
            found.setdefault(_key(run), Evaluations()).by_split[str(record["split"])] = record
    return found


def _run_of_model(model: Path, report: Path) -> Path | None:
    """best/ (or a file in it) -> its run folder; relative paths as evaluate wrote them."""
    folder = model if model.suffix == "" else model.parent
    if folder.name != "best":
        return None
    run = folder.parent
    return run if run.is_absolute() or run.exists() else None


def _key(path: Path) -> Path:
    return path.resolve()

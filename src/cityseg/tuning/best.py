"""A study's answer: best.json, with the commands that retrain or export the winner.

A single-objective study has one best trial; `miou,latency` has a Pareto front, every
trial that no other beats on both. best.json lists them with their run folders, so
the one line to export the model, or to train the configuration again for longer, is
there to copy.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.config import TrainConfig
from cityseg.fsutil import atomic_write_json
from cityseg.tuning.space import apply_to
from cityseg.tuning.storage import StudyPlace, redacted

if TYPE_CHECKING:
    import optuna

BEST_NAME = "best.json"
NEVER_IN_COMMANDS = ("project", "name", "worker_timeout", "strategy", "precision")
"""Settings of the study's machinery, not of the model: a retrain picks its own."""
ALWAYS_IN_COMMANDS = ("data", "arch", "backbone", "weights")
"""Written even when they are train's defaults, so the command says what it trains."""


@dataclass(frozen=True)
class BestTrial:
    number: int
    values: dict[str, float]
    params: dict[str, Any]
    run_dir: Path

    @property
    def model(self) -> Path:
        return self.run_dir / "best"

    def to_dict(self, base: TrainConfig) -> dict[str, Any]:
        return {
            "trial": self.number,
            "values": self.values,
            "params": self.params,
            "run_dir": str(self.run_dir),
            "model": str(self.model),
            "retrain": retrain_command(base, self.params),
            "export": f"cityseg export --model {shlex.quote(str(self.model))} -f tflite-int8",
        }


def best_trials(study: optuna.Study, objectives: tuple[str, ...]) -> list[BestTrial]:
    """The best complete trial, or the Pareto front of a multi-objective study."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    chosen = study.best_trials if len(objectives) > 1 else [study.best_trial]
    return [
        BestTrial(
            number=trial.number,
            values=dict(zip(objectives, trial.values, strict=True)),
            params=dict(trial.params),
            run_dir=Path(str(trial.user_attrs.get("run_dir", ""))),
        )
        for trial in sorted(chosen, key=lambda t: t.number)
    ]


def write_best(
    study: optuna.Study, place: StudyPlace, base: TrainConfig, objectives: tuple[str, ...]
) -> Path:
    from cityseg.tuning.study import count_trials

    counts = count_trials(study)
    record = {
        "study": place.name,
        "storage": redacted(place.url),
        "objectives": list(objectives),
        "trials": {
            "complete": counts.complete,
            "pruned": counts.pruned,
            "failed": counts.failed,
        },
        "best": [trial.to_dict(base) for trial in best_trials(study, objectives)],
        "compare": f"cityseg compare {shlex.quote(str(place.folder))}",
        "dashboard": f"optuna-dashboard {shlex.quote(place.url)}",
    }
    path = place.folder / BEST_NAME
    place.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return path


def retrain_command(base: TrainConfig, params: dict[str, Any]) -> str:
    """`cityseg train ...` with every setting of the trial that is not train's default."""
    from cityseg.training.models import default_backbone

    config = apply_to(base, params)
    config = replace(config, backbone=config.backbone or default_backbone(config.arch))
    defaults = TrainConfig()
    words = ["cityseg", "train"]
    for name in ALWAYS_IN_COMMANDS:
        words += [f"--{name}", str(_plain(getattr(config, name)))]
    words += ["--size", f"{config.height}x{config.width}", "--epochs", str(config.epochs)]
    if config.crop is not None:
        words += ["--crop", f"{config.crop[0]}x{config.crop[1]}"]
    sizes = ("height", "width", "crop", "epochs")
    for name in config.__dataclass_fields__:
        if name in (*NEVER_IN_COMMANDS, *ALWAYS_IN_COMMANDS, *sizes):
            continue
        value = getattr(config, name)
        if value != getattr(defaults, name) and value is not None:
            words += [f"--{name.replace('_', '-')}", str(_plain(value))]
    return shlex.join(words)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)

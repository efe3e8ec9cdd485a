"""The search space of `cityseg tune`: which training settings vary, and over what.

One space is written two ways. On the command line every searchable training option
takes a choice list (`--arch fpn,unet`), a range (`--lr 1e-4:1e-2:log`) or one value;
in a file (`--space space.yaml`, YAML or JSON) a list is a choice, a mapping with
`low`/`high` a range, and anything else a fixed value. Either way it becomes the same
`SearchSpace`, which asks an Optuna trial for its values (`suggest`) and is stored
with the study, so that resuming with a different space is caught instead of mixing
the scores of two searches.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.config import TrainConfig
from cityseg.errors import DataError, UsageError, first_line

if TYPE_CHECKING:
    import optuna

SEARCHABLE = (
    "arch",
    "backbone",
    "weights",
    "loss",
    "aug",
    "lr",
    "batch",
    "optimizer",
    "schedule",
    "base_filters",
)
"""TrainConfig fields a study may vary; the rest of a trial's settings are fixed."""

Value = str | int | float


@dataclass(frozen=True)
class Choice:
    """One of a list of values (Optuna's categorical distribution)."""

    values: tuple[Value, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        chosen = trial.suggest_categorical(name, list(self.values))
        assert isinstance(chosen, (str, int, float))  # one of self.values
        return chosen

    def to_json(self) -> Any:
        return list(self.values)

    def __str__(self) -> str:
        return ",".join(str(value) for value in self.values)


@dataclass(frozen=True)
class Range:
    """A number between `low` and `high`, on a log scale when `log` (learning rates)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def to_json(self) -> Any:
        return {"low": self.low, "high": self.high, "log": self.log, "int": self.integer}

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


Dimension = Choice | Range


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions that vary (by TrainConfig field) and the values held fixed."""

    dimensions: dict[str, Dimension]
    fixed: dict[str, Value]

    def suggest(self, trial: optuna.Trial) -> dict[str, Value]:
        """One trial's training overrides: the fixed values and the trial's choices."""
        chosen = {name: dim.suggest(trial, name) for name, dim in self.dimensions.items()}
        return {**self.fixed, **chosen}

    def to_json(self) -> dict[str, Any]:
        return {
            "dimensions": {name: dim.to_json() for name, dim in self.dimensions.items()},
            "fixed": dict(self.fixed),
        }

    def describe(self) -> str:
        """`arch=fpn,unet lr=0.0001:0.01:log`, for the first line of a study."""
        parts = [f"{name}={dim}" for name, dim in self.dimensions.items()]
        return " ".join(parts) or "(nothing varies)"


def space_from_options(options: Mapping[str, str | None]) -> SearchSpace:
    """The space of the command-line options: `{"arch": "fpn,unet", "lr": "1e-4:1e-2:log"}`;
    None (an option not given) leaves the training default."""
    values: dict[str, Any] = {}
    for name, text in options.items():
        if text is None:
            continue
        if not text.strip():
            raise UsageError(f"--{_flag(name)} is empty")
        values[name] = _parse_option(name, text)
    return _space(values, where="the command line")


def space_from_file(path: Path) -> dict[str, Any]:
    """The raw mapping of a `--space` file (YAML, or JSON, which YAML reads too)."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataError(f"cannot read --space {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"--space {path} is not YAML or JSON: {first_line(exc)}") from exc
    if not isinstance(loaded, dict):
        raise DataError(f"--space {path} must map setting names to values, e.g. 'arch: [fpn]'")
    return loaded


def merge_spaces(
    from_file: Mapping[str, Any], options: Mapping[str, str | None], path: Path
) -> SearchSpace:
    """A `--space` file with the command line's options on top (a flag wins)."""
    values = {name: _from_file(name, value, path) for name, value in from_file.items()}
    flags = space_from_options(options)
    merged = {**values, **flags.dimensions, **flags.fixed}
    return _space(merged, where=str(path))


def space_from_json(record: Mapping[str, Any]) -> SearchSpace:
    """A space as `to_json` stored it with the study."""
    dimensions = {
        name: _from_file(name, value, Path("study"))
        for name, value in record.get("dimensions", {}).items()
    }
    return SearchSpace(
        dimensions={k: v for k, v in dimensions.items() if isinstance(v, (Choice, Range))},
        fixed=dict(record.get("fixed", {})),
    )


def _space(values: Mapping[str, Any], where: str) -> SearchSpace:
    unknown = sorted(set(values) - set(SEARCHABLE))
    if unknown:
        raise UsageError(
            f"{', '.join(unknown)} in {where} cannot be searched; the searchable settings "
            f"are {', '.join(SEARCHABLE)}"
        )
    dimensions: dict[str, Dimension] = {}
    fixed: dict[str, Value] = {}
    for name, value in values.items():
        if isinstance(value, Choice) and len(value.values) == 1:
            fixed[name] = value.values[0]
        elif isinstance(value, (Choice, Range)):
            dimensions[name] = value
        else:
            fixed[name] = value
    _check_types(dimensions, fixed)
    return SearchSpace(dimensions, fixed)


def _parse_option(name: str, text: str) -> Choice | Range:
    if ":" in text:
        return _parse_range(name, text.split(":"))
    values = tuple(_scalar(part.strip()) for part in text.split(","))
    if any(value == "" for value in values):
        raise UsageError(f"--{_flag(name)} {text!r} has an empty choice")
    return Choice(tuple(dict.fromkeys(values)))


def _parse_range(name: str, parts: list[str]) -> Range:
    log = len(parts) == 3 and parts[2].strip() == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise UsageError(f"--{_flag(name)} takes LOW:HIGH or LOW:HIGH:log, got {':'.join(parts)!r}")
    low, high = (_scalar(part.strip()) for part in parts[:2])
    return _range(name, low, high, log)


def _range(name: str, low: object, high: object, log: bool) -> Range:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise UsageError(f"{name} range needs two numbers, got {low!r} and {high!r}")
    low_value, high_value = float(low), float(high)  # type: ignore[arg-type]
    if not (math.isfinite(low_value) and math.isfinite(high_value)) or low_value >= high_value:
        raise UsageError(f"{name} range must have LOW < HIGH, got {low!r}:{high!r}")
    if log and low_value <= 0:
        raise UsageError(f"{name} log range must start above 0, got {low!r}")
    integer = isinstance(low, int) and isinstance(high, int)
    return Range(low_value, high_value, log=log, integer=integer)


def _from_file(name: str, value: Any, path: Path) -> Choice | Range | Value:
    if isinstance(value, list):
        if not value or not all(isinstance(v, (str, int, float)) for v in value):
            raise DataError(f"{name} in {path} must be a non-empty list of values")
        return Choice(tuple(dict.fromkeys(value)))
    if isinstance(value, dict):
        extra = set(value) - {"low", "high", "log", "int"}
        if extra or not {"low", "high"} <= set(value):
            raise DataError(f"{name} in {path} must be a list, a value, or low/high[/log]")
        return _range(name, value["low"], value["high"], bool(value.get("log", False)))
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    raise DataError(f"{name} in {path} must be a list, a value, or low/high[/log], got {value!r}")


def _check_types(dimensions: Mapping[str, Dimension], fixed: Mapping[str, Value]) -> None:
    """Each value must be one the setting takes: a bad choice fails now, not in trial 7."""
    from cityseg.api.run import with_overrides

    defaults = TrainConfig()
    for name, dimension in dimensions.items():
        values: tuple[Any, ...] = (
            dimension.values if isinstance(dimension, Choice) else (dimension.low, dimension.high)
        )
        for value in values:
            _check_value(defaults, name, value, with_overrides)
    for name, value in fixed.items():
        _check_value(defaults, name, value, with_overrides)


def _check_value(defaults: TrainConfig, name: str, value: Any, apply: Any) -> None:
    default = getattr(defaults, name)
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if not value.is_integer():
            raise UsageError(f"{name} must be a whole number, got {value!r}")
    names = isinstance(default, str) or name == "backbone"  # backbone's default is None
    if names and not isinstance(value, str):
        raise UsageError(f"{name} must be a name, got {value!r}")
    apply(defaults, {name: value})
    _check_named_choice(name, value)


def _check_named_choice(name: str, value: Any) -> None:
    from cityseg.config import Arch, Augmentation, Loss

    kinds: dict[str, type[Enum]] = {"arch": Arch, "loss": Loss, "aug": Augmentation}
    if name in kinds:
        allowed = [member.value for member in kinds[name]]
        if value not in allowed:
            raise UsageError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def _scalar(text: str) -> Value:
    """`8` -> 8, `1e-3` -> 0.001, anything else stays a name."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _flag(name: str) -> str:
    return name.replace("_", "-")


def space_json(space: SearchSpace) -> str:
    """The stored form, compared on resume (sorted, so key order does not matter)."""
    return json.dumps(space.to_json(), sort_keys=True)


def apply_to(config: TrainConfig, overrides: Mapping[str, Value]) -> TrainConfig:
    """`config` with a trial's values (through the API's conversion of strings to enums)."""
    from cityseg.api.run import with_overrides

    values = dict(overrides)
    for name in ("batch", "base_filters"):
        if name in values:
            values[name] = int(values[name])
    return with_overrides(config, values) if values else dataclasses.replace(config)

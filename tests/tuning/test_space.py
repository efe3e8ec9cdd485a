"""The search space from flags and files, and its checks: no TensorFlow, no training."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cityseg.errors import DataError, UsageError
from cityseg.tuning.space import (
    Choice,
    Range,
    merge_spaces,
    space_from_file,
    space_from_json,
    space_from_options,
)


def test_flags_make_choices_ranges_and_fixed_values() -> None:
    space = space_from_options(
        {"arch": "fpn,unet", "lr": "1e-4:1e-2:log", "batch": "4:16", "weights": "none",
         "loss": None}
    )  # fmt: skip
    assert space.dimensions["arch"] == Choice(("fpn", "unet"))
    assert space.dimensions["lr"] == Range(1e-4, 1e-2, log=True)
    assert space.dimensions["batch"] == Range(4, 16, integer=True)
    assert space.fixed == {"weights": "none"}
    assert "loss" not in space.dimensions and "loss" not in space.fixed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arch": "fpn,segnet"}, "arch 'segnet' is not one of"),
        ({"lr": "1e-2:1e-4"}, "LOW < HIGH"),
        ({"lr": "0:1:log"}, "log range must start above 0"),
        ({"lr": "1:2:3"}, "LOW:HIGH or LOW:HIGH:log"),
        ({"arch": "a:b"}, "needs two numbers"),
        ({"batch": "4.5"}, "whole number"),
        ({"lr": "fast"}, "must be a number"),
        ({"arch": ""}, "is empty"),
        ({"arch": "fpn,,unet"}, "empty choice"),
        ({"epochs": "1,2"}, "cannot be searched"),
    ],
)
def test_bad_flags_are_one_clear_usage_error(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        space_from_options(options)


def test_a_yaml_file_and_flags_merge_with_the_flag_winning(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("arch: [fpn, linknet]\nlr: {low: 0.0001, high: 0.01, log: true}\nbatch: 8\n")
    space = merge_spaces(space_from_file(path), {"arch": "unet,fpn"}, path)
    assert space.dimensions["arch"] == Choice(("unet", "fpn"))
    assert space.dimensions["lr"] == Range(1e-4, 1e-2, log=True)
    assert space.fixed == {"batch": 8}
    assert space_from_json(space.to_json()) == space


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]", "must map setting names"),
        ("arch: {low: 1}", "low/high"),
        ("arch: [", "not YAML or JSON"),
        ("arch: []", "non-empty list"),
    ],
)
def test_bad_space_files_are_one_clear_data_error(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=error):
        merge_spaces(space_from_file(path), {}, path)


def test_the_space_asks_optuna_for_every_dimension() -> None:
    space = space_from_options({"arch": "fpn,unet", "lr": "1e-4:1e-2:log", "weights": "none"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = space.suggest(trial)
    assert values["arch"] in ("fpn", "unet")
    assert 1e-4 <= float(values["lr"]) <= 1e-2
    assert values["weights"] == "none"
    assert set(trial.params) == {"arch", "lr"}


def test_a_backbone_must_be_a_name(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("backbone: [3, resnet34]\n")  # its default is None: "the arch's own"
    with pytest.raises(UsageError, match="backbone must be a name, got 3"):
        merge_spaces(space_from_file(path), {}, path)


def test_a_retrain_command_names_the_backbone_each_arch_defaults_to() -> None:
    from cityseg.config import TrainConfig
    from cityseg.tuning.best import retrain_command

    assert "--arch lraspp --backbone mobilenetv3large " in retrain_command(
        TrainConfig(), {"arch": "lraspp"}
    )
    assert "--arch fpn --backbone efficientnetb0 " in retrain_command(TrainConfig(), {})
    searched = retrain_command(TrainConfig(), {"arch": "deeplabv3plus", "backbone": "mobilenetv2"})
    assert "--backbone mobilenetv2 " in searched

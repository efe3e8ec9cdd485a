"""Configs through pydantic's TypeAdapter: exact round trips, and one line for a bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityseg.config import Optimizer, ServeConfig, TrainConfig
from cityseg.configio import config_from_json, config_to_json
from cityseg.errors import DataError
from cityseg.serve.settings import SETTINGS_ENV, settings_from_env, settings_to_env


def test_train_config_round_trips_through_json_types() -> None:
    config = TrainConfig(data=Path("d"), epochs=3, optimizer=Optimizer.sgd, name="x", crop=(32, 64))
    record = config_to_json(config)
    assert record["data"] == "d" and record["optimizer"] == "sgd" and record["crop"] == [32, 64]
    assert json.loads(json.dumps(record)) == record
    back = config_from_json(TrainConfig, {**record, "classes": ["a"], "versions": {}}, "c.json")
    assert back == config and isinstance(back.data, Path) and back.optimizer is Optimizer.sgd
    del record["crop"]  # a run from before `--crop`
    assert config_from_json(TrainConfig, record, "c.json").crop is None


def test_a_bad_value_is_one_line_naming_the_field() -> None:
    with pytest.raises(DataError, match=r"^run/config.json: epochs: Input should be a valid int"):
        config_from_json(TrainConfig, {"epochs": "ten"}, "run/config.json")
    with pytest.raises(DataError, match=r"optimizer: Input should be 'adam', 'adamw' or 'sgd'"):
        config_from_json(TrainConfig, {"optimizer": "rmsprop"}, "c.json")


def test_serve_config_reaches_worker_processes_whole() -> None:
    config = ServeConfig(model=Path("m"), data=None, port=5001, workers=2, max_queue=3)
    assert settings_from_env({SETTINGS_ENV: settings_to_env(config)}) == config


def test_resume_with_a_broken_config_is_one_line(tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    (run / "last" / "state.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"epochs": "ten"}))
    result = cli("train", "--resume", run)
    assert result.exit_code == 1
    assert "config.json: epochs:" in result.stderr and "Traceback" not in result.stderr

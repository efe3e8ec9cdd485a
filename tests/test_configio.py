"""Configs through pydantic's TypeAdapter: exact round trips, and one line for a bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityseg.config import Optimizer, ServeConfig, TrainConfig
from cityseg.configio import config_from_json, json_record
from cityseg.errors import DataError
from cityseg.serve.settings import SETTINGS_ENV, settings_from_env, settings_to_env


def test_train_config_round_trips_through_json_types() -> None:
    config = TrainConfig(data=Path("d"), epochs=3, optimizer=Optimizer.sgd, name="x", crop=(32, 64))
    record = json_record(config)
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


def test_a_parity_record_round_trips_and_a_broken_one_is_one_line() -> None:
    """export.json's parity record is the report's fields, nested, in their order."""
    from cityseg.deploy.parity import (
        FLOAT_TOLERANCE,
        Latency,
        LatencyComparison,
        MiouComparison,
        ParityReport,
    )

    latency = LatencyComparison(keras=Latency(2.0, 3.0, 2.5), export=Latency(1.0, 1.5, 1.2))
    report = ParityReport(
        images=4,
        pixel_agreement=0.9995,
        miou=MiouComparison(keras=0.8, export=0.799, drop=0.001),
        latency_ms=latency,
        speedup_p50=2.0,
        tolerance=FLOAT_TOLERANCE,
        passed=True,
    )
    record = report.to_dict()
    assert list(record) == [
        "images",
        "pixel_agreement",
        "miou",
        "latency_ms",
        "speedup_p50",
        "tolerance",
        "passed",
    ]
    assert record["latency_ms"]["export"] == {"p50": 1.0, "p95": 1.5, "mean": 1.2}
    assert record["tolerance"] == {"min_pixel_agreement": 0.999, "max_miou_drop": 0.002}
    assert json.loads(json.dumps(record)) == record
    assert ParityReport.from_dict(record) == report
    broken = {**record, "miou": {"keras": 0.8, "export": "high", "drop": 0.0}}
    with pytest.raises(DataError, match=r"^e/export.json: parity: miou.export: .*valid number"):
        ParityReport.from_dict(broken, "e/export.json: parity")

"""`cityseg.runs`: evaluate, export and serve default to the dataset the model's run used.

No model is trained here: a fake run folder (config.json + a copy of the `tiny_bundle`)
stands in for `runs/train/x`, and its dataset is the `prepared` fixture, which is never at
the default `data/cityscapes`. Commands run in `tmp_path`, where no default dataset exists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cityseg.runs import DEFAULT_DATA, find_data, resolve_data, run_dir_of


def make_run(root: Path, data: str, *, bundle: Path | None = None, run_dir: str = "") -> Path:
    """`root/runs/train/x` with a config.json naming `data`, a best/ bundle and an export."""
    run = root / "runs" / "train" / "x"
    if bundle is not None:
        shutil.copytree(bundle, run / "best")
    else:
        (run / "best").mkdir(parents=True)
    (run / "export" / "tflite-int8").mkdir(parents=True)
    (run / "export" / "tflite-int8" / "model.tflite").write_bytes(b"")
    config = {"data": data, "arch": "pspnet", "run_dir": run_dir or "runs/train/x"}
    (run / "config.json").write_text(json.dumps(config))
    return run


def fake_dataset(folder: Path) -> Path:
    """Enough of a prepared dataset for the resolver, which only checks its manifest."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return folder


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    assert not DEFAULT_DATA.exists()
    return tmp_path


# --------------------------------------------------------------------------- the resolver


def test_run_dir_is_found_from_bundles_exports_and_their_files(workdir: Path) -> None:
    run = make_run(workdir, "ds")
    for model in ("best", "export/tflite-int8", "export/tflite-int8/model.tflite"):
        assert run_dir_of(run / model) == run
    assert run_dir_of(Path("runs/train/x/best")) == Path("runs/train/x")  # stays relative
    (workdir / "loose").mkdir()
    assert run_dir_of(workdir / "loose") is None


def test_given_data_wins_and_is_not_announced(workdir: Path, messages: list[str]) -> None:
    run = make_run(workdir, str(fake_dataset(workdir / "ds")))
    assert find_data(Path("mine"), run / "best") == Path("mine")
    assert messages == []


def test_run_dataset_is_the_default_and_says_where_it_came_from(
    workdir: Path, messages: list[str]
) -> None:
    fake_dataset(workdir / "ds")
    make_run(workdir, "ds")  # relative, as `train --data ds` records it
    for model in ("runs/train/x/best", "runs/train/x/export/tflite-int8/model.tflite"):
        messages.clear()
        assert resolve_data(None, Path(model)) == Path("ds")
        assert messages == ["data: ds (from runs/train/x/config.json; choose another with --data)"]


def test_relative_dataset_is_also_found_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained in /proj with --data ds, evaluated from /elsewhere with --model /proj/..."""
    project = tmp_path / "proj"
    fake_dataset(project / "ds")
    run = make_run(project, "ds")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert find_data(None, run / "best") == project.resolve() / "ds"


def test_missing_run_dataset_falls_back_to_the_default_then_none(
    workdir: Path, messages: list[str]
) -> None:
    run = make_run(workdir, "gone")
    assert find_data(None, run / "best") is None
    assert len(messages) == 1 and "gone" in messages[0] and "config.json" in messages[0]
    assert resolve_data(None, run / "best") == DEFAULT_DATA
    fake_dataset(workdir / DEFAULT_DATA)
    assert find_data(None, run / "best") == DEFAULT_DATA
    assert find_data(None, None) == DEFAULT_DATA


# --------------------------------------------------------------------------- the commands


def test_evaluate_uses_the_runs_dataset(
    workdir: Path, tiny_bundle: Path, prepared: Path, cli
) -> None:
    make_run(workdir, str(prepared), bundle=tiny_bundle)
    result = cli("evaluate", "--model", "runs/train/x/best", "--project", "eval", "-q")
    assert result.exit_code == 0, result.stderr
    assert f"data: {prepared} (from runs/train/x/config.json" in result.stderr
    metrics = json.loads(next((workdir / "eval").glob("*/metrics.json")).read_text())
    assert metrics["images"] > 0


def test_export_and_serve_use_the_newest_runs_dataset(
    workdir: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, cli
) -> None:
    make_run(workdir, str(prepared), bundle=tiny_bundle)
    seen: dict[str, Any] = {}

    def fake_export(model: Path, formats: list[str], output: Path | None, **kwargs: Any) -> list:
        seen.update(model=model, data=kwargs["data"])
        return []

    monkeypatch.setattr("cityseg.deploy.export.export_model", fake_export)
    result = cli("export", "-f", "tflite-int8")  # no --model, no --data
    assert result.exit_code == 0, result.stderr
    assert seen == {"model": Path("runs/train/x/best"), "data": prepared}
    assert f"data: {prepared} (from runs/train/x/config.json" in result.stderr

    monkeypatch.setattr("cityseg.serve.app.create_app", lambda settings: seen.update(s=settings))
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)
    result = cli("serve")
    assert result.exit_code == 0, result.stderr
    assert seen["s"].model == Path("runs/train/x/best") and seen["s"].data == prepared


def test_export_without_any_dataset_is_one_clear_error(
    workdir: Path, tiny_bundle: Path, cli
) -> None:
    shutil.rmtree(make_run(workdir, "gone", bundle=tiny_bundle) / "export")  # not a real one
    result = cli("export", "-f", "tflite-int8", "--model", "runs/train/x/best")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: int8 calibration needs a prepared dataset; none at data/cityscapes (pass --data)"
    ]
    assert "gone" in result.stderr  # the note says the run's own dataset is missing

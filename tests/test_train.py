"""`cityseg train` end to end on synthetic data: run directory, learning, resume, bundles."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cityseg.config import TrainConfig
from cityseg.errors import CitysegError, DataError

pytestmark = pytest.mark.slow


def tiny_config(data: Path, project: Path, **changes: object) -> TrainConfig:
    base = {
        "data": data,
        "project": project,
        "arch": "pspnet",  # the quickest to build and trace; 48-divisible sizes
        "backbone": "resnet18",
        "weights": "none",
        "height": 48,
        "width": 96,
        "epochs": 2,
        "batch": 4,
        "lr": 3e-3,
        "aug": "none",
        "patience": 0,
        "steps_per_epoch": 2,
    }
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_run_directory_has_every_file(trained_run: Path) -> None:
    for name in (
        "config.json",
        "metrics.csv",
        "curves.png",
        "best/cityseg.json",
        "best/model.weights.h5",
        "last/cityseg.json",
        "last/model.weights.h5",
        "last/optimizer.npz",
        "last/state.json",
    ):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "tensorboard").rglob("events.out.tfevents.*"))
    config = json.loads((trained_run / "config.json").read_text())
    assert config["arch"] == "fpn" and config["weights"] == "none" and config["patience"] == 0
    assert len(config["data_manifest_sha256"]) == 64
    assert config["versions"]["tensorflow"].startswith("2.")
    rows = read_csv(trained_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(config["epochs"]))  # no early stop
    assert {"loss", "miou", "val_loss", "val_miou", "val_miou_nonvoid"} <= set(rows[0])


def test_val_miou_is_clearly_above_chance(trained_run: Path, train_data: Path) -> None:
    """Chance here = always predicting the most frequent class, scored the same way."""
    from cityseg.data import class_pixel_counts

    counts = class_pixel_counts(train_data, "val", "categories", 8).astype(float)
    majority_iou = counts.max() / counts.sum()  # IoU of the majority class, others score 0
    chance = majority_iou / np.count_nonzero(counts)
    best = max(float(r["val_miou"]) for r in read_csv(trained_run / "metrics.csv"))
    assert best > 2 * chance and best > 0.3, (best, chance)


def test_bundles_reload_bit_identically_and_know_their_classes(trained_run: Path) -> None:
    from cityseg.bundle import load_bundle
    from cityseg.models import build_from_card

    bundle = load_bundle(trained_run / "best", build_from_card)
    assert bundle.card["classes"][0] == "void" and len(bundle.card["palette"]) == 8
    assert bundle.card["training"]["best_epoch"] >= 1
    size = (bundle.card["height"], bundle.card["width"])
    image = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    again = load_bundle(trained_run / "best", build_from_card)
    first, second = bundle.model.predict(image, verbose=0), again.model.predict(image, verbose=0)
    assert first.shape == (1, *size, 8) and np.array_equal(first, second)
    np.testing.assert_allclose(first.sum(-1), 1.0, atol=1e-4)


def test_tampered_or_truncated_bundle_is_refused(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    from cityseg.bundle import load_bundle
    from cityseg.models import build_from_card

    bundle = tmp_path / "b"
    shutil.copytree(trained_run / "best", bundle)
    weights = bundle / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match the SHA-256"):
        load_bundle(bundle, build_from_card)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="truncated or was modified"):
        load_bundle(bundle, build_from_card)
    (bundle / "cityseg.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_bundle(bundle, build_from_card)


def test_interrupt_then_resume_continues_at_the_right_epoch(
    train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityseg import callbacks
    from cityseg.train import TrainingInterrupted, train

    real = callbacks.EpochProgress.on_epoch_end

    def interrupt_after_first(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        real(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochProgress, "on_epoch_end", interrupt_after_first)
    config = tiny_config(train_data, tmp_path, epochs=3, name="resume")
    with pytest.raises(TrainingInterrupted, match="cityseg train --resume"):
        train(config, log=lambda m: None)
    run_dir = tmp_path / "resume"
    assert json.loads((run_dir / "last" / "state.json").read_text())["epoch"] == 1
    monkeypatch.setattr(callbacks.EpochProgress, "on_epoch_end", real)

    notes: list[str] = []
    report = train(TrainConfig(), resume=run_dir, log=notes.append)
    assert any("resuming at epoch 2/3" in n for n in notes)
    assert report.epochs_completed == 3
    assert [int(r["epoch"]) for r in read_csv(run_dir / "metrics.csv")] == [0, 1, 2]


def test_nan_loss_stops_with_a_clear_message(
    train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityseg import losses
    from cityseg._tf import tf
    from cityseg.train import train

    def nan_loss(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        return lambda y_true, y_pred: tf.reduce_mean(y_pred) * float("nan")

    monkeypatch.setattr(losses, "get_loss", nan_loss)
    with pytest.raises(CitysegError, match="the loss became NaN at epoch 1, batch 1"):
        train(tiny_config(train_data, tmp_path, epochs=1), log=lambda m: None)


def test_cli_errors_are_one_line(train_data: Path, tmp_path: Path, cli) -> None:
    result = cli(
        "train",
        "--data",
        train_data,
        "--size",
        "60x130",
        "--weights",
        "none",
        "--project",
        tmp_path,
    )
    assert result.exit_code == 2 and "nearest valid size: 64x128" in result.stderr
    result = cli("train", "--data", tmp_path / "missing")
    assert result.exit_code == 1 and "not a prepared dataset" in result.stderr
    result = cli("train", "--data", train_data, "--size", "big")
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.stderr
    result = cli(
        "train",
        "--data",
        train_data,
        "--size",
        "48x96",
        "--arch",
        "pspnet",
        "--backbone",
        "resnet18",
        "--weights",
        tmp_path / "nope.weights.h5",
        "--project",
        tmp_path / "runs",
    )
    assert result.exit_code == 1 and "nope.weights.h5" in result.stderr
    assert not (tmp_path / "runs").exists()  # a failed build leaves no run folder behind
    result = cli("train", "--resume", tmp_path)
    assert result.exit_code == 1 and "not a cityseg training run" in result.stderr


def test_list_shows_the_choices(cli) -> None:
    result = cli("train", "--list")
    assert result.exit_code == 0
    for word in ("unet-scratch", "efficientnetb0", "resnet34", "focal-dice", "hard"):
        assert word in result.stdout


def test_mirrored_on_two_logical_cpus(train_data: Path, tmp_path: Path) -> None:
    script = f"""
from pathlib import Path
import cityseg._tf as t
cpu = t.tf.config.list_physical_devices("CPU")[0]
t.tf.config.set_logical_device_configuration(cpu, [t.tf.config.LogicalDeviceConfiguration()] * 2)
from cityseg.config import Strategy, TrainConfig
from cityseg.train import train
report = train(TrainConfig(data=Path({str(train_data)!r}), project=Path({str(tmp_path)!r}),
               arch="pspnet", backbone="resnet18", weights="none", height=48, width=96,
               epochs=1, batch=4, steps_per_epoch=2,
               aug="none", strategy=Strategy.mirrored, name="mirrored"), log=print)
assert report.epochs_completed == 1
print("replicas ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas ok" in done.stdout
    assert "devices: 2 replica(s) (MirroredStrategy)" in done.stdout
    assert (tmp_path / "mirrored" / "best" / "cityseg.json").is_file()

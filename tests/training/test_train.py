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
    from cityseg.dataset.entries import class_pixel_counts

    counts = class_pixel_counts(train_data, "val", "categories", 8).astype(float)
    majority_iou = counts.max() / counts.sum()  # IoU of the majority class, others score 0
    chance = majority_iou / np.count_nonzero(counts)
    best = max(float(r["val_miou"]) for r in read_csv(trained_run / "metrics.csv"))
    assert best > 2 * chance and best > 0.3, (best, chance)


def test_bundles_reload_bit_identically_and_know_their_classes(trained_run: Path) -> None:
    from cityseg.inference.bundle import load_bundle
    from cityseg.training.models import build_from_card

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

    from cityseg.inference.bundle import load_bundle
    from cityseg.training.models import build_from_card

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
    train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, messages: list[str]
) -> None:
    from cityseg.training import callbacks
    from cityseg.training.train import TrainingInterrupted, train

    real = callbacks.EpochProgress.on_epoch_end

    def interrupt_after_first(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        real(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochProgress, "on_epoch_end", interrupt_after_first)
    config = tiny_config(train_data, tmp_path, epochs=3, name="resume")
    with pytest.raises(TrainingInterrupted, match="cityseg train --resume"):
        train(config)
    run_dir = tmp_path / "resume"
    assert json.loads((run_dir / "last" / "state.json").read_text())["epoch"] == 1
    monkeypatch.setattr(callbacks.EpochProgress, "on_epoch_end", real)

    messages.clear()
    report = train(TrainConfig(), resume=run_dir)
    assert any("resuming at epoch 2/3" in n for n in messages)
    assert report.epochs_completed == 3
    assert [int(r["epoch"]) for r in read_csv(run_dir / "metrics.csv")] == [0, 1, 2]


def test_nan_loss_stops_with_a_clear_message(
    train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityseg._tf import tf
    from cityseg.training import losses
    from cityseg.training.train import train

    def nan_loss(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        return lambda y_true, y_pred: tf.reduce_mean(y_pred) * float("nan")

    monkeypatch.setattr(losses, "get_loss", nan_loss)
    with pytest.raises(CitysegError, match="the loss became NaN at epoch 1, batch 1"):
        train(tiny_config(train_data, tmp_path, epochs=1))


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
from cityseg import logs
from cityseg.config import Strategy, TrainConfig
from cityseg.training.train import train
logs.install("stdout")
report = train(TrainConfig(data=Path({str(train_data)!r}), project=Path({str(tmp_path)!r}),
               arch="pspnet", backbone="resnet18", weights="none", height=48, width=96,
               epochs=1, batch=4, steps_per_epoch=2,
               aug="none", strategy=Strategy.mirrored, name="mirrored"))
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


@pytest.fixture(scope="module")
def one_city_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset

    spec = SyntheticSpec(
        height=64,
        width=128,
        images_per_city=6,
        cities={"train": ("aachen",), "val": ("frankfurt",), "test": ()},
        seed=3,
    )
    return write_raw_dataset(tmp_path_factory.mktemp("one-city"), spec).root


def test_one_city_trains_to_the_end_without_val(
    one_city_raw: Path, tmp_path: Path, cli, caplog: pytest.LogCaptureFixture
) -> None:
    result = cli("prepare", one_city_raw, "-o", tmp_path / "ds", "--no-verify", "-q")
    assert result.exit_code == 0, result.stderr
    assert "val is empty" in result.stderr and "--split-by image" in result.stderr
    assert not json.loads((tmp_path / "ds" / "manifest.json").read_text())["splits"]["val"]

    from cityseg.training.train import train

    report = train(tiny_config(tmp_path / "ds", tmp_path / "runs", name="noval"))
    assert report.epochs_completed == 2 and report.monitor == "miou"
    assert any("best/ follows the training mIoU" in note for note in caplog.messages)  # a warning
    run_dir = tmp_path / "runs" / "noval"
    rows = read_csv(run_dir / "metrics.csv")
    best_epoch = max(range(len(rows)), key=lambda i: float(rows[i]["miou"])) + 1
    card = json.loads((run_dir / "best" / "cityseg.json").read_text())
    assert card["training"]["best_epoch"] == best_epoch
    assert card["training"]["best_miou"] == pytest.approx(float(rows[best_epoch - 1]["miou"]))
    assert (run_dir / "curves.png").stat().st_size > 0
    assert all(float(row["seconds"]) > 0 for row in rows)

    from cityseg.comparison import compare_runs

    (compared,) = compare_runs([run_dir]).rows  # a plain run's training time, as a trial's
    epoch_seconds = sum(float(r["seconds"]) for r in rows)
    assert compared.train_seconds == pytest.approx(epoch_seconds, abs=0.06)  # kept to 0.1 s


def test_a_run_resumed_from_before_the_seconds_column_keeps_its_table(tmp_path: Path) -> None:
    from cityseg.training.callbacks import csv_lacks_column

    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("epoch,loss,miou\n0,1.5,0.2\n")
    new.write_text("epoch,loss,miou,seconds\n0,1.5,0.2,3.1\n")
    assert csv_lacks_column(old, "seconds") and not csv_lacks_column(new, "seconds")
    assert not csv_lacks_column(tmp_path / "missing.csv", "seconds")


def test_curves_leave_out_columns_an_epoch_did_not_log(tmp_path: Path) -> None:
    """Keras' CSVLogger writes NA for every val_ column of a run without val."""
    from matplotlib import pyplot

    from cityseg.training.callbacks import plot_curves

    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,loss,miou,val_loss,val_miou\n0,1.5,0.2,NA,NA\n1,1.2,0.3,NA,NA\n")
    drawn: list[str] = []
    real_plot = pyplot.Axes.plot

    def spy(self, *args, label=None, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(f"{self.get_title() or '?'}:{label}")
        return real_plot(self, *args, label=label, **kwargs)

    pyplot.Axes.plot = spy  # type: ignore[method-assign]
    try:
        plot_curves(metrics, tmp_path / "curves.png")
    finally:
        pyplot.Axes.plot = real_plot  # type: ignore[method-assign]
    assert (tmp_path / "curves.png").is_file()
    assert drawn == ["?:train", "?:train"]  # one train line per panel, no val line


def test_prepare_can_split_one_city_by_image(one_city_raw: Path, tmp_path: Path, cli) -> None:
    result = cli(
        "prepare", one_city_raw, "-o", tmp_path / "ds", "--no-verify", "-q",
        "--split-by", "image", "--val-ratio", "0.34",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "same cities in train and val" in result.stderr
    splits = json.loads((tmp_path / "ds" / "manifest.json").read_text())["splits"]
    train_keys = {e["key"] for e in splits["train"]}
    val_keys = {e["key"] for e in splits["val"]}
    assert len(val_keys) == 2 and len(train_keys) == 4 and not train_keys & val_keys
    again = cli(
        "prepare", one_city_raw, "-o", tmp_path / "ds", "--no-verify", "-q",
        "--split-by", "image", "--val-ratio", "0.34",
    )  # fmt: skip
    assert again.exit_code == 0 and "already prepared" in again.stdout  # reproducible


KILL_BETWEEN_CSV_AND_CHECKPOINT = """
import os, signal, sys
from pathlib import Path
from cityseg import logs
from cityseg.training import callbacks
from cityseg.config import TrainConfig
from cityseg.training.train import train

logs.install("stdout")
real = callbacks.RunCheckpoints.save_last

def save_last(self, logs=None):
    if self.completed == 2:  # metrics.csv already has epoch 2's row; last/ still epoch 1
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, logs)

callbacks.RunCheckpoints.save_last = save_last
train(TrainConfig(data=Path(sys.argv[1]), project=Path(sys.argv[2]), name="killed",
                  arch="pspnet", backbone="resnet18", weights="none", height=48, width=96,
                  epochs=3, batch=4, lr=3e-3, aug="none", patience=0, steps_per_epoch=2))
"""


def test_resume_after_kill_9_logs_each_epoch_once(
    train_data: Path, tmp_path: Path, messages: list[str]
) -> None:
    from cityseg.training.train import train

    done = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_CSV_AND_CHECKPOINT, str(train_data), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -9, done.stderr[-3000:]
    run_dir = tmp_path / "killed"
    assert [int(r["epoch"]) for r in read_csv(run_dir / "metrics.csv")] == [0, 1]
    state = json.loads((run_dir / "last" / "state.json").read_text())
    assert state["epoch"] == 1

    report = train(TrainConfig(), resume=run_dir)
    assert report.epochs_completed == 3
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # the re-run epoch once
    progress = [n for n in messages if n.startswith("epoch ")]
    bests = [float(n.split("best ")[1].split()[0]) for n in progress]
    scores = [float(r["val_miou"]) for r in rows]
    assert bests[0] == pytest.approx(max(scores[:2]), abs=1e-4)  # carried from epoch 1
    assert bests[-1] == pytest.approx(max(scores), abs=1e-4)
    assert report.best_score == pytest.approx(max(scores), abs=1e-6)

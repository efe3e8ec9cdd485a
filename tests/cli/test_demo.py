"""`cityseg demo` runs the released part of the pipeline end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityseg.dataset.manifest import read_manifest


def test_demo_data_only_writes_the_two_zips(tmp_path: Path, cli) -> None:
    result = cli("demo", tmp_path / "demo", "--data-only", "--images-per-city", "1", "-q")
    assert result.exit_code == 0, result.stderr
    raw = tmp_path / "demo" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [
        "gtFine_trainvaltest.zip",
        "leftImg8bit_trainvaltest.zip",
    ]
    assert "cityseg prepare" in result.stderr
    assert not (tmp_path / "demo" / "data").exists()


def test_demo_prepares_a_dataset(tmp_path: Path, cli) -> None:
    args = ["--images-per-city", "2", "--height", "64", "--width", "128", "--no-train", "-q"]
    result = cli("demo", tmp_path / "demo", *args)
    assert result.exit_code == 0, result.stderr
    index = read_manifest(tmp_path / "demo" / "data" / "cityscapes")
    assert all(index["splits"][split] for split in ("train", "val", "test"))
    assert "[2/2] prepared dataset" in result.stderr


def test_demo_rejects_a_tiny_size_in_one_line(tmp_path: Path, cli) -> None:
    result = cli("demo", tmp_path / "demo", "--height", "20", "--width", "20")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_trains_a_model(tmp_path: Path, cli) -> None:
    result = cli(
        "demo",
        tmp_path / "demo",
        "--images-per-city",
        "2",
        "--height",
        "64",
        "--width",
        "128",
        "--epochs",
        "2",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "demo" / "runs" / "train" / "demo"
    assert (run / "best" / "cityseg.json").is_file() and (run / "metrics.csv").is_file()
    assert "[3/5] trained fpn-efficientnetb0 for 2 epochs" in result.stderr
    assert "[4/5] evaluated on the test split" in result.stderr
    assert len(list((tmp_path / "demo" / "predictions").glob("*.png"))) == 4
    assert (tmp_path / "demo" / "runs" / "eval" / "demo" / "metrics.json").is_file()

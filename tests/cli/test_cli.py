"""The command surface: help, version, `python -m`, choice options and error exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cityseg import __version__
from cityseg.cli import run
from cityseg.config import Arch, Augmentation, Loss, Optimizer, Split, TrainConfig

COMMANDS = (
    "prepare",
    "remap",
    "demo",
    "train",
    "evaluate",
    "predict",
    "serve",
    "export",
    "benchmark",
)


def test_help_lists_every_command(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cityseg {__version__}"


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cityseg", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and __version__ in done.stdout


def test_usage_errors_exit_2(cli) -> None:
    assert cli("remap", "--no-such-option").exit_code == 2
    assert cli("prepare").exit_code == 2
    assert cli("prepare", "x", "--val-ratio", "2").exit_code == 2


def test_debug_env_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSEG_DEBUG", "1")
    from cityseg.errors import DataError

    with pytest.raises(DataError):
        run(["remap", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png")])


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "cityseg"
    done = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0 and "prepare" in done.stdout


def test_choice_enums_match_the_library_lists() -> None:
    """config.py writes the choices out to stay free of TensorFlow; they must not drift."""
    from cityseg.dataset.manifest import SPLITS
    from cityseg.training.augment import AUG_PRESETS
    from cityseg.training.losses import LOSSES
    from cityseg.training.models import ARCHS

    assert tuple(a.value for a in Arch) == ARCHS
    assert tuple(loss.value for loss in Loss) == LOSSES
    assert tuple(a.value for a in Augmentation) == AUG_PRESETS
    assert tuple(s.value for s in Split) == SPLITS


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--arch", "nope"),
        ("train", "--loss", "nope"),
        ("train", "--aug", "nope"),
        ("evaluate", "--split", "nope"),
    ],
)
def test_a_bad_choice_is_a_usage_error(cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr and "nope" in result.stderr


def test_a_bad_size_is_one_line_and_exit_2(cli) -> None:
    for args in (("train", "--size", "big"), ("export", "-f", "onnx", "--size", "8x8")):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert result.stderr.strip().count("\n") == 0 and "--size" in result.stderr


def test_train_flags_reach_the_config_as_cityseg_train_keywords(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cityseg train` is `cityseg.train(**flags)`: its `TrainConfig` comes from the API's
    one builder, enums as the plain strings config.json stores, defaults untouched."""
    import cityseg.api.run
    from cityseg.api.run import with_overrides
    from cityseg.errors import CitysegError

    seen: dict[str, object] = {}

    def keywords_only(**keywords: object) -> None:  # where training would start
        seen["resume"] = keywords.pop("resume")
        seen["config"] = with_overrides(TrainConfig(), keywords)
        raise CitysegError("stopped before training")

    monkeypatch.setattr(cityseg.api.run, "train", keywords_only)
    flags = ["--arch", "unet", "--loss", "dice", "--aug", "hard", "--size", "64x128"]
    flags += ["--optimizer", "sgd", "--epochs", "3", "--name", "x", "--resume", str(tmp_path)]
    result = cli("train", *flags)
    assert result.exit_code == 1 and "stopped before training" in result.stderr
    expected = TrainConfig(
        arch="unet", loss="dice", aug="hard", height=64, width=128,
        optimizer=Optimizer.sgd, epochs=3, name="x",
    )  # fmt: skip
    assert seen == {"resume": tmp_path, "config": expected}
    config = seen["config"]
    assert isinstance(config, TrainConfig)
    assert all(type(v) is str for v in (config.arch, config.loss, config.aug))


def test_train_list_answers_before_other_options_are_checked(cli) -> None:
    result = cli("train", "--size", "big", "--list")
    assert result.exit_code == 0 and "unet-scratch" in result.stdout

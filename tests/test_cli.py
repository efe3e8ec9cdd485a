"""The command surface: help, version, `python -m`, planned commands, error exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cityseg import __version__
from cityseg.cli import run

COMMANDS = ("prepare", "remap", "train", "evaluate", "predict", "serve", "demo")


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

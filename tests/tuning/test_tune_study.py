"""`cityseg tune` as users run it: real processes, killed, resumed and shared; then compare.

Trials are tiny U-Nets from scratch on 32x64 synthetic scenes, 2 epochs each, with a
1-second heartbeat so that a killed trial is failed and retried within seconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from postgres_server import postgres_server

pytestmark = pytest.mark.slow


def tune_command(data: Path, project: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cityseg", "tune", "--data", str(data), "--size", "32x64",
        "--epochs", "2", "--arch", "unet-scratch", "--base-filters", "4,8", "--weights", "none",
        "--lr", "1e-3:1e-2:log", "--batch", "4", "--trials", str(trials), "--study", "s",
        "--project", str(project), "--heartbeat", "1", *extra,
    ]  # fmt: skip


def cityseg(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cityseg", *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)


def load(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=url).get_trials()


def wait_for(path: Path, process: subprocess.Popen[str], log: Path, seconds: float = 400) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"tune ended before {path} appeared: {log.read_text()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def resumed_study(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-trial study killed (SIGKILL) in its second trial, then resumed to the end.

    Without pruning: which trial the median pruner stops depends on the scores, and this
    test counts complete trials (pruning has its own test, test_trial.py)."""
    root = tmp_path_factory.mktemp("tune")
    project = root / "runs" / "tune"
    log = root / "first.stderr"
    with log.open("w") as stderr:
        first = subprocess.Popen(
            tune_command(tiny_data, project, 3, "--no-prune"), cwd=root, text=True,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    wait_for(project / "s" / "trial-1" / "config.json", first, log)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    finished = (project / "s" / "trial-0" / "metrics.csv").read_bytes()
    second = subprocess.run(
        tune_command(tiny_data, project, 3, "--no-prune"),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert second.returncode == 0, second.stderr
    assert "trial 1 failed" not in second.stderr
    assert (project / "s" / "trial-0" / "metrics.csv").read_bytes() == finished
    (root / "resume.stderr").write_text(second.stderr)
    return root


def test_a_killed_study_resumes_without_rerunning_finished_trials(resumed_study: Path) -> None:
    folder = resumed_study / "runs" / "tune" / "s"
    trials = load(f"sqlite:///{folder / 'study.db'}")
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    killed = trials[1]
    assert killed.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == optuna.trial.TrialState.COMPLETE
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].number == 0
    stderr = (resumed_study / "resume.stderr").read_text()
    assert "study best" in stderr and "best: trial" in stderr
    best = json.loads((folder / "best.json").read_text())
    assert best["trials"] == {"complete": 3, "pruned": 0, "failed": 0}
    assert best["best"][0]["retrain"].startswith("cityseg train --data ")
    assert "--arch unet-scratch" in best["best"][0]["retrain"]


def test_compare_shows_every_trial_in_each_format(resumed_study: Path) -> None:
    folder = resumed_study / "runs" / "tune" / "s"
    table = cityseg("compare", folder, "--plot", resumed_study / "compare.png", cwd=resumed_study)
    assert table.returncode == 0, table.stderr
    assert "s/trial-1" in table.stdout and "failed" in table.stdout
    assert "no heartbeat" in table.stderr
    png = (resumed_study / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    rows = json.loads(cityseg("compare", folder, "--format", "json", "--no-plot",
                              cwd=resumed_study).stdout)  # fmt: skip
    by_name = {row["run"]: row for row in rows}
    assert len(rows) == 4 and by_name["s/trial-1"]["status"] == "failed"
    complete = [row for row in rows if row["status"] == "complete"]
    assert len(complete) == 3 and all(row["val_miou"] is not None for row in complete)
    assert all(row["params"] > 0 and row["gflops"] > 0 for row in complete)
    assert [row["val_miou"] for row in complete] == sorted(
        (row["val_miou"] for row in complete), reverse=True
    )
    csv_rows = list(csv.DictReader(io.StringIO(
        cityseg("compare", folder, "--format", "csv", "--no-plot", cwd=resumed_study).stdout
    )))  # fmt: skip
    assert {row["run"] for row in csv_rows} == set(by_name)
    markdown = cityseg("compare", folder, "--format", "md", "--no-plot", cwd=resumed_study).stdout
    assert markdown.startswith("| run | status |") and "- s/trial-1: " in markdown


def test_a_hand_deleted_run_shows_with_its_reason(resumed_study: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(resumed_study / "runs" / "tune" / "s", copy)
    shutil.rmtree(copy / "trial-0" / "best")
    (copy / "trial-0" / "metrics.csv").unlink()
    (copy / "trial-9").mkdir()
    rows = json.loads(cityseg("compare", copy, "--format", "json", "--no-plot",
                              cwd=tmp_path).stdout)  # fmt: skip
    by_name = {row["run"]: row for row in rows}
    assert by_name["s/trial-0"]["status"] == "incomplete"
    assert "no metrics.csv" in by_name["s/trial-0"]["reason"]
    assert "empty folder" in by_name["s/trial-9"]["reason"]


def _shared_study(url: str, data: Path, root: Path) -> None:
    project = root / "runs" / "tune"
    processes = [
        subprocess.Popen(
            tune_command(data, project, 2, "--storage", url),
            cwd=root,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
    trials = load(url)
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all((project / "s" / f"trial-{t.number}" / "best").is_dir() for t in trials)


def test_two_processes_share_one_postgresql_study(tiny_data: Path, tmp_path: Path) -> None:
    try:
        server = postgres_server()
        url = server.__enter__()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    try:
        _shared_study(url, tiny_data, tmp_path)
    finally:
        server.__exit__(None, None, None)


def test_two_processes_share_one_sqlite_study(tiny_data: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    _shared_study(url, tiny_data, tmp_path)
    assert os.path.getsize(tmp_path / "shared.db") > 0

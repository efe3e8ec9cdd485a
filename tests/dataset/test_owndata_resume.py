"""Re-running prepare on an own dataset never loses it: new files are staged and swapped
in, a failure while writing leaves the old dataset whole, and a swap cut short is finished
by the next run. Failures are injected into the real writers with monkeypatch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from test_owndata_formats import photo, via_csv

import cityseg.dataset.own.prepare as own_prepare
from cityseg.dataset.manifest import read_manifest
from cityseg.errors import DataError
from cityseg.images import read_mask


def write_project(src: Path, width: int) -> None:
    rows = {}
    for i in range(4):
        photo(src / f"p{i}.jpg", 32, 48, seed=i)
        rows[f"p{i}.jpg"] = [({"name": "rect", "x": 0, "y": 0, "width": width, "height": 8}, "a")]
    via_csv(src / "via.csv", rows)


def prepare(cli, src: Path, out: Path):
    return cli(
        "prepare", src, "--format", "via", "-o", out, "-q", "--val-ratio", "0", "--test-ratio", "0"
    )


def painted_widths(out: Path) -> set[int]:
    entries = read_manifest(out)["splits"]["train"]
    return {int((read_mask(out / e["masks"]["classes"])[0] == 1).sum()) for e in entries}


def test_a_changed_rerun_swaps_the_new_files_in(tmp_path: Path, cli) -> None:
    src, out = tmp_path / "src", tmp_path / "data"
    write_project(src, 10)
    assert prepare(cli, src, out).exit_code == 0
    write_project(src, 20)
    assert prepare(cli, src, out).exit_code == 0
    assert painted_widths(out) == {20}
    assert not (out / own_prepare.STAGING).exists()


def test_a_failure_while_writing_keeps_the_old_dataset(tmp_path: Path, cli, monkeypatch) -> None:
    src, out = tmp_path / "src", tmp_path / "data"
    write_project(src, 10)
    assert prepare(cli, src, out).exit_code == 0
    before = (out / "manifest.json").read_bytes()
    write_project(src, 20)
    calls = []

    def failing(path: Path, mask: np.ndarray) -> None:
        calls.append(path)
        raise DataError(f"cannot write {path}: simulated")

    monkeypatch.setattr(own_prepare.images, "write_mask", failing)
    result = prepare(cli, src, out)
    assert result.exit_code == 1 and "simulated" in result.stderr and calls
    assert (out / "manifest.json").read_bytes() == before
    assert painted_widths(out) == {10}, "the old masks are untouched"
    monkeypatch.undo()
    assert prepare(cli, src, out).exit_code == 0
    assert painted_widths(out) == {20}


def test_a_swap_cut_short_is_finished_by_the_next_run(tmp_path: Path, cli, monkeypatch) -> None:
    src, out = tmp_path / "src", tmp_path / "data"
    write_project(src, 10)
    assert prepare(cli, src, out).exit_code == 0
    write_project(src, 20)
    moved = []
    real_replace = os.replace

    def stop_after_three(a: str | Path, b: str | Path) -> None:
        """Only the swap's moves (staged PNGs) count; atomic writes' renames go through."""
        if own_prepare.STAGING in str(a) and str(a).endswith(".png"):
            if len(moved) == 3:
                raise KeyboardInterrupt
            moved.append(a)
        real_replace(a, b)

    monkeypatch.setattr(own_prepare.os, "replace", stop_after_three)
    assert prepare(cli, src, out).exit_code == 130
    monkeypatch.undo()
    assert len(moved) == 3
    assert not (out / "manifest.json").exists(), "a half-swapped folder is no dataset"
    assert prepare(cli, src, out).exit_code == 0
    assert painted_widths(out) == {20}
    assert not (out / own_prepare.STAGING).exists()

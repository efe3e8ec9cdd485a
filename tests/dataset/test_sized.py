"""Training-size copies: prepare --size, the manifest record, remap, and the pipeline's use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cityseg.dataset import sized
from cityseg.dataset.entries import split_entries
from cityseg.dataset.manifest import iter_entries, read_manifest
from cityseg.dataset.prepare import prepare_dataset
from cityseg.dataset.synthetic import RawDataset
from cityseg.images import read_image, read_mask, resize_image, resize_mask
from cityseg.training.pipeline import DataConfig, input_note

SIZE = (32, 64)
"""Half the fixture's 64x128 images."""


def snapshot(root: Path, *, skip: str | None = None) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (skip is None or not p.relative_to(root).as_posix().startswith(skip))
    }


@pytest.fixture(scope="module")
def with_copies(
    prepared: Path, raw_dataset: RawDataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`prepared`, then `prepare --size 32x64` run again on it: read-only for tests."""
    root = tmp_path_factory.mktemp("sized") / "cityscapes"
    shutil.copytree(prepared, root)
    report = prepare_dataset(
        raw_dataset.root, root, verify=False, sizes=[SIZE], show_progress=False
    )
    assert not report.up_to_date and report.sized == {"32x64": ["categories"]}
    return root


def test_adding_a_size_keeps_the_full_size_dataset(prepared: Path, with_copies: Path) -> None:
    def full_size_files(root: Path) -> dict[str, bytes]:
        return {k: v for k, v in snapshot(root, skip="sized/").items() if k != "manifest.json"}

    assert full_size_files(with_copies) == full_size_files(prepared)
    old, new = read_manifest(prepared), read_manifest(with_copies)
    assert "sized" not in old
    assert {k: v for k, v in new.items() if k not in ("sized", "created_by")} == {
        k: v for k, v in old.items() if k != "created_by"
    }
    assert new["sized"] == {
        "32x64": {
            "height": 32,
            "width": 64,
            "images": "sized/32x64/images",
            "masks": {"categories": "sized/32x64/masks/categories"},
        }
    }


def test_copies_are_the_pipelines_resize_with_exact_ids(with_copies: Path) -> None:
    entries = iter_entries(read_manifest(with_copies))
    assert len(list((with_copies / "sized").rglob("*.png"))) == 2 * len(entries)
    for entry in entries:
        key = entry["key"]
        image = read_image(with_copies / f"sized/32x64/images/{key}.png")
        mask = read_mask(with_copies / f"sized/32x64/masks/categories/{key}.png")
        original = read_mask(with_copies / entry["masks"]["categories"])
        assert image.shape == (*SIZE, 3) and mask.shape == SIZE
        # Exactly what resizing on the fly gives, so training data does not change...
        assert np.array_equal(image, resize_image(read_image(with_copies / entry["image"]), *SIZE))
        assert np.array_equal(mask, resize_mask(original, *SIZE))
        # ...and nearest neighbour: never a class id the full-size mask lacks.
        assert set(np.unique(mask)) <= set(np.unique(original))


def test_cli_size_list_repeat_and_noop_reruns(raw_dataset: RawDataset, tmp_path: Path, cli) -> None:
    out = tmp_path / "ds"
    args = ("prepare", raw_dataset.root, "-o", out, "--no-verify", "-q")
    result = cli(*args, "--size", "32x64,16x32", "--size", "32x64")
    assert result.exit_code == 0, result.stderr
    assert "training-size copies 16x32 (categories masks)" in result.stdout
    assert sorted(read_manifest(out)["sized"]) == ["16x32", "32x64"]
    assert read_mask(next((out / "sized/16x32/masks/categories").iterdir())).shape == (16, 32)
    before = snapshot(out)
    for extra in (("--size", "16x32"), ()):  # a recorded size, or none: both keep the copies
        again = cli(*args, *extra)
        assert again.exit_code == 0 and "already prepared" in again.stdout
        assert snapshot(out) == before


def test_missing_copies_are_restored_and_only_they_are_written(
    with_copies: Path, raw_dataset: RawDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    shutil.copytree(with_copies, root)
    lost = sorted((root / "sized/32x64/images").iterdir())[:2]
    for path in lost:
        path.unlink()
    written: list[Path] = []
    real = sized.images.write_rgb

    def counting(path: Path, image: np.ndarray) -> None:
        written.append(path)
        real(path, image)

    monkeypatch.setattr(sized.images, "write_rgb", counting)
    report = prepare_dataset(raw_dataset.root, root, verify=False, show_progress=False)
    assert not report.up_to_date and sorted(written) == lost
    assert snapshot(root) == snapshot(with_copies)


def test_manifest_is_written_after_the_copies(
    prepared: Path, raw_dataset: RawDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    shutil.copytree(prepared, root)

    def interrupted(path: Path, image: np.ndarray) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sized.images, "write_rgb", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw_dataset.root, root, verify=False, sizes=[SIZE], show_progress=False)
    assert "sized" not in read_manifest(root)  # the old manifest still describes the disk
    assert split_entries(root, "train", "categories", SIZE)[0]["sized"] is False


@pytest.mark.parametrize("bad", ["512", "512x", "ax1024", "8x8", ","])
def test_bad_size_is_one_line_and_exit_2(
    bad: str, raw_dataset: RawDataset, tmp_path: Path, cli
) -> None:
    out = tmp_path / "ds"
    result = cli("prepare", raw_dataset.root, "-o", out, "--no-verify", "-q", "--size", bad)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "--size" in result.stderr
    assert not out.exists()


def test_remap_adds_the_scheme_to_every_size(with_copies: Path, tmp_path: Path, cli) -> None:
    root = tmp_path / "ds"
    shutil.copytree(with_copies, root)
    result = cli("remap", root, "--scheme", "trainids", "-q")
    assert result.exit_code == 0, result.stderr
    record = read_manifest(root)["sized"]["32x64"]
    assert record["masks"]["trainids"] == "sized/32x64/masks/trainids"
    for entry in split_entries(root, "train", "trainids", SIZE):
        assert entry["sized"] and entry["mask"].startswith("sized/32x64/masks/trainids/")
        full = read_mask(root / entry["masks"]["trainids"])
        assert np.array_equal(read_mask(root / entry["mask"]), resize_mask(full, *SIZE))


def test_entries_use_copies_only_at_a_recorded_size_and_scheme(
    prepared: Path, with_copies: Path, tmp_path: Path
) -> None:
    copies = split_entries(with_copies, "val", "categories", SIZE)
    assert all(e["sized"] for e in copies)
    assert [e["image"] for e in copies] == [f"sized/32x64/images/{e['key']}.png" for e in copies]
    for root, size in ((with_copies, None), (with_copies, (16, 32)), (prepared, SIZE)):
        entries = split_entries(root, "val", "categories", size)  # an old manifest too
        assert not any(e["sized"] for e in entries)
        assert [e["image"] for e in entries] == [f"images/{e['key']}.png" for e in entries]

    # A size recorded without the scheme's masks falls back to the full-size files.
    root = tmp_path / "ds"
    shutil.copytree(with_copies, root)
    index = json.loads((root / "manifest.json").read_text())
    del index["sized"]["32x64"]["masks"]["categories"]
    (root / "manifest.json").write_text(json.dumps(index))
    assert not any(e["sized"] for e in split_entries(root, "val", "categories", SIZE))


def test_input_note_names_the_files_and_tips_at_small_sizes(
    prepared: Path, with_copies: Path
) -> None:
    note = input_note(with_copies, "train", DataConfig(height=32, width=64))
    assert "32x64 copies" in note and "tip" not in note
    note = input_note(prepared, "train", DataConfig(height=32, width=64))
    assert "full-size 64x128" in note and "cityseg prepare RAW --size 32x64" in note
    assert "tip" not in input_note(prepared, "train", DataConfig(height=48, width=96))


def test_make_dataset_reads_the_copies(prepared: Path, with_copies: Path, tmp_path: Path) -> None:
    """Without any full-size image or mask on disk the pipeline still runs, and its
    batches equal those resized on the fly from the full-size files."""
    from cityseg.training.pipeline import make_dataset

    root = tmp_path / "ds"
    shutil.copytree(with_copies, root)
    shutil.rmtree(root / "images")
    shutil.rmtree(root / "masks")
    config = DataConfig(height=32, width=64, batch_size=4, aug="none")
    ours = [(i.numpy(), m.numpy()) for i, m in make_dataset(root, "test", config, training=False)]
    full = [
        (i.numpy(), m.numpy()) for i, m in make_dataset(prepared, "test", config, training=False)
    ]
    assert len(ours) == len(full) == 1
    assert np.array_equal(ours[0][0], full[0][0]) and np.array_equal(ours[0][1], full[0][1])
    with pytest.raises(Exception, match="missing"):
        make_dataset(root, "test", DataConfig(height=16, width=32, aug="none"), training=False)


def test_size_added_after_remap_keeps_and_copies_the_remapped_scheme(
    prepared: Path, raw_dataset: RawDataset, tmp_path: Path, cli
) -> None:
    root = tmp_path / "ds"
    shutil.copytree(prepared, root)
    assert cli("remap", root, "--scheme", "trainids", "-q").exit_code == 0
    args = ("prepare", raw_dataset.root, "-o", root, "--no-verify", "-q")
    assert "already prepared" in cli(*args).stdout  # the remapped scheme is not a change
    result = cli(*args, "--size", "32x64")
    assert result.exit_code == 0 and "(categories, trainids masks)" in result.stdout
    index = read_manifest(root)
    assert set(index["schemes"]) == {"categories", "trainids"}
    assert set(index["sized"]["32x64"]["masks"]) == {"categories", "trainids"}
    entry = split_entries(root, "train", "trainids", SIZE)[0]
    full = read_mask(root / entry["masks"]["trainids"])
    assert np.array_equal(read_mask(root / entry["mask"]), resize_mask(full, *SIZE))

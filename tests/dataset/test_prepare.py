"""prepare: layout, split, exact masks, sampling, resume, and every refusal."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs

from cityseg.config import PrepareConfig
from cityseg.dataset import prepare as prepare_module
from cityseg.dataset.manifest import iter_entries, read_manifest
from cityseg.dataset.prepare import choose_val_cities, prepare_dataset
from cityseg.dataset.synthetic import RawDataset
from cityseg.errors import DataError, UnsafeArchiveError

LEFT = "leftImg8bit_trainvaltest.zip"
FINE = "gtFine_trainvaltest.zip"


def copy_raw(raw: RawDataset, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in (raw.leftimg_zip, raw.gtfine_zip):
        shutil.copy2(path, target / path.name)
    return target


def rewrite_zip(
    path: Path,
    *,
    drop: Callable[[str], bool] = lambda name: False,
    add: dict[str, bytes] | None = None,
    change: dict[str, bytes] | None = None,
) -> None:
    """Rebuild a zip in place with members dropped, added or replaced."""
    members: list[tuple[str, bytes]] = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if drop(info.filename):
                continue
            data = (change or {}).get(info.filename, archive.read(info))
            members.append((info.filename, data))
    members.extend((add or {}).items())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name)  # a ZipInfo keeps hostile names exactly as given
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


def first_member(path: Path, suffix: str, split: str = "train") -> str:
    with zipfile.ZipFile(path) as archive:
        return next(n for n in archive.namelist() if f"/{split}/" in n and n.endswith(suffix))


def tree_snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- the happy path ----------------------------------------------------------------------


def test_manifest_layout_and_files(prepared: Path, raw_dataset: RawDataset) -> None:
    index = read_manifest(prepared)
    assert index["format_version"] == 1
    assert set(index["splits"]) == {"train", "val", "test"}
    assert set(index["schemes"]) == {"categories"}
    assert index["schemes"]["categories"]["classes"][0] == "void"
    entries = iter_entries(index)
    assert sorted(e["id"] for e in entries) == list(range(len(entries)))
    for entry in entries:
        assert entry["image"] == f"images/{entry['key']}.png"
        assert entry["key"].startswith(entry["city"] + "_")
        image = cv2.imread(str(prepared / entry["image"]))
        mask = cv2.imread(str(prepared / entry["masks"]["categories"]), cv2.IMREAD_UNCHANGED)
        label_ids = cv2.imread(str(prepared / entry["labelIds"]), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == mask.shape == label_ids.shape
        assert mask.dtype == np.uint8 and mask.max() <= 7
    assert index["source"]["leftImg8bit"]["name"] == LEFT


def test_split_original_val_is_test_and_cities_are_disjoint(
    prepared: Path, raw_dataset: RawDataset
) -> None:
    index = read_manifest(prepared)
    cities = {s: {e["city"] for e in index["splits"][s]} for s in ("train", "val", "test")}
    assert cities["train"] and cities["val"]
    assert not cities["train"] & cities["val"]
    assert {e["key"] for e in index["splits"]["test"]} == set(raw_dataset.keys["val"])
    train_val = {e["key"] for s in ("train", "val") for e in index["splits"][s]}
    assert train_val == set(raw_dataset.keys["train"])
    assert not {e["key"] for e in iter_entries(index)} & set(raw_dataset.keys["test"])


def test_category_masks_equal_cityscapesscripts_mapping(prepared: Path) -> None:
    to_category = {label.id: label.categoryId for label in cs.labels if label.id >= 0}
    for entry in iter_entries(read_manifest(prepared)):
        label_ids = cv2.imread(str(prepared / entry["labelIds"]), cv2.IMREAD_UNCHANGED)
        ours = cv2.imread(str(prepared / entry["masks"]["categories"]), cv2.IMREAD_UNCHANGED)
        reference = np.vectorize(to_category.__getitem__, otypes=[np.uint8])(label_ids)
        assert np.array_equal(ours, reference), entry["key"]


def test_images_are_the_original_bytes(prepared: Path, raw_dataset: RawDataset) -> None:
    entry = read_manifest(prepared)["splits"]["train"][0]
    with zipfile.ZipFile(raw_dataset.leftimg_zip) as archive:
        original = archive.read(f"leftImg8bit/train/{entry['city']}/{entry['key']}_leftImg8bit.png")
    assert (prepared / entry["image"]).read_bytes() == original


def test_cli_prints_summary_and_notes_then_rerun_is_a_noop(
    raw_dataset: RawDataset, tmp_path: Path, cli
) -> None:
    out = tmp_path / "ds"
    result = cli("prepare", raw_dataset.root, "-o", out, "--no-verify", "-q")
    assert result.exit_code == 0, result.stderr
    for word in ("train", "val", "test", "cities", "images", "disk"):
        assert word in result.stdout
    assert "skipped the original test split" in result.stderr
    before = tree_snapshot(out)
    again = cli("prepare", raw_dataset.root, "-o", out, "--no-verify", "-q")
    assert again.exit_code == 0 and "already prepared" in again.stdout
    assert tree_snapshot(out) == before


def test_extracted_folders_work_like_zips(
    raw_dataset: RawDataset, prepared: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "raw" / "cityscapes"
    for path in (raw_dataset.leftimg_zip, raw_dataset.gtfine_zip):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(raw)
    out = tmp_path / "ds"
    prepare_dataset(raw.parent, out, show_progress=False)
    ours, theirs = read_manifest(out), read_manifest(prepared)
    assert ours["splits"] == theirs["splits"]


def test_limit_and_fraction_sample_reproducibly(raw_dataset: RawDataset, tmp_path: Path) -> None:
    def keys(out: Path, **options: object) -> dict[str, list[str]]:
        prepare_dataset(raw_dataset.root, out, verify=False, show_progress=False, **options)
        index = read_manifest(out)
        return {s: [e["key"] for e in index["splits"][s]] for s in ("train", "val", "test")}

    limited = keys(tmp_path / "a", limit=2, seed=3)
    assert all(len(v) == 2 for v in limited.values())
    assert keys(tmp_path / "b", limit=2, seed=3) == limited
    assert keys(tmp_path / "c", limit=2, seed=4) != limited
    halves = keys(tmp_path / "d", fraction=0.5)
    full = keys(tmp_path / "e")
    for split, chosen in halves.items():
        assert len(chosen) == round(len(full[split]) * 0.5)
        assert set(chosen) <= set(full[split])


def test_val_ratio_and_seed_choose_whole_cities() -> None:
    counts = {"a": 10, "b": 10, "c": 10, "d": 10, "e": 60}
    chosen = choose_val_cities(counts, 0.2, seed=0)
    assert sum(counts[c] for c in chosen) == 20
    assert choose_val_cities(counts, 0.2, seed=0) == chosen
    assert choose_val_cities(counts, 0.0, seed=0) == set()
    assert choose_val_cities({"only": 5}, 0.5, seed=0) == set()
    assert len(choose_val_cities({"x": 1, "y": 100}, 0.9, seed=1)) == 1


def test_verify_warns_on_a_repackaged_zip(
    raw_dataset: RawDataset, tmp_path: Path, messages: list[str]
) -> None:
    out = tmp_path / "ds"
    prepare_dataset(raw_dataset.root, out, show_progress=False)
    assert any("does not match the official checksum" in n for n in messages)
    source = read_manifest(out)["source"]["gtFine"]
    assert len(source["md5"]) == 32 and len(source["sha256"]) == 64 and not source["official"]


def test_junk_is_ignored_and_unpaired_files_reported(
    raw_dataset: RawDataset, tmp_path: Path, messages: list[str]
) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    dropped_label = first_member(raw / FINE, "_labelIds.png", split="val")
    rewrite_zip(
        raw / FINE,
        drop=lambda name: name == dropped_label,
        add={"__MACOSX/gtFine/._x": b"junk", "gtFine/train/zz/notes.txt": b"hi"},
    )
    extra = "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    rewrite_zip(raw / LEFT, drop=lambda name: name == extra)
    out = tmp_path / "ds"
    prepare_dataset(raw, out, verify=False, show_progress=False)
    text = "\n".join(messages)
    assert "1 image(s) without labelIds skipped" in text
    assert "1 labelIds without an image skipped" in text
    assert "ignored 1 unrecognised file(s)" in text and "notes.txt" in text
    assert "__MACOSX" not in text
    keys = {e["key"] for e in iter_entries(read_manifest(out))}
    assert "aachen_000000_000019" not in keys


# --- refusals ----------------------------------------------------------------------------


def test_missing_zip_is_one_line(raw_dataset: RawDataset, tmp_path: Path, cli) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    (raw / LEFT).unlink()
    result = cli("prepare", raw, "-o", tmp_path / "ds")
    assert result.exit_code == 1
    assert f"has no {LEFT}" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "ds").exists()


def test_wrong_folder_and_file_instead_of_folder(tmp_path: Path, cli) -> None:
    result = cli("prepare", tmp_path / "nowhere")
    assert result.exit_code == 1 and "does not exist" in result.stderr
    a_file = tmp_path / "x.zip"
    a_file.write_bytes(b"")
    result = cli("prepare", a_file)
    assert result.exit_code == 1 and "is a file" in result.stderr
    result = cli("prepare", tmp_path, "-o", tmp_path / "ds")
    assert result.exit_code == 1 and "has no leftImg8bit_trainvaltest.zip" in result.stderr


def test_empty_zip(raw_dataset: RawDataset, tmp_path: Path, cli) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    with zipfile.ZipFile(raw / LEFT, "w"):
        pass
    result = cli("prepare", raw, "-o", tmp_path / "ds", "--no-verify")
    assert result.exit_code == 1 and "holds no leftImg8bit" in result.stderr


def test_not_a_zip(raw_dataset: RawDataset, tmp_path: Path, cli) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    (raw / FINE).write_bytes(b"<html>login required</html>")
    result = cli("prepare", raw, "-o", tmp_path / "ds")
    assert result.exit_code == 1 and "is not a valid zip" in result.stderr


def test_corrupt_png_is_one_line_and_keeps_finished_files(
    raw_dataset: RawDataset, tmp_path: Path, cli
) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    victim = first_member(raw / LEFT, "_leftImg8bit.png", split="val")
    rewrite_zip(raw / LEFT, change={victim: b"\x89PNG\r\n\x1a\n truncated"})
    result = cli("prepare", raw, "-o", tmp_path / "ds", "--no-verify", "-q", "--workers", "1")
    assert result.exit_code == 1
    assert victim in result.stderr and "not a readable image" in result.stderr
    assert result.stderr.strip().count("\n") <= 1  # the skipped-test note may precede it
    assert not (tmp_path / "ds" / "manifest.json").exists()
    assert not list((tmp_path / "ds").rglob("*.part"))


@pytest.mark.parametrize(
    "evil", ["../escape.png", "/abs/escape.png", "gtFine/train/../../escape.png"]
)
def test_zip_slip_is_refused_and_nothing_written(
    raw_dataset: RawDataset, tmp_path: Path, evil: str, cli
) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    rewrite_zip(raw / FINE, add={evil: b"x"})
    with zipfile.ZipFile(raw / FINE) as archive:
        assert evil in archive.namelist()  # zipfile keeps the hostile name as written
    result = cli("prepare", raw, "-o", tmp_path / "work" / "ds", "--no-verify")
    assert result.exit_code == 1 and "absolute or '..' path" in result.stderr
    assert not (tmp_path / "work").exists()
    assert not list(tmp_path.rglob("escape.png"))


def test_oversized_member_is_refused(
    raw_dataset: RawDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    with zipfile.ZipFile(raw / LEFT) as archive:
        largest = max(info.file_size for info in archive.infolist())
    big = np.random.default_rng(0).integers(0, 256, largest + 1000, dtype=np.uint8).tobytes()
    rewrite_zip(raw / LEFT, add={"leftImg8bit/train/big.bin": big})
    monkeypatch.setattr(prepare_module, "PREPARE", PrepareConfig(max_member_bytes=largest + 500))
    with pytest.raises(UnsafeArchiveError, match=f"declares {largest + 1000} bytes"):
        prepare_dataset(raw, tmp_path / "ds", verify=False, show_progress=False)


def test_zip_bomb_ratio_is_refused(raw_dataset: RawDataset, tmp_path: Path) -> None:
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    rewrite_zip(raw / LEFT, add={"leftImg8bit/train/zeros.bin": bytes(2_000_000)})
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        prepare_dataset(raw, tmp_path / "ds", verify=False, show_progress=False)


def test_other_packages_into_the_same_output_are_refused(
    raw_dataset: RawDataset, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    prepare_dataset(raw_dataset.root, out, verify=False, show_progress=False)
    raw = copy_raw(raw_dataset, tmp_path / "raw")
    rewrite_zip(raw / FINE, add={"extra.txt": b"changes the size"})
    with pytest.raises(Exception, match="prepared from other packages"):
        prepare_dataset(raw, out, verify=False, show_progress=False)


# --- resume ------------------------------------------------------------------------------


def test_interrupted_prepare_resumes_to_the_same_result(
    raw_dataset: RawDataset, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    real_write = prepare_module.images.write_mask
    calls = {"n": 0}

    def flaky_write(path: Path, mask: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real_write(path, mask)

    monkeypatch.setattr(prepare_module.images, "write_mask", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw_dataset.root, out, verify=False, show_progress=False, workers=1)
    assert not (out / "manifest.json").exists()
    assert 0 < len(list((out / "masks").rglob("*.png"))) < 6
    monkeypatch.setattr(prepare_module.images, "write_mask", real_write)

    rewritten: list[Path] = []
    real_atomic = prepare_module.atomic_write_bytes

    def counting_write(path: Path, data: bytes) -> None:
        rewritten.append(path)
        real_atomic(path, data)

    monkeypatch.setattr(prepare_module, "atomic_write_bytes", counting_write)
    prepare_dataset(raw_dataset.root, out, verify=False, show_progress=False, workers=1)
    assert tree_snapshot(out) == tree_snapshot(prepared)
    total = len(iter_entries(read_manifest(out)))
    assert len(rewritten) < 2 * total  # finished pairs were skipped, not rewritten


def test_corrupt_manifest_is_rebuilt(
    prepared: Path, raw_dataset: RawDataset, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    shutil.copytree(prepared, out)
    (out / "manifest.json").write_text("{ truncated")
    prepare_dataset(raw_dataset.root, out, verify=False, show_progress=False)
    assert read_manifest(out)["splits"] == read_manifest(prepared)["splits"]


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a prepared dataset"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(DataError, match="format_version 99"):
        read_manifest(tmp_path)

"""The training input pipeline: shapes, exact mask ids, order, caches, errors, class counts."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cityseg.dataset.entries import class_pixel_counts, split_entries
from cityseg.dataset.manifest import read_manifest
from cityseg.errors import DataError, UsageError
from cityseg.training.augment import AUG_PRESETS, build_augmentation
from cityseg.training.pipeline import DataConfig, make_dataset, steps_per_epoch

SMALL = DataConfig(height=32, width=64, batch_size=3, aug="none")
"""Half the fixture's 64x128: an exact 2x step, where every resize convention is defined."""

TWO_IDS = (2, 5)
"""Ids of the crafted masks: anything between them (3, 4) or a constant border fill (0)
would come from interpolation or padding, not from the source."""


def batches(dataset: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(images.numpy(), masks.numpy()) for images, masks in dataset]


def stacked(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    pairs = batches(dataset)
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def fingerprints(images: np.ndarray) -> list[bytes]:
    return [image.tobytes() for image in images]


@pytest.fixture(scope="module")
def crafted(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `prepared` whose category masks hold only ids 2 and 5, plus an ignore
    (255) block, following the original regions so edges sit where the image's do."""
    root = tmp_path_factory.mktemp("crafted") / "cityscapes"
    shutil.copytree(prepared, root)
    for entry in read_manifest(root)["splits"]["train"]:
        path = root / entry["masks"]["categories"]
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        crafted = np.where(mask % 2 == 0, TWO_IDS[0], TWO_IDS[1]).astype(np.uint8)
        crafted[:4, :8] = 255
        assert cv2.imwrite(str(path), crafted)
    return root


def stored_masks(root: Path, split: str) -> list[np.ndarray]:
    return [
        cv2.imread(str(root / e["masks"]["categories"]), cv2.IMREAD_UNCHANGED)
        for e in read_manifest(root)["splits"][split]
    ]


# ----------------------------------------------------------------------------- batches


def test_batches_have_the_training_shapes_and_dtypes(prepared: Path) -> None:
    config = replace(SMALL, aug="soft")
    train = batches(make_dataset(prepared, "train", config, training=True))
    assert len(train) == steps_per_epoch(prepared, "train", config) == 8 // 3  # remainder dropped
    for images, masks in train:
        assert images.shape == (3, 32, 64, 3) and images.dtype == np.float32
        assert masks.shape == (3, 32, 64) and masks.dtype == np.uint8
        assert 0.0 <= images.min() and images.max() <= 255.0 and images.max() > 1.0

    test = batches(make_dataset(prepared, "test", config, training=False))
    assert [images.shape[0] for images, _ in test] == [3, 1]  # every image, once
    assert steps_per_epoch(prepared, "test", config, training=False) == 2


def test_eval_batches_are_the_resized_files_in_manifest_order(prepared: Path) -> None:
    from cityseg._tf import tf

    dataset = make_dataset(prepared, "test", SMALL, training=False)
    images, masks = stacked(dataset)
    entries = split_entries(prepared, "test", "categories")
    assert len(images) == len(entries) == 4
    for image, mask, entry in zip(images, masks, entries, strict=True):
        source = cv2.cvtColor(cv2.imread(str(prepared / entry["image"])), cv2.COLOR_BGR2RGB)
        stored = cv2.imread(str(prepared / entry["mask"]), cv2.IMREAD_UNCHANGED)
        expected = cv2.resize(source, (64, 32), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(image, expected.astype(np.float32))
        # TensorFlow's bilinear resize agrees to rounding, so a model trained here sees
        # the same pixels whichever library resizes at prediction time.
        tf_image = tf.image.resize(source, (32, 64), method="bilinear").numpy()
        assert np.abs(np.round(tf_image) - image).max() <= 1
        # Nearest at pixel centres: cv2's INTER_NEAREST_EXACT and TensorFlow's "nearest"
        # (not cv2's INTER_NEAREST, which is shifted by half a source pixel).
        exact = cv2.resize(stored, (64, 32), interpolation=cv2.INTER_NEAREST_EXACT)
        assert np.array_equal(mask, exact)
        tf_mask = tf.image.resize(stored[..., None], (32, 64), method="nearest").numpy()
        assert np.array_equal(mask, tf_mask[..., 0])
    again = stacked(dataset)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], masks)


def test_training_order_is_reshuffled_every_epoch(prepared: Path) -> None:
    config = replace(SMALL, batch_size=1)
    dataset = make_dataset(prepared, "train", config, training=True)
    first, second = (fingerprints(stacked(dataset)[0]) for _ in range(2))
    in_order = fingerprints(stacked(make_dataset(prepared, "train", config, training=False))[0])
    assert sorted(first) == sorted(second) == sorted(in_order)  # each image once per epoch
    assert first != second  # 1 in 8! to fail by chance; the seed makes it repeatable


def test_hard_augmentation_keeps_mask_ids_exact(crafted: Path) -> None:
    # 48x96 from 64x128 is not an integer step, so resizing is exercised too.
    config = DataConfig(height=48, width=96, batch_size=8, aug="hard", seed=3)
    dataset = make_dataset(crafted, "train", config, training=True)
    plain = stacked(make_dataset(crafted, "train", replace(config, aug="none"), training=False))
    unchanged = {mask.tobytes() for mask in plain[1]}
    seen, changed = 0, 0
    for _ in range(8):
        for _, masks in batches(dataset):
            for mask in masks:
                assert set(np.unique(mask).tolist()) <= {*TWO_IDS, 255}
                seen += 1
                changed += mask.tobytes() not in unchanged
    assert seen == 64
    assert changed > seen // 2  # the check above was not vacuous: masks were warped/flipped


def test_augmentation_presets_and_mask_interpolation() -> None:
    assert build_augmentation("none") is None
    soft = build_augmentation("soft", seed=0)  # sets NO_ALBUMENTATIONS_UPDATE, then imports
    import albumentations as A

    assert [type(t).__name__ for t in soft.transforms] == ["HorizontalFlip", "RandomGamma", "Blur"]
    assert all(t.p == 0.25 for t in soft.transforms)
    hard = build_augmentation("hard", seed=0)
    names = [type(t).__name__ for t in hard.transforms]
    assert names == [
        "ElasticTransform",
        "HorizontalFlip",
        "GridDistortion",
        "RandomGamma",
        "Emboss",
        "Blur",
    ]
    assert all(t.p == 0.5 for t in hard.transforms)
    for transform in hard.transforms:
        if isinstance(transform, (A.ElasticTransform, A.GridDistortion)):
            assert transform.mask_interpolation == cv2.INTER_NEAREST


def test_seeded_presets_draw_their_transforms_independently() -> None:
    # albumentations 2.0.8's Compose(seed=...) gives each transform the same stream, so
    # all six "hard" transforms fire together or not at all far more often than 2 in 64.
    image = np.random.default_rng(0).integers(0, 256, (24, 48, 3), dtype=np.uint8)
    mask = (image[..., 0] > 127).astype(np.uint8)
    counts = []
    for seed in range(60):
        hard = build_augmentation("hard", seed=seed)
        hard.save_applied_params = True
        counts += [len(hard(image=image, mask=mask)["applied_transforms"]) for _ in range(3)]
    extremes = sum(count in (0, 6) for count in counts) / len(counts)
    assert extremes < 0.12  # independent: 3%; shared seed: ~40%
    first = build_augmentation("soft", seed=5)(image=image, mask=mask)["image"]
    again = build_augmentation("soft", seed=5)(image=image, mask=mask)["image"]
    assert np.array_equal(first, again)


def test_caches_give_the_same_data_as_streaming(prepared: Path, tmp_path: Path) -> None:
    expected = stacked(make_dataset(prepared, "test", SMALL, training=False))
    prefix = tmp_path / "cache" / "c"
    for cache in ("memory", str(prefix)):
        dataset = make_dataset(prepared, "test", replace(SMALL, cache=cache), training=False)
        for _ in range(2):  # the second pass reads the cache
            images, masks = stacked(dataset)
            assert np.array_equal(images, expected[0]) and np.array_equal(masks, expected[1])
    written = sorted(p.name for p in prefix.parent.iterdir())
    assert any(name.endswith(".index") and "-test-categories-32x64-" in name for name in written)
    # Another size must not read the 32x64 cache (TensorFlow itself would, silently).
    other = replace(SMALL, height=16, width=32, cache=str(prefix))
    assert stacked(make_dataset(prepared, "test", other, training=False))[0].shape[1:3] == (16, 32)

    # Training from a cache shuffles and augments after it.
    config = replace(SMALL, aug="soft", cache="memory", batch_size=4)
    train = batches(make_dataset(prepared, "train", config, training=True))
    assert [images.shape for images, _ in train] == [(4, 32, 64, 3)] * 2


# ----------------------------------------------------------------------------- errors


def one_line(excinfo: pytest.ExceptionInfo[Exception]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unknown_preset_lists_the_valid_ones() -> None:
    for attempt in (lambda: build_augmentation("medium"), lambda: DataConfig(aug="medium")):
        with pytest.raises(UsageError) as excinfo:
            attempt()
        assert all(name in one_line(excinfo) for name in AUG_PRESETS)


def test_missing_scheme_says_to_remap(prepared: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        make_dataset(prepared, "train", replace(SMALL, scheme="trainids"), training=True)
    assert f"cityseg remap {prepared} --scheme trainids" in one_line(excinfo)


def test_empty_split_unknown_split_and_small_split(prepared: Path, tmp_path: Path) -> None:
    root = tmp_path / "empty-val"
    root.mkdir()
    manifest = read_manifest(prepared)
    manifest["splits"]["val"] = []
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as excinfo:
        split_entries(root, "val", "categories")
    assert "val split" in one_line(excinfo) and "no images" in one_line(excinfo)

    with pytest.raises(UsageError) as usage:
        split_entries(prepared, "training", "categories")
    assert "train, val, test" in one_line(usage)
    with pytest.raises(UsageError) as usage:
        make_dataset(prepared, "val", replace(SMALL, batch_size=8), training=True)
    # the flag is --batch (there is no --batch-size)
    assert one_line(usage).endswith("lower --batch")


def test_missing_file_is_named_before_training(prepared: Path, tmp_path: Path) -> None:
    root = tmp_path / "cityscapes"
    shutil.copytree(prepared, root)
    entry = read_manifest(root)["splits"]["train"][0]
    (root / entry["image"]).unlink()
    with pytest.raises(DataError) as excinfo:
        make_dataset(root, "train", SMALL, training=True)
    assert entry["image"] in one_line(excinfo)


# ----------------------------------------------------------------------------- statistics


def test_class_pixel_counts_equal_a_bincount(prepared: Path, crafted: Path) -> None:
    masks = stored_masks(prepared, "train")
    expected = sum(np.bincount(m.ravel(), minlength=8) for m in masks)
    counts = class_pixel_counts(prepared, "train", "categories", 8)
    assert counts.dtype == np.int64 and np.array_equal(counts, expected)
    assert np.array_equal(class_pixel_counts(prepared, "train", "categories"), expected)

    # 255 (ignore) is not a class and is not counted.
    masks = stored_masks(crafted, "train")
    expected = sum(np.bincount(m[m != 255], minlength=8) for m in masks)
    counts = class_pixel_counts(crafted, "train", "categories")
    assert np.array_equal(counts, expected) and counts.sum() == sum(m.size - 32 for m in masks)

    with pytest.raises(DataError) as excinfo:
        class_pixel_counts(crafted, "train", "categories", num_classes=4)
    assert "class id 5" in one_line(excinfo)


def test_worker_shards_partition_the_split(prepared: Path) -> None:
    """Each worker of a multi-worker run reads its own files, and together all of them."""
    config = replace(SMALL, batch_size=1)
    whole = [m.numpy().tobytes() for _, m in make_dataset(prepared, "val", config, training=False)]
    shards = [
        [m.numpy().tobytes() for _, m in make_dataset(
            prepared, "val", config, training=False, shard=(2, index)
        )]
        for index in range(2)
    ]  # fmt: skip
    assert sorted(shards[0] + shards[1]) == sorted(whole)
    assert len(shards[0]) == (len(whole) + 1) // 2 and shards[0] == whole[0::2]

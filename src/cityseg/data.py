"""The training input pipeline: prepared dataset -> batches of (images, masks) for Keras.

The earlier notebooks fed Keras from a Python `Sequence`, one image at a time, or loaded
a whole split into memory at 128x128. Here the split streams from its PNG files through
`tf.data`: file names are shuffled (cheap strings, so memory stays bounded whatever the
split's size), PNGs are read and decoded in parallel by TensorFlow's own threads, resized
to the training size with OpenCV (bilinear image, nearest mask so class ids stay exact),
optionally cached, augmented with albumentations, both through `tf.numpy_function` on
uint8 arrays, then batched and prefetched so the accelerator never waits for the CPU.
When `cityseg prepare --size` stored copies at the training size (`cityseg.sized`), the
pipeline reads those instead: the same pixels, without decoding full-size PNGs.

Images leave the pipeline as float32 RGB in 0..255: normalisation belongs to the model,
so a saved model bundle carries it and `predict` cannot forget it.

TensorFlow is imported inside the functions that need it, so `class_pixel_counts` (used
when choosing loss weights) and `build_augmentation` work without paying for its import.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cityseg import manifest as manifest_lib
from cityseg.config import default_workers
from cityseg.errors import DataError, UsageError
from cityseg.images import png_header, read_mask
from cityseg.manifest import MANIFEST_NAME, SPLITS, read_manifest

if TYPE_CHECKING:
    import albumentations

    from cityseg._tf import tf

AUG_PRESETS = ("none", "soft", "hard")
IGNORE_VALUE = 255
"""A mask value that is not a class (trainids' ignore); never counted as a class pixel."""


@dataclass(frozen=True)
class DataConfig:
    """How a split becomes batches; saved with a training run like every other config."""

    height: int = 512
    width: int = 1024
    batch_size: int = 8
    aug: str = "soft"
    cache: str | None = None
    """None (stream from the PNGs every epoch), "memory", or a file path prefix. The cache
    holds resized uint8 pixels, before augmentation, so every epoch still augments anew."""
    shuffle_buffer: int = 256
    """Used only with a cache, where decoded images are shuffled: without one the file list
    is shuffled whole, which costs a few bytes per image."""
    seed: int = 0
    scheme: str = "categories"

    def __post_init__(self) -> None:
        # Checked here so a bad option fails in one line before TensorFlow is even imported.
        for name in ("height", "width", "batch_size", "shuffle_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{name} must be a positive integer (got {value!r})")
        _check_preset(self.aug)
        if self.cache is not None and not self.cache.strip():
            raise UsageError('cache must be "memory" or a file path prefix (got an empty string)')


# ----------------------------------------------------------------------------- augmentation


def _check_preset(name: str) -> None:
    if name not in AUG_PRESETS:
        raise UsageError(f"unknown augmentation {name!r}; use one of {', '.join(AUG_PRESETS)}")


def build_augmentation(name: str, seed: int | None = None) -> albumentations.Compose | None:
    """The named preset as an albumentations pipeline (None for "none").

    "soft" and "hard" are the earlier projects' presets, which they compared ("soft" won).
    Two settings differ from albumentations 2.x defaults on purpose:
    - Geometric transforms reflect at the border (albumentations 1.x's default, which
      those projects used) instead of 2.x's constant fill, so a warped mask holds only
      ids of the source mask and never a made-up "0" that means void or road.
    - ElasticTransform's 2.x defaults (alpha=1, sigma=50; 1.x's `alpha_affine` is gone)
      move pixels by well under one pixel yet cost ~0.5 s on a 512x1024 image. alpha=120,
      sigma=6 (albumentations' own segmentation example) deforms visibly in ~90 ms.
    Masks are always resampled with nearest neighbour (set explicitly, though 2.0.8 defaults
    to it) so class ids stay exact. A `seed` makes the sequence of draws repeatable.
    """
    _check_preset(name)
    if name == "none":
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    import albumentations as A

    if name == "soft":
        transforms: list[Any] = [
            A.HorizontalFlip(p=0.25),
            A.RandomGamma(p=0.25),
            A.Blur(p=0.25),
        ]
    else:
        transforms = [
            A.ElasticTransform(
                alpha=120,
                sigma=6,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.5,
            ),
            A.HorizontalFlip(p=0.5),
            A.GridDistortion(
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.5,
            ),
            A.RandomGamma(p=0.5),
            A.Emboss(p=0.5),
            A.Blur(p=0.5),
        ]
    compose = A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST)
    if seed is not None:
        # Not `Compose(seed=...)`: in 2.0.8 that seeds every child transform with the same
        # seed, so their "apply?" draws coincide and a preset fires all-or-nothing ("hard":
        # none or all six in 43% of the first five calls, not 3%). One shared stream keeps
        # the transforms independent.
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return compose


# ----------------------------------------------------------------------------- resizing


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear with half-pixel centres, as `tf.image.resize` (within 1 grey level).

    Whatever feeds a trained model (evaluate, predict, serve) should resize through this
    pair too, so the model sees the pixels it was trained on, with numpy alone. OpenCV's
    uint8 path also costs ~1 ms per 2048x1024 -> 1024x512 image against ~8 ms for
    TensorFlow's float32 resize and cast back, in a pipeline that is CPU-bound.
    """
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest neighbour, so every output pixel is a class id of the input.

    INTER_NEAREST_EXACT samples pixel centres like `tf.image.resize(method="nearest")`
    and PIL; plain INTER_NEAREST (the notebooks' choice) shifts the mask by up to half a
    source pixel against the bilinear image.
    """
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


class _Resizer:
    """`tf.numpy_function` target: resizes a decoded (image, mask) pair."""

    def __init__(self, height: int, width: int) -> None:
        self._size = (height, width)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return resize_image(image, *self._size), resize_mask(mask, *self._size)


class _Augmenter:
    """`tf.numpy_function` target: (optionally resizes, then) applies a preset.

    tf.data calls it from several threads at once, and an albumentations Compose keeps
    per-call state on itself (each transform's `params`, the Compose's list flags), so
    sharing one would mix two images' parameters: each thread gets its own Compose.
    Thread `i` is seeded with (seed, i), so runs are reproducible in distribution, not
    bit for bit, since threads pick up images in whatever order they finish.
    """

    def __init__(self, name: str, seed: int, resize: _Resizer | None = None) -> None:
        self._name = name
        self._seed = seed
        self._resize = resize
        self._local = threading.local()
        self._threads = count()
        self._lock = threading.Lock()

    def _compose(self) -> albumentations.Compose:
        compose = getattr(self._local, "compose", None)
        if compose is None:
            with self._lock:
                index = next(self._threads)
            state = np.random.SeedSequence([self._seed, index]).generate_state(1)[0]
            compose = build_augmentation(self._name, seed=int(state))
            self._local.compose = compose
        return compose

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._resize is not None:
            image, mask = self._resize(image, mask)
        out = self._compose()(image=image, mask=mask)
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])


# ----------------------------------------------------------------------------- the manifest


def _scheme_name(manifest: dict[str, Any], scheme: str) -> str:
    """Accept a user scheme's JSON path as well as its name, as `cityseg remap` does."""
    if scheme in manifest.get("schemes", {}) or Path(scheme).suffix.lower() != ".json":
        return scheme
    from cityseg.schemes import get_scheme

    return get_scheme(scheme).name


def split_entries(
    root: Path, split: str, scheme: str, size: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """The split's manifest entries, checked up front: a missing file or scheme found
    mid-epoch would surface as a TensorFlow traceback an hour into training.

    Each entry comes back with a `mask` key, its mask path for `scheme`, so callers need
    not resolve the scheme's name again. With a training `size` (H, W) that `prepare
    --size` recorded with `scheme`'s masks, `image` and `mask` point at those copies and
    `sized` is True; otherwise they are the full-size files and `sized` is False.
    """
    return _resolve(Path(root), split, scheme, size)[1]


def _resolve(
    root: Path, split: str, scheme: str, size: tuple[int, int] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the manifest's record of the scheme plus its `name`, the split's entries)."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    manifest = read_manifest(root)
    name = _scheme_name(manifest, scheme)
    entries: list[dict[str, Any]] = list(manifest.get("splits", {}).get(split, []))
    if not entries:
        raise DataError(
            f"the {split} split of {root} has no images; re-run `cityseg prepare` "
            "(for val: with --val-ratio above 0)"
        )
    record = manifest.get("schemes", {}).get(name)
    if record is None or any(name not in e.get("masks", {}) for e in entries):
        raise DataError(
            f"{root} has no {name!r} masks for the {split} split; "
            f"run `cityseg remap {root} --scheme {scheme}` first"
        )
    entries = [{**e, "mask": e["masks"][name], "sized": False} for e in entries]
    copies = None if size is None else manifest_lib.sized_record(manifest, *size)
    if copies is not None and name in copies.get("masks", {}):
        entries = [_sized_entry(e, copies, name) for e in entries]
    for entry in entries:
        for relative in (entry["image"], entry["mask"]):
            if not (root / relative).is_file():
                raise DataError(
                    f"{root / relative} is listed in {root / MANIFEST_NAME} but missing; "
                    "re-run `cityseg prepare` to restore it"
                )
    return {**record, "name": name}, entries


def _sized_entry(entry: dict[str, Any], record: dict[str, Any], scheme: str) -> dict[str, Any]:
    mask = manifest_lib.sized_mask(record, entry["key"], scheme)
    return {
        **entry,
        "image": manifest_lib.sized_image(record, entry["key"]),
        "mask": mask,
        "sized": True,
    }


MUCH_SMALLER = 4
"""Stored pixels per training pixel from which the `prepare --size` tip is shown: at 4
(2048x1024 -> 1024x512) decoding the full-size PNGs is most of the input's CPU."""


def input_note(root: Path, split: str, config: DataConfig) -> str:
    """One line for the training log: which files feed training, and a tip when full-size
    PNGs are decoded only to be shrunk a lot (the input's main cost on a small CPU)."""
    root = Path(root)
    entries = split_entries(root, split, config.scheme, (config.height, config.width))
    size = f"{config.height}x{config.width}"
    if entries[0]["sized"]:
        folder = Path(entries[0]["image"]).parent.parent.as_posix()
        return f"input: {size} copies written by `cityseg prepare --size` ({root / folder})"
    note = f"input: full-size files, resized to {size} on the fly"
    header = png_header(root / entries[0]["image"])
    if header is not None:
        stored = (header.height, header.width)
        note = f"input: full-size {stored[0]}x{stored[1]} files, resized to {size} on the fly"
        if stored[0] * stored[1] >= MUCH_SMALLER * config.height * config.width:
            note += (
                f"; tip: `cityseg prepare RAW --size {size}` makes training input "
                "several times cheaper"
            )
    return note


def steps_per_epoch(root: Path, split: str, config: DataConfig, *, training: bool = True) -> int:
    """Batches per pass over the split, as `make_dataset` yields them."""
    size = len(split_entries(root, split, config.scheme))
    return size // config.batch_size if training else math.ceil(size / config.batch_size)


# ----------------------------------------------------------------------------- statistics


def class_pixel_counts(
    root: Path, split: str, scheme: str, num_classes: int | None = None
) -> np.ndarray:
    """Pixels of each class over the split's masks at their stored size, for loss weights.

    Counted at the stored size rather than the training size because frequencies barely
    depend on it and this way one count serves every `--size`. `num_classes` defaults to
    the scheme's class count in the manifest; 255 (ignore) is skipped; any other id at or
    beyond `num_classes` means the masks do not belong to this scheme, and is an error.
    """
    root = Path(root)
    record, entries = _resolve(root, split, scheme)
    if num_classes is None:
        num_classes = len(record.get("classes", []))
    if not 1 <= num_classes <= IGNORE_VALUE:
        raise UsageError(f"num_classes must be between 1 and {IGNORE_VALUE} (got {num_classes})")

    def count_one(entry: dict[str, Any]) -> np.ndarray:
        # cv2's PNG decoder releases the GIL, so a thread pool decodes in parallel.
        path = root / entry["mask"]
        counts = np.bincount(read_mask(path).ravel(), minlength=256)
        extra = np.flatnonzero(counts[num_classes:IGNORE_VALUE])
        if extra.size:
            raise DataError(
                f"{path} holds class id {int(extra[0]) + num_classes}, but scheme "
                f"{record['name']!r} has {num_classes} classes; "
                f"re-run `cityseg remap {root} --scheme {scheme}`"
            )
        return counts[:num_classes].astype(np.int64)

    total = np.zeros(num_classes, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        for counts in pool.map(count_one, entries):
            total += counts
    return total


# ----------------------------------------------------------------------------- tf.data


def _cache_prefix(prefix: str, root: Path, split: str, config: DataConfig, files: Any) -> str:
    """A cache file name unique to what it holds.

    TensorFlow reuses an existing cache file without checking it against the pipeline,
    so a cache written at another size or from another dataset would silently feed stale
    pixels. The name carries the size and a digest of the files and the manifest's mtime
    (prepare and remap rewrite the manifest), so any change starts a fresh cache.
    """
    manifest_path = root / MANIFEST_NAME
    fingerprint = json.dumps(
        [str(root.resolve()), manifest_path.stat().st_mtime_ns, files],
        separators=(",", ":"),
    )
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    name = f"{prefix}-{split}-{config.scheme}-{config.height}x{config.width}-{digest}"
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not Path(f"{name}.index").exists():
        # A run killed while writing leaves a lockfile that makes TensorFlow refuse the
        # cache forever ("concurrent caching iterator"); without an index it is stale.
        for stale in path.parent.iterdir():
            if stale.name.startswith(f"{path.name}_") and (
                stale.name.endswith(".lockfile") or ".tempstate" in stale.name
            ):
                stale.unlink(missing_ok=True)
    return name


def make_dataset(
    root: Path,
    split: str,
    config: DataConfig,
    *,
    training: bool,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images (B,H,W,3) in 0..255, uint8 masks (B,H,W)) from a split.

    `training` shuffles (seeded, differently each epoch), augments, and drops a last
    partial batch so every step sees `batch_size` images; otherwise the order is the
    manifest's and every image appears exactly once. `shard` (count, index) keeps every
    count-th file from index on, before anything is read: each worker of a multi-worker
    run decodes only its own share.
    """
    from cityseg._tf import tf

    root = Path(root)
    entries = split_entries(root, split, config.scheme, (config.height, config.width))
    if shard is not None:
        count, index = shard
        entries = entries[index::count]
    if training and len(entries) < config.batch_size:
        whose = f"the {split} split" if shard is None else f"worker {shard[1]}'s {split} share"
        raise UsageError(
            f"{whose} has {len(entries)} images, fewer than the batch size "
            f"{config.batch_size}; lower --batch"
        )
    images = [str(root / e["image"]) for e in entries]
    masks = [str(root / e["mask"]) for e in entries]
    size = (config.height, config.width)
    autotune = tf.data.AUTOTUNE
    deterministic = not training  # training lets a slow PNG be overtaken; eval keeps order
    resizer = _Resizer(*size)
    augmenter = None
    if training and config.aug != "none":
        # Without a cache nothing sits between resizing and augmenting: one Python call.
        fused = resizer if config.cache is None else None
        augmenter = _Augmenter(config.aug, config.seed, fused)

    def in_numpy(
        function: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
        image: tf.Tensor,
        mask: tf.Tensor,
        *,
        stateful: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        image, mask = tf.numpy_function(
            function, [image, mask], (tf.uint8, tf.uint8), stateful=stateful
        )
        # numpy_function forgets shapes; batching and Keras need them back.
        return tf.ensure_shape(image, (*size, 3)), tf.ensure_shape(mask, size)

    def load(image_path: tf.Tensor, mask_path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # TensorFlow decodes outside the GIL; OpenCV resizes (see `resize_image`).
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        if augmenter is not None and config.cache is None:
            return in_numpy(augmenter, image, mask, stateful=True)
        return in_numpy(resizer, image, mask, stateful=False)

    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    if training and config.cache is None:
        dataset = dataset.shuffle(len(images), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=autotune, deterministic=deterministic)
    if config.cache is not None:
        # Resized uint8 pixels, before augmentation: every epoch still augments anew.
        if config.cache == "memory":
            dataset = dataset.cache()
        else:
            files = [[e["image"], e["mask"]] for e in entries]
            dataset = dataset.cache(_cache_prefix(config.cache, root, split, config, files))
        if training:
            buffer = min(config.shuffle_buffer, len(images))
            dataset = dataset.shuffle(buffer, seed=config.seed, reshuffle_each_iteration=True)
            if augmenter is not None:
                active = augmenter

                def augment(image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                    return in_numpy(active, image, mask, stateful=True)

                dataset = dataset.map(
                    augment, num_parallel_calls=autotune, deterministic=deterministic
                )

    dataset = dataset.batch(config.batch_size, drop_remainder=training)
    # Cast after batching: one large op per batch instead of one per image.
    dataset = dataset.map(
        lambda image, mask: (tf.cast(image, tf.float32), mask),
        num_parallel_calls=autotune,
        deterministic=deterministic,
    )
    return dataset.prefetch(autotune)

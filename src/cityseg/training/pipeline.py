"""The training input pipeline: prepared dataset -> batches of (images, masks) for Keras.

The earlier notebooks fed Keras from a Python `Sequence`, one image at a time, or loaded
a whole split into memory at 128x128. Here the split streams from its PNG files through
`tf.data`: file names are shuffled (cheap strings, so memory stays bounded whatever the
split's size), PNGs are read and decoded in parallel by TensorFlow's own threads, resized
to the training size with OpenCV (bilinear image, nearest mask so class ids stay exact),
optionally cached, augmented with albumentations, both through `tf.numpy_function` on
uint8 arrays, then batched and prefetched so the accelerator never waits for the CPU.
When `cityseg prepare --size` stored copies at the training size (`cityseg.dataset.sized`), the
pipeline reads those instead: the same pixels, without decoding full-size PNGs.

Images leave the pipeline as float32 RGB in 0..255: normalisation belongs to the model,
so a saved model bundle carries it and `predict` cannot forget it.

TensorFlow is imported inside the functions that need it. Which files a split holds is
`cityseg.dataset.entries`; the augmentation presets are `cityseg.training.augment`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cityseg.dataset.entries import split_entries
from cityseg.dataset.manifest import MANIFEST_NAME
from cityseg.errors import UsageError
from cityseg.images import png_header, resize_image, resize_mask
from cityseg.training.augment import build_augmentation, check_preset

if TYPE_CHECKING:
    import albumentations

    from cityseg._tf import tf


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
        check_preset(self.aug)
        if self.cache is not None and not self.cache.strip():
            raise UsageError('cache must be "memory" or a file path prefix (got an empty string)')


# ----------------------------------------------------------------------------- augmentation


# ----------------------------------------------------------------------------- resizing


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
    entries = _entries_for(root, split, config, training=training, shard=shard)
    stages = _Stages(config, training)
    files = ([str(root / e["image"]) for e in entries], [str(root / e["mask"]) for e in entries])
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training and config.cache is None:
        dataset = dataset.shuffle(len(entries), seed=config.seed, reshuffle_each_iteration=True)
    dataset = stages.map(dataset, stages.load)
    if config.cache is not None:
        dataset = _cache_then_augment(dataset, stages, root, split, entries)
    dataset = dataset.batch(config.batch_size, drop_remainder=training)
    # Cast after batching: one large op per batch instead of one per image.
    dataset = stages.map(dataset, lambda image, mask: (tf.cast(image, tf.float32), mask))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _entries_for(
    root: Path, split: str, config: DataConfig, *, training: bool, shard: tuple[int, int] | None
) -> list[dict[str, Any]]:
    """The split's entries (this worker's share), with enough images for one batch."""
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
    return entries


class _Stages:
    """The per-image steps of the pipeline: decode, resize, augment, in tf.data maps.

    Training lets a slow PNG be overtaken (non-deterministic maps); evaluation keeps the
    manifest's order. Without a cache nothing sits between resizing and augmenting, so
    the two run as one Python call per image.
    """

    def __init__(self, config: DataConfig, training: bool) -> None:
        self.config = config
        self.size = (config.height, config.width)
        self.deterministic = not training
        self.resizer = _Resizer(*self.size)
        self.augmenter: _Augmenter | None = None
        if training and config.aug != "none":
            fused = self.resizer if config.cache is None else None
            self.augmenter = _Augmenter(config.aug, config.seed, fused)

    def map(self, dataset: tf.data.Dataset, function: Callable[..., Any]) -> tf.data.Dataset:
        from cityseg._tf import tf

        return dataset.map(
            function, num_parallel_calls=tf.data.AUTOTUNE, deterministic=self.deterministic
        )

    def in_numpy(
        self,
        function: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
        image: tf.Tensor,
        mask: tf.Tensor,
        *,
        stateful: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        from cityseg._tf import tf

        image, mask = tf.numpy_function(
            function, [image, mask], (tf.uint8, tf.uint8), stateful=stateful
        )
        # numpy_function forgets shapes; batching and Keras need them back.
        return tf.ensure_shape(image, (*self.size, 3)), tf.ensure_shape(mask, self.size)

    def load(self, image_path: tf.Tensor, mask_path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        from cityseg._tf import tf

        # TensorFlow decodes outside the GIL; OpenCV resizes (see `resize_image`).
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        if self.augmenter is not None and self.config.cache is None:
            return self.in_numpy(self.augmenter, image, mask, stateful=True)
        return self.in_numpy(self.resizer, image, mask, stateful=False)

    def augment(self, image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        assert self.augmenter is not None
        return self.in_numpy(self.augmenter, image, mask, stateful=True)


def _cache_then_augment(
    dataset: tf.data.Dataset,
    stages: _Stages,
    root: Path,
    split: str,
    entries: list[dict[str, Any]],
) -> tf.data.Dataset:
    """Cache resized uint8 pixels, before augmentation: every epoch still augments anew."""
    config = stages.config
    if config.cache == "memory":
        dataset = dataset.cache()
    else:
        assert config.cache is not None
        files = [[e["image"], e["mask"]] for e in entries]
        dataset = dataset.cache(_cache_prefix(config.cache, root, split, config, files))
    if stages.deterministic:  # evaluation: neither shuffled nor augmented
        return dataset
    buffer = min(config.shuffle_buffer, len(entries))
    dataset = dataset.shuffle(buffer, seed=config.seed, reshuffle_each_iteration=True)
    return dataset if stages.augmenter is None else stages.map(dataset, stages.augment)

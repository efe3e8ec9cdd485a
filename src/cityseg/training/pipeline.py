"""The training input pipeline: prepared dataset -> batches of (images, masks) for Keras.

The earlier notebooks fed Keras from a Python `Sequence`, one image at a time, or loaded
a whole split into memory at 128x128. Here the split streams from its PNG files through
`tf.data`: file names are shuffled (cheap strings, so memory stays bounded whatever the
split's size), PNGs are read and decoded in parallel by TensorFlow's own threads, resized
to the training size with OpenCV (bilinear image, nearest mask so class ids stay exact),
optionally cached, augmented with albumentations, both through `tf.numpy_function` on
uint8 arrays, then batched and prefetched so the accelerator never waits for the CPU.
When `cityseg prepare --size` stored copies at the training size (`cityseg.dataset.sized`), the
pipeline reads those instead: the same pixels, without decoding full-size PNGs. With a
`crop` (`train --crop`), each training sample is cut to a random window after resizing
and before augmenting, and validation images to tiles (`cityseg.training.crops`).

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
from cityseg.training.crops import IGNORE, RandomCrop, val_tiles

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
    crop: tuple[int, int] | None = None
    """(height, width) of the random window each training sample is cut to, after
    resizing to height x width; validation then yields tiles of this size. None: whole
    images."""

    def __post_init__(self) -> None:
        # Checked here so a bad option fails in one line before TensorFlow is even imported.
        for name in ("height", "width", "batch_size", "shuffle_buffer"):
            _check_positive(name, getattr(self, name))
        check_preset(self.aug)
        if self.cache is not None and not self.cache.strip():
            raise UsageError('cache must be "memory" or a file path prefix (got an empty string)')
        if self.crop is not None:
            for value in self.crop:
                _check_positive("crop", value)
            if self.crop[0] > self.height or self.crop[1] > self.width:
                raise UsageError(
                    f"crop {self.crop[0]}x{self.crop[1]} does not fit in the size "
                    f"{self.height}x{self.width}"
                )

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{name} must be a positive integer (got {value!r})")


# ----------------------------------------------------------------------------- per-sample steps


class _Resizer:
    """`tf.numpy_function` target: resizes a decoded (image, mask) pair."""

    def __init__(self, height: int, width: int) -> None:
        self._size = (height, width)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return resize_image(image, *self._size), resize_mask(mask, *self._size)


class _Augmenter:
    """`tf.numpy_function` step: applies a preset.

    tf.data calls it from several threads at once, and an albumentations Compose keeps
    per-call state on itself (each transform's `params`, the Compose's list flags), so
    sharing one would mix two images' parameters: each thread gets its own Compose.
    Thread `i` is seeded with (seed, i), so runs are reproducible in distribution, not
    bit for bit, since threads pick up images in whatever order they finish.
    """

    def __init__(self, name: str, seed: int) -> None:
        self._name = name
        self._seed = seed
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
        out = self._compose()(image=image, mask=mask)
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])


@dataclass(frozen=True)
class _TrainingSample:
    """`tf.numpy_function` target: a training sample's steps in one Python call: resize
    (unless a cache holds resized pixels already), crop (given the sample's draw), then
    augment; each step is optional."""

    resize: _Resizer | None
    crop: RandomCrop | None
    augment: _Augmenter | None

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, *draw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.resize is not None:
            image, mask = self.resize(image, mask)
        if self.crop is not None:
            image, mask = self.crop(image, mask, draw[0])
        if self.augment is not None:
            image, mask = self.augment(image, mask)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


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
    if training:
        return size // config.batch_size
    if config.crop is not None:  # each val image yields its tiles
        size *= len(val_tiles(config.size, config.crop))
    return math.ceil(size / config.batch_size)


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

    `training` shuffles (seeded, differently each epoch), crops and augments, and drops a
    last partial batch so every step sees `batch_size` images; otherwise the order is the
    manifest's and every image appears exactly once (as its tiles, with a crop). `shard`
    (count, index) keeps every count-th file from index on, before anything is read: each
    worker of a multi-worker run decodes only its own share.
    """
    from cityseg._tf import tf

    root = Path(root)
    entries = _entries_for(root, split, config, training=training, shard=shard)
    stages = _Stages(config, training, shard_index=0 if shard is None else shard[1])
    files = ([str(root / e["image"]) for e in entries], [str(root / e["mask"]) for e in entries])
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training and config.cache is None:
        dataset = dataset.shuffle(len(entries), seed=config.seed, reshuffle_each_iteration=True)
        dataset = stages.with_draws(dataset)
    dataset = stages.map(dataset, stages.load)
    if config.cache is not None:
        dataset = _cache_then_augment(dataset, stages, root, split, entries)
    if stages.tiler is not None:
        dataset = stages.map(dataset, stages.tiler).unbatch()
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
    """The per-image steps of the pipeline: decode, resize, crop, augment, in tf.data maps.

    Training lets a slow PNG be overtaken (non-deterministic maps); evaluation keeps the
    manifest's order. Without a cache nothing sits between resizing and the training
    steps, so they all run as one Python call per image (`_TrainingSample`).
    """

    def __init__(self, config: DataConfig, training: bool, shard_index: int = 0) -> None:
        self.config = config
        self.deterministic = not training
        self.resizer = _Resizer(*config.size)
        cropper = RandomCrop(config.crop) if training and config.crop is not None else None
        augmenter = None
        if training and config.aug != "none":
            augmenter = _Augmenter(config.aug, config.seed)
        self.sample: _TrainingSample | None = None
        if cropper is not None or augmenter is not None:
            fused = self.resizer if config.cache is None else None
            self.sample = _TrainingSample(fused, cropper, augmenter)
        self.out_size = cropper.crop if cropper is not None else config.size
        """The size of the samples the training steps give."""
        self.draw_seed = int(
            np.random.SeedSequence([config.seed, shard_index]).generate_state(1)[0]
        )
        self.tiler = _ValTiler(config.size, config.crop) if config.crop and not training else None

    def map(self, dataset: tf.data.Dataset, function: Callable[..., Any]) -> tf.data.Dataset:
        from cityseg._tf import tf

        return dataset.map(
            function, num_parallel_calls=tf.data.AUTOTUNE, deterministic=self.deterministic
        )

    def with_draws(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Each element with one random int64 that places its crop, when there is one.

        Zipped before the parallel maps, a draw travels with its sample: where the k-th
        sample of an epoch is cut depends only on the seed and the epoch, not on thread
        timing (the augmentations' draws are per thread). Each input pipeline (a worker of
        a multi-worker run) has its own stream, so workers cut their k-th samples at
        different places; every epoch (and every `repeat`) draws afresh.
        """
        from cityseg._tf import tf

        if self.sample is None or self.sample.crop is None:
            return dataset
        draws = tf.data.Dataset.random(seed=self.draw_seed, rerandomize_each_iteration=True)
        return tf.data.Dataset.zip(dataset, draws).map(lambda pair, draw: (*pair, draw))

    def in_numpy(
        self,
        function: Callable[..., tuple[np.ndarray, np.ndarray]],
        tensors: list[tf.Tensor],
        size: tuple[int, int],
        *,
        stateful: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        from cityseg._tf import tf

        image, mask = tf.numpy_function(function, tensors, (tf.uint8, tf.uint8), stateful=stateful)
        # numpy_function forgets shapes; batching and Keras need them back.
        return tf.ensure_shape(image, (*size, 3)), tf.ensure_shape(mask, size)

    def load(
        self, image_path: tf.Tensor, mask_path: tf.Tensor, *draw: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        from cityseg._tf import tf

        # TensorFlow decodes outside the GIL; OpenCV resizes (see `resize_image`).
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        if self.sample is not None and self.config.cache is None:
            return self.train_steps(image, mask, *draw)
        return self.in_numpy(self.resizer, [image, mask], self.config.size, stateful=False)

    def train_steps(
        self, image: tf.Tensor, mask: tf.Tensor, *draw: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        assert self.sample is not None
        stateful = self.sample.augment is not None
        return self.in_numpy(self.sample, [image, mask, *draw], self.out_size, stateful=stateful)


class _ValTiler:
    """tf.data map: a val (image, mask) at the training size -> its stacked tiles, each
    mask tile ignore (255) where an earlier tile already scored it (`crops.val_tiles`)."""

    def __init__(self, size: tuple[int, int], crop: tuple[int, int]) -> None:
        self.crop = crop
        self.tiles = val_tiles(size, crop)

    def __call__(self, image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        from cityseg._tf import tf

        height, width = self.crop
        images, masks = [], []
        for top, left, owned in self.tiles:
            images.append(image[top : top + height, left : left + width])
            tile = mask[top : top + height, left : left + width]
            if not owned.all():
                tile = tf.where(tf.constant(owned), tile, tf.constant(IGNORE, tf.uint8))
            masks.append(tile)
        return tf.stack(images), tf.stack(masks)


def _cache_then_augment(
    dataset: tf.data.Dataset,
    stages: _Stages,
    root: Path,
    split: str,
    entries: list[dict[str, Any]],
) -> tf.data.Dataset:
    """Cache resized uint8 pixels, before cropping and augmenting: every epoch still
    crops and augments anew."""
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
    if stages.sample is None:
        return dataset
    return stages.map(stages.with_draws(dataset), stages.train_steps)

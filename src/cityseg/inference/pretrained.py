"""Pretrained models by name: `--model segformer-b0-cityscapes` predicts with no training.

A name stands for a keras-hub preset turned into an ordinary cityseg bundle (the 8
categories, from the preset's 19 Cityscapes trainIds summed per category), built once and
kept in the user's Keras home (`$KERAS_HOME`, else ~/.keras) under `cityseg/<name>/`; from
then on it is used like any bundle, with no keras-hub download. A `--model` value that
exists as a path is always that path.

SegFormer takes square inputs only: the Predictor runs such bundles with a sliding window
at their own input size (1024x1024, the size the presets were fine-tuned at) unless
`--slide` chooses another.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cityseg.dataset.labels import CATEGORY_NAMES
from cityseg.errors import DataError
from cityseg.inference.bundle import CARD_NAME, read_card, verified_weights
from cityseg.training.segformer import CITYSCAPES, CITYSCAPES_PRESETS, SEGFORMER_ARCHS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    arch: str
    weights: str
    """A `--weights` value: "cityscapes" (keras-hub's preset for the arch) or a preset folder."""
    size: int
    """The square input side of the bundle: the resolution the preset was fine-tuned at."""

    @property
    def preset(self) -> str:
        return CITYSCAPES_PRESETS[self.arch] if self.weights == CITYSCAPES else self.weights


PRETRAINED: dict[str, Pretrained] = {
    f"{arch}-cityscapes": Pretrained(arch, CITYSCAPES, 1024) for arch in SEGFORMER_ARCHS
}


def cache_root() -> Path:
    """Where named bundles are built: beside Keras' own cache, as Keras finds its home."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home) if home else Path.home() / ".keras") / "cityseg"


def named_or_path(model: Path) -> Path:
    """`model` itself, or the bundle of the pretrained model it names (built once)."""
    name = str(model)
    if name not in PRETRAINED or model.exists():
        return model
    return pretrained_bundle(name)


def pretrained_bundle(name: str) -> Path:
    """The cached bundle of `name`, built from its preset on first use (or when the cached
    one is damaged)."""
    folder = cache_root() / name
    if (folder / CARD_NAME).is_file():
        try:
            verified_weights(*read_card(folder))
            return folder
        except DataError as exc:
            logger.warning(f"warning: rebuilding {folder} ({exc})")
    return _build_bundle(name, folder)


def _build_bundle(name: str, folder: Path) -> Path:
    from cityseg.inference.bundle import save_bundle
    from cityseg.training import segformer
    from cityseg.training.models import ModelSpec, categories_card, validate_spec

    entry = PRETRAINED[name]
    spec = ModelSpec(
        arch=entry.arch,
        num_classes=len(CATEGORY_NAMES),
        height=entry.size,
        width=entry.size,
        weights=entry.weights,
        head=segformer.HEAD_CATEGORIES,
    )
    validate_spec(spec)
    logger.info(f"{name}: building a bundle from keras-hub preset {entry.preset} into {folder}")
    hint = (
        f"build it once on a machine with internet (`cityseg predict IMAGE -o OUT --model "
        f"{name}` leaves the bundle in {folder}), copy that folder here and pass it to --model"
    )
    model = segformer.build(spec, offline_hint=hint)
    card = {
        **categories_card(spec, run=name),
        "pretrained": {"name": name, "preset": entry.preset},
    }
    return save_bundle(model, folder, card)

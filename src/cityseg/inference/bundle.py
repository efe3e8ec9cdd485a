"""Model bundles: a folder with `cityseg.json` and a weights file, and nothing executable.

The notebooks saved whole H5 models (357 MB) that needed custom objects to load, and
`load_model` on a file from elsewhere can run arbitrary code. A bundle instead records
what to build (architecture, backbone, classes, input size) and the weights' SHA-256;
loading rebuilds the architecture in code and only then reads the weights, after the
hash matches. The card also carries the classes and palette, so no later command needs
another flag to interpret the output.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cityseg import __version__
from cityseg.errors import CitysegError, DataError
from cityseg.fsutil import atomic_write_json

if TYPE_CHECKING:
    from cityseg._tf import keras

CARD_NAME = "cityseg.json"
WEIGHTS_NAME = "model.weights.h5"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    path: Path
    card: dict[str, Any]
    model: keras.Model


def sha256_of(path: Path) -> str:
    """A file's SHA-256; a folder's (a SavedModel) covers every file's name and content."""
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_of(item)}\n".encode())
        return digest.hexdigest()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def save_bundle(
    model: keras.Model,
    folder: Path,
    card: dict[str, Any],
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write the weights and card to `folder` whole or not at all (see `write_model_folder`).

    `extras(staging_folder)` may add files (a run's optimizer state) to the same swap.
    """

    def write_weights(staging: Path) -> str:
        save_model_weights(model, staging / WEIGHTS_NAME)
        return WEIGHTS_NAME

    return write_model_folder(folder, card, write_weights, extras)


def write_model_folder(
    folder: Path,
    card: dict[str, Any],
    write_artefact: Callable[[Path], str],
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Build a model folder beside `folder`, then swap it into place.

    A crash or Ctrl-C mid-write leaves the previous folder (or none), never a card whose
    artefact is half written. `write_artefact(staging)` writes the weights (or an exported
    model) and returns its name, which the card records with its size and SHA-256.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        artefact = staging / write_artefact(staging)
        full_card = {
            "format_version": FORMAT_VERSION,
            "cityseg_version": __version__,
            **card,
            "weights": {
                "file": artefact.name,
                "sha256": sha256_of(artefact),
                "bytes": size_of(artefact),
            },
        }
        atomic_write_json(staging / CARD_NAME, full_card)
        if extras is not None:
            extras(staging)
        retired = folder.with_name(f".{folder.name}.old")
        if retired.exists():
            shutil.rmtree(retired)
        if folder.exists():
            folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def save_model_weights(model: keras.Model, path: Path) -> None:
    """Weights without optimizer slots: Keras 3's `save_weights` stores those too, which
    triples a bundle trained with Adam. Optimizer state for resuming is kept elsewhere."""
    try:
        from keras.src.saving import saving_lib

        skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
        saving_lib.save_weights_only(model, str(path), objects_to_skip=skip)
    except (ImportError, TypeError):  # a Keras without objects_to_skip: keep what it saves
        model.save_weights(str(path))


def read_card(path: Path) -> tuple[Path, dict[str, Any]]:
    """(model folder, card) for a model folder, its cityseg.json or the file it describes."""
    folder = path.parent if path.is_file() else path
    card_path = folder / CARD_NAME
    if not folder.exists():
        raise CitysegError(f"no model bundle at {path}")
    if not card_path.is_file():
        raise DataError(f"{folder} is not a cityseg model bundle (no {CARD_NAME})")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{card_path} is not valid JSON ({exc}); the bundle is damaged") from exc
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        version = card.get("format_version") if isinstance(card, dict) else None
        raise DataError(
            f"{card_path} has format_version {version!r}; this cityseg reads {FORMAT_VERSION}"
        )
    return folder, card


def card_input_size(card: dict[str, Any]) -> tuple[int, int]:
    """(height, width) the model was built for: an export runs at nothing else, and a
    bundle's images are resized to it."""
    return int(card["height"]), int(card["width"])


class CardFacts:
    """What every holder of a model card (`cityseg.Model`, a `Predictor`) reads from it
    alike: the class names, their colours and the input size, defined once so the
    Python API and the runtime never disagree. A subclass provides `card`."""

    @property
    def card(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def classes(self) -> list[str]:
        """Class names in id order: mask value i is `classes[i]`."""
        return [str(name) for name in self.card["classes"]]

    @property
    def palette(self) -> np.ndarray:
        """(classes, 3) uint8 RGB: the colour of each class id."""
        return np.array(self.card["palette"], dtype=np.uint8)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model runs at; images of any size are resized to it."""
        return card_input_size(self.card)


def verified_weights(folder: Path, card: dict[str, Any]) -> Path:
    """The weights file, once its size and SHA-256 match the card."""
    info = card.get("weights") or {}
    name = str(info.get("file", WEIGHTS_NAME))
    weights = folder / Path(name).name  # the card never points outside its folder
    if not weights.exists():
        raise DataError(f"{folder} has no weights file {weights.name}; the bundle is incomplete")
    if size_of(weights) != info.get("bytes") or sha256_of(weights) != info.get("sha256"):
        raise DataError(
            f"{weights} does not match the SHA-256 in {CARD_NAME}: the bundle is truncated or "
            "was modified; re-export or re-train it"
        )
    return weights


def load_bundle(path: Path, build: Callable[[dict[str, Any]], keras.Model]) -> Bundle:
    """Rebuild the model with `build(card)` and load its verified weights."""
    folder, card = read_card(path)
    weights = verified_weights(folder, card)
    model = build(card)
    try:
        model.load_weights(str(weights))
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{weights} does not fit the architecture in {CARD_NAME}: {exc}") from exc
    return Bundle(folder, card, model)

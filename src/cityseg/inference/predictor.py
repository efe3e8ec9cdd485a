"""Running a trained bundle on images of any size: the one path predict, evaluate and
serve share, so the three can never disagree about pre- or post-processing.

Images are resized to the size the model was trained at (as training resized them), the
model sees RGB floats 0..255 (its normalisation is inside it), and the class
probabilities are resized back to each image's own size before the argmax, which is
smoother and more accurate at edges than upsampling the class ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cityseg.config import DEFAULT_PROJECT
from cityseg.errors import CitysegError, UsageError
from cityseg.images import resize_image
from cityseg.inference.bundle import CARD_NAME, CardFacts, card_input_size, read_card
from cityseg.inference.pretrained import named_or_path
from cityseg.inference.runtimes import KERAS, LoadedModel, Runtime, model_format, open_model
from cityseg.inference.sliding import Window, slide_probabilities

logger = logging.getLogger(__name__)


def newest_bundle(project: Path = DEFAULT_PROJECT) -> Path:
    """The `best/` bundle of the most recently written run under `project`."""
    candidates = [p.parent for p in project.glob(f"*/best/{CARD_NAME}")]
    if not candidates:
        raise CitysegError(
            f"no trained model found under {project}/*/best; train one with `cityseg train` "
            "or pass --model PATH"
        )
    return max(candidates, key=lambda p: (p / CARD_NAME).stat().st_mtime)


def resolve_model(model: Path | None, project: Path) -> Path:
    """`model` (a path, or a pretrained model's name: `cityseg.inference.pretrained`), or
    the newest run's best bundle, saying so since the user did not choose it."""
    if model is not None:
        return named_or_path(model)
    found = newest_bundle(project)
    logger.info(f"model: {found} (the newest run's best; choose another with --model)")
    return found


def default_window(card: dict[str, Any]) -> Window | None:
    """A sliding window at the input size for square-only archs; None (whole images
    resized to the model's size) for every other."""
    from cityseg.training.models import square_only

    if not square_only(str(card.get("arch", ""))):
        return None
    return Window.parse(f"{card['height']}x{card['width']}")


def resize_probabilities(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear per class; OpenCV takes a limited channel count at once, so chunk."""
    if probs.shape[:2] == (height, width):
        return probs
    parts = [
        cv2.resize(
            np.ascontiguousarray(probs[..., i : i + 128]),
            (width, height),
            interpolation=cv2.INTER_LINEAR,
        )
        for i in range(0, probs.shape[-1], 128)
    ]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]
    return np.concatenate(parts, axis=-1)


def labels_at(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """`resize_probabilities(...).argmax(-1)` as uint8, one class plane at a time.

    numpy's argmax over a short last axis pays per pixel (~3 ms for 8 classes at 256x512,
    6x the resize); a running maximum over whole planes is vectorised and never holds
    all the full-size probabilities at once. Ties go to the lower class id, as argmax.
    """
    labels = np.zeros((height, width), dtype=np.uint8)
    best = _plane_at(probs, 0, height, width)
    for class_id in range(1, probs.shape[-1]):
        plane = _plane_at(probs, class_id, height, width)
        # Classes come in increasing order, so a winning class id is above every label
        # so far: a maximum sets it, ~20x cheaper than a masked write.
        better = np.greater(plane, best).view(np.uint8)
        np.maximum(labels, better * np.uint8(class_id), out=labels)
        np.maximum(best, plane, out=best)
    return labels


def _plane_at(probs: np.ndarray, class_id: int, height: int, width: int) -> np.ndarray:
    plane = np.ascontiguousarray(probs[..., class_id])
    if plane.shape == (height, width):
        return plane.copy() if class_id == 0 else plane
    return cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass
class Predictor(CardFacts):
    model: LoadedModel
    tta_flip: bool = False
    window: Window | None = None
    """Sliding-window inference (`--slide`): the model runs on overlapping crops of each
    image at its own size, instead of on the whole image resized to the model's size.
    A model that takes square inputs only (SegFormer) slides by default, at its own
    input size."""

    def __post_init__(self) -> None:
        if self.window is None:
            self.window = default_window(self.model.card)
            if self.window is not None:
                logger.info(
                    f"{self.card['arch']} takes square inputs only: sliding a {self.window} "
                    "window over each image at its own size (choose another with --slide)"
                )

    @property
    def card(self) -> dict[str, Any]:
        return self.model.card

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def runtime(self) -> Runtime:
        return self.model.runtime

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class probabilities (H, W, C) at each RGB uint8 image's own size."""
        return self._at_image_sizes(images, resize_probabilities)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class-id masks (uint8, H x W) at each image's own size."""
        return self._at_image_sizes(images, labels_at)

    def predict_with_probabilities(
        self, images: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(mask, probabilities) per image from one model call: the mask is exactly what
        `predict` gives, the probabilities what `probabilities` gives."""

        def both(probs: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
            return labels_at(probs, height, width), resize_probabilities(probs, height, width)

        if not images:
            return []
        return [
            both(probs, image.shape[0], image.shape[1])
            for probs, image in zip(self._per_image(images), images, strict=True)
        ]

    def _at_image_sizes(
        self, images: Sequence[np.ndarray], finish: Callable[[np.ndarray, int, int], np.ndarray]
    ) -> list[np.ndarray]:
        """One model call for the batch, then `finish(probs, height, width)` per image."""
        if not images:
            return []
        return [
            finish(probs, image.shape[0], image.shape[1])
            for probs, image in zip(self._per_image(images), images, strict=True)
        ]

    def _per_image(self, images: Sequence[np.ndarray]) -> Iterable[np.ndarray]:
        """Each image's probabilities: at the model's size from one call for the batch, or
        at the image's own size from its tiles when sliding."""
        window = self.window
        if window is None:
            return self._model_probabilities(images)
        return [slide_probabilities(image, window, self._crop_probabilities) for image in images]

    def _crop_probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Tiles through the model, their probabilities back at the tile's size (the
        same array when the window is the model's input size, as it should usually be)."""
        height, width = crops.shape[1:3]
        probs = self._model_probabilities(list(crops))
        if probs.shape[1:3] == (height, width):
            return probs
        return np.stack([resize_probabilities(p, height, width) for p in probs])

    def _model_probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities at the model's input size, (N, h, w, C)."""
        height, width = self.input_size
        batch = np.stack([resize_image(image, height, width) for image in images])
        batch = batch.astype(np.float32)
        probs = self.runtime(batch)
        if self.tta_flip:
            flipped = self.runtime(batch[:, :, ::-1].copy())
            probs = (probs + flipped[:, :, ::-1]) / 2.0
        return probs


def load_predictor(
    model: Path | None = None,
    *,
    project: Path = DEFAULT_PROJECT,
    tta_flip: bool = False,
    window: Window | None = None,
) -> Predictor:
    """A predictor for `model` (a bundle or an export), or for the newest run's best bundle."""
    path = resolve_model(model, project)
    loaded = open_model(path, size=sliding_size(path, window))
    return Predictor(loaded, tta_flip=tta_flip, window=window)


def sliding_size(path: Path, window: Window | None) -> tuple[int, int] | None:
    """The size to open the model at for `window`, or None for its own.

    A Keras bundle is rebuilt at the window's crop: its weights do not depend on the size,
    and each tile then meets the model pixel for pixel (a `--crop` run trained at exactly
    that size). An export is fixed at its size, and an architecture the crop does not fit
    (PSPNet's stride of 48) keeps its own: those tiles are resized to the model.
    """
    from cityseg.training.models import spec_from_card

    if window is None:
        return None
    _, card = read_card(path)
    if model_format(card) != KERAS or window.crop == card_input_size(card):
        return None
    try:
        spec_from_card(card, height=window.crop[0], width=window.crop[1])
    except UsageError:
        return None
    return window.crop

"""Augmentation presets as albumentations pipelines, importable without TensorFlow.

The pipeline applies them to uint8 arrays inside `tf.numpy_function`; `cityseg train
--help` and option checks only need the preset names, so albumentations itself is
imported when a preset is built.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cityseg.errors import UsageError

if TYPE_CHECKING:
    import albumentations

AUG_PRESETS = ("none", "soft", "hard")


def check_preset(name: str) -> None:
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
    check_preset(name)
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

"""An architecture built on keras.applications encoders, as the model factory sees it.

Each such architecture (LR-ASPP, DeepLabV3+) lives in its own module and describes
itself with one `Family`: the facts validation needs, free of TensorFlow, and the
function that builds its network. `cityseg.training.models` keeps a table of them, so
adding an architecture is one module and one table entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cityseg._tf import keras

Builder = Callable[[str, tuple[int, int, int], int, str | None], "keras.Model"]
"""(backbone, input shape, classes, encoder weights) -> the network up to its logits.

The encoder weights are "imagenet" (Keras' own download into ~/.keras/models), None
(random) or the path of a weights file for the keras.applications encoder alone.
"""


@dataclass(frozen=True)
class Family:
    """What the factory needs to know about one architecture.

    `backbones` maps each encoder to the normalisation (our modes: none, tf, torch,
    caffe) its ImageNet weights expect on 0..255 RGB, beyond any rescaling the
    keras.applications model already holds inside (MobileNetV3's `Rescaling` layer,
    for one, which is why its mode is "none"). `stride` is what height and width must be
    divisible by: the deepest feature map the network reads.
    """

    backbones: Mapping[str, str]
    default_backbone: str
    stride: int
    build: Builder

    def __post_init__(self) -> None:
        if self.default_backbone not in self.backbones:
            raise ValueError(f"default backbone {self.default_backbone!r} is not offered")


BATCHNORM_MOMENTUM = 0.9


def settle_batchnorm(model: keras.Model) -> keras.Model:
    """Give every batch norm in `model` (nested models included) the same momentum.

    keras.applications' MobileNetV2 and V3 come with 0.999 (TF-slim's): their moving
    statistics then keep two thirds of their initial 0/1 after an epoch of Cityscapes
    (372 steps at batch 8), and validation, run on those statistics, scores a network
    training has not produced; best/ and a study's pruning follow that score. 0.9 is
    PyTorch's default (its momentum=0.1), which mmsegmentation trains LR-ASPP and
    DeepLabV3+ with. Measured on the demo's convergence check (30 epochs, 180 steps):
    LR-ASPP-MobileNetV3Large scored test mIoU 0.76 at 0.9 and 0.20 at 0.99, with the same
    training mIoU (0.79): at 0.99 the statistics had not caught up. Momentum is no weight:
    ImageNet weights and bundles are unaffected.
    """
    from cityseg._tf import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            settle_batchnorm(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCHNORM_MOMENTUM
    return model


@contextmanager
def any_input_size() -> Iterator[None]:
    """Silence keras.applications' warning that ImageNet weights are for 224x224.

    It is written for classifiers: without the top, every weight is a convolution's or a
    batch norm's, the same at any input size, so the weights load unchanged at ours.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*will be loaded as the default")
        yield

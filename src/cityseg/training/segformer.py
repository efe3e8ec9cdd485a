"""SegFormer B0..B5: keras-hub's MiT encoder and all-MLP decoder behind the model contract.

The network is keras-hub's `SegFormerBackbone` on a `MiTBackbone` of each size's published
configuration, and cityseg's own head: dropout, a 1x1 convolution to logits at 1/4 of the
input, bilinear upsampling to the input size and the float32 softmax every cityseg model
ends in. The input normalisation is inside the model, as for every architecture: keras-hub's
SegFormer presets were converted from the original checkpoints with an image converter of
scale 1/255 and ImageNet mean and std, which is cityseg's "torch" mode on 0..255 input.

keras-hub's attention and Mix-FFN layers rebuild the feature map with
`sqrt(sequence length)` on both sides, so the input must be square (256x512 fails deep
inside with a reshape error); each of the four stages halves or quarters the size exactly,
so the side must be divisible by 32. Street images are run with a sliding window of square
tiles (`cityseg.inference.sliding`).

Pretrained starts come from keras-hub presets (`--weights cityscapes`, or a local preset
folder that `save_to_preset` wrote), loaded with keras-hub's own `from_preset`
(`cityseg.training.presets`). Their head predicts the 19 Cityscapes trainIds: kept as is
for the `trainids` scheme; for the 8 categories it is kept too, and a fixed layer sums its
probabilities per category, so the model starts from exactly the pretrained answers; for
any other classes it is re-initialised.
This module imports TensorFlow and keras-hub only inside the functions that build.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.errors import CitysegError, UsageError

if TYPE_CHECKING:
    from cityseg._tf import keras
    from cityseg.training.models import ModelSpec

logger = logging.getLogger(__name__)

SEGFORMER_ARCHS = tuple(f"segformer-b{i}" for i in range(6))
STRIDE = 32
"""MiT's four stages downsample by 4, 2, 2, 2, each exactly only on sides divisible."""
MIN_SIDE = 2 * STRIDE
"""At 32x32 the last stage is 1x1 and keras-hub's MiT fails to build (a None shape)."""
NORMALISATION = "torch"
"""What the presets' image converter does: x / 255, minus ImageNet mean, over its std."""
CITYSCAPES = "cityscapes"
TRAINID_CLASSES = 19

HEAD_PLAIN = ""
"""The head predicts the run's classes; a pretrained head is not reused."""
HEAD_TRAINIDS = "trainids"
"""The head predicts the 19 Cityscapes trainIds: a pretrained Cityscapes head is used as is."""
HEAD_CATEGORIES = "trainids->categories"
"""A 19-trainId head whose probabilities a fixed layer sums into the 8 categories."""
HEADS = (HEAD_PLAIN, HEAD_TRAINIDS, HEAD_CATEGORIES)


@dataclass(frozen=True)
class SegFormerSize:
    """One size's configuration: the SegFormer paper's Table 6, as keras-hub's converted
    presets hold it (decoder width 256 for B0/B1, 768 above)."""

    hidden_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    projection_filters: int
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    patch_sizes: tuple[int, int, int, int] = (7, 3, 3, 3)
    strides: tuple[int, int, int, int] = (4, 2, 2, 2)
    max_drop_path_rate: float = 0.1

    def encoder_kwargs(self, height: int, width: int) -> dict[str, Any]:
        """`keras_hub.models.MiTBackbone`'s arguments for this size at `height` x `width`."""
        return {
            "layerwise_depths": list(self.depths),
            "num_layers": len(self.depths),
            "layerwise_num_heads": list(self.num_heads),
            "layerwise_sr_ratios": list(self.sr_ratios),
            "max_drop_path_rate": self.max_drop_path_rate,
            "layerwise_patch_sizes": list(self.patch_sizes),
            "layerwise_strides": list(self.strides),
            "image_shape": (height, width, 3),
            "hidden_dims": list(self.hidden_dims),
        }

    def describe(self) -> str:
        return f"hidden dims {list(self.hidden_dims)}, depths {list(self.depths)}"


_WIDE = (64, 128, 320, 512)
SIZES: dict[str, SegFormerSize] = {
    "segformer-b0": SegFormerSize((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "segformer-b1": SegFormerSize(_WIDE, (2, 2, 2, 2), 256),
    "segformer-b2": SegFormerSize(_WIDE, (3, 4, 6, 3), 768),
    "segformer-b3": SegFormerSize(_WIDE, (3, 4, 18, 3), 768),
    "segformer-b4": SegFormerSize(_WIDE, (3, 8, 27, 3), 768),
    "segformer-b5": SegFormerSize(_WIDE, (3, 6, 40, 3), 768),
}

CITYSCAPES_PRESETS = {arch: f"segformer_b{arch[-1]}_cityscapes_1024" for arch in SEGFORMER_ARCHS}
"""keras-hub's preset per size for `--weights cityscapes`. keras-hub 0.32's
`segformer_b1_cityscapes_1024` entry points at ADE20K weights (its Kaggle handle is
`segformer_b1_ade20k_512/1`): `cityscapes_handle` refuses it rather than train on those."""


def is_segformer(arch: str) -> bool:
    return arch in SEGFORMER_ARCHS


def check_size(arch: str, height: int, width: int) -> None:
    """Square and divisible by 32, in one line that says how to run on street images."""
    if height <= 0 or width <= 0:
        raise UsageError(f"size {height}x{width} must be positive (height x width in pixels)")
    if height != width:
        raise UsageError(
            f"{arch} takes square inputs only, got {height}x{width}: train at a square --size "
            f"(e.g. {min(height, width)}x{min(height, width)}) or with --crop HxW (a square "
            "crop), and predict with --slide (the default for square-only models)"
        )
    if height % STRIDE or height < MIN_SIDE:
        from cityseg.training.models import nearest_valid

        side = max(MIN_SIDE, nearest_valid(height, STRIDE))
        raise UsageError(
            f"size {height}x{width} is not divisible by {STRIDE} (or is below {MIN_SIDE}) for "
            f"{arch}; nearest valid size: {side}x{side}"
        )


def validate(spec: ModelSpec) -> None:
    """`models.validate_spec` for the SegFormer archs: no TensorFlow needed."""
    check_size(spec.arch, spec.height, spec.width)
    if spec.num_classes < 2:
        raise UsageError(f"num_classes must be at least 2 for a softmax, got {spec.num_classes}")
    if spec.head not in HEADS:
        raise UsageError(f"unknown head {spec.head!r}; valid: {', '.join(map(repr, HEADS))}")
    expected = {HEAD_TRAINIDS: TRAINID_CLASSES, HEAD_CATEGORIES: _category_count()}
    if spec.head in expected and spec.num_classes != expected[spec.head]:
        raise UsageError(
            f"head {spec.head!r} predicts {expected[spec.head]} classes, not {spec.num_classes}"
        )
    _check_weights(spec.weights)


def _check_weights(weights: str) -> None:
    if weights.strip().lower() in ("none", "imagenet", CITYSCAPES):
        return
    path = Path(weights).expanduser()
    if path.is_dir():
        from cityseg.training.presets import preset_kind

        preset_kind(path)
        return
    from cityseg.training.models import require_weights_file

    require_weights_file(
        path,
        alternatives="cityscapes, none, a keras-hub preset folder (what save_to_preset "
        "writes) or a .weights.h5 file",
        kind="keras-hub preset folder nor a Keras weights",
    )


def _category_count() -> int:
    from cityseg.dataset import labels

    return len(labels.CATEGORY_NAMES)


def head_for(arch: str, weights: str, classes: Sequence[str]) -> str:
    """The head a run of `arch` from `weights` on `classes` gets: a pretrained 19-trainId
    head is kept for the trainIds and for the categories (summed), else re-initialised."""
    from cityseg.dataset import labels
    from cityseg.training.presets import preset_classes

    if not is_segformer(arch) or preset_classes(weights) != TRAINID_CLASSES:
        return HEAD_PLAIN
    if tuple(classes) == labels.TRAIN_ID_NAMES:
        return HEAD_TRAINIDS
    if tuple(classes) == labels.CATEGORY_NAMES:
        return HEAD_CATEGORIES
    return HEAD_PLAIN


def head_classes(spec: ModelSpec) -> int:
    """Outputs of the network's own head (19 when summed into categories afterwards)."""
    return TRAINID_CLASSES if spec.head == HEAD_CATEGORIES else spec.num_classes


def trainid_to_category() -> list[list[float]]:
    """(19, 8) 0/1 matrix: trainId t belongs to category c (no trainId is void)."""
    from cityseg.dataset import labels

    count = len(labels.CATEGORY_NAMES)
    return [
        [1.0 if label.category_id == c else 0.0 for c in range(count)]
        for label in labels.TRAIN_LABELS
    ]


# --------------------------------------------------------------------------- building


def build(spec: ModelSpec, *, offline_hint: str | None = None) -> keras.Model:
    """The model `spec` describes with its weights loaded (`models.build_model` for
    SegFormer; `spec` is already validated). `offline_hint` ends the one line a failed
    preset download gives (by default: how to pass a local preset to `cityseg train`)."""
    from cityseg.training import presets

    mode = spec.weights.strip().lower()
    handle = presets.preset_handle(spec.weights, spec.arch)
    if handle is not None:  # fetched and checked before a model is built for nothing
        preset = presets.open_preset(spec, handle, offline_hint)
        model = _assemble(spec)
        presets.copy_preset(model, spec, preset)
        return model
    model = _assemble(spec)
    if mode == "imagenet":
        logger.warning(
            f"warning: keras-hub has no ImageNet weights for {spec.arch}'s MiT encoder; "
            "starting from random weights (--weights cityscapes starts from Cityscapes)"
        )
    elif mode != "none":
        _load_file(model, spec, Path(spec.weights).expanduser())
    return model


def _assemble(spec: ModelSpec) -> keras.Model:
    """Input -> normalisation -> SegFormer -> logits at 1/4 -> upsampled -> float32 softmax
    (-> summed per category)."""
    from cityseg._tf import keras
    from cityseg.training.models import _normalisation_layer

    keras_hub = keras_hub_module()
    size = SIZES[spec.arch]
    encoder = keras_hub.models.MiTBackbone(**size.encoder_kwargs(spec.height, spec.width))
    network = keras_hub.models.SegFormerBackbone(
        image_encoder=encoder, projection_filters=size.projection_filters, name="segformer"
    )
    inputs = keras.Input((spec.height, spec.width, 3), name="image")
    x = _inference_by_default()(name="inference_by_default")(inputs)
    x = _normalisation_layer()(NORMALISATION, name="normalise")(x)
    x = network(x)
    x = keras.layers.Dropout(0.1, name="head_dropout")(x)
    x = keras.layers.Conv2D(head_classes(spec), 1, name="logits")(x)
    x = keras.layers.UpSampling2D(4, interpolation="bilinear", name="upsample")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)
    if spec.head == HEAD_CATEGORIES:
        outputs = _category_sum()(name="categories")(outputs)
    return keras.Model(inputs, outputs, name=spec.label.replace("-", "_"))


def keras_hub_module() -> Any:
    import cityseg._tf  # noqa: F401  (TensorFlow configured and quiet before keras-hub)

    try:
        import keras_hub
    except ImportError as exc:  # a dependency of cityseg, so only a broken install lacks it
        raise CitysegError("the segformer archs need keras-hub: pip install keras-hub") from exc
    return keras_hub


@functools.cache
def _inference_by_default() -> type:
    """An identity layer whose `training` defaults to False, first in the model.

    keras-hub's SegFormerBackbone upsamples with `keras.layers.Resizing`, whose `call`
    defaults to `training=True`; Keras 3.15 stashes a layer's default `training` in the
    call context for every layer after it, so a model called without `training` (as
    `model.export` and tf2onnx call it) would run the decoder's batch norm on batch
    statistics: exports disagreed with Keras on 14% of pixels. Resolving False first
    leaves every later layer in inference unless the caller asks for training."""
    from cityseg._tf import keras

    class InferenceByDefault(keras.layers.Layer):
        def call(self, x: Any, training: bool = False) -> Any:
            return x

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

    return InferenceByDefault


@functools.cache
def _category_sum() -> type:
    """The fixed trainId -> category layer, defined on first use (no TensorFlow at import).
    It has no weights: fine-tuning moves the 19-class head below it."""
    from cityseg._tf import keras

    class CategorySum(keras.layers.Layer):
        """(..., 19) trainId probabilities -> (..., 8) category probabilities, summed."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(dtype="float32", **kwargs)
            self.matrix = trainid_to_category()

        def call(self, probs: Any) -> Any:
            matrix = keras.ops.convert_to_tensor(self.matrix, dtype="float32")
            return keras.ops.matmul(keras.ops.cast(probs, "float32"), matrix)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (*input_shape[:-1], len(self.matrix[0]))

    return CategorySum


def _load_file(model: keras.Model, spec: ModelSpec, path: Path) -> None:
    """Weights of a whole cityseg SegFormer of this arch, head and classes (a run's)."""
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise CitysegError(
            f"{path} does not fit {spec.arch} with {spec.num_classes} classes; pass weights "
            "saved from the same --arch and classes, a keras-hub preset folder, or --weights none"
        ) from exc

"""The architecture factory: segmentation-models' Unet/FPN/Linknet/PSPNet, a U-Net from
scratch, LR-ASPP and DeepLabV3+ on keras.applications encoders (`Family`, one module each:
`cityseg.training.lraspp`, `cityseg.training.deeplab`), and keras-hub's SegFormer B0..B5
(`cityseg.training.segformer`).

Every model built here has the same contract, so training, evaluation, prediction and
the server never care which architecture they hold:

- input: float32 RGB in 0..255, (B, H, W, 3). The backbone's ImageNet normalisation
  (caffe, torch, tf or none, as segmentation-models' `get_preprocessing` or
  keras.applications' `preprocess_input` would apply) is a layer inside the model, so a
  saved bundle carries it and no caller can forget it.
- output: float32 softmax probabilities, (B, H, W, num_classes). The softmax is a
  separate float32 layer on top of the network's logits: under the `mixed_float16`
  policy segmentation-models would otherwise end in a float16 softmax, whose
  probabilities round to 0 or 1 and make the loss's log blow up (Keras' mixed-precision
  guide asks for exactly this float32 last layer).

Validation (`validate_spec`, `check_size`, `required_stride`) needs no TensorFlow, so the
CLI can refuse a bad `--arch`, `--backbone` or `--size` before paying for its import;
only building a model imports it. Backbones belong to an architecture (`list_backbones`,
`default_backbone`): "resnet50" is segmentation-models' encoder for fpn and
keras.applications' for deeplabv3plus.
"""

from __future__ import annotations

import difflib
import functools
import math
import socket
import urllib.error
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.config import TrainConfig
from cityseg.errors import CitysegError, DataError, UsageError
from cityseg.training import deeplab, lraspp, segformer
from cityseg.training.family import Family
from cityseg.training.segformer import SEGFORMER_ARCHS

if TYPE_CHECKING:
    from cityseg._tf import keras

FAMILIES: dict[str, Family] = {"lraspp": lraspp.FAMILY, "deeplabv3plus": deeplab.FAMILY}
"""The architectures on keras.applications encoders, each described by its own module."""
SM_ARCHS = ("unet", "fpn", "linknet", "pspnet")
SCRATCH_ARCH = "unet-scratch"
ARCHS = (*SM_ARCHS, SCRATCH_ARCH, *FAMILIES, *SEGFORMER_ARCHS)
DEFAULT_ARCH = TrainConfig.arch
DEFAULT_BACKBONE = "efficientnetb0"
"""segmentation-models' archs' default encoder (and the name a scratch spec carries)."""
NO_BACKBONE_ARCHS = (SCRATCH_ARCH, *SEGFORMER_ARCHS)
"""Archs whose `backbone` field means nothing."""

PSP_DOWNSAMPLE = 8
"""segmentation-models' PSPNet default: features at 1/8, pooled into 1, 2, 3, 6 bins."""
SCRATCH_POOLINGS = 4
"""The classic U-Net: 64-128-256-512 with a 1024-filter bottleneck, four 2x2 poolings."""

WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
"""What `model.load_weights` reads; `.keras` archives are read for their weights only."""

# segmentation-models 1.0.1's `Backbones.models_names()`, kept here so validation works
# before TensorFlow is imported; tests/test_models.py checks the two lists agree.
_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "seresnet18",
    "seresnet34",
    "seresnet50",
    "seresnet101",
    "seresnet152",
    "seresnext50",
    "seresnext101",
    "senet154",
    "resnext50",
    "resnext101",
    "vgg16",
    "vgg19",
    "densenet121",
    "densenet169",
    "densenet201",
    "inceptionresnetv2",
    "inceptionv3",
    "mobilenet",
    "mobilenetv2",
    "efficientnetb0",
    "efficientnetb1",
    "efficientnetb2",
    "efficientnetb3",
    "efficientnetb4",
    "efficientnetb5",
    "efficientnetb6",
    "efficientnetb7",
)
_SHOWN_BACKBONES = ("efficientnetb0", "resnet18", "resnet34", "resnet50", "mobilenetv2", "vgg16")

# What each backbone's ImageNet weights expect, as `sm.get_preprocessing(name)` does it
# (checked against it in the tests): the ResNets and ResNeXts of classification_models
# normalise with a BatchNorm on their input and take raw 0..255.
_NORMALISATION = {
    **dict.fromkeys(
        ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "seresnet18")
        + ("seresnet34", "resnext50", "resnext101"),
        "none",
    ),
    **dict.fromkeys(
        ("seresnet50", "seresnet101", "seresnet152", "seresnext50", "seresnext101", "senet154")
        + ("densenet121", "densenet169", "densenet201")
        + tuple(f"efficientnetb{i}" for i in range(8)),
        "torch",
    ),
    **dict.fromkeys(("inceptionresnetv2", "inceptionv3", "mobilenet", "mobilenetv2"), "tf"),
    **dict.fromkeys(("vgg16", "vgg19"), "caffe"),
}
_SCRATCH_NORMALISATION = "tf"
"""Inputs in -1..1 for the scratch U-Net: any fixed scaling works with batch norm; this one
keeps the first convolution's activations near unit size from the first step."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

NO_INTERNET_HINT = "use --weights none or --weights PATH to a local weights file"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model in code; a bundle's card stores these fields.

    `weights` is "imagenet" (encoder pretrained on ImageNet, downloaded once into the
    Keras cache), "none" (random initialisation) or a path to a weights file for the
    whole model or for its encoder alone; for SegFormer also "cityscapes" or a keras-hub
    preset folder (`cityseg.training.segformer`). `backbone` left empty becomes the arch's
    default (`default_backbone`); it means nothing to unet-scratch and SegFormer, and
    `base_filters` (the first block's width, doubling at each of its four poolings)
    nothing but to unet-scratch. `head` is SegFormer's (`segformer.HEADS`):
    "trainids->categories" for a 19-trainId head summed into the 8 categories; ""
    everywhere else.
    """

    arch: str = DEFAULT_ARCH
    backbone: str = ""
    num_classes: int = 8
    height: int = 512
    width: int = 1024
    weights: str = "none"
    base_filters: int = 64
    head: str = ""

    def __post_init__(self) -> None:
        if not self.backbone and self.arch in ARCHS:
            object.__setattr__(self, "backbone", default_backbone(self.arch))

    @property
    def label(self) -> str:
        """A short name for messages and the Keras model: "fpn-efficientnetb0"."""
        return self.arch if self.arch in NO_BACKBONE_ARCHS else f"{self.arch}-{self.backbone}"


def list_backbones(arch: str = DEFAULT_ARCH) -> list[str]:
    """The encoder names `arch` takes: for segmentation-models' archs, sm's own order."""
    _check_arch(arch)
    if arch in FAMILIES:
        return list(FAMILIES[arch].backbones)
    return [] if arch in NO_BACKBONE_ARCHS else list(_BACKBONES)


def default_backbone(arch: str) -> str:
    """What `--backbone` is when not given: each architecture has its own."""
    _check_arch(arch)
    return FAMILIES[arch].default_backbone if arch in FAMILIES else DEFAULT_BACKBONE


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise UsageError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")


def _check_backbone(arch: str, backbone: str) -> None:
    valid = list_backbones(arch)
    if backbone in valid:
        return
    close = difflib.get_close_matches(backbone.lower(), valid, n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    shown = (
        f"{', '.join(_SHOWN_BACKBONES)}, ... ({len(valid)} in all; see `cityseg train --list`)"
        if arch in SM_ARCHS
        else ", ".join(valid)
    )
    elsewhere = [a for a in ARCHS if a != arch and backbone in _offered(a)]
    where = f"; {backbone} is a backbone of {', '.join(elsewhere)}" if elsewhere else ""
    raise UsageError(f"unknown backbone {backbone!r} for {arch}{hint}; valid: {shown}{where}")


def _offered(arch: str) -> list[str]:
    return [] if arch in NO_BACKBONE_ARCHS else list_backbones(arch)


def required_stride(arch: str, backbone: str = "") -> int:
    """What height and width must be divisible by for `arch` (and `backbone`, by default
    the arch's own).

    segmentation-models' encoders downsample five times (32); the scratch U-Net pools four
    times (16); PSPNet pools its 1/8 feature map into 6 bins, so its input must split
    into 6 * 8; a `Family` says its own (its deepest feature map).
    """
    _check_arch(arch)
    if arch == SCRATCH_ARCH:
        return 2**SCRATCH_POOLINGS
    if segformer.is_segformer(arch):
        return segformer.STRIDE
    _check_backbone(arch, backbone or default_backbone(arch))
    if arch in FAMILIES:
        return FAMILIES[arch].stride
    if arch == "pspnet":
        return 6 * PSP_DOWNSAMPLE
    return 32


def nearest_valid(size: int, stride: int) -> int:
    """The multiple of `stride` closest to `size` (ties round up), at least one stride."""
    return max(stride, math.floor(size / stride + 0.5) * stride)


def check_size(arch: str, backbone: str, height: int, width: int) -> None:
    """Refuse a training size the architecture cannot take, naming the nearest one it can."""
    if segformer.is_segformer(arch):
        segformer.check_size(arch, height, width)
        return
    stride = required_stride(arch, backbone)
    if height <= 0 or width <= 0:
        raise UsageError(f"size {height}x{width} must be positive (height x width in pixels)")
    if height % stride or width % stride:
        raise UsageError(
            f"size {height}x{width} is not divisible by {stride} for {arch}; nearest valid "
            f"size: {nearest_valid(height, stride)}x{nearest_valid(width, stride)}"
        )


def weights_mode(weights: str) -> str:
    """Which kind of value `ModelSpec.weights` holds: "imagenet", "none", "cityscapes"
    (SegFormer only) or "path"."""
    lowered = weights.strip().lower()
    if lowered in ("imagenet", "none", segformer.CITYSCAPES):
        return lowered
    return "path"


def square_only(arch: str) -> bool:
    """Whether `arch` takes square inputs only (predicted with a sliding window)."""
    return segformer.is_segformer(arch)


def head_for(arch: str, weights: str, classes: list[str]) -> str:
    """`ModelSpec.head` for a run of `arch` from `weights` on `classes`."""
    return segformer.head_for(arch, weights, classes)


def validate_spec(spec: ModelSpec) -> None:
    """Every check that needs no TensorFlow, so a bad option fails in milliseconds."""
    _check_arch(spec.arch)
    if segformer.is_segformer(spec.arch):
        segformer.validate(spec)
        return
    if spec.head:
        raise UsageError(f"head {spec.head!r} is for the SegFormer archs only")
    if weights_mode(spec.weights) == segformer.CITYSCAPES:
        raise UsageError(
            f"--weights cityscapes is for the SegFormer archs ({', '.join(SEGFORMER_ARCHS)}); "
            f"{spec.arch} takes imagenet, none or a weights file"
        )
    check_size(spec.arch, spec.backbone, spec.height, spec.width)
    if spec.num_classes < 2:
        raise UsageError(f"num_classes must be at least 2 for a softmax, got {spec.num_classes}")
    if spec.arch == SCRATCH_ARCH and spec.base_filters < 1:
        raise UsageError(f"base_filters must be at least 1, got {spec.base_filters}")
    if weights_mode(spec.weights) == "path":
        require_weights_file(
            Path(spec.weights).expanduser(),
            alternatives="imagenet, none, or the path of an existing .weights.h5 file",
        )


def require_weights_file(path: Path, *, alternatives: str, kind: str = "Keras weights") -> None:
    """Refuse a `--weights` path that is missing or not a file `load_weights` reads."""
    if not path.is_file():
        raise CitysegError(f"weights file not found: {path}; pass --weights {alternatives}")
    if not path.name.lower().endswith(WEIGHT_SUFFIXES):
        raise CitysegError(
            f"{path} is not a {kind} file; expected one of {', '.join(WEIGHT_SUFFIXES)}"
        )


def normalisation(spec: ModelSpec) -> str:
    """The input normalisation inside the model: "none", "torch", "tf" or "caffe"."""
    if spec.arch == SCRATCH_ARCH:
        return _SCRATCH_NORMALISATION
    if segformer.is_segformer(spec.arch):
        return segformer.NORMALISATION
    if spec.arch in FAMILIES:
        return FAMILIES[spec.arch].backbones[spec.backbone]
    return _NORMALISATION[spec.backbone]


def card_fields(spec: ModelSpec) -> dict[str, Any]:
    """The fields of a bundle card that `spec_from_card` turns back into this spec."""
    return {
        "arch": spec.arch,
        "backbone": None if spec.arch in NO_BACKBONE_ARCHS else spec.backbone,
        "base_filters": spec.base_filters if spec.arch == SCRATCH_ARCH else None,
        "head": spec.head or None,
        "num_classes": spec.num_classes,
        "height": spec.height,
        "width": spec.width,
        "input": "RGB float32 0..255 (B,H,W,3)",
        "normalisation": normalisation(spec),
        "output": "softmax float32 (B,H,W,num_classes)",
    }


def categories_card(spec: ModelSpec, run: str = "untrained") -> dict[str, Any]:
    """A complete card for `spec` predicting the 8 official categories, before training.

    For models whose weights do not matter: tests, speed benchmarks (weights do not
    change speed) and serving smoke checks.
    """
    from cityseg.dataset import labels

    return {
        **card_fields(spec),
        "scheme": "categories",
        "classes": list(labels.CATEGORY_NAMES),
        "palette": labels.CATEGORY_PALETTE.tolist(),
        "ignore_index": None,
        "training": {"run": run, "best": {}},
    }


def spec_from_card(
    card: dict[str, Any], *, height: int | None = None, width: int | None = None
) -> ModelSpec:
    """The spec a bundle was trained with, optionally at another input size.

    Weights never depend on the input size (every architecture here is fully
    convolutional, and PSPNet's pooling bins have no weights), so a model trained on
    512x1024 crops can be rebuilt at 1024x2048 to predict on full frames.
    """
    try:
        arch = str(card["arch"])
        spec = ModelSpec(
            arch=arch,
            backbone=str(card.get("backbone") or ""),
            num_classes=int(card["num_classes"]),
            height=int(height if height is not None else card["height"]),
            width=int(width if width is not None else card["width"]),
            weights="none",
            base_filters=int(card.get("base_filters") or 64),
            head=str(card.get("head") or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the model card lacks a valid {exc} field; the bundle is damaged") from exc
    validate_spec(spec)
    return spec


def build_from_card(card: dict[str, Any]) -> keras.Model:
    """`build_model` for a bundle's card (the `build` argument of `bundle.load_bundle`)."""
    return build_model(spec_from_card(card))


def build_model(spec: ModelSpec) -> keras.Model:
    """The model `spec` describes, with its weights loaded; see the module docstring.

    For a weights path, the file is first read as weights for this whole model (what
    `cityseg train` saves); if it does not fit, as weights for the encoder alone (an
    ImageNet file fetched on another machine, for one that cannot download).
    `weights="imagenet"` for unet-scratch means none: it has no pretrained encoder.
    """
    validate_spec(spec)
    if segformer.is_segformer(spec.arch):
        return segformer.build(spec)
    mode = weights_mode(spec.weights)
    if mode == "path":
        return _build_from_file(spec, Path(spec.weights).expanduser())
    pretrained = mode == "imagenet" and spec.arch != SCRATCH_ARCH
    return _assemble(spec, "imagenet" if pretrained else None)


def describe(model: keras.Model) -> dict[str, Any]:
    """Parameter counts and shapes, for the run log and the bundle card."""
    trainable = sum(_size(w) for w in model.trainable_weights)
    frozen = sum(_size(w) for w in model.non_trainable_weights)
    return {
        "name": model.name,
        "params_total": trainable + frozen,
        "params_trainable": trainable,
        "params_non_trainable": frozen,
        "input_shape": list(model.input_shape[1:]),
        "output_shape": list(model.output_shape[1:]),
        "output_dtype": str(model.output.dtype),
    }


def _size(weight: Any) -> int:
    return math.prod(int(d) for d in weight.shape)


def _build_from_file(spec: ModelSpec, path: Path) -> keras.Model:
    model = _assemble(spec, None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(str(path))
        partial = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        if not partial:
            return model
    except (ValueError, OSError, KeyError, TypeError):
        pass
    # A failed load leaves some layers loaded and others not: start the encoder path afresh.
    if spec.arch != SCRATCH_ARCH:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _assemble(spec, str(path))
        except (ValueError, OSError, KeyError, TypeError):
            pass
    encoder = "" if spec.arch == SCRATCH_ARCH else f" nor its {spec.backbone} encoder"
    raise CitysegError(
        f"{path} fits neither the whole {spec.label} model ({spec.num_classes} classes){encoder}; "
        "pass weights saved from the same --arch/--backbone/classes, or --weights none"
    )


def _assemble(spec: ModelSpec, encoder_weights: str | None) -> keras.Model:
    """Input -> normalisation -> logits network -> float32 softmax."""
    from cityseg._tf import keras

    inputs = keras.Input((spec.height, spec.width, 3), name="image")
    x = _normalisation_layer()(normalisation(spec), name="normalise")(inputs)
    if spec.arch == SCRATCH_ARCH:
        logits = _scratch_unet(x, spec.num_classes, spec.base_filters)
    elif spec.arch in FAMILIES:
        logits = _family_logits(spec, encoder_weights)(x)
    else:
        logits = _sm_logits(spec, encoder_weights)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name=spec.label.replace("-", "_"))


def _sm_logits(spec: ModelSpec, encoder_weights: str | None) -> keras.Model:
    """segmentation-models' network up to its logits, as a nested model.

    sm only lets the caller name the last activation; building with "linear" and
    cutting the model at that layer's input leaves the pure logits for our own softmax.
    """
    from cityseg._tf import keras, sm

    builders = {"unet": sm.Unet, "fpn": sm.FPN, "linknet": sm.Linknet, "pspnet": sm.PSPNet}
    kwargs: dict[str, Any] = {}
    if spec.arch == "pspnet":
        kwargs["downsample_factor"] = PSP_DOWNSAMPLE
    with _download_errors(spec.backbone, active=encoder_weights == "imagenet"):
        base = builders[spec.arch](
            spec.backbone,
            input_shape=(spec.height, spec.width, 3),
            classes=spec.num_classes,
            activation="linear",
            encoder_weights=encoder_weights,
            **kwargs,
        )
    logits = base.layers[-1].input
    return keras.Model(base.input, logits, name=spec.label.replace("-", "_") + "_logits")


def _family_logits(spec: ModelSpec, encoder_weights: str | None) -> keras.Model:
    """A keras.applications architecture's network up to its logits, as a nested model;
    ImageNet weights come through Keras' own download, with our one-line failure."""
    build = FAMILIES[spec.arch].build
    shape = (spec.height, spec.width, 3)
    with _download_errors(spec.backbone, active=encoder_weights == "imagenet"):
        return build(spec.backbone, shape, spec.num_classes, encoder_weights)


@contextmanager
def _download_errors(backbone: str, *, active: bool) -> Iterator[None]:
    """Turn a failed ImageNet download into one line saying what to do instead.

    segmentation-models and keras.applications fetch encoder weights with Keras'
    `get_file`, which turns urllib's URLError into a bare `Exception("URL fetch failure on ...")`; a
    dropped connection mid-download surfaces as an OSError (timeout, reset) instead.
    Weights already in the Keras cache (~/.keras/models) never reach the network.
    """
    if not active:
        yield
        return
    try:
        yield
    except Exception as exc:
        if _is_download_failure(exc):
            raise CitysegError(
                f"could not download ImageNet weights for {backbone} (no internet?); "
                f"{NO_INTERNET_HINT}"
            ) from exc
        if isinstance(exc, ValueError) and "corrupted file" in str(exc):
            raise CitysegError(
                f"the ImageNet weights downloaded for {backbone} failed their checksum "
                f"(interrupted download?); run again, or {NO_INTERNET_HINT}"
            ) from exc
        raise


def _is_download_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, urllib.error.URLError | ConnectionError | TimeoutError | socket.gaierror
        ):
            return True
        if str(current).startswith("URL fetch failure"):
            return True
        current = current.__cause__ or current.__context__
    return False


@functools.cache
def _normalisation_layer() -> type:
    """The normalisation layer class, defined on first use so importing this module stays
    free of TensorFlow. It has no weights: it only rescales, so bundles stay portable."""
    from cityseg._tf import keras

    class InputNormalisation(keras.layers.Layer):
        """0..255 RGB -> what the backbone's ImageNet weights were trained on."""

        def __init__(self, mode: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.mode = mode
            flip, mean, scale = _affine(mode)
            self.flip = flip
            self.mean = mean
            self.scale = scale

        def call(self, x: Any) -> Any:
            ops = keras.ops
            x = ops.cast(x, self.compute_dtype)
            if self.flip:
                # RGB -> BGR as a gather: as REVERSE_V2 (ops.flip), int8 TFLite gave it an
                # output scale 1.5x its input's without rescaling, and every caffe model's
                # int8 export agreed with Keras on ~60% of pixels
                x = ops.take(x, [2, 1, 0], axis=-1)
            if self.mode == "none":
                return x
            mean = ops.cast(ops.convert_to_tensor(self.mean), self.compute_dtype)
            scale = ops.cast(ops.convert_to_tensor(self.scale), self.compute_dtype)
            return (x - mean) * scale

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "mode": self.mode}

    return InputNormalisation


def _affine(mode: str) -> tuple[bool, list[float], list[float]]:
    """(reverse channels to BGR?, per-channel mean, per-channel scale) on 0..255 input."""
    if mode == "none":
        return False, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if mode == "tf":
        return False, [127.5] * 3, [1 / 127.5] * 3
    if mode == "torch":
        return (
            False,
            [255.0 * m for m in _IMAGENET_MEAN],
            [1 / (255.0 * s) for s in _IMAGENET_STD],
        )
    if mode == "caffe":
        return True, list(_CAFFE_MEAN_BGR), [1.0, 1.0, 1.0]
    raise ValueError(f"unknown normalisation {mode!r}")


def _scratch_unet(x: Any, num_classes: int, base_filters: int) -> Any:
    """Ronneberger et al.'s U-Net with batch norm, 'same' padding so output size = input.

    Transposed 2x2 convolutions learn the upsampling, as in the paper; with
    base_filters=64 this is the ~31M-parameter network the notebooks trained.
    """
    from cityseg._tf import keras

    layers = keras.layers

    def block(t: Any, filters: int, name: str) -> Any:
        for i in (1, 2):
            t = layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=f"{name}_conv{i}",
            )(t)
            t = layers.BatchNormalization(name=f"{name}_bn{i}")(t)
            t = layers.Activation("relu", name=f"{name}_relu{i}")(t)
        return t

    skips = []
    for level in range(SCRATCH_POOLINGS):
        x = block(x, base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = block(x, base_filters * 2**SCRATCH_POOLINGS, "bottleneck")
    for level in reversed(range(SCRATCH_POOLINGS)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}_transpose")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = block(x, filters, f"up{level}")
    return layers.Conv2D(num_classes, 1, name="logits")(x)

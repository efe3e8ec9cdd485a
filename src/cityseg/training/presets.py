"""keras-hub presets for SegFormer: which one `--weights` names, what a local folder holds,
and copying one into a cityseg model.

A preset is loaded with keras-hub's own `from_preset` (a builtin one is fetched once into
kagglehub's cache) at its own input size, checked against the arch's configuration, and
its weights are copied into the model `cityseg.training.segformer` built at the run's
size: MiT and the decoder have no weights that depend on the input size. Reading what a
local folder holds needs only its JSON files, so validation stays free of TensorFlow.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.errors import CitysegError
from cityseg.training.segformer import (
    CITYSCAPES,
    CITYSCAPES_PRESETS,
    HEAD_CATEGORIES,
    HEAD_TRAINIDS,
    SIZES,
    TRAINID_CLASSES,
    SegFormerSize,
    keras_hub_module,
)

if TYPE_CHECKING:
    from cityseg._tf import keras
    from cityseg.training.models import ModelSpec

logger = logging.getLogger(__name__)


def preset_handle(weights: str, arch: str) -> str | None:
    """The keras-hub preset `weights` names (a builtin name or a local folder), if any."""
    if weights.strip().lower() == CITYSCAPES:
        return CITYSCAPES_PRESETS[arch]
    path = Path(weights).expanduser()
    return str(path) if path.is_dir() else None


def preset_kind(folder: Path) -> str:
    """How much of a SegFormer a local preset holds ("segmenter", "backbone" or
    "encoder"), read from its JSON files (no TensorFlow)."""
    classes = {name: _config_class(folder / name) for name in ("task.json", "config.json")}
    if classes["task.json"] == "SegFormerImageSegmenter":
        return "segmenter"
    if classes["config.json"] == "SegFormerBackbone":
        return "backbone"
    if classes["config.json"] == "MiTBackbone":
        return "encoder"
    found = classes["task.json"] or classes["config.json"]
    what = f"a keras-hub {found} preset" if found else "not a keras-hub preset (no config.json)"
    raise CitysegError(
        f"{folder} is {what}; pass a SegFormer preset folder (what "
        "keras_hub.models.SegFormerImageSegmenter.save_to_preset writes)"
    )


def _config_class(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text()).get("class_name"))
    except (OSError, ValueError, AttributeError):
        return None


def preset_classes(weights: str) -> int | None:
    """How many classes the head of the preset `weights` names predicts; None: no head."""
    if weights.strip().lower() == CITYSCAPES:
        return TRAINID_CLASSES
    path = Path(weights).expanduser()
    if not path.is_dir() or _config_class(path / "task.json") != "SegFormerImageSegmenter":
        return None
    try:
        return int(json.loads((path / "task.json").read_text())["config"]["num_classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- loading


def cityscapes_handle(arch: str) -> str:
    """keras-hub's Cityscapes preset for `arch`, refused where its table points elsewhere."""
    name = CITYSCAPES_PRESETS[arch]
    segmenter = keras_hub_module().models.SegFormerImageSegmenter
    kaggle = str(segmenter.presets.get(name, {}).get("kaggle_handle", ""))
    parts = kaggle.rstrip("/").split("/")  # kaggle://keras/segformer/keras/VARIANT/VERSION
    if len(parts) < 2 or CITYSCAPES not in parts[-2]:
        raise CitysegError(
            f"keras-hub's {name} preset does not hold Cityscapes weights (it points at "
            f"{kaggle or 'nothing'}); use another size or pass --weights PATH to a local "
            f"{arch} preset folder"
        )
    return name


@dataclass(frozen=True)
class _Preset:
    name: str
    kind: str
    """One of "segmenter", "backbone" or "encoder" (`preset_kind`)."""
    model: Any
    """What keras-hub's `from_preset` built (at the preset's own input size)."""

    @property
    def backbone(self) -> Any:
        return self.model.backbone if self.kind == "segmenter" else self.model


def open_preset(spec: ModelSpec, handle: str, offline_hint: str | None) -> _Preset:
    """The preset `handle` through keras-hub, refused if it is another size than `spec`."""
    builtin = spec.weights.strip().lower() == CITYSCAPES
    name = cityscapes_handle(spec.arch) if builtin else handle
    kind = "segmenter" if builtin else preset_kind(Path(handle))
    preset = _Preset(name, kind, _from_preset(name, kind, offline_hint or _train_hint(name)))
    encoder = preset.backbone if kind == "encoder" else preset.backbone.image_encoder
    _check_matches(encoder, None if kind == "encoder" else preset.backbone, spec.arch, name)
    return preset


def copy_preset(model: keras.Model, spec: ModelSpec, preset: _Preset) -> None:
    """The preset's encoder and decoder weights, and its head where it fits the classes."""
    network = model.get_layer("segformer")
    target = network.image_encoder if preset.kind == "encoder" else network
    _copy_weights(target, preset.backbone, preset.name)
    name = preset.name
    if preset.kind != "segmenter":
        logger.info(f"{spec.arch}: {name} holds no head; the head starts from random weights")
        return
    classes = int(preset.model.num_classes)
    if spec.head in (HEAD_TRAINIDS, HEAD_CATEGORIES) and classes == TRAINID_CLASSES:
        _copy_weights(model.get_layer("logits"), preset.model.output_segmentation_head, name)
        return
    logger.info(
        f"{spec.arch}: the {classes}-class head of {name} does not fit these "
        f"{spec.num_classes} classes; the head is re-initialised (encoder and decoder keep "
        "the preset's weights)"
    )


def _from_preset(name: str, kind: str, offline_hint: str) -> Any:
    """keras-hub's own `from_preset` (a builtin is fetched once into kagglehub's cache)."""
    models = keras_hub_module().models
    loader = {
        "segmenter": models.SegFormerImageSegmenter,
        "backbone": models.SegFormerBackbone,
        "encoder": models.MiTBackbone,
    }[kind]
    with _fetch_errors(name, offline_hint), warnings.catch_warnings():
        # keras-hub compiles the task it builds; loading its weights warns about the
        # optimizer, which is never used here.
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
        return loader.from_preset(name)


def _train_hint(name: str) -> str:
    return (
        "save it on a machine with internet (keras_hub.models.SegFormerImageSegmenter"
        f".from_preset('{name}').save_to_preset('DIR')) and pass --weights DIR"
    )


@contextmanager
def _fetch_errors(name: str, hint: str) -> Iterator[None]:
    """A failed preset download as one line saying what to do instead; kagglehub raises
    requests' ConnectionError over a socket error when the network is down."""
    from cityseg.training.models import _is_download_failure

    try:
        yield
    except Exception as exc:
        if _is_download_failure(exc):
            raise CitysegError(
                f"could not download keras-hub preset {name} (no internet?); {hint}"
            ) from exc
        raise


def _check_matches(encoder: Any, backbone: Any | None, arch: str, name: str) -> None:
    """Refuse a preset of another size, naming the arch it is."""
    size = SIZES[arch]
    found = SegFormerSize(
        hidden_dims=tuple(encoder.hidden_dims),
        depths=tuple(encoder.layerwise_depths),
        projection_filters=(
            int(backbone.projection_filters) if backbone is not None else size.projection_filters
        ),
        num_heads=tuple(encoder.layerwise_num_heads),
        sr_ratios=tuple(encoder.layerwise_sr_ratios),
        patch_sizes=tuple(encoder.layerwise_patch_sizes),
        strides=tuple(encoder.layerwise_strides),
        max_drop_path_rate=size.max_drop_path_rate,
    )
    if found == size:
        return
    match = [other for other, config in SIZES.items() if config == found]
    hint = f": pass --arch {match[0]}" if match else ""
    raise CitysegError(
        f"{name} is a SegFormer with {found.describe()}, decoder width "
        f"{found.projection_filters}, not {arch} ({size.describe()}, decoder width "
        f"{size.projection_filters}){hint}"
    )


def _copy_weights(target: Any, source: Any, name: str) -> None:
    try:
        target.set_weights(source.get_weights())
    except ValueError as exc:
        raise CitysegError(f"the weights of {name} do not fit {target.name}: {exc}") from exc

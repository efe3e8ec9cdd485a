"""Every default in one place, as frozen dataclasses, plus the option choices.

The CLI reads its defaults from here and run directories save these objects, so a
default changed here changes everywhere at once. This module imports nothing heavy:
`cityseg --help` builds its option list from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class UnknownPolicy(str, Enum):
    """What remap does with a pixel id that the scheme does not map."""

    error = "error"
    void = "void"


def default_workers() -> int:
    """Threads for file-parallel work: OpenCV's PNG codecs release the GIL."""
    return max(1, min(8, os.cpu_count() or 1))


DEFAULT_DATA = Path("data/cityscapes")
"""Where prepare writes Cityscapes, and where train, evaluate and export look for a dataset."""
DEFAULT_PROJECT = Path("runs/train")
"""Where train writes its runs, and where every later command looks for the newest one."""


@dataclass(frozen=True)
class RemapConfig:
    scheme: str = "categories"
    glob: str = "*_labelIds.png"
    colour: bool = False
    unknown: UnknownPolicy = UnknownPolicy.error


class SplitBy(str, Enum):
    """How prepare moves original train images to val."""

    city = "city"
    """Whole cities, so no street is on both sides (the default)."""
    image = "image"
    """Single images: for sets of one city; val then shares streets with train."""


class LabelSource(str, Enum):
    """Which file of a Cityscapes annotation prepare takes an image's labelIds from."""

    labelids = "labelids"
    """`*_labelIds.png`, as the packages ship them (the default)."""
    polygons = "polygons"
    """`*_polygons.json`, rasterised as cityscapesScripts' json2labelImg does: for polygons
    edited by hand, whose labelIds PNGs are stale or missing."""


class GroundTruth(str, Enum):
    """Which Cityscapes annotations prepare reads."""

    fine = "fine"
    """`gtFine_trainvaltest.zip`: dense, precise polygons (the default)."""
    coarse = "coarse"
    """`gtCoarse.zip`: rough polygons, for train and val images (train_extra's images are
    in another package, which prepare does not read)."""


@dataclass(frozen=True)
class PrepareConfig:
    output: Path = DEFAULT_DATA
    val_ratio: float = 0.15
    split_by: SplitBy = SplitBy.city
    labels: LabelSource = LabelSource.labelids
    annotations: GroundTruth = GroundTruth.fine
    seed: int = 0
    limit: int | None = None
    fraction: float | None = None
    verify: bool = True
    scheme: str = "categories"
    sizes: tuple[tuple[int, int], ...] = ()
    """Training sizes (H, W) to store copies at, beside the full-size files (`--size`)."""
    max_member_bytes: int = 256 * 1024 * 1024
    """A Cityscapes PNG is at most a few MB; anything this large in a zip is not one."""
    max_compression_ratio: int = 200
    """Deflate rarely beats 100:1 on real PNGs; far beyond that is a zip bomb."""


class DataFormat(str, Enum):
    """Where `cityseg prepare` reads a dataset from (docs/datasets.md shows each)."""

    cityscapes = "cityscapes"
    """The official zips or their extracted folders (the default)."""
    via = "via"
    """A VGG Image Annotator CSV or JSON export, images found under SOURCE by name."""
    labelme = "labelme"
    """A folder of LabelMe JSON files, one per image."""
    coco = "coco"
    """A COCO instances JSON (polygons, RLE, iscrowd)."""
    masks = "masks"
    """A folder of images and a folder of masks, paired by file stem."""


class Background(str, Enum):
    """What class 0 of an own dataset is: every pixel no region covers."""

    cls = "class"
    """A class like the others: scored and in the mean IoU."""
    void = "void"
    """Unlabelled rather than "nothing": learned, but left out of the non-void mean."""


@dataclass(frozen=True)
class OwnDataConfig:
    """Defaults of `cityseg prepare --format via|labelme|coco|masks`."""

    val_ratio: float = 0.15
    test_ratio: float = 0.15
    seed: int = 0
    background: Background = Background.cls
    scheme: str = "classes"
    """The name of the one scheme an own dataset holds, in manifest.json and bundles."""
    max_pixels: int = 100_000_000
    """A larger image is refused before decoding: a decompression bomb, not a photo."""


@dataclass(frozen=True)
class SyntheticConfig:
    output: Path = Path("cityseg-demo")
    height: int = 128
    width: int = 256
    images_per_city: int = 3
    seed: int = 0


class Precision(str, Enum):
    auto = "auto"
    """mixed on a GPU, float32 on a CPU."""
    mixed = "mixed"
    float32 = "float32"


class Strategy(str, Enum):
    auto = "auto"
    """Multi-worker when TF_CONFIG names several workers; else mirrored over several GPUs;
    else one device."""
    mirrored = "mirrored"
    multiworker = "multiworker"


class Optimizer(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Schedule(str, Enum):
    cosine = "cosine"
    plateau = "plateau"
    constant = "constant"


# The choices below are written out here, not imported, because the lists they copy
# live in modules that are slow to import (TensorFlow, albumentations) and this module
# must not be; tests/test_cli.py keeps each equal to the list it copies.


class Arch(str, Enum):
    """`train --arch`: `cityseg.training.models.ARCHS`."""

    unet = "unet"
    fpn = "fpn"
    linknet = "linknet"
    pspnet = "pspnet"
    unet_scratch = "unet-scratch"
    """A U-Net without a pretrained encoder (`--base-filters` sets its width)."""
    lraspp = "lraspp"
    """LR-ASPP on keras.applications' MobileNetV3 (Large or Small): for CPUs and edge boards."""
    deeplabv3plus = "deeplabv3plus"
    """DeepLabV3+ on keras.applications' ResNet50 or MobileNetV2."""
    segformer_b0 = "segformer-b0"
    """keras-hub's SegFormer (MiT encoder, MLP decoder); square inputs only."""
    segformer_b1 = "segformer-b1"
    segformer_b2 = "segformer-b2"
    segformer_b3 = "segformer-b3"
    segformer_b4 = "segformer-b4"
    segformer_b5 = "segformer-b5"


class Loss(str, Enum):
    """`train --loss`: `cityseg.training.losses.LOSSES`."""

    cce = "cce"
    dice = "dice"
    weighted_dice = "weighted-dice"
    focal = "focal"
    focal_dice = "focal-dice"
    jaccard = "jaccard"


class Augmentation(str, Enum):
    """`train --aug`: `cityseg.training.augment.AUG_PRESETS`."""

    none = "none"
    soft = "soft"
    hard = "hard"


class Split(str, Enum):
    """A prepared dataset's splits: `cityseg.dataset.manifest.SPLITS`."""

    train = "train"
    val = "val"
    test = "test"


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; saved as the run's config.json and read back by --resume.

    `arch`, `loss` and `aug` hold the plain string values of `Arch`, `Loss` and
    `Augmentation`: config.json stores strings, and the training code validates and
    compares them as strings.
    """

    data: Path = DEFAULT_DATA
    scheme: str = "auto"
    """A scheme the dataset holds; auto = the one it was prepared with (categories for
    Cityscapes, classes for own data)."""
    arch: str = Arch.fpn.value
    backbone: str | None = None
    """None: the arch's default (efficientnetb0 for segmentation-models' archs, see
    `cityseg train --list`); training writes the name it used into config.json."""
    weights: str = "imagenet"
    base_filters: int = 64
    """Width of the first U-Net-from-scratch block (64 is the classic 31M-parameter net)."""
    height: int = 512
    width: int = 1024
    crop: tuple[int, int] | None = None
    """(height, width) of the random window each training image is cut to once at
    height x width (`--crop`); the model is built at this size and val is scored on
    tiles of it. None: whole images."""
    epochs: int = 40
    batch: int = 8
    lr: float = 1e-3
    optimizer: Optimizer = Optimizer.adam
    schedule: Schedule = Schedule.cosine
    patience: int = 10
    """Epochs without a better val mIoU before early stopping; 0 turns it off."""
    loss: str = Loss.focal_dice.value
    aug: str = Augmentation.soft.value
    cache: str | None = None
    seed: int = 0
    precision: Precision = Precision.auto
    strategy: Strategy = Strategy.auto
    project: Path = DEFAULT_PROJECT
    name: str | None = None
    steps_per_epoch: int | None = None
    """Cap on training steps per epoch (smoke runs); None = the whole split."""
    worker_timeout: float = 300.0
    """Seconds a multi-worker run waits for every worker in TF_CONFIG to join."""


class TTA(str, Enum):
    """Test-time augmentation: `flip` averages with the horizontally flipped prediction."""

    none = "none"
    flip = "flip"


class OutputFormat(str, Enum):
    """What `cityseg predict` writes for each image."""

    colour = "colour"
    """RGB in the bundle's palette: what people look at."""
    ids = "ids"
    """Single-channel uint8 class ids: what programs read."""
    overlay = "overlay"
    """The photo blended with the colour mask: to judge a prediction against the scene."""
    labelids = "labelids"
    """Cityscapes labelIds (each category's representative id): what the official
    cityscapesScripts evaluator reads."""


class ExportFormat(str, Enum):
    """What `cityseg export` writes (see docs/deploy.md for which to pick)."""

    savedmodel = "savedmodel"
    """TensorFlow SavedModel: TF Serving, or TF in another language."""
    tflite = "tflite"
    """TFLite, float32: the reference for the smaller TFLite variants."""
    tflite_fp16 = "tflite-fp16"
    """TFLite with float16 weights: half the size, same speed on a CPU."""
    tflite_int8 = "tflite-int8"
    """TFLite, int8 weights and activations calibrated on training images: smallest and
    fastest on CPUs and edge boards."""
    onnx = "onnx"
    """ONNX (opset 17) via tf2onnx, for onnxruntime, TensorRT and others."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Defaults of `cityseg evaluate` and `cityseg.evaluation.evaluate.evaluate`."""

    split: str = Split.test.value
    """Our test split is the original Cityscapes val, whose labels are public."""
    project: Path = Path("runs/eval")
    batch: int = 4
    """Images per model call."""
    tta_flip: bool = False


@dataclass(frozen=True)
class PredictConfig:
    """What the options of `cityseg predict` choose (their defaults), as one object for
    `cityseg.inference.predict.predict_paths`."""

    format: OutputFormat = OutputFormat.colour
    alpha: float = 0.5
    """Opacity of the mask in an overlay."""
    legend: bool = False
    tta_flip: bool = False
    batch: int = 4
    """Images per model call."""


@dataclass(frozen=True)
class ExportConfig:
    """Defaults of `cityseg export` and `cityseg.deploy.export.export_model`."""

    calib: int = 100
    """Training images int8 calibration measures activation ranges on (tflite-int8)."""
    parity: int = 20
    """Validation images the parity report compares the export and the Keras model on."""


@dataclass(frozen=True)
class BenchmarkConfig:
    """Defaults of `cityseg benchmark` and `cityseg.deploy.benchmark.time_models`."""

    runs: int = 30
    """Timed calls per runtime, after the warm-up calls."""
    batch: int = 1
    include_exports: bool = True


@dataclass(frozen=True)
class ServeConfig:
    """What `cityseg serve` runs with: its defaults, and the configuration of its app."""

    model: Path | None = None
    """A bundle folder; None: the newest run's best under `project`."""
    data: Path | None = None
    """A prepared dataset; None: the /api/images endpoints answer 404."""
    project: Path = DEFAULT_PROJECT
    host: str = "127.0.0.1"
    """Loopback by default: exposing the server is an explicit `--host 0.0.0.0`."""
    port: int = 5000
    workers: int = 1
    """Server processes, each loading the model (uvicorn workers)."""
    max_body_bytes: int = 20 * 1024**2
    max_pixels: int = 40_000_000
    max_queue: int = 8
    """Inference requests waiting or running before the next gets 503."""
    slide: str | None = None
    """Sliding-window inference, as `--slide CROP[:STRIDE]` (e.g. "512x512:384x384")."""


DEFAULT_TUNE_PROJECT = Path("runs/tune")


@dataclass(frozen=True)
class TuneConfig:
    """Defaults of `cityseg tune` and `cityseg.tune`: the study, not the trials' training
    settings (those are a `TrainConfig`, and the searched ones a search space)."""

    study: str = "study"
    """Its folder under `project`, and its name in the storage."""
    project: Path = DEFAULT_TUNE_PROJECT
    storage: str | None = None
    """A database URL; None: SQLite in `project/<study>/study.db`."""
    trials: int = 20
    """Trials of the whole study, over every process and every resume."""
    timeout: float | None = None
    """Seconds after which no new trial starts (a running one finishes)."""
    objectives: tuple[str, ...] = ("miou",)
    """`miou`, or `miou`, `latency` for a Pareto front of accuracy against CPU speed."""
    prune: bool = True
    heartbeat: int = 10
    """Seconds between a trial's heartbeats; one silent for twice this is failed and retried."""
    seed: int = 0
    """The sampler's seed (each trial trains with `TrainConfig.seed`)."""
    latency_runs: int = 10


# Each command's defaults as one shared instance, read by the CLI, the Python API and
# the library alike (the configs are frozen, so sharing them is safe).
REMAP = RemapConfig()
PREPARE = PrepareConfig()
OWN = OwnDataConfig()
SYNTHETIC = SyntheticConfig()
TRAIN = TrainConfig()
EVALUATE = EvaluateConfig()
PREDICT = PredictConfig()
EXPORT = ExportConfig()
BENCHMARK = BenchmarkConfig()
SERVE = ServeConfig()
TUNE = TuneConfig()

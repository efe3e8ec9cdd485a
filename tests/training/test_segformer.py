"""SegFormer through keras-hub: sizes, presets (saved here, never downloaded), the kept
19-trainId head, and a preset-started run through train, predict, evaluate and export.

A real SegFormer-B0 takes minutes per epoch on two cores, so the preset-based tests
swap B0's configuration for a tiny MiT (8..32 channels, one block per stage) for this
module: the preset, the model built from it and every bundle share that table entry, and
keras-hub's own `from_preset` and `save_to_preset` run unchanged. The real B0 is built
and trained a step in test_models.py.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cityseg._tf import keras
from cityseg.dataset import labels
from cityseg.dataset.prepare import prepare_dataset
from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset
from cityseg.errors import CitysegError, UsageError
from cityseg.images import read_image, read_mask
from cityseg.inference import pretrained
from cityseg.training import models, segformer
from cityseg.training.models import ModelSpec, build_model
from cityseg.training.segformer import SegFormerSize

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIDE = 64
TINY = SegFormerSize((8, 16, 24, 32), (1, 1, 1, 1), 8, num_heads=(1, 1, 1, 1))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PUBLISHED = dict(segformer.SIZES)
"""The real table, before `tiny_b0` swaps B0 for the rest of the module."""


@pytest.fixture(scope="module")
def tiny_b0() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(segformer.SIZES, "segformer-b0", TINY)
        yield


def _segmenter(num_classes: int, seed: int) -> Any:
    """A tiny keras-hub SegFormer with every weight moved off its initial value (batch
    norm statistics included), so that a copy that missed any of them shows."""
    import keras_hub

    encoder = keras_hub.models.MiTBackbone(**TINY.encoder_kwargs(SIDE, SIDE))
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=8)
    converter = keras_hub.layers.SegFormerImageConverter(  # as keras-hub's conversion script
        scale=1 / 255.0, mean=list(IMAGENET_MEAN), variance=[s**2 for s in IMAGENET_STD]
    )
    segmenter = keras_hub.models.SegFormerImageSegmenter(
        backbone=backbone,
        num_classes=num_classes,
        preprocessor=keras_hub.models.SegFormerImageSegmenterPreprocessor(converter),
    )
    rng = np.random.default_rng(seed)
    segmenter.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape)
            if "variance" in w.path
            else np.asarray(w) + rng.normal(0, 0.1, w.shape)
            for w in segmenter.weights
        ]
    )
    return segmenter


@pytest.fixture(scope="module")
def preset(tiny_b0: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(folder, model): a 19-trainId SegFormer as `save_to_preset` writes it."""
    segmenter = _segmenter(segformer.TRAINID_CLASSES, seed=0)
    folder = tmp_path_factory.mktemp("preset") / "segformer_tiny_cityscapes"
    segmenter.save_to_preset(str(folder))
    return folder, segmenter


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIDE, SIDE, 3)).astype(np.float32)


def _preset_probabilities(segmenter: Any, images: np.ndarray) -> np.ndarray:
    """What the preset predicts: its logits on ImageNet-normalised 0..1 RGB, softmaxed."""
    x = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    logits = segmenter(x.astype(np.float32), training=False)
    return np.asarray(keras.ops.softmax(logits, axis=-1))


# -- no model built ---------------------------------------------------------------------


def test_square_only_and_stride_are_one_line() -> None:
    with pytest.raises(UsageError) as info:
        models.check_size("segformer-b2", "", 256, 512)
    message = str(info.value)
    assert "segformer-b2 takes square inputs only, got 256x512" in message
    assert "--crop HxW" in message and "--slide" in message and "\n" not in message
    with pytest.raises(UsageError, match="not divisible by 32 .* nearest valid size: 96x96"):
        models.check_size("segformer-b0", "", 100, 100)
    with pytest.raises(UsageError, match="below 64\\) for segformer-b0; nearest valid size: 64x64"):
        models.check_size("segformer-b0", "", 32, 32)  # its last stage would be 1x1
    models.check_size("segformer-b5", "", 1024, 1024)


def test_cityscapes_weights_are_for_segformer_only() -> None:
    with pytest.raises(UsageError, match="--weights cityscapes is for the SegFormer archs"):
        models.validate_spec(ModelSpec(arch="fpn", height=64, width=64, weights="cityscapes"))
    with pytest.raises(UsageError, match="head 'trainids->categories' predicts 8 classes"):
        models.validate_spec(
            ModelSpec(
                arch="segformer-b0",
                height=64,
                width=64,
                num_classes=19,
                head=segformer.HEAD_CATEGORIES,
            )
        )


def test_a_folder_that_is_not_a_segformer_preset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"class_name": "ResNetBackbone"}))
    spec = ModelSpec(arch="segformer-b0", height=64, width=64, weights=str(tmp_path))
    with pytest.raises(
        CitysegError, match="is a keras-hub ResNetBackbone preset; pass a SegFormer"
    ):
        models.validate_spec(spec)


def test_trainids_sum_into_the_seven_non_void_categories() -> None:
    matrix = np.array(segformer.trainid_to_category())
    assert matrix.shape == (19, 8)
    np.testing.assert_array_equal(matrix.sum(axis=1), 1)
    assert matrix[:, 0].sum() == 0  # no trainId is void
    names = labels.TRAIN_ID_NAMES
    assert labels.CATEGORY_NAMES[matrix[names.index("car")].argmax()] == "vehicle"
    assert labels.CATEGORY_NAMES[matrix[names.index("sidewalk")].argmax()] == "flat"


def test_which_runs_keep_the_pretrained_head(preset: tuple[Path, Any], tmp_path: Path) -> None:
    categories, trainids = list(labels.CATEGORY_NAMES), list(labels.TRAIN_ID_NAMES)
    assert models.head_for("segformer-b3", "cityscapes", categories) == "trainids->categories"
    assert models.head_for("segformer-b3", "cityscapes", trainids) == "trainids"
    assert models.head_for("segformer-b3", "cityscapes", ["bg", "road"]) == ""
    assert models.head_for("segformer-b3", "none", categories) == ""
    assert models.head_for("fpn", "cityscapes", categories) == ""
    assert models.head_for("segformer-b0", str(preset[0]), categories) == "trainids->categories"
    headless = tmp_path / "backbone"
    preset[1].backbone.save_to_preset(str(headless))
    assert models.head_for("segformer-b0", str(headless), categories) == ""


# -- the published sizes -----------------------------------------------------------------


@pytest.mark.slow
def test_sizes_are_keras_hubs_mit_presets() -> None:
    """Each size's encoder has exactly its keras-hub MiT preset's parameters (which count a
    10-class classifier on top), so a real preset's weights fit it layer for layer."""
    import keras_hub

    table = keras_hub.models.MiTBackbone.presets
    for arch, size in PUBLISHED.items():
        meta = table[f"mit_b{arch[-1]}_cityscapes_1024"]["metadata"]
        assert f"with {sum(size.depths)} transformer blocks" in meta["description"], arch
        encoder = keras_hub.models.MiTBackbone(**size.encoder_kwargs(64, 64))
        classifier = size.hidden_dims[-1] * 10 + 10
        assert encoder.count_params() == meta["params"] - classifier, arch


def test_normalisation_is_the_presets_image_converter() -> None:
    """keras-hub converted its SegFormer presets with scale 1/255 and ImageNet mean and
    variance (tools/checkpoint_conversion/convert_segformer_checkpoints.py): "torch"."""
    import keras_hub

    converter = keras_hub.layers.SegFormerImageConverter(
        scale=1 / 255.0, mean=list(IMAGENET_MEAN), variance=[s**2 for s in IMAGENET_STD]
    )
    images = _images(1)
    ours = models._normalisation_layer()(segformer.NORMALISATION)(images)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(converter(images)), atol=1e-5)


def test_keras_hubs_b1_cityscapes_preset_is_refused() -> None:
    spec = ModelSpec(arch="segformer-b1", height=64, width=64, weights="cityscapes")
    with pytest.raises(CitysegError, match="does not hold Cityscapes weights .*ade20k") as info:
        build_model(spec)
    assert "\n" not in str(info.value)


# -- models from a preset ----------------------------------------------------------------


@pytest.mark.slow
def test_preset_start_keeps_the_head_and_round_trips(
    preset: tuple[Path, Any], tmp_path: Path, messages: list[str]
) -> None:
    from cityseg.inference.bundle import load_bundle, save_bundle

    folder, segmenter = preset
    images = _images()
    expected = _preset_probabilities(segmenter, images)
    spec = ModelSpec(
        arch="segformer-b0", num_classes=8, height=SIDE, width=SIDE,
        weights=str(folder), head=segformer.HEAD_CATEGORIES,
    )  # fmt: skip
    model = build_model(spec)
    summed = np.asarray(model(images))  # no `training`: exports call it so (see segformer.py)
    np.testing.assert_allclose(
        summed, expected @ np.array(segformer.trainid_to_category()), atol=1e-5
    )
    assert summed[..., 0].max() == 0.0
    card = models.categories_card(spec)
    bundle = load_bundle(save_bundle(model, tmp_path / "b", card), models.build_from_card)
    np.testing.assert_allclose(np.asarray(bundle.model(images)), summed, atol=1e-6)

    as_is = build_model(dataclasses.replace(spec, num_classes=19, head="trainids"))
    np.testing.assert_allclose(np.asarray(as_is(images)), expected, atol=1e-5)
    assert not messages

    other = build_model(dataclasses.replace(spec, num_classes=5, head=""))
    assert messages == [
        "segformer-b0: the 19-class head of " + str(folder) + " does not fit these 5 classes; "
        "the head is re-initialised (encoder and decoder keep the preset's weights)"
    ]
    for ours, theirs in zip(
        other.get_layer("segformer").get_weights(), segmenter.backbone.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)


def test_a_preset_of_another_size_is_refused(preset: tuple[Path, Any]) -> None:
    spec = ModelSpec(arch="segformer-b1", height=SIDE, width=SIDE, weights=str(preset[0]))
    with pytest.raises(CitysegError) as info:
        build_model(spec)
    message = str(info.value)
    assert "hidden dims [8, 16, 24, 32], depths [1, 1, 1, 1]" in message
    assert message.endswith("pass --arch segformer-b0") and "\n" not in message


# -- a run started from a preset, and its bundle everywhere -----------------------------


@pytest.fixture(scope="module")
def square_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("square")
    raw = write_raw_dataset(
        root / "raw", SyntheticSpec(height=SIDE, width=SIDE, images_per_city=2, seed=3)
    )
    prepare_dataset(raw.root, root / "ds", verify=False, show_progress=False)
    return root / "ds"


@pytest.fixture(scope="module")
def wide_image(square_data: Path) -> Path:
    """A 64x128 street image: two square scenes side by side."""
    scenes = sorted((square_data / "images").glob("*.png"))[:2]
    path = square_data.parent / "wide.png"
    cv2.imwrite(str(path), np.hstack([cv2.imread(str(p)) for p in scenes]))
    return path


@pytest.fixture(scope="module")
def finetuned(
    preset: tuple[Path, Any], square_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`cityseg train --weights PRESET` for one epoch on the categories; its best/."""
    from cityseg.cli import run

    project = tmp_path_factory.mktemp("runs")
    args = [
        "train", "--data", square_data, "--arch", "segformer-b0", "--weights", preset[0],
        "--size", f"{SIDE}x{SIDE}", "--epochs", "1", "--batch", "2", "--aug", "none",
        "--loss", "cce", "--precision", "float32", "--project", project, "--name", "sf",
    ]  # fmt: skip
    assert run([str(a) for a in args]) == 0
    return project / "sf" / "best"


@pytest.mark.slow
def test_finetuned_bundle_keeps_the_summed_head(finetuned: Path, square_data: Path) -> None:
    import cityseg

    card = json.loads((finetuned / "cityseg.json").read_text())
    assert card["arch"] == "segformer-b0" and card["head"] == "trainids->categories"
    assert card["num_classes"] == 8 and card["normalisation"] == "torch"
    image = read_image(next((square_data / "images").glob("*.png")))
    _, probs = cityseg.Model(finetuned, verbose=False).predict(image, probabilities=True)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert probs[..., 0].max() == 0.0  # void: no trainId feeds it


@pytest.mark.slow
def test_predict_a_wide_image_slides_by_default(
    finetuned: Path, wide_image: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    default = cli(
        "predict", wide_image, "-o", tmp_path / "a.png", "--model", finetuned, "--format", "ids"
    )
    assert default.exit_code == 0, default.stderr
    assert "segformer-b0 takes square inputs only: sliding a 64x64:42x42 window" in default.stderr
    chosen = cli(
        "predict", wide_image, "-o", tmp_path / "b.png", "--model", finetuned,
        "--format", "ids", "--slide", "64x64:42",
    )  # fmt: skip
    assert chosen.exit_code == 0, chosen.stderr
    mask = read_mask(tmp_path / "a.png")
    assert mask.shape == (SIDE, 2 * SIDE)
    np.testing.assert_array_equal(mask, read_mask(tmp_path / "b.png"))


@pytest.mark.slow
def test_evaluate_records_the_default_window(
    finetuned: Path, square_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    result = cli(
        "evaluate", "--model", finetuned, "--data", square_data, "--split", "val",
        "--project", tmp_path, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "sf" / "metrics.json").read_text())
    assert metrics["slide"] == "64x64:42x42"
    assert 0.0 <= metrics["scores"]["mean_iou"] <= 1.0


@pytest.mark.slow
def test_export_tflite_and_int8_with_parity(
    finetuned: Path, square_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """Float TFLite must agree with Keras; int8's report is what it measured (a model one
    epoch old answers nearly one class, so its agreement says little about int8)."""
    result = cli(
        "export", "-f", "tflite", "-f", "tflite-int8", "--model", finetuned, "--data", square_data,
        "--parity", "4", "--calib", "4", "-o", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    float_parity = json.loads((tmp_path / "tflite" / "export.json").read_text())["parity"]
    assert float_parity["passed"] and float_parity["pixel_agreement"] >= 0.999, float_parity
    int8 = json.loads((tmp_path / "tflite-int8" / "export.json").read_text())
    parity, tolerance = int8["parity"], int8["parity"]["tolerance"]
    assert parity["passed"] == (
        parity["pixel_agreement"] >= tolerance["min_pixel_agreement"]
        and parity["miou"]["drop"] <= tolerance["max_miou_drop"]
    )
    assert int8["calibration"] == {"split": "train", "images": 4}
    print("segformer tflite-int8 parity:", json.dumps(parity))


# -- pretrained models by name -----------------------------------------------------------


@pytest.mark.slow
def test_a_named_model_is_built_once_and_predicts(
    preset: tuple[Path, Any],
    wide_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Any],
) -> None:
    import cityseg

    name = "segformer-b0-cityscapes"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setitem(
        pretrained.PRETRAINED, name, pretrained.Pretrained("segformer-b0", str(preset[0]), SIDE)
    )
    result = cli(
        "predict", wide_image, "-o", tmp_path / "m.png", "--model", name, "--format", "ids"
    )
    assert result.exit_code == 0, result.stderr
    bundle = tmp_path / "keras" / "cityseg" / name
    assert f"{name}: building a bundle from keras-hub preset {preset[0]}" in result.stderr
    card = json.loads((bundle / "cityseg.json").read_text())
    assert card["classes"] == list(labels.CATEGORY_NAMES) and card["pretrained"]["name"] == name
    built = (bundle / "model.weights.h5").stat().st_mtime_ns

    mask = cityseg.Model(name, verbose=False).predict(read_image(wide_image))
    assert (bundle / "model.weights.h5").stat().st_mtime_ns == built  # used, not rebuilt
    np.testing.assert_array_equal(mask, read_mask(tmp_path / "m.png"))
    probs = _preset_probabilities(
        preset[1], read_image(wide_image)[None, :, :SIDE].astype(np.float32)
    )
    left = probs[0] @ np.array(segformer.trainid_to_category())  # the first tile, whole
    assert (mask[:, :42] == left.argmax(-1)[:, :42]).mean() > 0.99  # only it covers x < 42
    timed = cli("benchmark", "--model", name, "--runs", "1", "--no-exports")
    assert timed.exit_code == 0, timed.stderr
    assert f"{SIDE}x{SIDE}" in timed.stdout and "keras" in timed.stdout.lower()


# -- offline -----------------------------------------------------------------------------


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise socket.gaierror(-2, "Name or service not known")


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        ("train", "and pass --weights DIR"),
        ("predict", "copy that folder here and pass it to --model"),
    ],
)
def test_offline_preset_download_is_one_line(
    command: str,
    hint: str,
    square_data: Path,
    wide_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Any],
) -> None:
    """No network below kagglehub: DNS fails, as on a machine without internet."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    if command == "train":
        result = cli(
            "train", "--data", square_data, "--arch", "segformer-b2", "--weights", "cityscapes",
            "--size", "64x64", "--project", tmp_path / "runs",
        )  # fmt: skip
    else:
        model = "segformer-b2-cityscapes"
        result = cli("predict", wide_image, "-o", tmp_path / "o.png", "--model", model)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    preset = "segformer_b2_cityscapes_1024"
    assert f"could not download keras-hub preset {preset} (no internet?)" in lines[-1]
    assert hint in lines[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "keras" / "cityseg").exists()


@pytest.mark.slow
def test_square_crops_of_wide_images_train_and_slide(
    train_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """64x128 street images, trained on 64x64 crops: the bundle keeps the square crop and
    slides it over whole images by default; a non-square crop is refused in one line."""
    common = [
        "train", "--data", train_data, "--arch", "segformer-b0", "--weights", "none",
        "--size", "64x128", "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2",
        "--aug", "none", "--project", tmp_path / "runs",
    ]  # fmt: skip
    refused = cli(*common, "--crop", "64x96", "--name", "no")
    assert refused.exit_code != 0 and "takes square inputs only" in refused.stderr
    assert "Traceback" not in refused.stderr
    result = cli(*common, "--crop", "64x64", "--name", "crop")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "runs" / "crop" / "best" / "cityseg.json").read_text())
    assert (card["height"], card["width"]) == (64, 64)
    assert card["crop"]["image_width"] == 128
    from cityseg.comparison import compare_runs

    (row,) = compare_runs([tmp_path / "runs" / "crop"]).rows
    assert row.backbone is None and row.size == "64x128 crop 64x64"  # no backbone to show
    image = read_image(next((train_data / "images").glob("*.png")))
    import cityseg

    mask = cityseg.Model(tmp_path / "runs" / "crop" / "best", verbose=False).predict(image)
    assert mask.shape == image.shape[:2]


@pytest.mark.slow
def test_served_wide_images_slide_as_predict_does(finetuned: Path, wide_image: Path) -> None:
    """The server runs a square-only bundle with the same default window as predict."""
    from fastapi.testclient import TestClient

    import cityseg
    from cityseg.images import decode_mask
    from cityseg.serve import ServeConfig, create_app
    from serving import wait_ready

    expected = cityseg.Model(finetuned, verbose=False).predict(read_image(wide_image))
    with TestClient(create_app(ServeConfig(model=finetuned))) as client:
        wait_ready(client)
        files = {"image": ("wide.png", wide_image.read_bytes())}
        response = client.post("/predict?format=ids", files=files)
    assert response.status_code == 200, response.text
    served = decode_mask(response.content, "ids")
    assert served.shape == (SIDE, 2 * SIDE)
    np.testing.assert_array_equal(served, expected)

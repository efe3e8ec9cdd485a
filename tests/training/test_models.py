"""The architecture factory: every arch builds, trains a step, and fails with one clear line.

Building a segmentation-models network takes 1-4 s on two cores and its first graph-mode
training step 10-50 s (tracing), so each architecture is built once per module and the
training steps run eagerly; one graph-mode step is kept, marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.error
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cityseg._tf import keras, sm
from cityseg.errors import CitysegError, UsageError
from cityseg.training import models
from cityseg.training.losses import get_loss
from cityseg.training.models import (
    ARCHS,
    FAMILIES,
    ModelSpec,
    build_model,
    check_size,
    required_stride,
)

# Keras' own weight accessors trip numpy 2's copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CLASSES = 5
# (arch, backbone, size): the smallest valid size, and the quickest encoders to build.
SMALL = {
    "fpn": ("efficientnetb0", 64),
    "unet": ("resnet18", 64),
    "linknet": ("mobilenetv2", 64),
    "pspnet": ("resnet18", 96),
    "unet-scratch": ("efficientnetb0", 64),
    # square only. B0, B1 (decoder 256) and B2 (decoder 768): B3-B5 are B2's layers with
    # more blocks per stage (segformer.SIZES), an eager step of B5 costs about 30 s on CI's
    # two cores, and test_segformer's preset test builds and counts every size's encoder.
    **{f"segformer-b{size}": ("efficientnetb0", 64) for size in range(3)},
    "lraspp": ("mobilenetv3small", 32),
    "deeplabv3plus": ("mobilenetv2", 32),
}


def small_spec(arch: str, **changes: Any) -> ModelSpec:
    backbone, size = SMALL[arch]
    fields: dict[str, Any] = {
        "arch": arch,
        "backbone": backbone,
        "num_classes": CLASSES,
        "height": size,
        "width": size,
    }
    if arch == "unet-scratch":
        fields["base_filters"] = 8  # a thin net: the full 31M one is tested once, slow
    fields.update(changes)
    return ModelSpec(**fields)


def _batch(size: int, n: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    masks = rng.integers(0, CLASSES, (n, size, size)).astype(np.uint8)
    masks[:, :4, :4] = 255  # ignore pixels must pass through a real training step
    return images, masks


@pytest.fixture(scope="module", params=list(SMALL))
def built(request: pytest.FixtureRequest) -> tuple[ModelSpec, keras.Model]:
    spec = small_spec(request.param)
    return spec, build_model(spec)


# -- validation, no model built -------------------------------------------------------------


def test_backbone_list_matches_segmentation_models() -> None:
    assert models.list_backbones() == list(sm.Backbones.models_names())
    assert models.DEFAULT_BACKBONE in models.list_backbones()


def test_normalisation_matches_segmentation_models_preprocessing() -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    layer_class = models._normalisation_layer()
    for backbone in models.list_backbones():
        mode = models.normalisation(ModelSpec(backbone=backbone))
        expected = sm.get_preprocessing(backbone)(images.copy())
        got = np.asarray(layer_class(mode)(images))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4, err_msg=backbone)


def test_normalisation_matches_keras_applications_preprocessing() -> None:
    """Our normalise layer must do what keras.applications' `preprocess_input` does for
    the encoder (the identity for MobileNetV3, whose `Rescaling` is inside it)."""
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    applications = keras.applications
    preprocess = {
        "mobilenetv3large": applications.mobilenet_v3.preprocess_input,
        "mobilenetv3small": applications.mobilenet_v3.preprocess_input,
        "resnet50": applications.resnet50.preprocess_input,
        "mobilenetv2": applications.mobilenet_v2.preprocess_input,
    }
    layer_class = models._normalisation_layer()
    for arch, family in FAMILIES.items():
        for backbone in family.backbones:
            mode = models.normalisation(ModelSpec(arch=arch, backbone=backbone))
            expected = preprocess[backbone](images.copy())
            got = np.asarray(layer_class(mode)(images))
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4, err_msg=backbone)


def test_mobilenetv3_rescales_inside_the_encoder() -> None:
    """Why lraspp's normalisation is "none": the encoder maps 0..255 to -1..1 itself."""
    spec = small_spec("lraspp")
    model = build_model(spec)
    assert model.get_layer("normalise").mode == "none"
    encoder = model.get_layer(f"lraspp_{spec.backbone}_logits").get_layer(spec.backbone)
    rescaling = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Rescaling)]
    assert len(rescaling) == 1
    assert float(rescaling[0].scale) == pytest.approx(1 / 127.5)
    assert float(rescaling[0].offset) == -1.0


def test_each_arch_has_its_own_backbones_and_default() -> None:
    assert ModelSpec(arch="fpn").backbone == "efficientnetb0" == models.default_backbone("unet")
    assert ModelSpec(arch="lraspp").backbone == "mobilenetv3large"
    assert ModelSpec(arch="deeplabv3plus").backbone == "resnet50"
    assert ModelSpec(arch="deeplabv3plus", backbone="mobilenetv2").backbone == "mobilenetv2"
    assert models.list_backbones("lraspp") == ["mobilenetv3large", "mobilenetv3small"]
    assert models.list_backbones("deeplabv3plus") == ["resnet50", "mobilenetv2"]
    assert models.list_backbones("unet-scratch") == []
    for arch, family in FAMILIES.items():
        assert family.default_backbone in models.list_backbones(arch)


def test_a_backbone_of_another_arch_says_whose_it_is() -> None:
    with pytest.raises(UsageError) as info:
        check_size("lraspp", "efficientnetb0", 64, 64)
    assert str(info.value) == (
        "unknown backbone 'efficientnetb0' for lraspp; valid: mobilenetv3large, "
        "mobilenetv3small; efficientnetb0 is a backbone of unet, fpn, linknet, pspnet"
    )
    with pytest.raises(UsageError, match=r"'mobilenetv3large' for fpn; .* backbone of lraspp$"):
        check_size("fpn", "mobilenetv3large", 64, 64)
    with pytest.raises(UsageError, match=r"did you mean mobilenetv3small, mobilenetv3large\?"):
        check_size("lraspp", "mobilenetv3smal", 64, 64)


@pytest.mark.parametrize("mode", ["caffe", "tf"])
def test_normalisation_survives_int8_tflite(mode: str, tmp_path: Path) -> None:
    """The normalise layer alone through `cityseg export -f tflite-int8`'s conversion: it
    must stay within a few quantisation steps of Keras (as ops.flip's REVERSE_V2, the
    caffe flip did not, and caffe models agreed with Keras on ~60% of pixels)."""
    from cityseg._tf import tf
    from cityseg.deploy.export import _tflite_bytes
    from cityseg.inference.runtimes import TFLiteRuntime

    inputs = keras.Input((8, 8, 3))
    normalised = models._normalisation_layer()(mode)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="identity")(normalised))
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (16, 8, 8, 3)).astype(np.float32)
    model.export(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    (tmp_path / "model.tflite").write_bytes(_tflite_bytes(converter, "tflite-int8", list(images)))
    got = TFLiteRuntime(tmp_path / "model.tflite")(images[:2])
    expected = np.asarray(model(images[:2]))
    value_range = float(expected.max() - expected.min())
    assert np.abs(got - expected).max() <= 4 * value_range / 255


def test_required_strides() -> None:
    assert required_stride("fpn", "efficientnetb0") == 32
    assert required_stride("unet", "resnet34") == 32
    assert required_stride("linknet", "mobilenetv2") == 32
    assert required_stride("pspnet", "vgg16") == 48
    assert required_stride("unet-scratch", "anything") == 16
    assert required_stride("segformer-b3", "anything") == 32
    assert required_stride("lraspp") == required_stride("lraspp", "mobilenetv3small") == 32
    assert required_stride("deeplabv3plus", "mobilenetv2") == 16  # cut at 1/16
    check_size("deeplabv3plus", "resnet50", 48, 80)


def test_size_error_names_the_nearest_valid_size() -> None:
    with pytest.raises(UsageError) as info:
        check_size("fpn", "efficientnetb0", 500, 1000)
    assert str(info.value) == (
        "size 500x1000 is not divisible by 32 for fpn; nearest valid size: 512x992"
    )
    with pytest.raises(UsageError, match="by 48 for pspnet; nearest valid size: 480x1008"):
        check_size("pspnet", "resnet18", 500, 1000)
    with pytest.raises(UsageError, match="nearest valid size: 512x1024"):
        check_size("fpn", "efficientnetb0", 510, 1020)
    with pytest.raises(UsageError, match="nearest valid size: 32x64"):
        check_size("unet", "resnet18", 10, 48)  # at least one stride; ties round up
    check_size("pspnet", "resnet18", 480, 960)
    check_size("unet-scratch", "efficientnetb0", 80, 112)


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        check_size("segformer", "efficientnetb0", 512, 1024)
    message = str(info.value)
    assert "'segformer'" in message and "\n" not in message
    assert all(arch in message for arch in ARCHS)


def test_unknown_backbone_suggests_and_lists_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        build_model(ModelSpec(backbone="resnet35", height=64, width=64))
    message = str(info.value)
    assert "unknown backbone 'resnet35'" in message and "\n" not in message
    assert "did you mean" in message and "resnet34" in message.split(";")[0]
    assert "efficientnetb0" in message and "cityseg train --list" in message


def test_bad_weights_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CitysegError, match="weights file not found") as info:
        build_model(small_spec("pspnet", weights=str(tmp_path / "missing.weights.h5")))
    assert "\n" not in str(info.value)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(CitysegError, match="not a Keras weights file"):
        build_model(small_spec("pspnet", weights=str(text)))


def test_card_round_trip_and_other_sizes() -> None:
    spec = small_spec("fpn")
    card = json.loads(json.dumps(models.card_fields(spec)))
    assert models.spec_from_card(card) == spec
    assert models.spec_from_card(card, height=128, width=256).height == 128
    scratch = small_spec("unet-scratch")
    assert models.spec_from_card(models.card_fields(scratch)).base_filters == 8
    summed = small_spec("segformer-b0", num_classes=8, head="trainids->categories")
    card = json.loads(json.dumps(models.card_fields(summed)))
    assert card["backbone"] is None and card["normalisation"] == "torch"
    assert models.spec_from_card(card) == summed
    for arch in FAMILIES:
        spec = small_spec(arch)
        card = json.loads(json.dumps(models.card_fields(spec)))
        assert card["backbone"] == spec.backbone and models.spec_from_card(card) == spec


def test_cards_from_before_the_keras_applications_archs_read_as_before() -> None:
    """Cards written when every arch defaulted to efficientnetb0: same specs as then."""
    fpn = {"arch": "fpn", "backbone": "resnet18", "num_classes": 8, "height": 64, "width": 64}
    assert models.spec_from_card(fpn) == ModelSpec("fpn", "resnet18", 8, 64, 64)
    scratch = {**fpn, "arch": "unet-scratch", "backbone": None, "base_filters": 16}
    spec = models.spec_from_card(scratch)
    assert (spec.backbone, spec.base_filters) == ("efficientnetb0", 16)
    assert models.normalisation(spec) == "tf"


def test_importing_models_does_not_import_tensorflow() -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from cityseg.training.models import ModelSpec, validate_spec
        validate_spec(ModelSpec())
        print(json.dumps("tensorflow" in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) is False


# -- every architecture ---------------------------------------------------------------------


def test_output_is_a_float32_softmax(built: tuple[ModelSpec, keras.Model]) -> None:
    spec, model = built
    images, _ = _batch(spec.height)
    probs = np.asarray(model(images, training=False))  # eager: predict() would trace a graph
    assert probs.shape == (2, spec.height, spec.width, CLASSES)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert model.layers[-1].name == "softmax"


def test_one_training_step(built: tuple[ModelSpec, keras.Model]) -> None:
    spec, model = built
    images, masks = _batch(spec.height, seed=1)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=get_loss("focal-dice", CLASSES, ignore_index=255),
        run_eagerly=True,  # one step: tracing a graph would cost 10-50 s more
    )
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_describe(built: tuple[ModelSpec, keras.Model]) -> None:
    spec, model = built
    info = models.describe(model)
    assert info["params_total"] == model.count_params()
    assert 0 < info["params_trainable"] <= info["params_total"]
    assert info["output_shape"] == [spec.height, spec.width, CLASSES]
    assert info["output_dtype"] == "float32"


@pytest.mark.slow
def test_one_graph_mode_training_step() -> None:
    """What `cityseg train` runs: a traced train step, our loss inside the graph."""
    spec = small_spec("pspnet")
    model = build_model(spec)
    model.compile(optimizer="adam", loss=get_loss("focal-dice", CLASSES, ignore_index=255))
    images, masks = _batch(spec.height)
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.slow
def test_scratch_unet_at_full_width_is_the_31m_network() -> None:
    info = models.describe(build_model(ModelSpec(arch="unet-scratch", height=32, width=32)))
    assert 30_000_000 < info["params_total"] < 32_000_000


# -- mixed precision ------------------------------------------------------------------------


@pytest.fixture
def mixed_float16() -> Iterator[None]:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("arch", ["fpn", "unet-scratch", "lraspp", "deeplabv3plus"])
def test_mixed_precision_still_ends_in_a_float32_softmax(mixed_float16: None, arch: str) -> None:
    spec = small_spec(arch)
    model = build_model(spec)
    assert model.get_layer("normalise").compute_dtype == "float16"
    assert model.output.dtype == "float32"
    images, masks = _batch(spec.height)
    probs = np.asarray(model(images, training=False))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    if arch == "unet-scratch":  # a float16 step with loss scaling, cheap on the thin net
        model.compile(optimizer="adam", loss=get_loss("dice", CLASSES), run_eagerly=True)
        history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])


def test_policy_restored_after_mixed_precision_tests() -> None:
    assert keras.mixed_precision.global_policy().name == "float32"


# -- weights --------------------------------------------------------------------------------


def _encoder(backbone: str, size: int) -> keras.Model:
    return sm.Backbones.get_backbone(
        backbone,
        input_shape=(size, size, 3),
        weights=None,
        include_top=False,
        backend=keras.backend,
        layers=keras.layers,
        models=keras.models,
        utils=keras.utils,
    )


URL = "https://example.invalid/efficientnet-b0_notop.h5"


def _raise_like_keras_offline(*args: Any, **kwargs: Any) -> str:
    """What keras.utils.get_file raises with no network (checked once, by hand)."""
    reason = urllib.error.URLError("[Errno -2] Name or service not known")
    try:
        raise reason
    except urllib.error.URLError as exc:
        raise Exception(f"URL fetch failure on {URL}: None -- {exc.reason}") from exc


def _raise_timeout(*args: Any, **kwargs: Any) -> str:
    raise TimeoutError("The read operation timed out")


def _offline(monkeypatch: pytest.MonkeyPatch, fake: Any) -> None:
    """segmentation-models calls `keras.utils.get_file`, keras.applications the function
    in its own module: the same function, reached by two names."""
    from keras.src.utils import file_utils

    monkeypatch.setattr(keras.utils, "get_file", fake)
    monkeypatch.setattr(file_utils, "get_file", fake)


@pytest.mark.parametrize(
    ("arch", "backbone", "fake"),
    [
        ("fpn", "efficientnetb0", _raise_like_keras_offline),
        ("fpn", "resnet18", _raise_timeout),
        ("lraspp", "mobilenetv3small", _raise_like_keras_offline),
        ("deeplabv3plus", "resnet50", _raise_timeout),
    ],
)
def test_imagenet_download_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, arch: str, backbone: str, fake: Any
) -> None:
    _offline(monkeypatch, fake)
    spec = ModelSpec(arch=arch, backbone=backbone, height=64, width=64, weights="imagenet")
    with pytest.raises(CitysegError) as info:
        build_model(spec)
    assert str(info.value) == (
        f"could not download ImageNet weights for {backbone} (no internet?); "
        "use --weights none or --weights PATH to a local weights file"
    )


def _answer_from_cache(
    monkeypatch: pytest.MonkeyPatch, module: Any, cached: Path
) -> list[tuple[Any, ...]]:
    """`module.get_file` answers with `cached`, as a warm Keras cache does; the calls it got."""
    requests: list[tuple[Any, ...]] = []

    def from_cache(*args: Any, **kwargs: Any) -> str:
        requests.append(args)
        assert kwargs.get("cache_subdir") == "models"
        return str(cached)

    monkeypatch.setattr(module, "get_file", from_cache)
    return requests


def test_imagenet_weights_in_the_keras_cache_just_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the file cached, get_file returns its path and nothing touches the network."""
    encoder = _encoder("resnet18", 96)
    cached = tmp_path / "resnet18_imagenet_1000_no_top.weights.h5"
    encoder.save_weights(str(cached))
    requests = _answer_from_cache(monkeypatch, keras.utils, cached)
    model = build_model(small_spec("pspnet", weights="imagenet"))
    assert len(requests) == 1
    body = model.get_layer("pspnet_resnet18_logits")
    np.testing.assert_array_equal(
        body.get_layer("conv0").get_weights()[0], encoder.get_layer("conv0").get_weights()[0]
    )


def _assert_whole_model_reloads(arch: str, tmp_path: Path) -> Path:
    """`--weights FILE` of a whole model's saved weights rebuilds it weight for weight;
    the file, for the tests' next checks."""
    trained = build_model(small_spec(arch))
    whole = tmp_path / f"{arch}.weights.h5"
    trained.save_weights(str(whole))
    reloaded = build_model(small_spec(arch, weights=str(whole)))
    for a, b in zip(trained.get_weights(), reloaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    return whole


@pytest.mark.slow
def test_weights_path_whole_model_encoder_or_neither(tmp_path: Path) -> None:
    _assert_whole_model_reloads("pspnet", tmp_path)

    encoder = _encoder("resnet18", 96)
    encoder_file = tmp_path / "resnet18-encoder.weights.h5"
    encoder.save_weights(str(encoder_file))
    from_encoder = build_model(small_spec("pspnet", weights=str(encoder_file)))
    np.testing.assert_array_equal(
        from_encoder.get_layer("pspnet_resnet18_logits").get_layer("conv0").get_weights()[0],
        encoder.get_layer("conv0").get_weights()[0],
    )

    scratch_file = tmp_path / "scratch.weights.h5"
    build_model(small_spec("unet-scratch")).save_weights(str(scratch_file))
    with pytest.raises(CitysegError, match="fits neither the whole pspnet-resnet18 model") as info:
        build_model(small_spec("pspnet", weights=str(scratch_file)))
    assert "\n" not in str(info.value)


def test_keras_applications_imagenet_weights_in_the_cache_just_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Keras' own download for lraspp/deeplabv3plus: a cached file is loaded, at our size
    (not the 224x224 the weights were trained at), into the encoder."""
    from keras.src.utils import file_utils

    encoder = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    cached = tmp_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.weights.h5"
    encoder.save_weights(str(cached))
    requests = _answer_from_cache(monkeypatch, file_utils, cached)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "weights for (224, 224)" warning either
        model = build_model(small_spec("lraspp", height=64, width=96, weights="imagenet"))
    assert len(requests) == 1
    body = model.get_layer("lraspp_mobilenetv3small_logits").get_layer("mobilenetv3small")
    np.testing.assert_array_equal(
        body.get_layer("conv").get_weights()[0], encoder.get_layer("conv").get_weights()[0]
    )


@pytest.mark.slow
def test_keras_applications_weights_path_whole_model_encoder_or_neither(
    tmp_path: Path,
) -> None:
    whole = _assert_whole_model_reloads("lraspp", tmp_path)

    encoder = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    encoder_file = tmp_path / "mobilenetv3small-encoder.weights.h5"
    encoder.save_weights(str(encoder_file))
    from_encoder = build_model(small_spec("lraspp", weights=str(encoder_file)))
    body = from_encoder.get_layer("lraspp_mobilenetv3small_logits").get_layer("mobilenetv3small")
    np.testing.assert_array_equal(
        body.get_layer("conv").get_weights()[0], encoder.get_layer("conv").get_weights()[0]
    )

    with pytest.raises(CitysegError, match="fits neither the whole deeplabv3plus-mobilenetv2"):
        build_model(small_spec("deeplabv3plus", weights=str(whole)))


def test_scratch_unet_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--weights imagenet` is train's default; the scratch U-Net has nothing to fetch."""
    monkeypatch.setattr(keras.utils, "get_file", _raise_like_keras_offline)
    model = build_model(small_spec("unet-scratch", weights="imagenet"))
    assert model.output_shape == (None, 64, 64, CLASSES)

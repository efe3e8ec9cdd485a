"""DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", 2018) on
keras.applications' ResNet50 and MobileNetV2, after the keras-io example "Multiclass
semantic segmentation using DeepLabV3+".

ASPP reads the encoder's 1/16 features: a 1x1 branch, three 3x3 branches dilated 6, 12
and 18, and an image-pooling branch (global average -> 1x1 conv, broadcast back), each
conv + BN + ReLU with 256 filters, concatenated and projected by a 1x1 conv. The decoder
upsamples that 4x to the 1/4 low-level features (projected to 48 channels), concatenates
them, refines with two 3x3 convs and classifies; the logits are upsampled 4x to the
input. Unlike the example, the classifier runs at 1/4 and the logits are upsampled, as
in the paper: the same model, without two full-resolution 256-channel maps.

keras.applications cannot dilate an encoder, so 1/16 is where the encoder is cut (the
paper's output stride 16): ResNet50 at its conv4 stage, MobileNetV2 at block 13's
expansion; nothing deeper is built into the model, so the input must divide by 16. The
taps are the example's for ResNet50 (the last conv4 and conv2 blocks' middle 3x3 convs,
256 and 64 channels; the stages' 1024- and 256-channel outputs cost 49 GFLOPs instead of
40 at 256x512 and 6M more parameters, mostly in ASPP) and segmentation-models' for
MobileNetV2 (the expansions of blocks 13 and 3, 576 and 144 channels).

Each encoder's ImageNet weights expect keras.applications' own `preprocess_input`:
ResNet50 "caffe" (BGR, ImageNet mean subtracted, no scaling), MobileNetV2 "tf" (-1..1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cityseg.training.family import Family, any_input_size, settle_batchnorm

if TYPE_CHECKING:
    from cityseg._tf import keras

ASPP_RATES = (6, 12, 18)
ASPP_FILTERS = 256
LOW_LEVEL_FILTERS = 48
HIGH_STRIDE = 16
LOW_STRIDE = 4

# backbone -> (keras.applications constructor, 1/4 tap, 1/16 tap, normalisation)
_ENCODERS = {
    "resnet50": ("ResNet50", "conv2_block3_2_relu", "conv4_block6_2_relu", "caffe"),
    "mobilenetv2": ("MobileNetV2", "block_3_expand_relu", "block_13_expand_relu", "tf"),
}


def build_logits(
    backbone: str, input_shape: tuple[int, int, int], num_classes: int, weights: str | None
) -> keras.Model:
    """DeepLabV3+ on `backbone`, up to its logits at the input size, as a nested model."""
    from cityseg._tf import keras

    constructor, low_tap, high_tap, _ = _ENCODERS[backbone]
    with any_input_size():
        encoder = getattr(keras.applications, constructor)(
            input_shape=input_shape, include_top=False, weights=weights
        )
    taps = [encoder.get_layer(name).output for name in (low_tap, high_tap)]
    features = keras.Model(encoder.input, taps, name=backbone)
    inputs = keras.Input(input_shape, name="image")
    low, high = features(inputs)
    logits = _decoder(low, _aspp(high), num_classes)
    logits = keras.layers.UpSampling2D(LOW_STRIDE, interpolation="bilinear", name="upsample")(
        logits
    )
    return settle_batchnorm(keras.Model(inputs, logits, name=f"deeplabv3plus_{backbone}_logits"))


def _conv_bn_relu(x: Any, filters: int, kernel: int, name: str, dilation: int = 1) -> Any:
    from cityseg._tf import keras

    layers = keras.layers
    x = layers.Conv2D(
        filters,
        kernel,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _aspp(x: Any) -> Any:
    from cityseg._tf import keras

    layers = keras.layers
    height, width = int(x.shape[1]), int(x.shape[2])
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = _conv_bn_relu(pooled, ASPP_FILTERS, 1, "aspp_pool")
    pooled = layers.UpSampling2D((height, width), name="aspp_pool_broadcast")(pooled)
    branches = [pooled, _conv_bn_relu(x, ASPP_FILTERS, 1, "aspp_1x1")]
    for rate in ASPP_RATES:
        branches.append(_conv_bn_relu(x, ASPP_FILTERS, 3, f"aspp_rate{rate}", dilation=rate))
    x = layers.Concatenate(name="aspp_concat")(branches)
    return _conv_bn_relu(x, ASPP_FILTERS, 1, "aspp_project")


def _decoder(low: Any, high: Any, num_classes: int) -> Any:
    """Logits at the low-level features' resolution (1/4)."""
    from cityseg._tf import keras

    layers = keras.layers
    factor = (int(low.shape[1]) // int(high.shape[1]), int(low.shape[2]) // int(high.shape[2]))
    high = layers.UpSampling2D(factor, interpolation="bilinear", name="decoder_upsample")(high)
    low = _conv_bn_relu(low, LOW_LEVEL_FILTERS, 1, "decoder_low")
    x = layers.Concatenate(name="decoder_concat")([high, low])
    x = _conv_bn_relu(x, ASPP_FILTERS, 3, "decoder_refine1")
    x = _conv_bn_relu(x, ASPP_FILTERS, 3, "decoder_refine2")
    return layers.Conv2D(num_classes, 1, name="logits")(x)


FAMILY = Family(
    backbones={name: encoder[3] for name, encoder in _ENCODERS.items()},
    default_backbone="resnet50",
    stride=HIGH_STRIDE,
    build=build_logits,
)

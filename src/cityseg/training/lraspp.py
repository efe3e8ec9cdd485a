"""LR-ASPP (Howard et al., "Searching for MobileNetV3", sec. 6.3) on keras.applications'
MobileNetV3Large and MobileNetV3Small: the light architecture for CPUs and edge boards.

The head follows torchvision's `lraspp_mobilenet_v3_large`. On the high-level features a
1x1 conv + BN + ReLU branch is gated by a global-average-pool -> 1x1 conv -> sigmoid
branch (a squeeze-and-excitation of the whole image); the product is upsampled to the
1/8 low-level features, and a 1x1 classifier on each gives logits that are added, then
upsampled 8x to the input size.

Where the high-level features come from: keras.applications cannot dilate MobileNetV3's
last stage the way torchvision does to keep it at 1/16, so the choice is between 1/32
(the whole encoder, up to its final 960- or 576-channel expansion: what its ImageNet
weights were trained to produce) and 1/16 (cut before the last stage's stride, at block
12's or block 8's 672- or 288-channel expansion). We take 1/32, and the input must divide
by 32. Speed does not decide: measured at 256x512, batch 1, Keras float32 on two CPU
cores, Large ran 38 ms at 1/32 against 32 ms at 1/16 and Small 22 ms against 19 ms,
both far ahead of FPN-EfficientNetB0's 459 ms (12x and 21x at 1/32). Capacity does:
the last stage holds two thirds of the model's weights (LR-ASPP-Large has 3.24M
parameters at 1/32, 1.06M at 1/16) and most of its receptive field, while the 1/8
low-level branch already puts back the detail that 1/32 features lack.

keras.applications' MobileNetV3 holds its own preprocessing (`include_preprocessing=True`:
a `Rescaling` of 0..255 to -1..1), so the model's normalisation layer passes 0..255
through ("none"); `keras.applications.mobilenet_v3.preprocess_input` is the identity
for the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cityseg.training.family import Family, any_input_size, settle_batchnorm

if TYPE_CHECKING:
    from cityseg._tf import keras

HEAD_CHANNELS = 128
"""torchvision's (and the paper's) width of the high-level branch."""
LOW_STRIDE = 8
HIGH_STRIDE = 32

# backbone -> (keras.applications constructor, its last block at 1/8)
_ENCODERS = {
    "mobilenetv3large": ("MobileNetV3Large", "expanded_conv_5_add"),
    "mobilenetv3small": ("MobileNetV3Small", "expanded_conv_2_add"),
}


def build_logits(
    backbone: str, input_shape: tuple[int, int, int], num_classes: int, weights: str | None
) -> keras.Model:
    """LR-ASPP on `backbone`, up to its logits at the input size, as a nested model."""
    from cityseg._tf import keras

    constructor, low_tap = _ENCODERS[backbone]
    with any_input_size():
        encoder = getattr(keras.applications, constructor)(
            input_shape=input_shape,
            include_top=False,
            weights=weights,
            include_preprocessing=True,
        )
    features = keras.Model(
        encoder.input, [encoder.get_layer(low_tap).output, encoder.output], name=backbone
    )
    inputs = keras.Input(input_shape, name="image")
    low, high = features(inputs)
    logits = lraspp_head(low, high, num_classes)
    logits = keras.layers.UpSampling2D(LOW_STRIDE, interpolation="bilinear", name="upsample")(
        logits
    )
    return settle_batchnorm(keras.Model(inputs, logits, name=f"lraspp_{backbone}_logits"))


def lraspp_head(low: Any, high: Any, num_classes: int) -> Any:
    """Logits at the low-level features' resolution (1/8)."""
    from cityseg._tf import keras

    layers = keras.layers
    x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="head_cbr_conv")(high)
    x = layers.BatchNormalization(name="head_cbr_bn")(x)
    x = layers.ReLU(name="head_cbr_relu")(x)
    gate = layers.GlobalAveragePooling2D(keepdims=True, name="head_scale_pool")(high)
    gate = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="head_scale_conv")(gate)
    gate = layers.Activation("sigmoid", name="head_scale_sigmoid")(gate)
    x = layers.Multiply(name="head_gate")([x, gate])
    factor = (int(low.shape[1]) // int(x.shape[1]), int(low.shape[2]) // int(x.shape[2]))
    x = layers.UpSampling2D(factor, interpolation="bilinear", name="head_upsample")(x)
    low_logits = layers.Conv2D(num_classes, 1, name="low_classifier")(low)
    high_logits = layers.Conv2D(num_classes, 1, name="high_classifier")(x)
    return layers.Add(name="logits")([low_logits, high_logits])


FAMILY = Family(
    backbones=dict.fromkeys(_ENCODERS, "none"),
    default_backbone="mobilenetv3large",
    stride=HIGH_STRIDE,
    build=build_logits,
)

"""What `cityseg train --list` prints: every valid value of the model-shaping options."""

from __future__ import annotations

import textwrap


def describe_choices() -> list[str]:
    from cityseg.training.augment import AUG_PRESETS
    from cityseg.training.losses import LOSSES
    from cityseg.training.models import ARCHS, list_backbones

    backbones = textwrap.fill(
        ", ".join(list_backbones()), width=96, subsequent_indent="             "
    )
    return [
        f"archs:       {', '.join(ARCHS)}",
        f"backbones:   {backbones}",
        f"losses:      {', '.join(LOSSES)}",
        f"aug presets: {', '.join(AUG_PRESETS)}",
        "weights:     imagenet (downloads once), none, or a path to a .weights.h5 file;",
        "             segformer archs: cityscapes (downloads once) or a keras-hub preset folder",
    ]

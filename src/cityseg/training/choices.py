"""What `cityseg train --list` prints: every valid value of the model-shaping options."""

from __future__ import annotations

import textwrap


def describe_choices() -> list[str]:
    from cityseg.training.augment import AUG_PRESETS
    from cityseg.training.losses import LOSSES
    from cityseg.training.models import ARCHS, FAMILIES, SM_ARCHS

    return [
        f"archs:       {', '.join(ARCHS)}",
        "backbones (each arch's default first):",
        *_backbone_lines(", ".join(SM_ARCHS), SM_ARCHS[0]),
        *(line for arch in FAMILIES for line in _backbone_lines(arch, arch)),
        "  unet-scratch: none (--base-filters sets its width)",
        "  segformer-b0 ... segformer-b5: none (keras-hub's MiT encoder; square inputs only)",
        f"losses:      {', '.join(LOSSES)}",
        f"aug presets: {', '.join(AUG_PRESETS)}",
        "weights:     imagenet (downloads once), none, or a path to a .weights.h5 file;",
        "             segformer archs: cityscapes (downloads once) or a keras-hub preset folder",
    ]


def _backbone_lines(label: str, arch: str) -> list[str]:
    from cityseg.training.models import default_backbone, list_backbones

    default = default_backbone(arch)
    names = [default, *(name for name in list_backbones(arch) if name != default)]
    text = f"  {label}: {', '.join(names)}"
    return textwrap.wrap(text, width=96, subsequent_indent="      ")

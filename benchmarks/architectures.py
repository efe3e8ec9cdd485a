"""Every architecture side by side on this machine: speed, compute and the int8 export.

Speed (random weights: the values do not change the speed): for each model and input
size, parameters, GFLOPs (TensorFlow's profiler, a multiply-add is two) and the Keras
float32 latency of one image per call, p50 over `--runs` calls after warm-up, in one
process, with the ratio against the first model of the list (FPN-EfficientNetB0 by
default) measured in the same run, because these machines are noisy. A model that takes
square inputs only (SegFormer) runs as `--slide` runs it: square tiles of the image's
shorter side at the default stride, all of them counted in its latency.

int8 (`--int8`): each model is trained for `--epochs` epochs on synthetic scenes at 64x128
(a model that has learnt something: parity on random weights says nothing), exported with
`cityseg export -f tflite-int8`, and its parity report printed: pixel agreement and mIoU
drop on the val split against its Keras model, and both p50s at 64x128.

    python benchmarks/architectures.py [--models fpn:efficientnetb0 lraspp:mobilenetv3large]
        [--sizes 256x512 512x1024] [--runs 10] [--int8 [--epochs 8]]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.deploy.benchmark import describe_compute, sample_inputs, time_model
from cityseg.errors import UsageError
from cityseg.inference.runtimes import KerasRuntime, LoadedModel
from cityseg.inference.sliding import Window, tile_starts
from cityseg.training.models import ModelSpec, build_model, categories_card, check_size

DEFAULT_MODELS = ["fpn:efficientnetb0", "linknet:efficientnetb0"]


@dataclass(frozen=True)
class SpeedRow:
    model: str
    size: str
    parameters: int
    gflops: float
    p50_ms: float
    tiles: int


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def spec_of(name: str, height: int, width: int) -> ModelSpec:
    """ "arch:backbone" (or a bare arch) as a spec with random weights."""
    arch, _, backbone = name.partition(":")
    fields = {"backbone": backbone} if backbone else {}
    return ModelSpec(arch=arch, height=height, width=width, weights="none", **fields)  # type: ignore[arg-type]


def model_size(name: str, height: int, width: int) -> tuple[tuple[int, int], Window | None]:
    """The size the model is built at, and the window it slides when it cannot take
    the whole image (square-only models: tiles of the shorter side)."""
    spec = spec_of(name, height, width)
    try:
        check_size(spec.arch, spec.backbone, height, width)
        return (height, width), None
    except UsageError:
        side = min(height, width)
        return (side, side), Window.parse(f"{side}x{side}")


def measure_speed(name: str, height: int, width: int, runs: int) -> SpeedRow:
    (model_h, model_w), window = model_size(name, height, width)
    spec = spec_of(name, model_h, model_w)
    card = {**categories_card(spec), "weights": {"bytes": 0}}  # built here, never saved
    loaded = LoadedModel(Path("."), card, KerasRuntime(build_model(spec)))
    cost = describe_compute(loaded, model_h, model_w)
    inputs = sample_inputs(1, model_h, model_w)
    tiles = 1
    if window is not None:  # every tile `--slide` runs, as one batch
        (crop_h, crop_w), (stride_h, stride_w) = window.crop, window.stride
        tiles = len(tile_starts(height, crop_h, stride_h)) * len(
            tile_starts(width, crop_w, stride_w)
        )
        inputs = np.repeat(inputs, tiles, axis=0)
    row = time_model(loaded, inputs, runs)
    return SpeedRow(name, f"{height}x{width}", cost.parameters, cost.gflops * tiles,
                    row.latency_ms.p50, tiles)  # fmt: skip


def print_speed(rows: list[SpeedRow]) -> None:
    print(f"\n{'model':<32} {'input':>9} {'params':>8} {'GFLOPs':>8} {'p50 ms':>9} {'vs first':>9}")
    for size in dict.fromkeys(r.size for r in rows):
        same = [r for r in rows if r.size == size]
        base = same[0].p50_ms
        for r in same:
            tiles = f" ({r.tiles} tiles)" if r.tiles > 1 else ""
            print(
                f"{r.model + tiles:<32} {r.size:>9} {r.parameters / 1e6:>7.2f}M "
                f"{r.gflops:>8.1f} {r.p50_ms:>9.1f} {base / r.p50_ms:>8.1f}x"
            )


def measure_int8(names: list[str], epochs: int) -> None:
    import cityseg

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthetic_dataset(root)
        print(f"\n{'model':<32} {'agreement':>9} {'mIoU keras':>10} {'drop':>7} "
              f"{'keras p50':>9} {'int8 p50':>8} {'passed':>6}")  # fmt: skip
        for name in names:
            arch, _, backbone = name.partition(":")
            (height, width), _ = model_size(name, 64, 128)
            extra: dict[str, Any] = {"backbone": backbone} if backbone else {}
            if (height, width) != (64, 128):  # square-only: trained on square crops
                extra["crop"] = (height, width)
            run = cityseg.train(
                data=data, project=root / "runs", name=name.replace(":", "-"), arch=arch,
                weights="none", size=(64, 128), epochs=epochs, batch=4, lr=3e-3, loss="cce",
                aug="none", patience=0, verbose=False, **extra,
            )  # fmt: skip
            report = run.best.export("tflite-int8", data=data)
            parity = report.parity
            assert parity is not None
            print(
                f"{name:<32} {parity.pixel_agreement:>9.2%} {parity.miou.keras:>10.3f} "
                f"{parity.miou.drop:>7.3f} {parity.latency_ms.keras.p50:>9.1f} "
                f"{parity.latency_ms.export.p50:>8.1f} {str(parity.passed):>6}",
                flush=True,
            )


def synthetic_dataset(root: Path) -> Path:
    """The test suite's parity scenes: 64x128, 24 of them in val."""
    from cityseg.dataset.prepare import prepare_dataset
    from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset

    raw = write_raw_dataset(root / "raw", SyntheticSpec(height=64, width=128,
                                                        images_per_city=12, seed=7))  # fmt: skip
    prepare_dataset(raw.root, root / "ds", verify=False, show_progress=False, val_ratio=0.5)
    return root / "ds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--sizes", nargs="+", default=["256x512", "512x1024"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--int8", action="store_true", help="train, export int8, parity")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    rows = []
    for size in args.sizes:
        for name in args.models:
            rows.append(measure_speed(name, *parse_size(size), args.runs))
            print(f"done {name} {size}: p50 {rows[-1].p50_ms:.1f} ms", flush=True)
    print_speed(rows)
    if args.int8:
        measure_int8(args.models, args.epochs)


if __name__ == "__main__":
    main()

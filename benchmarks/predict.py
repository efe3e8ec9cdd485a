"""Where the time goes in `cityseg predict`, per image, on this machine.

For each architecture (efficientnetb0 encoder, random weights: speed does not depend on
the weights' values) and each model input size, a Predictor runs on 1024x2048 PNGs drawn
by cityseg.dataset.synthetic, one image per call, split into the stages predict runs:

    decode        PNG bytes -> RGB uint8                     (images.decode_image)
    pre-process   resize to the model's size + float32 batch (data.resize_image)
    model         the compiled forward pass                  (Predictor's tf.function)
    post-process  probabilities -> input size, argmax, colourise (inference.labels_at)
    encode        colour mask -> PNG bytes                   (images.encode_png)

Each configuration is warmed up first (tracing and first-call allocation are not per-image
costs); each stage's figure is the median over the repeats.

    python benchmarks/predict.py [--sizes 256x512 512x1024] [--archs fpn unet linknet]
                                 [--repeats 3] [--images 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cityseg.dataset.synthetic import draw_scene
from cityseg.images import colourise, decode_image, encode_png, resize_image
from cityseg.inference.predictor import Predictor, labels_at
from cityseg.inference.runtimes import KerasRuntime, LoadedModel
from cityseg.training.models import ModelSpec, build_model, categories_card

STAGES = ("decode", "pre-process", "model", "post-process", "encode")


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def make_predictor(arch: str, backbone: str, height: int, width: int) -> Predictor:
    spec = ModelSpec(arch=arch, backbone=backbone, height=height, width=width, weights="none")
    model = LoadedModel(Path("."), categories_card(spec), KerasRuntime(build_model(spec)))
    return Predictor(model)


def one_image(predictor: Predictor, data: bytes) -> dict[str, float]:
    """Seconds per stage for one PNG, through the same calls predict makes."""
    times: dict[str, float] = {}

    def stage(name: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = work()
        times[name] = time.perf_counter() - start
        return result

    height, width = predictor.input_size
    image: np.ndarray = stage("decode", lambda: decode_image(data, "bench"))  # type: ignore[assignment]
    batch: np.ndarray = stage(  # type: ignore[assignment]
        "pre-process",
        lambda: np.stack([resize_image(image, height, width)]).astype(np.float32),
    )
    probs: np.ndarray = stage("model", lambda: predictor.runtime(batch))  # type: ignore[assignment]
    palette = predictor.palette
    colour: np.ndarray = stage(  # type: ignore[assignment]
        "post-process",
        lambda: colourise(labels_at(probs[0], image.shape[0], image.shape[1]), palette),
    )
    stage("encode", lambda: encode_png(colour, rgb=True))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256x512", "512x1024"])
    parser.add_argument("--archs", nargs="+", default=["fpn", "unet", "linknet"])
    parser.add_argument("--backbone", default="efficientnetb0")
    parser.add_argument("--images", type=int, default=2, help="distinct 1024x2048 inputs")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the inputs")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    pngs = [encode_png(draw_scene(rng, 1024, 2048).image, rgb=True) for _ in range(args.images)]

    rows: list[tuple[str, str, dict[str, float]]] = []
    for size in args.sizes:
        height, width = parse_size(size)
        for arch in args.archs:
            predictor = make_predictor(arch, args.backbone, height, width)
            for data in pngs[:1]:  # warm-up: tracing, allocation, caches
                one_image(predictor, data)
                one_image(predictor, data)
            samples = [one_image(predictor, d) for _ in range(args.repeats) for d in pngs]
            medians = {s: statistics.median(t[s] for t in samples) * 1000 for s in STAGES}
            rows.append((f"{arch}-{args.backbone}", size, medians))
            print(f"done {arch} {size}: {sum(medians.values()):.0f} ms/image", flush=True)

    header = f"{'model':<22} {'input':>9} " + " ".join(f"{s:>17}" for s in STAGES)
    header += f" {'total ms':>9} {'img/s':>6}"
    print()
    print(header)
    print("-" * len(header))
    for name, size, medians in rows:
        total = sum(medians.values())
        cells = " ".join(f"{medians[s]:>8.1f} ({medians[s] / total:>4.0%})" for s in STAGES)
        print(f"{name:<22} {size:>9} {cells} {total:>9.0f} {1000 / total:>6.2f}")
    print(
        "\nms per 1024x2048 image (median), share of the image's total in brackets; "
        "img/s = 1000 / total, one image per model call."
    )


if __name__ == "__main__":
    main()

"""Export targets: tflite-int8 against the Keras model it came from, at 256x512.

Trains the `cityseg demo` model (FPN-EfficientNetB0 on synthetic data, CPU) unless
`--model` names a bundle, exports it to every format at `--size` with a parity report
on the validation split, then times every runtime with `cityseg benchmark`'s protocol
(warm-up, then timed single-image calls, all in this process). Each speed figure is a
ratio to the Keras model measured in the same run.

Targets (issue 7), for tflite-int8 at 256x512 on a 2-core CPU: >= 2x faster than Keras,
<= 0.3x its size, >= 97% pixel agreement, mIoU drop <= 0.01.

    python benchmarks/export.py [--model BUNDLE --data DATASET] [--size 256x512] [--runs 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cityseg import logs
from cityseg.demo_pipeline import DemoSettings, run_demo
from cityseg.deploy.benchmark import time_models
from cityseg.deploy.export import export_model
from cityseg.inference.runtimes import EXPORT_FORMATS
from cityseg.runs import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained bundle (default: train the demo)")
    parser.add_argument("--data", type=Path, help="its prepared dataset")
    parser.add_argument("--size", default="256x512")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--images-per-city", type=int, default=5, help="demo data size")
    args = parser.parse_args()
    size = parse_size(args.size)

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model, data = args.model, args.data
        if model is None:
            settings = DemoSettings(images=args.images_per_city, show_progress=False)
            logs.install("stdout")  # the demo's steps, and then the exports' and timings'
            run_demo(work, settings)
            model, data = work / "runs" / "train" / "demo" / "best", work / "data" / "cityscapes"
        assert data is not None, "--data is needed with --model"
        reports = export_model(model, EXPORT_FORMATS, work / "export", data=data, size=size)
        exports = {report.format: report.to_dict() for report in reports}
        timing = time_models(
            [model, *(report.folder for report in reports)],
            size=size,
            runs=args.runs,
            include_exports=False,
        ).to_dict()

    keras = next(r for r in timing["results"] if r["format"] == "keras")
    print(f"\n{size[0]}x{size[1]}, {timing['threads']} CPU threads, {args.runs} timed runs")
    print(f"Keras: {keras['latency_ms']['p50']:.0f} ms p50, {keras['bytes'] / 1e6:.1f} MB")
    header = f"{'format':<12} {'size':>6} {'speed':>6} {'agree':>7} {'mIoU':>7} {'drop':>8}"
    print(header)
    for row in timing["results"][1:]:
        record = exports[row["format"]]
        parity = record["parity"]
        speed = keras["latency_ms"]["p50"] / row["latency_ms"]["p50"]
        print(
            f"{row['format']:<12} {record['size_ratio']:>5.2f}x {speed:>5.2f}x "
            f"{parity['pixel_agreement']:>7.4f} {parity['miou']['export']:>7.4f} "
            f"{parity['miou']['drop']:>+8.4f}"
        )


if __name__ == "__main__":
    main()

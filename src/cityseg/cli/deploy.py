"""Deployment commands: `export` (a bundle to SavedModel, TFLite or ONNX) and `benchmark`.

Library modules are imported inside each command, so `--help` does not load TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cityseg.cli.options import (
    DATA_HELP,
    Command,
    Project,
    Size,
    human_bytes,
    note,
    open_model,
    out,
    size_option,
)
from cityseg.config import BENCHMARK, DEFAULT_PROJECT, EXPORT, ExportFormat

if TYPE_CHECKING:
    from cityseg.deploy.benchmark import BenchmarkReport
    from cityseg.deploy.parity import ParityReport

app = typer.Typer()


Formats = Annotated[
    list[ExportFormat],
    typer.Option("--format", "-f", help="What to export to; repeat for several."),
]
Bundle = Annotated[
    Path | None, typer.Option(help="Keras bundle folder (default: the newest run's best/).")
]
ExportOutput = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Export folder (for several formats: their parent; default: the run's export/).",
    ),
]
ExportData = Annotated[
    Path | None,
    typer.Option(help=f"{DATA_HELP} For calibration and parity.", show_default=False),
]
ExportSize = Annotated[Size | None, size_option("Input HEIGHTxWIDTH (default: the bundle's).")]
Calib = Annotated[
    int, typer.Option(min=1, help="Training images to calibrate int8 on (tflite-int8).")
]
Parity = Annotated[
    int, typer.Option(min=0, help="Validation images for the parity report; 0 skips it.")
]


@app.command(cls=Command)
def export(
    formats: Formats,
    model: Bundle = None,
    output: ExportOutput = None,
    data: ExportData = None,
    size: ExportSize = None,
    calib: Calib = EXPORT.calib,
    parity: Parity = EXPORT.parity,
    project: Project = DEFAULT_PROJECT,
) -> None:
    """Export a bundle to SavedModel, TFLite (fp32/fp16/int8) or ONNX, with a parity report."""
    from cityseg.deploy.export import EXPORT_NAME

    reports = open_model(model, project).export(
        list(formats),
        output=output,
        data=data,
        size=None if size is None else size.pair,
        calib=calib,
        parity=parity,
    )
    for report in reports:
        out.print(
            f"[green]Exported {report.format}[/] ({human_bytes(report.bytes)}, "
            f"{report.size_ratio:.2f}x the Keras weights) to "
            f"{escape(str(report.folder))}"
        )
    results = [(r.format, r.parity) for r in reports if r.parity is not None]
    if results:
        _print_parity(results)
        needs = "; ".join(
            f"{fmt} agreement >= {r.tolerance.min_pixel_agreement}, drop <= "
            f"{r.tolerance.max_miou_drop}"
            for fmt, r in results
        )
        note(f"parity needs: {needs}. The full reports: each folder's {EXPORT_NAME}")


def _print_parity(results: list[tuple[str, ParityReport]]) -> None:
    first = results[0][1]
    table = Table(
        title=f"parity on {first.images} val images: Keras mIoU "
        f"{first.miou.keras:.4f}, p50 {first.latency_ms.keras.p50:.1f} ms"
    )
    for column in ("format", "agreement", "mIoU", "drop", "p50 ms", "speed-up", "parity"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for fmt, result in results:
        table.add_row(
            fmt,
            f"{result.pixel_agreement:.4f}",
            f"{result.miou.export:.4f}",
            f"{result.miou.drop:+.4f}",
            f"{result.latency_ms.export.p50:.1f}",
            f"{result.speedup_p50:.2f}x",
            "[green]passed[/]" if result.passed else "[yellow]FAILED[/]",
        )
    out.print(table)


Models = Annotated[
    list[Path] | None,
    typer.Option(help="Models to time, repeatable (default: the newest run's best/)."),
]
BenchmarkSize = Annotated[Size | None, size_option("Input HEIGHTxWIDTH (default: the model's).")]
Runs = Annotated[int, typer.Option(min=1, help="Timed calls per runtime.")]
Batch = Annotated[int, typer.Option(min=1, help="Images per call.")]
Exports = Annotated[bool, typer.Option(help="Also time each bundle's exports (run/export/*).")]
JsonOut = Annotated[
    Path | None,
    typer.Option("--json", help="Write the results as JSON to this file; - prints only the JSON."),
]


@app.command(cls=Command)
def benchmark(
    model: Models = None,
    size: BenchmarkSize = None,
    runs: Runs = BENCHMARK.runs,
    batch: Batch = BENCHMARK.batch,
    exports: Exports = BENCHMARK.include_exports,
    json_out: JsonOut = None,
    project: Project = DEFAULT_PROJECT,
) -> None:
    """Time each runtime (Keras, TFLite, ONNX) on this machine; FLOPs and parameters."""
    import json

    from cityseg.api.deploy import benchmark as time_models
    from cityseg.fsutil import atomic_write_json

    result = time_models(
        model,
        size=None if size is None else size.pair,
        runs=runs,
        batch=batch,
        exports=exports,
        project=project,
    )
    if json_out == Path("-"):
        out.print_json(json.dumps(result.to_dict()))
        return
    _print_timings(result)
    if json_out is not None:
        atomic_write_json(json_out, result.to_dict())
        note(f"written: {json_out}")


def _print_timings(result: BenchmarkReport) -> None:
    height, width = result.input_size
    table = Table(
        title=f"{height}x{width}, batch {result.batch}, {result.runs} runs, "
        f"{result.threads} CPU threads"
    )
    for column in ("format", "size", "p50 ms", "p95 ms", "images/s", "model"):
        table.add_column(column, justify="left" if column in ("format", "model") else "right")
    for row in result.results:
        table.add_row(
            row.format,
            human_bytes(row.bytes),
            f"{row.latency_ms.p50:.1f}",
            f"{row.latency_ms.p95:.1f}",
            f"{row.images_per_second:.1f}",
            escape(str(row.path)),
        )
    out.print(table)
    if result.keras is not None:
        compute = result.keras
        out.print(f"Keras model: {compute.parameters:,} parameters, {compute.gflops} GFLOPs")

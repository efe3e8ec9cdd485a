"""Data commands: `prepare` (raw data -> dataset), `remap` (labelIds -> class ids), `demo`.

Library modules are imported inside each command, so that `cityseg --help` and
`cityseg remap` start without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cityseg.cli.options import Command, Quiet, Workers, human_bytes, out
from cityseg.config import (
    OWN,
    PREPARE,
    REMAP,
    SYNTHETIC,
    Background,
    DataFormat,
    GroundTruth,
    LabelSource,
    SplitBy,
    UnknownPolicy,
)
from cityseg.demo_pipeline import DemoFormat

if TYPE_CHECKING:
    from cityseg.dataset.prepare import PrepareReport

app = typer.Typer()


# `prepare` has more options than any other command; naming each keeps its signature a
# list one can read.
Source = Annotated[
    Path,
    typer.Argument(
        metavar="SOURCE",
        help="Cityscapes: the folder holding gtFine_trainvaltest.zip and "
        "leftImg8bit_trainvaltest.zip (or their extracted folders). Other formats: the "
        "folder holding your images (and, if not given with --annotations, the annotations).",
    ),
]
Format = Annotated[
    DataFormat, typer.Option("--format", "-f", help="What SOURCE holds (docs/datasets.md).")
]
Annotations = Annotated[
    Path | None,
    typer.Option(
        help="The VIA CSV/JSON, COCO JSON, LabelMe folder or mask folder (default: found in "
        "SOURCE).",
        show_default=False,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Dataset folder to write (default: data/cityscapes, or data/<SOURCE name>).",
        show_default=False,
    ),
]
Classes = Annotated[
    str | None,
    typer.Option(
        help="Class names in id order (1, 2, ...; 0 is the background), as a comma list or a "
        "file of one name per line (default: in order of first appearance).",
        show_default=False,
    ),
]
Ignore = Annotated[
    str | None,
    typer.Option(
        help="A class to leave out of loss and metrics (painted 255).", show_default=False
    ),
]
Palette = Annotated[
    Path | None,
    typer.Option(
        help="JSON {class: \\[r, g, b]}: colours for the classes (and, with --format masks, "
        "the colours colour masks use).",
        show_default=False,
    ),
]
BackgroundOption = Annotated[
    Background, typer.Option(help="Score class 0 like the others, or treat it as void.")
]
ClassAttr = Annotated[
    str | None,
    typer.Option(
        help="VIA: the region attribute holding the class (default: the only one, or one "
        "named class, label or name).",
        show_default=False,
    ),
]
ValRatio = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=0.9,
        help="Share of images moved to val (Cityscapes: of the original train, see --split-by).",
    ),
]
TestRatio = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=0.9,
        help=f"Own data: share of images for test (default {OWN.test_ratio}). Cityscapes' "
        "test is its original val.",
        show_default=False,
    ),
]
GroupBy = Annotated[
    str | None,
    typer.Option(
        help="Own data: a regex on file names; images whose match (or first group) is the "
        "same stay in one split, like Cityscapes cities.",
        show_default=False,
    ),
]
Labels = Annotated[
    LabelSource,
    typer.Option(
        help="Cityscapes: read *_labelIds.png, or make labelIds from *_polygons.json exactly "
        "as cityscapesScripts' json2labelImg does (for edited polygons).",
    ),
]
Gt = Annotated[
    GroundTruth,
    typer.Option(
        "--gt",
        help="Cityscapes: fine annotations (gtFine_trainvaltest.zip) or coarse (gtCoarse.zip).",
    ),
]
SplitByOption = Annotated[
    SplitBy,
    typer.Option(
        help="Cityscapes: move whole cities to val (no street on both sides), or single "
        "images (for a set of one city).",
    ),
]
Seed = Annotated[int, typer.Option(help="Seed for the split and sampling.")]
Limit = Annotated[
    int | None,
    typer.Option(min=1, help="Cityscapes: keep at most N images per split (sampled reproducibly)."),
]
Fraction = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help="Cityscapes: keep this fraction of each split."),
]
Verify = Annotated[
    bool, typer.Option("--verify/--no-verify", help="Cityscapes: check the zips' checksums.")
]
Sizes = Annotated[
    list[str] | None,
    typer.Option(
        "--size",
        help="Also store copies at this training HEIGHTxWIDTH (repeatable or a comma list): "
        "`train --size` at that size then skips decoding full-size PNGs.",
        show_default=False,
    ),
]


@app.command(cls=Command)
def prepare(
    raw: Source,
    format: Format = DataFormat.cityscapes,
    annotations: Annotations = None,
    output: Output = None,
    classes: Classes = None,
    ignore: Ignore = None,
    palette: Palette = None,
    background: BackgroundOption = OWN.background,
    class_attr: ClassAttr = None,
    val_ratio: ValRatio = PREPARE.val_ratio,
    test_ratio: TestRatio = None,
    group_by: GroupBy = None,
    labels: Labels = PREPARE.labels,
    gt: Gt = PREPARE.annotations,
    split_by: SplitByOption = PREPARE.split_by,
    seed: Seed = PREPARE.seed,
    limit: Limit = PREPARE.limit,
    fraction: Fraction = PREPARE.fraction,
    verify: Verify = PREPARE.verify,
    size: Sizes = None,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Turn Cityscapes zips, or your own annotated images, into a train-ready dataset."""
    options = dict(locals())  # the flags by name, each named as the API's keyword
    from cityseg.api.dataset import check_format_options
    from cityseg.api.dataset import prepare as prepare_data
    from cityseg.dataset.sized import parse_sizes

    check_format_options(format, options, flags=True)
    report = prepare_data(
        raw,
        output,
        format=format,
        val_ratio=val_ratio,
        seed=seed,
        sizes=parse_sizes(size or []),
        workers=workers,
        verbose=not quiet,
        **_options_of(format, options),
    )
    grouping = "cities" if format is DataFormat.cityscapes else "groups"
    _print_prepared(report, report.output, grouping)


def _options_of(format: DataFormat, options: dict[str, Any]) -> dict[str, Any]:
    """The options of `format` alone: so --annotations with Cityscapes and --no-verify
    with own data pass unused, as they always have (neither changes what is written)."""
    from cityseg.api.dataset import CITYSCAPES_ONLY, OWN_ONLY

    names = CITYSCAPES_ONLY if format is DataFormat.cityscapes else (*OWN_ONLY, "background")
    return {name: options[name] for name in names}


def _print_prepared(report: PrepareReport, output: Path, grouping: str) -> None:
    if report.up_to_date:
        out.print(f"[green]{escape(str(output))} is already prepared[/]; nothing to do.")
        return
    table = Table(title=f"Prepared {escape(str(output))}")
    for column in ("split", grouping, "images", "disk"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for row in report.splits:
        table.add_row(row.split, str(row.cities), str(row.images), human_bytes(row.bytes))
    out.print(table)
    for name, schemes in report.sized.items():
        where = escape(str(output / "sized" / name))
        out.print(f"training-size copies {name} ({', '.join(schemes)} masks): {where}")
    out.print(f"manifest: {escape(str(output / 'manifest.json'))}")


Inputs = Annotated[
    list[Path],
    typer.Argument(
        help="labelIds PNGs, folders (searched recursively) or a prepared dataset.",
        show_default=False,
        metavar="INPUT...",
    ),
]
RemapOutput = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Output folder, or a .png file for a single input."),
]
# A name or a file path, so a str rather than a choice list.
Scheme = Annotated[
    str,
    typer.Option(
        help="categories (8 classes), trainids (19 + 255 ignore), or the path of a JSON "
        "scheme file."
    ),
]
Colour = Annotated[
    bool,
    typer.Option(
        "--colour/--no-colour",
        "--color/--no-color",
        help="Also write the palette PNG (<name>_colour.png).",
    ),
]
Unknown = Annotated[
    UnknownPolicy, typer.Option(help="An id the scheme does not map: fail, or write void.")
]
Glob = Annotated[str, typer.Option(help="File pattern when an input is a folder.")]


@app.command(cls=Command)
def remap(
    inputs: Inputs,
    output: RemapOutput = None,
    scheme: Scheme = REMAP.scheme,
    colour: Colour = REMAP.colour,
    unknown: Unknown = REMAP.unknown,
    glob: Glob = REMAP.glob,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Map labelIds PNGs to class-id PNGs (exact, via a 256-entry lookup table)."""
    from cityseg.api.dataset import remap as remap_masks

    report = remap_masks(
        inputs,
        output,
        scheme=scheme,
        glob=glob,
        colour=colour,
        unknown=unknown,
        workers=workers,
        verbose=not quiet,
    )
    where = f"{report.output} (manifest updated)" if report.dataset else str(report.output)
    out.print(f"[green]Remapped {report.written} mask(s)[/] to {report.scheme}: {escape(where)}")


Directory = Annotated[Path, typer.Argument(help="Where the demo writes everything.")]
DemoFormatOption = Annotated[
    DemoFormat,
    typer.Option(
        "--format",
        "-f",
        help="Synthetic Cityscapes zips, or a synthetic two-class VIA project (own data).",
    ),
]
DataOnly = Annotated[
    bool, typer.Option("--data-only", help="Only write the synthetic raw data, then stop.")
]
Images = Annotated[
    int | None,
    typer.Option(
        "--images-per-city",
        "--images",
        min=1,
        help=f"Cityscapes: images per city ({SYNTHETIC.images_per_city}); VIA: photos (64).",
        show_default=False,
    ),
]
Height = Annotated[
    int | None,
    typer.Option(min=16, help="Image height (cityscapes 128, via 96).", show_default=False),
]
Width = Annotated[
    int | None,
    typer.Option(min=16, help="Image width (cityscapes 256, via 128).", show_default=False),
]
Epochs = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Training epochs (cityscapes 6, via 12; ~5-10 s each on a CPU).",
        show_default=False,
    ),
]
NoTrain = Annotated[bool, typer.Option("--no-train", help="Stop after prepare.")]


@app.command(cls=Command)
def demo(
    directory: Directory = SYNTHETIC.output,
    format: DemoFormatOption = DemoFormat.cityscapes,
    data_only: DataOnly = False,
    images: Images = None,
    height: Height = None,
    width: Width = None,
    seed: int = SYNTHETIC.seed,
    epochs: Epochs = None,
    no_train: NoTrain = False,
    quiet: Quiet = False,
) -> None:
    """Run the pipeline on generated data (no download needed)."""
    flags = dict(locals())  # the flags by name: each is a `cityseg.demo` keyword but two
    flags["train"] = not flags.pop("no_train")
    flags["verbose"] = not flags.pop("quiet")
    from cityseg.api.pipeline import demo as run_demo

    run_demo(**flags)

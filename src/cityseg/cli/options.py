"""What several commands share: the command class, option types, the `--size` parser,
the consoles, printing.

An option written the same way in several commands is one `Annotated` alias here, so its
flag, help and checks cannot drift apart; its default stays in the command's signature,
read from `cityseg.config`. Every command is declared `@app.command(cls=Command)`, so
the library's messages reach stderr while it runs. Nothing here imports a library module
that pulls in TensorFlow: `cityseg --help` imports every command module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from cityseg.config import DEFAULT_DATA, TTA
from cityseg.inference.sliding import Window
from cityseg.logs import cli_messages
from cityseg.runs import parse_size

if TYPE_CHECKING:
    from cityseg.api.model import Model as CitysegModel

out = Console(soft_wrap=True)
"""Results: what a script reads from stdout."""
err = Console(stderr=True, soft_wrap=True)
"""Progress notes, warnings and errors, so they never mix into the results."""


class Command(TyperCommand):
    """A cityseg command: while it runs, the library's messages (the "cityseg" logger)
    are shown on stderr, beside the command's own `note`s, and `-q` (which passes
    `verbose=False` to the API) hides the bars but never the messages; see
    `cityseg.logs.cli_messages`."""

    def invoke(self, ctx: Any) -> Any:  # typer's own copy of click's Context
        with cli_messages():
            return super().invoke(ctx)


MODEL_HELP = (
    "A bundle or export folder, or its model.tflite / model.onnx, or a pretrained name "
    "(segformer-b0-cityscapes) (default: the newest run's best/)."
)
DATA_HELP = f"Prepared dataset (default: the one the model's run trained on, else {DEFAULT_DATA})."


@dataclass(frozen=True)
class Size:
    """A `--size` value, height first as Keras takes it; help shows it as typed (HxW)."""

    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"

    @property
    def pair(self) -> tuple[int, int]:
        """(height, width), as the library functions take a size."""
        return self.height, self.width


def parse_size_option(value: str | Size) -> Size:
    """typer's `parser=` for `--size`; typer also passes the default through it.

    A bad value raises `cityseg.errors.UsageError` from `parse_size`, so it ends the run
    as one red line with exit code 2, the same message `prepare --size` gives.
    """
    return value if isinstance(value, Size) else Size(*parse_size(value))


def size_option(help: str) -> Any:
    """`--size HxW` with `help`: the commands differ only in what the default is."""
    return typer.Option(parser=parse_size_option, metavar="<HxW>", help=help)


InputSize = Annotated[Size, size_option("Input HEIGHTxWIDTH.")]
"""`--size` of train and tune: the size the model trains at (the default: TrainConfig's)."""


def parse_crop_option(value: str | Size) -> Size:
    """typer's `parser=` for `--crop`: a size, named `--crop` in its messages."""
    return value if isinstance(value, Size) else Size(*parse_size(value, "--crop"))


Crop = Annotated[
    Size | None,
    typer.Option(
        parser=parse_crop_option,
        metavar="<HxW>",
        help="Train on one random HxW window of each image (at --size); val on HxW tiles.",
        show_default=False,
    ),
]
"""`--crop` of train and tune (`cityseg.training.crops`)."""


Model = Annotated[Path | None, typer.Option(help=MODEL_HELP)]
"""`--model` of the commands that run any model format (evaluate, predict, serve)."""
Data = Annotated[Path | None, typer.Option(help=DATA_HELP, show_default=False)]
"""`--data` where the model's run names the dataset when it is not given."""
Project = Annotated[Path, typer.Option(help="Where to look for the newest run.")]
"""`--project` of the commands that default to the newest run's model."""
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Workers = Annotated[int | None, typer.Option(min=1, help="Parallel workers (default: CPUs).")]
Batch = Annotated[int, typer.Option(min=1, help="Images per model call.")]
Tta = Annotated[TTA, typer.Option(help="Test-time augmentation.")]
Slide = Annotated[
    Window | None,
    typer.Option(
        parser=Window.parse,
        metavar="<CROP[:STRIDE]>",
        help="Run the model on overlapping crops (e.g. 512x512:384) at the image's own size.",
        show_default=False,
    ),
]
"""`--slide` of predict and evaluate: mmsegmentation's sliding-window inference."""


def tta_choice(flip: bool) -> TTA:
    """The `--tta` default for a library default of `tta_flip`."""
    return TTA.flip if flip else TTA.none


def note(message: str) -> None:
    """A message of the command's own, on stderr. Messages quote user names (files,
    classes): never read them as markup."""
    err.print(escape(message), highlight=False)


def open_model(model: Path | None, project: Path, *, quiet: bool = False) -> CitysegModel:
    """`--model` as a `cityseg.Model`, defaulting (and saying so with the commands' own
    wording, `choose another with --model`) to the newest run's best under `project`.
    Reads the card only: no TensorFlow until the model runs."""
    from cityseg.api.model import Model as CitysegModel
    from cityseg.inference.predictor import resolve_model

    return CitysegModel(resolve_model(model, project), verbose=not quiet)


def human_bytes(size: int) -> str:
    """Sizes as people read them; exports and datasets span bytes to gigabytes."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def score(value: object) -> str:
    """A metric to 4 places, or `-` for one that is undefined (a class never seen)."""
    return "-" if value is None else f"{float(str(value)):.4f}"

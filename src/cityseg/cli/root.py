"""The `cityseg` app: its command groups, `--version`, and how a run ends.

Each group module (`data`, `training`, `inference`, `deploy`, `study`) holds its commands on its
own `typer.Typer()`; they are added here without a name, so they stay top-level
commands (`cityseg prepare`, not `cityseg data prepare`). `run` turns the errors a user
can cause into one red line and an exit code, so no traceback reaches them.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from cityseg import __version__
from cityseg.cli import data, deploy, inference, study, training
from cityseg.cli.options import err, out
from cityseg.errors import CitysegError

app = typer.Typer(
    name="cityseg",
    help="Cityscapes from the raw zips to a trained segmentation model and colour masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
for group in (data.app, training.app, inference.app, deploy.app, study.app):
    app.add_typer(group)


def _version(value: bool) -> None:
    if value:
        out.print(f"cityseg {__version__}")
        raise typer.Exit()


Version = Annotated[
    bool,
    typer.Option(
        "--version", "-V", help="Show the version and exit.", callback=_version, is_eager=True
    ),
]


@app.callback()
def _root(version: Version = False) -> None:
    """Cityscapes from the raw zips to a trained segmentation model and colour masks.

    [bold]prepare[/] ./raw -> data/cityscapes -> [bold]train[/] -> [bold]evaluate[/] ->
    [bold]predict[/] / [bold]serve[/].  Set CITYSEG_DEBUG=1 to see tracebacks.
    """


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 1 for a user error, 2 for a usage error."""
    debug = os.environ.get("CITYSEG_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, prog_name="cityseg")
    except SystemExit as exc:  # typer's standalone mode ends every run this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted.[/]")
        return 130
    except CitysegError as exc:
        if debug:
            raise
        err.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except OSError as exc:
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"[bold red]Error:[/] {escape(exc.strerror or str(exc))}{escape(where)}")
        return 1
    return 0


def main() -> None:
    """The console script `cityseg` and `python -m cityseg`."""
    sys.exit(run())

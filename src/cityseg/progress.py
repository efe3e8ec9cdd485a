"""One progress bar for every long loop, drawn on stderr so stdout stays clean.

A terminal gets a rich bar. A Jupyter notebook gets tqdm's (`tqdm.auto`: a widget where
ipywidgets is installed, text otherwise), because rich draws nothing there: its console
is not a terminal, and its live display needs ipywidgets. Anywhere else (pipes, CI
logs) there is no bar, as a bar redrawn in a log file is noise. The choice is made per
loop by `choose_backend`, a pure function, from what `in_notebook` and the console see.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr_console = Console(stderr=True, soft_wrap=True)


Backend = Literal["rich", "tqdm", "none"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython kernel) session.

    Only a kernel counts: plain `ipython` in a terminal is a terminal, and rich draws
    there. IPython is never imported here: a process that has not imported it is not a
    kernel, and importing it would cost a CLI run a quarter of a second.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def choose_backend(*, enabled: bool, notebook: bool, terminal: bool) -> Backend:
    """Which bar a loop draws: none when turned off, tqdm in a notebook, rich on a
    terminal, and none elsewhere."""
    if not enabled:
        return "none"
    if notebook:
        return "tqdm"
    return "rich" if terminal else "none"


def track(items: Iterable[T], total: int, description: str, *, enabled: bool = True) -> Iterator[T]:
    """Yield `items` while drawing a bar (see `choose_backend`); plain iteration otherwise."""
    backend = choose_backend(
        enabled=enabled, notebook=in_notebook(), terminal=stderr_console.is_terminal
    )
    if backend == "tqdm":
        yield from _tqdm_track(items, total, description)
    elif backend == "rich":
        yield from _rich_track(items, total, description)
    else:
        yield from items


def _tqdm_track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    # Imported by name: tqdm ships no type stubs, and this is the one call made into it.
    tqdm = importlib.import_module("tqdm.auto").tqdm
    with tqdm(items, total=total, desc=description, leave=False) as bar:
        yield from bar


def _rich_track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


def run_parallel(
    work: Callable[[T], object],
    items: Sequence[T],
    description: str,
    *,
    workers: int,
    show_progress: bool = True,
) -> None:
    """Apply `work` to every item on a thread pool, with a bar; the first error wins.

    Pending items are cancelled on an error or Ctrl-C, so a failure stops the run
    promptly; what already finished stays (callers write their files atomically).
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in track(futures, len(futures), description, enabled=show_progress):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

"""One progress bar style for every long loop, drawn on stderr so stdout stays clean."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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


def track(items: Iterable[T], total: int, description: str, *, enabled: bool = True) -> Iterator[T]:
    """Yield `items` while drawing a bar on a terminal; plain iteration otherwise.

    Bars are skipped when stderr is not a terminal: in CI logs and pipes they are noise.
    """
    if not enabled or not stderr_console.is_terminal:
        yield from items
        return
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

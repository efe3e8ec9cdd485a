"""The comparison table in four forms: a terminal table, CSV, Markdown and JSON.

The columns are the ones the earlier hand-made comparisons kept (model, loss,
augmentation, parameters, training time, val and test scores), plus what a deployment
needs (GFLOPs, latency) and per-class IoU. CSV and JSON keep the raw values (seconds,
parameter counts) for spreadsheets and scripts; the table and Markdown round them for
people, with `-` where a run has no value.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cityseg.comparison.rows import RunRow
from cityseg.errors import UsageError


@dataclass(frozen=True)
class Column:
    name: str
    read: Callable[[RunRow], Any]
    show: Callable[[Any], str] = str
    higher_is_better: bool | None = None
    """Sort order of `--sort`: best first; None sorts by name."""


def _fixed(places: int) -> Callable[[Any], str]:
    return lambda value: f"{float(value):.{places}f}"


def _millions(value: Any) -> str:
    return f"{int(value) / 1e6:.2f}M"


def _duration(value: Any) -> str:
    seconds = int(round(float(value)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


COLUMNS = (
    Column("run", lambda r: r.name),
    Column("status", lambda r: r.status),
    Column("arch", lambda r: r.arch),
    Column("backbone", lambda r: r.backbone),
    Column("weights", lambda r: r.weights),
    Column("loss", lambda r: r.loss),
    Column("aug", lambda r: r.aug),
    Column("size", lambda r: r.size),
    Column("epochs", lambda r: _epochs(r)),
    Column("params", lambda r: r.params, _millions, higher_is_better=False),
    Column("gflops", lambda r: r.gflops, _fixed(2), higher_is_better=False),
    Column("train_time", lambda r: r.train_seconds, _duration, higher_is_better=False),
    Column("val_miou", lambda r: r.val_miou, _fixed(4), higher_is_better=True),
    Column("val_dice", lambda r: r.val_dice, _fixed(4), higher_is_better=True),
    Column("test_miou", lambda r: r.test_miou, _fixed(4), higher_is_better=True),
    Column("official_miou", lambda r: r.official_miou, _fixed(4), higher_is_better=True),
    Column("latency_ms", lambda r: r.latency_ms, _fixed(1), higher_is_better=False),
)
NAMES = tuple(column.name for column in COLUMNS)
DEFAULT_SORT = "val_miou"


def _epochs(row: RunRow) -> str | None:
    if row.epochs is None:
        return None
    return f"{row.epochs}/{row.planned_epochs}" if row.planned_epochs else str(row.epochs)


def class_columns(rows: Sequence[RunRow]) -> list[Column]:
    """`iou_<class>` for every class any run's val evaluation scored, in first-seen order."""
    names = dict.fromkeys(name for row in rows for name in row.class_iou)
    return [
        Column(f"iou_{name}", _class_reader(name), _fixed(3), higher_is_better=True)
        for name in names
    ]


def _class_reader(name: str) -> Callable[[RunRow], Any]:
    return lambda row: row.class_iou.get(name)


def sort_rows(rows: list[RunRow], column: str, columns: Sequence[Column]) -> list[RunRow]:
    """Best first on `column`; runs without a value go last, in name order."""
    chosen = {c.name: c for c in columns}.get(column)
    if chosen is None:
        raise UsageError(f"--sort {column!r} is not a column; choose one of {', '.join(NAMES)}")
    if chosen.higher_is_better is None:
        return sorted(rows, key=lambda row: (str(chosen.read(row) or ""), row.name))
    sign = -1.0 if chosen.higher_is_better else 1.0

    def key(row: RunRow) -> tuple[int, float, str]:
        value = chosen.read(row)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (1, 0.0, row.name) if missing else (0, sign * float(value), row.name)

    return sorted(rows, key=key)


def cells(row: RunRow, columns: Sequence[Column]) -> list[str]:
    return [_cell(column, column.read(row)) for column in columns]


def raw(row: RunRow, columns: Sequence[Column]) -> list[Any]:
    """The values unrounded (seconds, parameter counts), for CSV and JSON."""
    return [column.read(row) for column in columns]


def _cell(column: Column, value: Any) -> str:
    return "-" if value is None else column.show(value)


def to_text(rows: Sequence[RunRow], columns: Sequence[Column]) -> str:
    """Aligned columns for a terminal or a log: never wrapped, so each run stays one line.
    Per-class IoU and columns no run has a value for are left to the other forms."""
    shown = [
        c
        for c in columns
        if not c.name.startswith("iou_") and any(c.read(row) is not None for row in rows)
    ]
    table = [[c.name for c in shown], *(cells(row, shown) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def to_csv(rows: Sequence[RunRow], columns: Sequence[Column]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*(c.name for c in columns), "reason"])
    for row in rows:
        writer.writerow(
            [*("" if value is None else value for value in raw(row, columns)), row.reason or ""]
        )
    return buffer.getvalue()


def to_markdown(rows: Sequence[RunRow], columns: Sequence[Column]) -> str:
    """A pipe table that pastes into a report, then the reasons as a list."""
    lines = [
        "| " + " | ".join(c.name for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_md(cell) for cell in cells(row, columns)) + " |" for row in rows]
    notes = [f"- {_md(row.name)}: {_md(row.reason)}" for row in rows if row.reason]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def to_json(rows: Sequence[RunRow], columns: Sequence[Column]) -> str:
    records = [
        {
            **{column.name: column.read(row) for column in columns},
            "path": str(row.path),
            "reason": row.reason,
        }
        for row in rows
    ]
    return json.dumps(records, indent=2) + "\n"

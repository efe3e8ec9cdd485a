"""`cityseg compare`: the table every earlier project made by hand, from the run folders.

`collect` (which folders are runs), `rows` (a run folder as one row, or the reason it
has no scores), `cost` (GFLOPs, cached, and latency, measured), `table` (sorting and
the four output forms) and `plot` (compare.png with the Pareto front).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cityseg.comparison.rows import RunRow
from cityseg.comparison.table import DEFAULT_SORT, Column


@dataclass(frozen=True)
class Comparison:
    """The rows (sorted) and the columns they are shown in."""

    rows: list[RunRow]
    columns: list[Column]

    def render(self, format: str) -> str:
        """`table` (aligned text), `csv`, `md` or `json`."""
        from cityseg.comparison import table

        writers = {
            "table": table.to_text,
            "csv": table.to_csv,
            "md": table.to_markdown,
            "json": table.to_json,
        }
        return writers[format](self.rows, self.columns)


def compare_runs(
    paths: Sequence[Path] = (),
    *,
    sort: str = DEFAULT_SORT,
    latency: bool = False,
    latency_runs: int = 10,
    evaluations: Sequence[Path] = (),
    costs: bool = True,
) -> Comparison:
    """Rows for the runs under `paths` (default: runs/train and runs/tune), sorted best
    first on `sort`. Evaluations are looked for inside the runs and under
    `evaluations` (default: where `cityseg evaluate` writes)."""
    from cityseg.comparison.collect import collect_runs, display_name
    from cityseg.comparison.cost import fill_costs, fill_latency
    from cityseg.comparison.rows import find_evaluations, read_row
    from cityseg.comparison.studies import trial_fates
    from cityseg.comparison.table import COLUMNS, class_columns, sort_rows
    from cityseg.config import EVALUATE

    trial_fates.cache_clear()  # studies change between calls (a resumed study)
    runs = collect_runs(list(paths))
    searched = [*runs, *(evaluations or [EVALUATE.project])]
    found = find_evaluations([p for p in searched if p.is_dir()])
    rows = [read_row(run, display_name(run), found) for run in runs]
    if costs:
        fill_costs(rows)
    if latency:
        fill_latency(rows, latency_runs)
    columns = [*COLUMNS, *class_columns(rows)]
    return Comparison(sort_rows(rows, sort, columns), columns)

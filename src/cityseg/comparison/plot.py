"""compare.png: val mIoU against latency (or parameters), with the Pareto front marked.

The front is the runs no other run beats on both axes at once (at least as accurate
and at least as cheap, better on one): the only ones worth choosing between. Each
point carries its run's name, so the picture reads without the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cityseg.comparison.rows import RunRow
from cityseg.fsutil import atomic_write_bytes


@dataclass(frozen=True)
class Point:
    name: str
    cost: float
    score: float


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points that no other point dominates (higher score, lower cost), by cost."""
    front = [
        p
        for p in points
        if not any(
            q.score >= p.score and q.cost <= p.cost and (q.score > p.score or q.cost < p.cost)
            for q in points
        )
    ]
    return sorted(front, key=lambda p: p.cost)


def plot_points(rows: Sequence[RunRow]) -> tuple[list[Point], str]:
    """The rows that have a val mIoU and a cost, and the axis the cost is on: latency
    when every such run was timed, else parameters."""
    scored = [row for row in rows if row.val_miou is not None]
    if scored and all(row.latency_ms is not None for row in scored):
        return [Point(r.name, float(r.latency_ms or 0), float(r.val_miou or 0)) for r in scored], (
            "CPU latency p50 (ms)"
        )
    return [
        Point(r.name, float(r.params) / 1e6, float(r.val_miou or 0))
        for r in scored
        if r.params is not None
    ], "parameters (millions)"


LABEL_OFFSET = (4, 4)
"""Where a point's name goes, in typographic points from the point."""
LINE_STEP = 9
"""How far a crowded label moves down: one line of the 7-point font."""
NEAR_COST = 0.15
"""A run name is about this share of the cost axis wide (12 characters of the 7-point font)..."""
NEAR_SCORE = 0.04
"""...and one line this share of the score axis high: closer points print over each other."""


def label_offsets(points: Sequence[Point]) -> list[tuple[int, int]]:
    """One offset per point: the usual one, moved a line below the labels of the earlier
    points that lie near it, so that runs of about the same cost and score stay readable."""
    cost_span = (max(p.cost for p in points) - min(p.cost for p in points)) or 1.0
    score_span = (max(p.score for p in points) - min(p.score for p in points)) or 1.0
    lines: list[int] = []
    for index, point in enumerate(points):
        below = [
            lines[earlier] + 1
            for earlier, other in enumerate(points[:index])
            if abs(other.cost - point.cost) < NEAR_COST * cost_span
            and abs(other.score - point.score) < NEAR_SCORE * score_span
        ]
        lines.append(max(below, default=0))
    return [(LABEL_OFFSET[0], LABEL_OFFSET[1] - LINE_STEP * line) for line in lines]


def write_plot(rows: Sequence[RunRow], path: Path) -> int:
    """Draw compare.png; returns how many runs it shows (0: nothing was drawn)."""
    points, axis = plot_points(rows)
    if not points:
        return 0
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(points)
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    axes.scatter([p.cost for p in points], [p.score for p in points], color="#8896ab", zorder=2)
    axes.plot(
        [p.cost for p in front],
        [p.score for p in front],
        "-o",
        color="#d1495b",
        label="Pareto front",
        zorder=3,
    )
    for point, offset in zip(points, label_offsets(points), strict=True):
        axes.annotate(
            point.name,
            (point.cost, point.score),
            textcoords="offset points",
            xytext=offset,
            fontsize=7,
        )
    axes.set_xlabel(axis)
    axes.set_ylabel("best val mIoU")
    axes.set_title(f"{len(points)} runs: accuracy against cost")
    axes.grid(alpha=0.3)
    axes.margins(0.15)  # room for the labels of the points at the edges
    axes.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return len(points)

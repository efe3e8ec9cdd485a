"""compare.png's labels: runs that lie close together must not print their names over each other."""

from __future__ import annotations

from pathlib import Path

from cityseg.comparison.plot import LABEL_OFFSET, LINE_STEP, Point, label_offsets, write_plot
from cityseg.comparison.rows import RunRow


def test_far_apart_points_keep_the_usual_offset() -> None:
    points = [Point("a", 1.0, 0.5), Point("b", 5.0, 0.9), Point("c", 9.0, 0.7)]
    assert label_offsets(points) == [LABEL_OFFSET] * 3


def test_close_points_stack_their_labels_a_line_apart() -> None:
    # segformer-b0 and lraspp-large at about 3.5M parameters, as in the convergence runs
    points = [
        Point("segformer-b0", 3.72, 0.804),
        Point("fpn", 7.05, 0.889),
        Point("lraspp-large", 3.24, 0.802),
        Point("lraspp-large-120", 3.24, 0.803),
        Point("lraspp-small", 1.09, 0.784),
    ]
    offsets = label_offsets(points)
    x, y = LABEL_OFFSET
    assert offsets == [(x, y), (x, y), (x, y - LINE_STEP), (x, y - 2 * LINE_STEP), (x, y)]


def test_a_chain_of_neighbours_never_shares_a_line() -> None:
    """b is near a and c; c is near b only: c still goes below b's label."""
    points = [Point("a", 0.0, 0.0), Point("b", 0.1, 0.0), Point("c", 0.2, 0.0), Point("z", 1, 1)]
    lines = [(LABEL_OFFSET[1] - y) // LINE_STEP for _, y in label_offsets(points)]
    assert lines == [0, 1, 2, 0]


def test_equal_points_and_a_lone_point() -> None:
    assert label_offsets([Point("only", 2.0, 0.5)]) == [LABEL_OFFSET]
    same = [Point("a", 2.0, 0.5), Point("b", 2.0, 0.5)]
    assert label_offsets(same) == [LABEL_OFFSET, (LABEL_OFFSET[0], LABEL_OFFSET[1] - LINE_STEP)]


def test_close_runs_draw_a_png(tmp_path: Path) -> None:
    rows = [
        RunRow(name=name, path=tmp_path / name, status="complete", params=params, val_miou=miou)
        for name, params, miou in [("a", 3_720_000, 0.80), ("b", 3_240_000, 0.80), ("c", 7e6, 0.9)]
    ]
    path = tmp_path / "compare.png"
    assert write_plot(rows, path) == 3
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

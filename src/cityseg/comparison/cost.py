"""What a run's best model costs: GFLOPs (cached beside it) and, on request, CPU latency.

Parameters and GFLOPs come from TensorFlow's profiler on the frozen graph, as `cityseg benchmark`
counts them; that takes a second or two per model, so the answer is kept in the run's
cost.json, keyed by the weights' SHA-256, and a re-trained best/ is counted afresh.
Latency is never cached: it belongs to this machine and this moment, and `--latency`
times every run in the same process, one after the other, so that the numbers compare.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cityseg.comparison.rows import RunRow
from cityseg.errors import first_line
from cityseg.fsutil import atomic_write_json, read_json_object
from cityseg.inference.bundle import CARD_NAME, card_input_size

logger = logging.getLogger(__name__)

COST_NAME = "cost.json"


def fill_costs(rows: list[RunRow]) -> None:
    """Every row's parameters and GFLOPs, from cost.json or counted now."""
    for row in rows:
        model = row.best_model
        if model is None:
            continue
        try:
            row.params, row.gflops = _cost(row.path, model)
        except Exception as exc:  # a broken bundle is a row with a reason, not a crash
            row.reason = row.reason or f"best/ does not load: {first_line(exc)}"


def latency_ms(model: Path, runs: int) -> float:
    """p50 of one image through `model` at its own size, on this CPU, as benchmark times."""
    from cityseg.deploy.benchmark import sample_inputs, time_model
    from cityseg.inference.runtimes import open_model

    loaded = open_model(model)
    inputs = sample_inputs(1, *card_input_size(loaded.card))
    return time_model(loaded, inputs, runs).latency_ms.p50


def fill_latency(rows: list[RunRow], runs: int) -> None:
    """Every row's `latency_ms`, measured here and now, one model after the other."""
    for row in rows:
        model = row.best_model
        if model is None:
            continue
        try:
            row.latency_ms = latency_ms(model, runs)
        except Exception as exc:
            row.reason = row.reason or f"best/ does not run: {first_line(exc)}"
            continue
        logger.info(f"timed {row.name}: {row.latency_ms:.1f} ms")


def _cost(run: Path, model: Path) -> tuple[int, float]:
    card = json.loads((model / CARD_NAME).read_text())
    sha = str((card.get("weights") or {}).get("sha256", ""))
    cache = run / COST_NAME
    cached = read_json_object(cache) or {}
    if sha and cached.get("sha256") == sha and _numbers(cached, "gflops", "params"):
        return int(cached["params"]), float(cached["gflops"])
    from cityseg.deploy.benchmark import describe_compute
    from cityseg.inference.runtimes import open_model

    loaded = open_model(model)
    cost = describe_compute(loaded, *card_input_size(card))
    atomic_write_json(cache, {"sha256": sha, "gflops": cost.gflops, "params": cost.parameters})
    return cost.parameters, cost.gflops


def _numbers(record: dict[str, Any], *names: str) -> bool:
    return all(isinstance(record.get(name), (int, float)) for name in names)

"""benchmarks/gpu.py, the GPU check: run on the CPU with --tiny so it cannot rot while no
GPU is lent, and its step timing checked on made-up clocks."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_script() -> ModuleType:
    """The script as a module (it imports no TensorFlow until main runs)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def test_step_timing_leaves_out_warmup_and_epoch_boundaries() -> None:
    gpu = load_script()
    # epoch 0: steps end at 10, 11, 13, 16; epoch 1 (after a 100 s checkpoint): 116, 120
    steps = [(0, 10.0, 1.0), (0, 11.0, 1.0), (0, 13.0, 1.0), (0, 16.0, 1.0)]
    steps += [(1, 116.0, 1.0), (1, 120.0, 1.0)]
    # warm-up steps 1-2 and each epoch's step 1 (it would count the checkpoint) are out
    assert gpu.step_intervals(steps, warmup=2) == [2.0, 3.0, 4.0]
    assert gpu.step_intervals(steps, warmup=0) == [1.0, 2.0, 3.0, 4.0]
    assert gpu.step_intervals([], warmup=1) == []


def test_a_failed_xla_run_is_retried_without_xla_and_its_error_kept_short() -> None:
    gpu = load_script()
    assert gpu.xla_retry_needed({"error": "InternalError: x", "policy": {"jit_compile": True}})
    assert not gpu.xla_retry_needed({"error": "UsageError: x", "policy": {"jit_compile": False}})
    assert not gpu.xla_retry_needed({"policy": {"jit_compile": True}})
    graph_error = (
        'Graph execution error:\n\nDetected at node X defined at:\n  File "a.py", line 1\n'
        "during context: mixed precision is disallowed.\n\t [[{{node X}}]] [Op:f]"
    )
    assert gpu.one_line(RuntimeError(graph_error)) == (
        "RuntimeError: during context: mixed precision is disallowed."
    )


def check_training(train: dict[str, Any], gpu_count: int) -> None:
    assert train["timing"] == "steps" and train["timed_steps"] >= 1
    assert train["images_per_second"] > 0 and train["epoch_images_per_second"] > 0
    assert train["loss_finite"] and all(math.isfinite(x) for x in train["losses"])
    policy = train["policy"]
    assert policy["global_policy"] == "mixed_float16"
    assert policy["layer_policies"]["mixed_float16"] > 10
    assert policy["last_layer"]["compute_dtype"] == "float32"
    assert policy["output_dtype"] == "float32"
    assert policy["optimizer"] == "LossScaleOptimizer"
    assert (train["peak_bytes"] is None) == (gpu_count == 0)


def check_predict(predict: dict[str, Any]) -> None:
    assert predict["size"] == [64, 128]
    rows = {(row["format"], row["policy"]): row for row in predict["results"]}
    assert set(rows) == {
        ("keras", "float32"),
        ("savedmodel", "float32"),
        ("keras", "mixed_float16"),
    }
    assert all(row["images_per_second"] > 0 for row in rows.values())
    assert predict["keras_compute"]["parameters"] > 0
    assert "built_into_tensorflow" in predict["tensorrt"]


@pytest.mark.slow
def test_tiny_run_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--work", str(tmp_path), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["status"] == "ok" and report["checks"] and all(report["checks"].values())
    device = report["environment"]["device"]
    assert device["name"] and report["environment"]["versions"]["tensorflow"]
    check_training(report["train"], device["count"])
    assert report["input"]["images_per_second"] > 0
    check_predict(report["predict"])
    if device["count"] < 2:
        assert "GPU" in report["mirrored"]["skipped"]
    assert "check loss_finite" in result.stdout and "predict savedmodel" in result.stdout

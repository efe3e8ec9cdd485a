"""Multi-worker training with real worker processes on 127.0.0.1.

Each worker runs the real CLI (`cityseg train`, strategy auto) with its own TF_CONFIG,
wrapped only to add a Keras callback that dumps the weights the worker ended with and,
in the first phase, kills the worker with SIGKILL after its first epoch, as `kill -9` on
every machine would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cityseg.config import Strategy
from cityseg.errors import UsageError
from cityseg.training.cluster import Cluster, choose_strategy, read_cluster
from serving import free_port

WORKER = """
import json, os, signal, sys
from pathlib import Path
import numpy as np
import cityseg.training.train as train_module
from cityseg._tf import keras
from cityseg.cli import run

dump, kill_after = Path(sys.argv[1]), int(sys.argv[2])

class DumpWeights(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        dump.with_suffix(".json").write_text(json.dumps(logs))
        if epoch + 1 == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, logs=None):
        np.savez(dump, *[np.asarray(w) for w in self.model.get_weights()])

real = train_module.train  # `cityseg train` calls it through `cityseg.train(callbacks=())`
train_module.train = lambda config, callbacks=(), **kw: real(
    config, callbacks=[*callbacks, DumpWeights()], **kw
)
sys.exit(run(sys.argv[3:]))
"""


def tf_config(addresses: list[str], index: int) -> str:
    return config_text({"worker": addresses}, {"type": "worker", "index": index})


def start_workers(
    tmp: Path, phase: str, kill_after: int, args: list[str]
) -> list[subprocess.Popen[str]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    script = tmp / "worker.py"
    script.write_text(WORKER)
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": tf_config(addresses, index), "CUDA_VISIBLE_DEVICES": ""}
        dump = tmp / f"{phase}-worker{index}.npz"
        command = [sys.executable, str(script), str(dump), str(kill_after), *args]
        workers.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=tmp,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return workers


def finish(workers: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    results = []
    for worker in workers:
        try:
            output, _ = worker.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
        results.append((worker.returncode, output))
    return results


@pytest.mark.slow
def test_two_workers_train_resume_and_end_with_identical_weights(
    train_data: Path, tmp_path: Path
) -> None:
    project = tmp_path / "runs"
    args = [
        "train", "--data", str(train_data), "--project", str(project), "--name", "mw",
        "--arch", "pspnet", "--backbone", "resnet18", "--weights", "none",
        "--size", "48x96", "--crop", "48x48", "--epochs", "2", "--batch", "4",
        "--steps-per-epoch", "2", "--aug", "none", "--patience", "0", "--precision", "float32",
    ]  # fmt: skip
    killed = finish(start_workers(tmp_path, "first", 1, args))
    assert [code for code, _ in killed] == [-signal.SIGKILL] * 2, killed
    run_dir = project / "mw"
    assert json.loads((run_dir / "last" / "state.json").read_text())["epoch"] == 1

    resumed = finish(start_workers(tmp_path, "second", 0, ["train", "--resume", str(run_dir)]))
    assert [code for code, _ in resumed] == [0, 0], resumed
    chief_output, other_output = resumed[0][1], resumed[1][1]
    assert "resuming at epoch 2/2" in chief_output and "MultiWorkerMirroredStrategy" in chief_output
    assert "2 replica(s) (MultiWorkerMirroredStrategy over 2 workers)" in chief_output
    assert "the chief wrote the run folder" in other_output

    assert sorted(p.name for p in project.iterdir()) == ["mw"]  # exactly one run directory
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["runs"]  # no leftovers
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1]

    with (
        np.load(tmp_path / "second-worker0.npz") as chief,
        np.load(tmp_path / "second-worker1.npz") as other,
    ):
        assert len(chief.files) == len(other.files) > 10
        for name in chief.files:  # every weight, BatchNorm statistics included
            np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    logs = [json.loads((tmp_path / f"second-worker{i}.json").read_text()) for i in range(2)]
    logs[0].pop("seconds", None)  # the chief's epoch time, for metrics.csv
    assert logs[0] == logs[1]  # the same epoch scores on both workers
    assert float(rows[-1]["val_miou"]) == pytest.approx(logs[0]["val_miou"], abs=1e-6)
    assert_val_miou_is_over_the_whole_split(run_dir, train_data, logs[0]["val_miou"])


def assert_val_miou_is_over_the_whole_split(run_dir: Path, data: Path, logged: float) -> None:
    """Each worker scored half of val (as 48x48 tiles of the 48x96 images: the run trains
    on random crops, each worker drawing its own); their sum must equal scoring all of
    it at once."""
    from cityseg.evaluation.metrics import ConfusionMatrix
    from cityseg.inference.bundle import load_bundle
    from cityseg.training.models import build_from_card
    from cityseg.training.pipeline import DataConfig, make_dataset

    bundle = load_bundle(run_dir / "last", build_from_card)
    assert (bundle.card["height"], bundle.card["width"]) == (48, 96)  # runs whole images
    assert (bundle.card["crop"]["height"], bundle.card["crop"]["width"]) == (48, 48)
    at_crop = load_bundle(run_dir / "last", lambda c: build_from_card({**c, "width": 48}))
    config = DataConfig(
        height=48, width=96, batch_size=2, aug="none", scheme="categories", crop=(48, 48)
    )
    confusion = ConfusionMatrix(8)
    for images, masks in make_dataset(data, "val", config, training=False):
        probs = at_crop.model.predict(images, verbose=0)
        confusion.update(masks.numpy(), probs.argmax(-1))
    assert confusion.scores().mean_iou == pytest.approx(logged, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])  # the coordination leader waits differently
def test_a_worker_that_never_starts_gives_one_line(
    train_data: Path, tmp_path: Path, rank: int
) -> None:
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    missing = addresses[1 - rank]
    env = {**os.environ, "TF_CONFIG": tf_config(addresses, rank), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cityseg",
            "train",
            "--data",
            str(train_data),
            "--project",
            str(tmp_path / "runs"),
            "--arch",
            "pspnet",
            "--backbone",
            "resnet18",
            "--weights",
            "none",
            "--size",
            "48x96",
            "--worker-timeout",
            "3",
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and missing in last and "within 3s" in last, last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def config_text(cluster: object, task: object) -> str:
    return json.dumps({"cluster": cluster, "task": task})


WORKER0 = {"type": "worker", "index": 0}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (config_text({}, WORKER0), "'worker'"),
        (config_text({"worker": ["a:1"]}, {"type": "worker", "index": 3}), "index 3"),
        (config_text({"worker": ["nohost"]}, WORKER0), "host:port"),
        (config_text({"worker": ["a:1"], "ps": ["b:2"]}, WORKER0), "ps"),
        (config_text({"worker": ["a:1"]}, {"type": "evaluator", "index": 0}), "evaluator"),
        (config_text({"worker": ["a:1", "a:1"]}, WORKER0), "twice"),
    ],
)
def test_malformed_tf_config_is_one_line(value: str, why: str) -> None:
    with pytest.raises(UsageError, match="TF_CONFIG is malformed") as excinfo:
        read_cluster({"TF_CONFIG": value})
    assert why in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_malformed_tf_config_through_the_cli(
    cli, train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CONFIG", "{oops")
    result = cli("train", "--data", train_data, "--project", tmp_path, "--weights", "none")
    assert result.exit_code == 2 and "TF_CONFIG is malformed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_ranks_put_the_chief_first() -> None:
    chief = read_cluster(
        {
            "TF_CONFIG": json.dumps(
                {
                    "cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
                    "task": {"type": "worker", "index": 1},
                }
            )
        }
    )
    assert chief == Cluster(("c:1", "w:1", "w:2"), 2) and not chief.is_chief
    assert read_cluster({}) is None and read_cluster({"TF_CONFIG": " "}) is None


def test_auto_chooses_multiworker_only_for_several_workers() -> None:
    two, one = Cluster(("a:1", "b:1"), 0), Cluster(("a:1",), 0)
    assert choose_strategy(Strategy.auto, two) is Strategy.multiworker
    assert choose_strategy(Strategy.auto, one) is Strategy.auto
    assert choose_strategy(Strategy.auto, None) is Strategy.auto
    assert choose_strategy(Strategy.mirrored, two) is Strategy.mirrored
    with pytest.raises(UsageError, match="needs TF_CONFIG"):
        choose_strategy(Strategy.multiworker, None)

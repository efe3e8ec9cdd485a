"""Shared fixtures: real synthetic Cityscapes zips and a prepared dataset, built once."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from filelock import FileLock

from cityseg.cli import run
from cityseg.dataset.prepare import prepare_dataset
from cityseg.dataset.synthetic import RawDataset, SyntheticSpec, write_raw_dataset


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests without a GPU; TF is imported only when such tests are collected."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    from cityseg._tf import GPUS

    if GPUS:
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason="needs a GPU"))


def _unconfigured_cityseg_logger() -> None:
    logger = logging.getLogger("cityseg")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(autouse=True)
def _cityseg_logger_unconfigured() -> Iterator[None]:
    """Each test starts with the "cityseg" logger as a fresh process has it: the handler
    an API call installs (on stdout, to stay) would otherwise follow the rest of the
    session, from a test or from a session fixture's set-up."""
    _unconfigured_cityseg_logger()
    yield
    _unconfigured_cityseg_logger()


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(self.format(record))


@pytest.fixture
def messages() -> Iterator[list[str]]:
    """What cityseg says while the test runs: the "cityseg" logger's messages at INFO and
    above, formatted, in order. A handler of the test's own, so the API installs none
    (nothing reaches stdout) and the CLI's messages come here rather than to stderr."""
    collected: list[str] = []
    logger = logging.getLogger("cityseg")
    handler, level = _Collect(collected), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield collected
    logger.removeHandler(handler)
    logger.setLevel(level)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `cityseg ARGS...` in-process and capture what it prints."""

    def invoke(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


SMALL_SPEC = SyntheticSpec(height=64, width=128, images_per_city=2, seed=7)


@pytest.fixture(scope="session")
def raw_dataset(tmp_path_factory: pytest.TempPathFactory) -> RawDataset:
    """Synthetic official-layout zips; tests must copy before modifying."""
    return write_raw_dataset(tmp_path_factory.mktemp("raw"), SMALL_SPEC)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, raw_dataset: RawDataset) -> Path:
    """A dataset prepared from `raw_dataset`; read-only for tests."""
    output = tmp_path_factory.mktemp("prepared") / "cityscapes"
    prepare_dataset(raw_dataset.root, output, verify=False, show_progress=False)
    return output


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, untrained 8-category bundle that is quick to build (PSPNet-ResNet18, 48x96)."""
    from cityseg.inference.bundle import save_bundle
    from cityseg.training.models import ModelSpec, build_model, categories_card

    spec = ModelSpec(arch="pspnet", backbone="resnet18", height=48, width=96, weights="none")
    card = {**categories_card(spec), "training": {"run": "tiny", "best": {"val_miou": 0.5}}}
    folder = tmp_path_factory.mktemp("bundle") / "best"
    return save_bundle(build_model(spec), folder, card)


TRAIN_SIZE = (64, 128)


def _prepared_scenes(root: Path, *, images_per_city: int, seed: int, val_ratio: float) -> Path:
    """A prepared dataset of synthetic scenes at the test models' training size."""
    spec = SyntheticSpec(
        height=TRAIN_SIZE[0], width=TRAIN_SIZE[1], images_per_city=images_per_city, seed=seed
    )
    raw = write_raw_dataset(root / "raw", spec)
    prepare_dataset(raw.root, root / "ds", verify=False, show_progress=False, val_ratio=val_ratio)
    return root / "ds"


def shared_folder(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """A folder `build` fills once for the whole session, whichever xdist worker asks first.

    Under `pytest -n`, session fixtures are per worker process; a trained model would be
    trained once per worker. pytest-xdist's documented recipe: the workers' temporary
    folders share a parent, and a file lock there lets the first one build while the
    others wait. A build that failed half-way (no `.complete`) is started afresh.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / f"shared-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough synthetic scenes for a tiny model to learn something in a few epochs."""

    def build(root: Path) -> None:
        _prepared_scenes(root, images_per_city=6, seed=1, val_ratio=0.2)

    return shared_folder(tmp_path_factory, "train-data", build) / "ds"


@pytest.fixture(scope="session")
def parity_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh scenes from the same generator, 24 of them in val, for export parity.

    `train_data` has 6 val images: on so few 64x128 images a handful of pixels moves a
    class's IoU, and int8's mIoU drop on them swung 0.005-0.014 between training runs;
    on these 24 it stayed within +-0.002 over three training runs.
    """
    root = tmp_path_factory.mktemp("parity-data")
    return _prepared_scenes(root, images_per_city=12, seed=7, val_ratio=0.5)


@pytest.fixture(scope="session")
def trained_run(train_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished FPN-EfficientNetB0 run on `train_data` (its best/ has really learnt)."""
    from cityseg.config import TrainConfig
    from cityseg.training.train import train

    def build(project: Path) -> None:
        train(replace(config, project=project))

    config = TrainConfig(
        data=train_data,
        arch="fpn",
        backbone="efficientnetb0",
        weights="none",
        height=TRAIN_SIZE[0],
        width=TRAIN_SIZE[1],
        epochs=8,
        loss="cce",  # wider logit margins than focal losses: int8 export keeps its answers
        batch=4,
        lr=3e-3,
        aug="none",
        patience=0,
        name="learn",
    )
    return shared_folder(tmp_path_factory, "trained-run", build) / config.name

"""What the study tests share: one tiny prepared dataset of 32x64 synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityseg.dataset.prepare import prepare_dataset
from cityseg.dataset.synthetic import SyntheticSpec, write_raw_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune-data")
    raw = write_raw_dataset(root / "raw", SyntheticSpec(height=32, width=64, images_per_city=1))
    prepare_dataset(raw.root, root / "ds", verify=False, show_progress=False, val_ratio=0.3)
    return root / "ds"

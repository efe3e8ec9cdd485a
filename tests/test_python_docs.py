"""docs/python.md is a session that works: its ```python blocks run, in order, in one
namespace, in a fresh folder, so an example that drifts from the API fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    return [match.group(1) for match in BLOCK.finditer(text)]


def test_the_page_has_the_examples_it_promises() -> None:
    blocks = python_blocks(PAGE.read_text())
    joined = "\n".join(blocks)
    for call in ("cityseg.prepare(", "cityseg.remap(", "cityseg.train(", "cityseg.Model(",
                 ".predict(", ".predict_files(", ".evaluate(", "cityseg.evaluate_predictions(",
                 ".export(", ".benchmark(", "cityseg.benchmark("):  # fmt: skip
        assert call in joined, call


@pytest.mark.slow
def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_python"}
    for number, block in enumerate(python_blocks(PAGE.read_text()), start=1):
        code = compile(block, f"{PAGE.name} block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - the page's own examples
    assert (tmp_path / "runs" / "train" / "linknet" / "export" / "tflite").is_dir()
    assert (tmp_path / "mask.png").is_file()
    assert (tmp_path / "runs" / "eval" / "predictions" / "metrics.json").is_file()

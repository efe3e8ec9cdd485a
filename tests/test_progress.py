"""Which progress bar a loop draws: rich on a terminal, tqdm in a notebook, none elsewhere.

Jupyter itself is not started: `in_notebook` is checked against a stand-in IPython
module, and `track` is run with each choice to see that every one yields every item.
"""

from __future__ import annotations

import sys
import types

import pytest

from cityseg import progress
from cityseg.progress import choose_backend, in_notebook, track


@pytest.mark.parametrize(
    ("enabled", "notebook", "terminal", "expected"),
    [
        (True, False, True, "rich"),
        (True, True, False, "tqdm"),
        (True, True, True, "tqdm"),  # a kernel's stderr may claim a terminal; it is not one
        (True, False, False, "none"),  # pipes and CI logs
        (False, True, True, "none"),  # --quiet / show_progress=False wins everywhere
    ],
)
def test_choose_backend(enabled: bool, notebook: bool, terminal: bool, expected: str) -> None:
    assert choose_backend(enabled=enabled, notebook=notebook, terminal=terminal) == expected


def _fake_ipython(monkeypatch: pytest.MonkeyPatch, shell: object) -> None:
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_in_notebook_only_inside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not in_notebook()  # IPython not imported: not a kernel, and it stays unimported
    assert "IPython" not in sys.modules
    _fake_ipython(monkeypatch, None)  # imported, but no shell running
    assert not in_notebook()
    _fake_ipython(monkeypatch, types.SimpleNamespace(config={}))  # terminal IPython
    assert not in_notebook()
    _fake_ipython(monkeypatch, types.SimpleNamespace(config={"IPKernelApp": {}}))
    assert in_notebook()


@pytest.mark.parametrize(("notebook", "terminal"), [(True, False), (False, True), (False, False)])
def test_track_yields_every_item_with_each_bar(
    notebook: bool, terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "in_notebook", lambda: notebook)
    monkeypatch.setattr(type(progress.stderr_console), "is_terminal", property(lambda _: terminal))
    assert list(track(iter(range(5)), 5, "work")) == [0, 1, 2, 3, 4]
    assert list(track(range(3), 3, "off", enabled=False)) == [0, 1, 2]

"""cityseg.logs: where the "cityseg" logger's messages go, and who decides."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from rich.logging import RichHandler

from cityseg import logs
from cityseg.cli import data, deploy, inference, study, training
from cityseg.cli.options import Command

LOGGER = logging.getLogger("cityseg")
CHILD = logging.getLogger("cityseg.dataset.prepare")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_the_handler_writes_plain_lines_to_the_current_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = logs.make_handler("stderr")
    assert type(handler) is not logging.StreamHandler and logs.is_ours(handler)
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)  # as capsys and CliRunner do, after the fact
    long = "warning: " + "x" * 150 + " [bold]a_b.png[/]"
    handler.handle(CHILD.makeRecord("cityseg.x", logging.WARNING, "f", 1, long, (), None))
    assert later.getvalue() == long + "\n"  # one line, unwrapped, unpadded, not markup


def test_on_a_terminal_rich_shows_the_message_alone_and_never_as_markup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("NO_COLOR", raising=False)
    handler = logs.make_handler("stderr")
    assert isinstance(handler, RichHandler)
    record = CHILD.makeRecord(
        "cityseg.x", logging.INFO, "f", 1, "model: [red]runs/a.png[/]", (), None
    )
    handler.handle(record)
    shown = terminal.getvalue()
    assert "model: [red]runs/a.png[/]" in shown  # no time, level or path column either
    assert "\x1b[" not in shown.split("model:")[1].split("[/]")[0]  # nothing highlighted
    assert "INFO" not in shown and "f:1" not in shown


def test_install_only_when_the_logger_has_no_handler() -> None:
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
    assert logs.install("stdout")
    assert len(LOGGER.handlers) == 1 and not LOGGER.propagate and LOGGER.level == logging.INFO
    assert not logs.install("stderr")  # installed once
    assert len(LOGGER.handlers) == 1


def test_a_level_set_before_the_first_call_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    LOGGER.setLevel(logging.WARNING)
    with logs.api_messages(True):
        CHILD.info("hidden")
        CHILD.warning("warning: shown")
    assert capsys.readouterr().out == "warning: shown\n"


def test_a_handler_of_ones_own_takes_over_from_the_api_and_the_cli(
    capsys: pytest.CaptureFixture[str], messages: list[str]
) -> None:
    with logs.api_messages(True):
        CHILD.info("from the api")
    with logs.cli_messages():
        CHILD.info("from the cli")
    assert messages == ["from the api", "from the cli"]
    assert capsys.readouterr() == ("", "")
    assert not any(logs.is_ours(handler) for handler in LOGGER.handlers)


def test_the_api_prints_on_stdout_and_not_verbose_keeps_only_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with logs.api_messages(True):
        CHILD.info("shown")
    with logs.api_messages(False):
        CHILD.info("hidden")
        CHILD.warning("warning: still shown")
    with logs.api_messages(True):
        CHILD.info("shown again")
    assert capsys.readouterr() == ("shown\nwarning: still shown\nshown again\n", "")


def test_the_cli_prints_on_stderr_even_after_the_api_and_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with logs.api_messages(True):  # an earlier API call installed ours on stdout
        CHILD.info("api")
    ours = list(LOGGER.handlers)
    with logs.cli_messages():
        with logs.api_messages(False):  # -q hides the bars, never the messages
            CHILD.info("cli")
    assert LOGGER.handlers == ours  # as it was
    assert capsys.readouterr() == ("api\n", "cli\n")


def test_a_handler_beside_ours_does_not_take_over_from_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pytest's log capture attaches to every logger that does not propagate, which is
    "cityseg" once ours is in place: only a handler without ours beside it takes over."""
    logs.install("stdout")
    beside: list[str] = []
    LOGGER.addHandler(Collect(beside))
    with logs.cli_messages():
        CHILD.info("cli")
    assert capsys.readouterr() == ("", "cli\n") and beside == ["cli"]


class Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def test_every_command_shows_messages_on_stderr() -> None:
    for group in (data, training, inference, deploy, study):
        for command in group.app.registered_commands:
            assert command.cls is Command, command.callback

"""Where cityseg's messages go: the standard `logging` module, under the "cityseg" logger.

Library modules log with `logging.getLogger(__name__)` (children of "cityseg"): a line
for each step a user should see at `INFO` ("model: ...", "run: ...", "epoch 3/40 ..."),
and the problems they should act on at `WARNING` (those lines still start with
"warning:"). Nothing here decides what a message says; this module decides only where
it is shown:

- the CLI (`cli_messages`, around every command) shows them on stderr, since stdout is
  for results a script may read;
- the Python API (`api_messages`, around every call) shows them on stdout, because a
  notebook shows stderr in red as if each line were an error;
- either installs cityseg's own handler only while "cityseg" has none: a program that
  adds its own handler (and sets the level) before the first call takes them over.

Our handler prints the message alone (no time, level or path columns), never reads it as
rich markup (messages quote file and class names) and highlights nothing in it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TextIO

from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler

NAME = "cityseg"
Stream = Literal["stdout", "stderr"]

_cli: ContextVar[bool] = ContextVar("cityseg_cli_messages", default=False)
"""Set while a CLI command runs: its `-q` hides the bars, never the messages."""


class _StandardStream(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stdout` or `sys.stderr` is when a message is
    written, not when the handler was made: pytest's capsys and typer's CliRunner swap
    them, and rich's live progress bar redirects stderr while it draws."""

    def __init__(self, name: Stream) -> None:
        self._target = name
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr if self._target == "stderr" else sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """StreamHandler's constructor assigns the stream; this one is always current."""
        del value


class _RichMessages(RichHandler):
    """RichHandler under a name of ours, so that `is_ours` can tell it from a user's."""


def make_handler(stream: Stream) -> logging.Handler:
    """cityseg's own handler on `stream`: rich's `RichHandler` on a terminal, else a
    plain `StreamHandler` writing each message as it is, one line.

    Plain off a terminal (pipes, CI logs, test captures) because RichHandler renders each
    message as a table row: it wraps at the console width (80 columns when the stream is
    not a terminal) and pads lines with spaces, which would break logs that people grep
    and tests that look for exact substrings of stderr.
    """
    if _is_terminal(stream):
        return _RichMessages(
            console=Console(stderr=stream == "stderr"),
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            highlighter=NullHighlighter(),
            keywords=[],
        )
    handler = _StandardStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _is_terminal(stream: Stream) -> bool:
    isatty = getattr(sys.stderr if stream == "stderr" else sys.stdout, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream (the end of a pytest run)
        return False


def is_ours(handler: logging.Handler) -> bool:
    return isinstance(handler, (_StandardStream, _RichMessages))


def install(stream: Stream) -> bool:
    """Give "cityseg" our handler on `stream`, unless it has a handler already (a user's,
    or ours from an earlier call); True if this call installed it.

    The level becomes INFO unless one was set (`setLevel(logging.WARNING)` before the
    first call keeps only the warnings). Once ours is in place "cityseg" no longer
    propagates, so a root handler (a program's `logging.basicConfig`) does not print each
    message a second time.
    """
    logger = logging.getLogger(NAME)
    if logger.handlers:
        return False
    _add(logger, stream)
    return True


def _add(logger: logging.Logger, stream: Stream) -> None:
    logger.addHandler(make_handler(stream))
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False


@contextmanager
def cli_messages() -> Iterator[None]:
    """While one CLI command runs: messages on stderr, whatever `verbose` it passes.

    Our handler goes on stderr unless "cityseg" has handlers and none of them is ours (a
    user's, who takes them over). Ours on stdout, from an API call earlier in this
    process, is set aside for the command; handlers beside it stay (pytest attaches its
    log capture to every logger that does not propagate). Everything is as it was
    afterwards, so a program that runs `cityseg.cli.run([...])` keeps its own set-up.
    """
    logger = logging.getLogger(NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    if not saved[0] or any(is_ours(handler) for handler in saved[0]):
        for handler in filter(is_ours, saved[0]):
            logger.removeHandler(handler)
        _add(logger, "stderr")
    token = _cli.set(True)
    try:
        yield
    finally:
        _cli.reset(token)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in saved[0]:
            logger.addHandler(handler)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


@contextmanager
def api_messages(verbose: bool) -> Iterator[None]:
    """Around one Python API call: our handler on stdout if "cityseg" has none yet (it
    stays, installed once), and with `verbose=False` only warnings for the call.

    Stdout rather than stderr because a notebook shows stderr in red, as if each line
    were an error, and the API's messages are not. `verbose=False` raises the "cityseg"
    level to WARNING until the call returns; under the CLI it does not, since there
    `-q` (which passes `verbose=False` for the bars) never hid the messages.
    """
    install("stdout")
    if verbose or _cli.get():
        yield
        return
    with only_warnings():
        yield


@contextmanager
def only_warnings() -> Iterator[None]:
    """Warnings but no info messages from the code inside: "cityseg" at WARNING (or
    above, if it was set so) until the block ends."""
    logger = logging.getLogger(NAME)
    level = logger.level
    logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def only_messages_from(name: str) -> Iterator[None]:
    """Info messages from `name` (a "cityseg." child) and warnings from everyone else.

    A study trains inside its trials: its own lines (trial n, each epoch's score) are
    what a user follows, and training's (run folder, epoch bars) would bury them. The
    child keeps the level "cityseg" had, so `verbose=False` or a user's WARNING still
    hides it too.
    """
    parent, chosen = logging.getLogger(NAME), logging.getLogger(name)
    saved = (parent.level, chosen.level)
    chosen.setLevel(parent.getEffectiveLevel())
    parent.setLevel(max(parent.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        parent.setLevel(saved[0])
        chosen.setLevel(saved[1])

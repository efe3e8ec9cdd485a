"""A throwaway PostgreSQL server for the shared-study test, or the reason there is none.

It runs Debian's postgresql binaries (`.ci/run` installs the package when missing) on
a free port on 127.0.0.1, with its data in a temporary folder. PostgreSQL refuses to
run as root, so as root the server runs as the `postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's versioned folder."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(folders[-1]) if folders else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server with trust authentication on 127.0.0.1; yields its database URL.

    Its folder is a fresh one directly in the system's temp folder: pytest's own temp
    folders are private to the user running the tests, and the server user must reach it.
    """
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="cityseg-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    run = lambda *args: subprocess.run(  # noqa: E731
        _as_server_user([str(binaries / args[0]), *args[1:]]),
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    run("initdb", "-D", str(data), "-U", "cityseg", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    run("pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "cityseg", "optuna")
        yield f"postgresql://cityseg@127.0.0.1:{port}/optuna"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)

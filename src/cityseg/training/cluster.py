"""Which machines train together: TF_CONFIG, read and checked before TensorFlow starts.

Multi-worker training is tf.distribute's MultiWorkerMirroredStrategy, configured the way
TensorFlow documents it: every machine runs the same command with its own TF_CONFIG. Two
things are ours. A malformed TF_CONFIG would otherwise surface as a protobuf or gRPC
traceback, so it is checked here in plain Python first. And a worker that never starts
would leave the others waiting forever (the coordination leader blocks in the strategy's
constructor, the others in their first collective), so `join_cluster` checks that every
worker listens first and gives up after a timeout with one line naming those that did not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cityseg.config import Strategy
from cityseg.errors import CitysegError, UsageError

logger = logging.getLogger(__name__)
TASK_TYPES = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """The training cluster as TF_CONFIG describes it, in rank order (chief first)."""

    addresses: tuple[str, ...]
    rank: int
    """This process's place in `addresses`; rank 0 writes the run directory."""

    @property
    def size(self) -> int:
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"worker {self.rank} of {self.size} ({self.addresses[self.rank]})"


def read_cluster(environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The cluster TF_CONFIG names, or None when it is unset or empty."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"it is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise _bad("it must be a JSON object with 'cluster' and 'task'")
    addresses = _addresses(config.get("cluster"))
    rank = _rank(config.get("task"), config["cluster"])
    if rank >= len(addresses):
        raise _bad(f"task index points past the {len(addresses)} listed workers")
    return Cluster(tuple(addresses), rank)


def _bad(why: str) -> UsageError:
    return UsageError(f"TF_CONFIG is malformed: {why}; see docs/train.md, 'Several machines'")


def _addresses(cluster: Any) -> list[str]:
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise _bad("'cluster' must map 'worker' (and optionally 'chief') to host:port lists")
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise _bad(f"task types {unknown} are not used by multi-worker training")
    if len(cluster.get("chief", [])) > 1:
        raise _bad("there can be only one 'chief'")
    addresses: list[str] = []
    for task_type in TASK_TYPES:
        listed = cluster.get(task_type, [])
        if not isinstance(listed, list):
            raise _bad(f"cluster.{task_type} must be a list of host:port strings")
        for address in listed:
            if not isinstance(address, str) or not _host_port(address):
                raise _bad(f"{address!r} in cluster.{task_type} is not host:port")
            addresses.append(address)
    if len(set(addresses)) != len(addresses):
        raise _bad("an address is listed twice")
    return addresses


def _host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _rank(task: Any, cluster: dict[str, Any]) -> int:
    if not isinstance(task, dict):
        raise _bad('\'task\' must be an object like {"type": "worker", "index": 0}')
    task_type, index = task.get("type"), task.get("index")
    if task_type not in TASK_TYPES or task_type not in cluster:
        raise _bad(f"task type {task_type!r} is not one of the cluster's {sorted(cluster)}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise _bad(f"task index must be a whole number from 0, got {index!r}")
    if index >= len(cluster[task_type]):
        raise _bad(f"task index {index} but cluster.{task_type} lists {len(cluster[task_type])}")
    return index if task_type == "chief" else len(cluster.get("chief", [])) + index


def choose_strategy(requested: Strategy, cluster: Cluster | None) -> Strategy:
    """`auto` becomes multiworker when TF_CONFIG names more than one worker."""
    if requested is Strategy.multiworker and cluster is None:
        raise UsageError(
            "--strategy multiworker needs TF_CONFIG set on every worker "
            "(see docs/train.md, 'Several machines')"
        )
    if requested is Strategy.auto and cluster is not None and cluster.size > 1:
        return Strategy.multiworker
    return requested


def unreachable(addresses: list[str], probe_seconds: float = 1.0) -> list[str]:
    """The addresses that refuse or ignore a TCP connection now."""
    missing = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), probe_seconds):
                pass
        except OSError:
            missing.append(address)
    return missing


def wait_for_peers(cluster: Cluster, timeout: float) -> None:
    """Return once every other worker is up; one line naming those that are not.

    TensorFlow waits for a missing worker without end, holding the GIL (neither a Python
    thread nor a signal handler can step in): the coordination leader in the strategy's
    constructor, the others in their first collective. So, before any of that, each
    worker listens on its own TF_CONFIG port (handshakes complete in the kernel, nothing
    is read) and connects to the others' until all answer. The port is released just
    before TensorFlow's server binds it.
    """
    others = [a for rank, a in enumerate(cluster.addresses) if rank != cluster.rank]
    port = int(cluster.addresses[cluster.rank].rpartition(":")[2])
    try:
        listener = socket.create_server(("", port), backlog=128)
    except OSError as exc:
        raise CitysegError(
            f"cannot listen on port {port} ({cluster.describe()}): {exc.strerror or exc}; "
            "free it or give this worker another port in TF_CONFIG"
        ) from None
    with listener:
        listener.setblocking(False)
        deadline = time.monotonic() + timeout
        missing = unreachable(others)
        while missing and time.monotonic() < deadline:
            _drain(listener)
            time.sleep(0.25)
            missing = unreachable(missing)
    if missing:
        raise CitysegError(
            f"{', '.join(missing)} did not answer within {timeout:g}s ({cluster.describe()}); "
            "start the same command there with its own TF_CONFIG, or raise --worker-timeout"
        )


def _drain(listener: socket.socket) -> None:
    """Close the probes that connected, so the backlog never fills on a long wait."""
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # BlockingIOError: none waiting
            return
        connection.close()


def join_cluster(cluster: Cluster, timeout: float) -> Any:
    """A MultiWorkerMirroredStrategy whose workers have all answered one collective."""
    from cityseg._tf import tf
    from cityseg.training.distributed import sum_over_workers

    logger.info(f"cluster: {cluster.describe()}; waiting up to {timeout:g}s for every worker")
    wait_for_peers(cluster, timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    sum_over_workers(strategy, [1.0])  # returns once every worker has joined
    return strategy

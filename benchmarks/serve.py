"""What the HTTP layer of `cityseg serve` adds to a prediction, under a bounded local load.

Three ways to get the same mask for the same synthetic PNG (drawn by
cityseg.dataset.synthetic), each with the same closed-loop load: `--concurrency` workers,
`--requests` requests in all:

    http     a real `cityseg serve --model M` process (uvicorn, one worker) on a free
             127.0.0.1 port; each worker thread POSTs the PNG bytes to /predict over its own
             keep-alive connection (the standard library's http.client, with the multipart
             body built once) and reads the whole colour-mask PNG answer.
             Latency: request sent -> last byte of the answer received.
    direct   the same bundle loaded in this process; each worker hands
             `predictor.predict([rgb])` to one model thread (a FIFO queue) and waits for
             it: exactly the call the server makes under its lock (resize to the model's
             input, forward pass, probabilities back to the image's size, argmax), on the
             already-decoded RGB array, one call at a time. Latency: call submitted ->
             mask returned, including the wait for the model, as a request waits in the
             server.
    codec    `direct` plus the server's image work around it, still in-process: decode the
             PNG bytes, the model call (same FIFO thread), colourise, encode the answer PNG,
             on the worker threads as the server does them on its threadpool.

So `http - direct` is what serving adds around the model call: the upload's transfer,
FastAPI's routing, multipart parsing and checks, the threadpool hop, PNG decoding of the
upload, colourising, PNG encoding of the answer and its transfer back. Both sides
serialise model calls the same way, so queueing is in both.
`codec - direct` is the PNG part of it, `http - codec` the HTTP stack and transfer.

The modes are run alternately (`--rounds`) and their latencies pooled, so background load
(a shared machine) hits both alike. Without --model, a tiny untrained bundle
(PSPNet-ResNet18, 48x96, `weights none`) is built in a temporary folder: nothing is
downloaded, and a small model makes the serving overhead the larger part, which is what is
measured here. The client runs on the same machine as the server and takes CPU from it.

    python benchmarks/serve.py [--model runs/train/fpn/best] [--size 256x512]
                               [--requests 200] [--concurrency 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cityseg.config import OutputFormat
from cityseg.dataset.synthetic import draw_scene
from cityseg.images import decode_image, encode_png
from cityseg.inference.bundle import save_bundle
from cityseg.inference.predictor import load_predictor
from cityseg.inference.render import render
from cityseg.training.models import ModelSpec, build_model, categories_card

TARGET_P95_OVERHEAD_MS = 30.0


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def tiny_bundle(folder: Path) -> Path:
    """An untrained 8-category bundle, built from library calls (no download)."""
    spec = ModelSpec(arch="pspnet", backbone="resnet18", height=48, width=96, weights="none")
    card = categories_card(spec, run="benchmark")
    return save_bundle(build_model(spec), folder / "best", card)


def multipart_upload(png: bytes) -> tuple[bytes, str]:
    """The multipart/form-data body of an `image` field, built once: the load generator
    shares the server's 2 cores, so it should spend as little CPU per request as it can."""
    boundary = "cityseg-benchmark-boundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="image"; filename="bench.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return (
        head + png + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    """`cityseg serve` on 127.0.0.1:port; returns once /readyz answers 200."""
    command = [sys.executable, "-m", "cityseg", "serve", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    # Run from the temp folder, where no data/cityscapes is found: no dataset is loaded.
    process = subprocess.Popen(command, cwd=tempfile.gettempdir(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            assert process.stderr is not None
            raise SystemExit(f"cityseg serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("cityseg serve was not ready within 300 s")


def closed_loop(
    requests: int, concurrency: int, make_worker: Callable[[], Callable[[], None]]
) -> tuple[list[float], float]:
    """Run `requests` calls on `concurrency` threads; (latencies in s, wall time in s).

    `make_worker` is called once per thread (a per-thread HTTP connection, say).
    """
    counter = iter(range(requests))
    counter_lock = threading.Lock()
    latencies: list[float] = []

    def loop() -> None:
        call = make_worker()
        while True:
            with counter_lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            with counter_lock:
                latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop) for _ in range(concurrency)]:
            future.result()
    return latencies, time.perf_counter() - start


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000.0, q))


Worker = Callable[[], Callable[[], None]]
"""Makes one client's call: each concurrent client gets its own (its own connection)."""
Results = dict[str, tuple[list[float], float]]
"""Per mode: every call's latency in seconds, and the wall time of the timed loops."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a bundle folder (default: a tiny one)")
    parser.add_argument("--size", type=parse_size, default=(256, 512), help="image HxW")
    parser.add_argument("--requests", type=int, default=200, help="per mode, in all rounds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the three modes")
    parser.add_argument("--warmup", type=int, default=8, help="untimed calls per round")
    return parser.parse_args()


def in_process_workers(
    predictor: Any, model_thread: ThreadPoolExecutor, png: bytes
) -> dict[str, Worker]:
    """The baseline (the model call alone) and the PNG work a request adds around it.

    One model thread fed by a FIFO queue: calls are serialised as in the server, and in
    arrival order (a bare Lock lets one thread re-take it and starve the others, which
    turns the baseline's p95 into scheduling noise)."""
    rgb = decode_image(png, "upload")

    def direct_worker() -> Callable[[], None]:
        return lambda: model_thread.submit(predictor.predict, [rgb]).result()

    def codec_worker() -> Callable[[], None]:
        def call() -> None:
            image = decode_image(png, "upload")
            mask = model_thread.submit(predictor.predict, [image]).result()[0]
            colour = render(
                image,
                mask,
                format=OutputFormat.colour,
                palette=predictor.palette,
                class_names=predictor.classes,
            )
            encode_png(colour, rgb=True)

        return call

    return {"direct": direct_worker, "codec": codec_worker}


def http_worker_of(port: int, png: bytes, clients: list[http.client.HTTPConnection]) -> Worker:
    body, content_type = multipart_upload(png)

    def http_worker() -> Callable[[], None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        clients.append(connection)

        def call() -> None:
            headers = {"Content-Type": content_type}
            connection.request("POST", "/predict", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {answer[:200]!r}")

        return call

    return http_worker


def alternate(workers: dict[str, Worker], args: argparse.Namespace) -> Results:
    """Each mode in turn, `args.rounds` times, so that a slow spell of the machine falls
    on every mode alike."""
    results: Results = {mode: ([], 0.0) for mode in workers}
    per_round = max(args.requests // args.rounds, 1)
    for _ in range(args.rounds):
        for mode, worker in workers.items():
            closed_loop(args.warmup, args.concurrency, worker)
            latencies, wall = closed_loop(per_round, args.concurrency, worker)
            pooled, total = results[mode]
            results[mode] = (pooled + latencies, total + wall)
    return results


def measure(model: Path, png: bytes, args: argparse.Namespace) -> Results:
    predictor = load_predictor(model)
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
    port = free_port()
    server = start_server(model, port)
    clients: list[http.client.HTTPConnection] = []
    try:
        answer = httpx.post(
            f"http://127.0.0.1:{port}/predict", files={"image": ("b.png", png)}, timeout=120
        )
        assert decode_image(answer.content, "answer").shape == (*args.size, 3)
        workers = in_process_workers(predictor, model_thread, png)
        workers["http"] = http_worker_of(port, png, clients)
        return alternate(workers, args)
    finally:
        model_thread.shutdown()
        for client in clients:
            client.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def print_table(results: Results) -> None:
    print("| mode | p50 | p95 | throughput |")
    print("|---|---|---|---|")
    stats = {}
    for mode, label in (
        ("direct", "direct: model call in-process"),
        ("codec", "in-process: PNG decode + model + colourise + PNG encode"),
        ("http", "HTTP POST /predict (real uvicorn, 127.0.0.1)"),
    ):
        latencies, wall = results[mode]
        p50, p95 = percentile_ms(latencies, 50), percentile_ms(latencies, 95)
        stats[mode] = (p50, p95)
        print(f"| {label} | {p50:.1f} ms | {p95:.1f} ms | {len(latencies) / wall:.1f} req/s |")
    d50 = stats["http"][0] - stats["direct"][0]
    d95 = stats["http"][1] - stats["direct"][1]
    verdict = "met" if d95 < TARGET_P95_OVERHEAD_MS else "NOT met"
    print(f"| **HTTP overhead** (http - direct) | {d50:+.1f} ms | {d95:+.1f} ms | |")
    for name, high, low in (
        ("of which PNG work (codec - direct)", "codec", "direct"),
        ("of which HTTP stack (http - codec)", "http", "codec"),
    ):
        print(
            f"| {name} | {stats[high][0] - stats[low][0]:+.1f} ms "
            f"| {stats[high][1] - stats[low][1]:+.1f} ms | |"
        )
    print(f"\ntarget p95 overhead < {TARGET_P95_OVERHEAD_MS:.0f} ms: {verdict}")


def main() -> None:
    args = parse_args()
    height, width = args.size
    rgb = draw_scene(np.random.default_rng(0), height, width).image
    png = encode_png(rgb, rgb=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cityseg-bench-") as tmp:
        # Absolute: the server runs from the temporary folder.
        model = args.model.resolve() if args.model is not None else tiny_bundle(Path(tmp))
        results = measure(model, png, args)
    load_after = os.getloadavg()
    model_name = str(args.model) if args.model else "tiny pspnet-resnet18 48x96 (untrained)"
    requests = len(results["direct"][0])
    print(
        f"\n{height}x{width} PNG ({len(png) / 1024:.0f} KB), model {model_name}, "
        f"{requests} requests per mode, {args.concurrency} concurrent, "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs, load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n"
    )
    print_table(results)


if __name__ == "__main__":
    main()

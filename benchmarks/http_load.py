"""The HTTP client of the serving benchmarks: closed-loop keep-alive clients against one server.

publish_bench and serving_bench measure `clickrec serve` (and a bare app) with the same client,
so that their latencies compare: `clients` threads, one keep-alive `http.client` connection
each, all starting together, each sending its own seeded list of user ids (90 % known users
`user-<n>`, 10 % unknown ones).
"""

from __future__ import annotations

import http.client
import random
import socket
import statistics
import subprocess
import threading
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(qs[49] * 1000, 3), "p99_ms": round(qs[98] * 1000, 3),
            "mean_ms": round(statistics.fmean(samples) * 1000, 3), "samples": len(samples)}


def user_ids(users: int, count: int, seed: int) -> list[str]:
    """`count` ids: 90 % of the `users` known ones (`user-<n>`), 10 % unknown."""
    rng = random.Random(seed)
    return [f"user-{rng.randrange(users)}" if rng.random() < 0.9 else f"stranger-{rng.randrange(10**6)}"
            for _ in range(count)]


def wait_healthy(port: int, server: subprocess.Popen[str], timeout: float) -> None:
    """Until GET /healthz on `port` answers 200; RuntimeError with the server's stderr when it
    exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"the server on port {port} did not come up: "
                               f"{server.stderr.read()[-2000:] if server.stderr else ''}")
        time.sleep(0.2)


def closed_loop(port: int, *, users: int, per_client: int, clients: int, seed: int, n: int,
                timeout: float = 30) -> dict[str, Any]:
    """`clients` threads x `per_client` GET /v1/recommendations/<id>?n=`n`; client i sends
    user_ids(users, per_client, seed + i). Throughput, errors (non-200) and latency percentiles."""
    results: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        ids = user_ids(users, per_client, seed + i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        barrier.wait()
        for uid in ids:
            t = time.perf_counter()
            conn.request("GET", f"/v1/recommendations/{uid}?n={n}")
            resp = conn.getresponse()
            resp.read()
            results[i].append(time.perf_counter() - t)
            errors[i] += resp.status != 200
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    samples = [s for r in results for s in r]
    return {"clients": clients, "errors": sum(errors), "requests_per_second": round(len(samples) / wall, 1),
            **percentiles(samples)}

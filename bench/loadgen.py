"""HTTP load: `wrk` when installed (C, cheap on a small machine: apt-get install -y wrk), else a
threaded Python client with one keep-alive connection per poller."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.harness import percentile


@dataclass
class Load:
    client: str
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(url: str, connections: int, duration: float, threads: int = 2) -> Load:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
                          "--timeout", "5s", url], capture_output=True, text=True, timeout=duration + 60).stdout
    try:
        latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    except AttributeError:
        raise RuntimeError(f"could not read wrk's output:\n{out}") from None
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Load("wrk", requests, errors, rate, _ms(latency["50"]), _ms(latency["99"]))


def run_threads(url: str, connections: int, duration: float) -> Load:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = threading.Barrier(connections + 1)
    deadline = [0.0]

    def poller(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        start.wait()
        while time.perf_counter() < deadline[0]:
            t = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
                continue
            latencies[i].append((time.perf_counter() - t) * 1000)
        conn.close()

    workers = [threading.Thread(target=poller, args=(i,), daemon=True) for i in range(connections)]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + duration
    started = time.perf_counter()
    start.wait()
    for w in workers:
        w.join(duration + 30)
    elapsed = time.perf_counter() - started
    flat = [x for per in latencies for x in per]
    if not flat:
        raise RuntimeError(f"no request to {url} succeeded ({sum(errors)} errors)")
    return Load("python threads", len(flat) + sum(errors), sum(errors), len(flat) / elapsed,
                percentile(flat, 50), percentile(flat, 99))


def load(url: str, connections: int, duration: float) -> Load:
    if shutil.which("wrk"):
        return run_wrk(url, connections, duration)
    return run_threads(url, connections, duration)


def sequential(url: str, count: int) -> list[float]:
    """Latencies (ms) of `count` GETs one after another on one keep-alive connection; raises on a non-200."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    times = []
    try:
        for _ in range(count):
            t = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            times.append((time.perf_counter() - t) * 1000)
            if response.status != 200:
                raise RuntimeError(f"GET {url}: {response.status} {body[:300]!r}")
    finally:
        conn.close()
    return times

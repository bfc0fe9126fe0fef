"""Run wrk with bench/post.lua and parse its text report."""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("post.lua")
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def parse(output: str) -> WrkResult:
    """Requests/s, p50, p99 and error counts from ``wrk --latency`` output."""
    latency = {q: float(v) * _UNIT_MS[unit] for q, v, unit in _LATENCY.findall(output)}
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    socket_errors = _SOCKET.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        rps=float(rps.group(1)) if rps else 0.0,
        p50_ms=latency.get("50", math.nan),
        p99_ms=latency.get("99", math.nan),
        requests=int(requests.group(1)) if requests else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )


def run(
    url: str,
    *,
    connections: int,
    duration: float,
    model: str,
    stream: bool,
    key: str,
    core: int = 1,
    api: str = "chat",
) -> WrkResult:
    """One wrk run (one thread, ``connections`` keep-alive connections) pinned to ``core``;
    ``api`` is the body's format (chat, or messages: Anthropic's, with max_tokens)."""
    argv = [
        "taskset", "-c", str(core),
        "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
        "-s", str(LUA), url, "--", model, "1" if stream else "0", key, api,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not _RPS.search(done.stdout):
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)

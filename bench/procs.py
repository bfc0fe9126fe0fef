"""Pinned child processes: start, wait until ready, measure, always stop."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, key: str | None = None
) -> tuple[int, bytes]:
    """One request to 127.0.0.1 with http.client (no proxy env vars involved)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Proc:
    """A child process pinned to one core, in its own process group, output to a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        core: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.perf_counter()
        self._stopped = False
        # taskset execs the command, so the pid is the server's own pid.
        self.popen = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, port: int, path: str, timeout: float) -> float | None:
        """Seconds from spawn to the first 200 on GET path, or None (exited or timed out)."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.popen.poll() is not None:
                return None
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(port, "GET", path)[0] == 200:
                    return time.perf_counter() - self.started
            time.sleep(0.01)
        return None

    def rss_kib(self) -> int:
        """VmRSS of the process and all its descendants (granian runs a worker child)."""
        return sum(_vmrss_kib(pid) for pid in _tree(self.pid))

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after 5 s. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
        # Children left behind in the group (the leader has exited already).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _vmrss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

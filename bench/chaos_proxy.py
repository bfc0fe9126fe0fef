"""One replica of the proxy under the chaos run: `python -m proxy serve` as a subprocess in a
process group of its own, its output in a file of the work directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fakes.proxy_harness import PROXY_ENV_OVERRIDES, free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


class Proxy:
    """One proxy subprocess (replica `number`), in its own process group, output to a file."""

    def __init__(self, workdir: Path, config: Path, number: int) -> None:
        self.number = number
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"proxy-{number}.log"
        env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        argv = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"proxy {self.number} exited early:\n{self.log()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{self.url}/health/readiness").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(
            f"proxy {self.number} not ready in {START_TIMEOUT}s:\n{self.log()[-3000:]}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """Its exit code (None: still running after `timeout`) and the seconds it took."""
        started = time.monotonic()
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

"""`llm-proxy worker` start-up: a model that cannot chat is refused at once, a port another
process holds is reported as such (its own exit code), and a worker whose supervising proxy is
gone stops by itself."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from worker.tiny import require_torch

require_torch()

from proxy.worker.cli import run_worker  # noqa: E402
from proxy.worker.contract import EXIT_PORT_IN_USE, PARENT_ENV  # noqa: E402
from proxy.worker.model import ModelLoadError, load_tokenizer  # noqa: E402
from proxy.worker.randmodel import build_tokenizer  # noqa: E402


def test_a_model_without_chat_template_is_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_tokenizer(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(ModelLoadError, match="no chat template"):
        load_tokenizer(str(tmp_path))
    args = argparse.Namespace(
        model=str(tmp_path), device="cpu", host="127.0.0.1", port=0,
        max_batch_size=2, max_queue=2, api_key=None,
    )  # fmt: skip
    assert run_worker(args) == 2
    assert "LLM_PROXY_WORKER_CHAT_TEMPLATE" in capsys.readouterr().err


def test_a_worker_whose_proxy_is_gone_stops(tiny_model: Path) -> None:
    """The proxy sets LLM_PROXY_WORKER_PARENT to its pid; a different parent means the proxy
    died (even by SIGKILL) and the worker must not linger holding the model."""
    env = {**os.environ, PARENT_ENV: "1" if os.getpid() != 1 else "2"}
    cmd = [sys.executable, "-m", "proxy", "worker", "--model", str(tiny_model), "--port", "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is gone: stopping" in done.stderr


def test_a_port_another_process_holds_is_reported_with_its_own_exit_code(
    tiny_model: Path,
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cmd = [sys.executable, "-m", "proxy", "worker", "--model", str(tiny_model),
               "--port", str(port)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_PORT_IN_USE, done.stderr[-2000:]
    assert f"port {port} is in use" in done.stderr

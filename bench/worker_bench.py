"""Benchmark of the local transformers worker (issue 4), on a random model big enough that
generation dominates the worker's own overhead (hidden 512, 8 layers, fp32, 2 threads).

    python -m bench.worker_bench [--tokens 64] [--concurrency 8] [--device cpu] [--no-serve]

Figures, all from greedy streaming requests of `--tokens` new tokens each:
  1. the worker, `--concurrency` requests at once: total completion tokens/s;
  2. the same requests one at a time: tokens/s, and the batching gain (target >= 3x);
  3. `transformers serve` (transformers' own OpenAI server) on the same folder and load,
     without and with `--continuous-batching` (target: the worker within 20%, or better);
  4. per-token time of one streamed request against a bare `model.generate` of the same
     length in-process (target: overhead < 10%).
`transformers serve` needs `pip install 'transformers[serving]'`; without it, 3 is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

THREADS = "2"
PROMPT = "Say hello to the test suite, then count from one to ten: request {i}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    cmd: list[str], port: int, log: Path, ready: str, timeout: float = 180
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": THREADS, "LLM_PROXY_WORKER_THREADS": THREADS}
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{cmd[:3]} not ready within {timeout}s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def stream_one(
    http: httpx.AsyncClient, url: str, model: str, i: int, tokens: int, usage_option: bool
) -> int:
    """Stream one reply; return its completion tokens (from the usage the server reports)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    if usage_option:  # `transformers serve` rejects stream_options but always sends usage
        body["stream_options"] = {"include_usage": True}
    completion = 0
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            usage = json.loads(line[5:]).get("usage")
            if usage:
                completion = int(usage["completion_tokens"])
    return completion


async def load(
    url: str, model: str, args: argparse.Namespace, together: bool, usage: bool
) -> float:
    """Total completion tokens per second for `concurrency` requests, at once or one after
    another; the best of `rounds` (the machine may be shared: noise only ever slows down)."""
    n, tokens, best = args.concurrency, args.tokens, 0.0
    async with httpx.AsyncClient(timeout=600) as http:
        await stream_one(http, url, model, -1, 8, usage)  # warm-up
        for _ in range(args.rounds):
            started = time.perf_counter()
            if together:
                counts = await asyncio.gather(
                    *(stream_one(http, url, model, i, tokens, usage) for i in range(n))
                )
            else:
                counts = [await stream_one(http, url, model, i, tokens, usage) for i in range(n)]
            best = max(best, sum(counts) / (time.perf_counter() - started))
    return best


async def per_token(url: str, model: str, tokens: int, repeats: int) -> float:
    async with httpx.AsyncClient(timeout=600) as http:
        await stream_one(http, url, model, 0, 8, True)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            count = await stream_one(http, url, model, 0, tokens, True)
            times.append((time.perf_counter() - started) / count)
        return min(times)


def bare_generate_per_token(folder: Path, tokens: int, repeats: int) -> float:
    """A bare `model.generate` loop in this process: the floor the worker is measured against."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.set_num_threads(int(THREADS))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    messages = [{"role": "user", "content": PROMPT.format(i=0)}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]
        max_new_tokens=tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    times = []
    with torch.inference_mode():
        model.generate(**inputs, generation_config=config)
        for _ in range(repeats):
            started = time.perf_counter()
            out = model.generate(**inputs, generation_config=config)
            count = out.shape[-1] - inputs["input_ids"].shape[-1]
            times.append((time.perf_counter() - started) / count)
    del model
    return min(times)


def worker_figures(folder: Path, args: argparse.Namespace, logs: Path) -> dict[str, float]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "proxy",
        "worker",
        "--model",
        str(folder),
        "--device",
        args.device,
        "--port",
        str(port),
        "--max-batch-size",
        str(args.concurrency),
    ]
    process = start_server(cmd, port, logs / "worker.log", "/health/readiness")
    url = f"http://127.0.0.1:{port}"
    try:
        return {
            "worker_batched_tps": asyncio.run(load(url, "m", args, True, True)),
            "worker_sequential_tps": asyncio.run(load(url, "m", args, False, True)),
            "worker_seconds_per_token": asyncio.run(per_token(url, "m", args.tokens, args.repeats)),
        }
    finally:
        stop_server(process)


def serve_figures(folder: Path, args: argparse.Namespace, logs: Path, cb: bool) -> float | None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(folder),
        "--port",
        str(port),
        "--device",
        args.device,
        "--dtype",
        "float32",
    ]
    if cb:
        cmd += [
            "--continuous-batching",
            "--cb-num-blocks",
            "256",
            "--cb-block-size",
            "32",
            "--cb-max-batch-tokens",
            "512",
        ]
    try:
        process = start_server(cmd, port, logs / f"serve{'-cb' if cb else ''}.log", "/health")
    except RuntimeError as exc:
        print(f"transformers serve{' --continuous-batching' if cb else ''}: skipped ({exc})")
        return None
    try:
        return asyncio.run(load(f"http://127.0.0.1:{port}", str(folder), args, True, False))
    finally:
        stop_server(process)


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    batched, sequential = figures["worker_batched_tps"], figures["worker_sequential_tps"]
    overhead = figures["worker_seconds_per_token"] / figures["bare_seconds_per_token"] - 1
    print(f"\n{args.concurrency} concurrent streams x {args.tokens} tokens, device {args.device}")
    print(f"  worker, batched            {batched:8.1f} tokens/s")
    print(
        f"  worker, one at a time      {sequential:8.1f} tokens/s  gain {batched / sequential:.2f}x"
        " (target >= 3x)"
    )
    for key, label in (("serve_tps", "serve"), ("serve_cb_tps", "serve --continuous-batching")):
        value = figures.get(key)
        if value:
            print(
                f"  transformers {label:27s} {value:8.1f} tokens/s  worker/serve "
                f"{batched / value:.2f}x (target >= 0.8x)"
            )
    print(
        f"  per token: worker stream {figures['worker_seconds_per_token'] * 1000:.2f} ms, bare "
        f"generate {figures['bare_seconds_per_token'] * 1000:.2f} ms, overhead "
        f"{overhead * 100:+.1f}% (target < 10%)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="single requests timed")
    parser.add_argument("--rounds", type=int, default=3, help="loads timed (the best counts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--no-serve", action="store_true", help="skip `transformers serve`")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    from proxy.worker.randmodel import build_random_model

    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        logs = Path(tmp)
        heads = max(args.hidden // 64, 1)
        folder = build_random_model(
            logs / "model", hidden_size=args.hidden, layers=args.layers, heads=heads
        )
        figures: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
        figures.update(worker_figures(folder, args, logs))
        print(json.dumps(figures), flush=True)  # partial figures survive a later failure
        figures["bare_seconds_per_token"] = bare_generate_per_token(
            folder, args.tokens, args.repeats
        )
        if not args.no_serve:
            figures["serve_tps"] = serve_figures(folder, args, logs, cb=False)
            print(json.dumps(figures), flush=True)
            figures["serve_cb_tps"] = serve_figures(folder, args, logs, cb=True)
        figures["load_average_after"] = os.getloadavg()[0]
    report(figures, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

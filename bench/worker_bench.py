"""Benchmark of the local transformers worker, on a random model big enough that
generation dominates the worker's own overhead (hidden 512, 8 layers, fp32, 2 threads).

    python -m bench.worker_bench [--tokens 64] [--concurrency 8] [--device cpu] [--no-serve]

All servers run at once and the measurements are interleaved in rounds, keeping the best of
each (a shared machine's noise only slows runs down; interleaving spreads its drift evenly).
Figures, all from greedy streaming requests of `--tokens` new tokens each:
  1. the worker, `--concurrency` requests at once: total completion tokens/s;
  2. the same requests one at a time: tokens/s, and the batching gain (target >= 3x);
  3. `transformers serve` (transformers' own OpenAI server) on the same folder and load,
     without and with `--continuous-batching` (target: the worker within 20%, or better);
  4. per-token time of one streamed request against a bare `model.generate` of the same
     length in-process (target: overhead < 10%).
`transformers serve` needs `pip install 'transformers[serving]'`; without it, 3 is skipped.

    python -m bench.worker_bench --embed [--concurrency 32] [--hidden 384] [--layers 6]

`--embed` measures `--task embed` on a random BERT encoder instead (hidden 384, 6 layers by
default, a MiniLM-sized model), with requests of one text (about 40 tokens) each:
  1. the worker, `--concurrency` requests at once (batched across requests into forward
     passes of up to `--concurrency` texts): texts/s;
  2. the same requests one at a time: texts/s, and the batching gain;
  3. the same texts in one request (the client batching them itself): texts/s;
  4. the ceiling: one bare forward pass over all the texts in-process (no HTTP, no queue).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Target:
    url: str
    model: str
    usage_option: bool  # `transformers serve` rejects stream_options (and always sends usage)


async def load_once(
    http: httpx.AsyncClient, target: Target, args: argparse.Namespace, together: bool
) -> float:
    """Total completion tokens per second for `concurrency` requests, at once or in turn."""
    one = [(target.url, target.model, i, args.tokens, target.usage_option)
           for i in range(args.concurrency)]  # fmt: skip
    started = time.perf_counter()
    if together:
        counts = await asyncio.gather(*(stream_one(http, *a) for a in one))
    else:
        counts = [await stream_one(http, *a) for a in one]
    return sum(counts) / (time.perf_counter() - started)


async def seconds_per_token(http: httpx.AsyncClient, target: Target, tokens: int) -> float:
    started = time.perf_counter()
    count = await stream_one(http, target.url, target.model, 0, tokens, target.usage_option)
    return (time.perf_counter() - started) / count


class BareGenerate:
    """A bare `model.generate` in this process: the floor the worker's stream is measured
    against (same prompt, same length, greedy)."""

    def __init__(self, folder: Path, tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        torch.set_num_threads(int(THREADS))
        self.torch = torch
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        messages = [{"role": "user", "content": PROMPT.format(i=0)}]
        self.inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt",
        )  # fmt: skip
        self.config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]
            max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        self.seconds_per_token()  # warm-up

    def seconds_per_token(self) -> float:
        with self.torch.inference_mode():
            started = time.perf_counter()
            out = self.model.generate(**self.inputs, generation_config=self.config)
        count = out.shape[-1] - self.inputs["input_ids"].shape[-1]
        return (time.perf_counter() - started) / count


def worker_command(folder: Path, args: argparse.Namespace, port: int) -> list[str]:
    return [sys.executable, "-m", "proxy", "worker", "--model", str(folder),
            "--device", args.device, "--port", str(port),
            "--max-batch-size", str(args.concurrency)]  # fmt: skip


def serve_command(folder: Path, args: argparse.Namespace, port: int, cb: bool) -> list[str]:
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder),
           "--port", str(port), "--device", args.device, "--dtype", "float32"]  # fmt: skip
    if cb:  # a small paged cache: on CPU there is no device memory to size it from
        cmd += ["--continuous-batching", "--cb-num-blocks", "256", "--cb-block-size", "32",
                "--cb-max-batch-tokens", "512"]  # fmt: skip
    return cmd


def start_targets(
    folder: Path, args: argparse.Namespace, logs: Path, stack: contextlib.ExitStack
) -> dict[str, Target]:
    """Every server at once, so that the rounds below can interleave them."""
    port = free_port()
    started = start_server(worker_command(folder, args, port), port, logs / "worker.log",
                           "/health/readiness")  # fmt: skip
    stack.callback(stop_server, started)
    targets = {"worker": Target(f"http://127.0.0.1:{port}", "m", True)}
    for name, cb in (("serve", False), ("serve_cb", True)):
        if args.no_serve:
            break
        port = free_port()
        try:
            started = start_server(serve_command(folder, args, port, cb), port,
                                   logs / f"{name}.log", "/health")  # fmt: skip
        except RuntimeError as exc:
            print(f"transformers serve ({name}): skipped ({exc})")
            continue
        stack.callback(stop_server, started)
        targets[name] = Target(f"http://127.0.0.1:{port}", str(folder), False)
    return targets


async def measure(
    targets: dict[str, Target], bare: BareGenerate, args: argparse.Namespace
) -> dict[str, float]:
    """Rounds that interleave every configuration, keeping the best figure of each: a shared
    machine's noise only ever slows a run down, and interleaving spreads its drift evenly."""
    best: dict[str, float] = {}

    def keep(key: str, value: float, better: Any = max) -> None:
        best[key] = better(best[key], value) if key in best else value

    worker = targets["worker"]
    async with httpx.AsyncClient(timeout=600) as http:
        for target in targets.values():
            await stream_one(http, target.url, target.model, -1, 8, target.usage_option)
        for _ in range(args.rounds):
            for name, target in targets.items():
                keep(f"{name}_batched_tps", await load_once(http, target, args, True))
            keep("worker_sequential_tps", await load_once(http, worker, args, False))
            for _ in range(args.repeats):
                keep(
                    "worker_seconds_per_token",
                    await seconds_per_token(http, worker, args.tokens),
                    min,
                )
                keep("bare_seconds_per_token", bare.seconds_per_token(), min)
        health = (await http.get(f"{worker.url}/health")).json()
    best["worker_batches"] = health["batches"]
    return best


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    batched, sequential = figures["worker_batched_tps"], figures["worker_sequential_tps"]
    overhead = figures["worker_seconds_per_token"] / figures["bare_seconds_per_token"] - 1
    print(f"\n{args.concurrency} concurrent streams x {args.tokens} tokens, device {args.device}")
    print(f"  worker, batched            {batched:8.1f} tokens/s")
    print(f"  worker, one at a time      {sequential:8.1f} tokens/s  gain "
          f"{batched / sequential:.2f}x (target >= 3x)")  # fmt: skip
    for key, label in (("serve_batched_tps", "serve"),
                       ("serve_cb_batched_tps", "serve --continuous-batching")):  # fmt: skip
        value = figures.get(key)
        if value:
            print(f"  transformers {label:27s} {value:8.1f} tokens/s  worker/serve "
                  f"{batched / value:.2f}x (target >= 0.8x)")  # fmt: skip
    print(f"  per token: worker stream {figures['worker_seconds_per_token'] * 1000:.2f} ms, bare "
          f"generate {figures['bare_seconds_per_token'] * 1000:.2f} ms, overhead "
          f"{overhead * 100:+.1f}% (target < 10%)")  # fmt: skip
    print(f"  worker batch sizes (size: count): {figures['worker_batches']}")


def embed_texts(count: int) -> list[str]:
    from proxy.worker.randmodel import SENTENCES

    pick = len(SENTENCES)
    return [f"{SENTENCES[i % pick]} {SENTENCES[(i + 3) % pick]} ({i})" for i in range(count)]


async def embed_request(http: httpx.AsyncClient, url: str, texts: str | list[str]) -> int:
    body = {"model": "m", "input": texts, "encoding_format": "float"}
    response = await http.post(f"{url}/v1/embeddings", json=body)
    response.raise_for_status()
    return len(response.json()["data"])


async def embed_load(http: httpx.AsyncClient, url: str, texts: list[str], how: str) -> float:
    """Texts per second: one request per text all at once (`together`) or in turn
    (`sequential`), or every text in one request (`one_request`)."""
    started = time.perf_counter()
    if how == "together":
        done = sum(await asyncio.gather(*(embed_request(http, url, t) for t in texts)))
    elif how == "sequential":
        done = sum([await embed_request(http, url, t) for t in texts])
    else:
        done = await embed_request(http, url, texts)
    return done / (time.perf_counter() - started)


class BareEncode:
    """One forward pass over every text in-process, mean-pooled: the worker's floor."""

    def __init__(self, folder: Path, texts: list[str]) -> None:
        import torch

        from proxy.worker.encoder import load_encoder

        torch.set_num_threads(int(THREADS))
        self.encoder = load_encoder(str(folder), "cpu")
        self.rows = self.encoder.tokenize(texts)
        self.texts_per_second()  # warm-up

    def texts_per_second(self) -> float:
        started = time.perf_counter()
        self.encoder.embed(self.rows)
        return len(self.rows) / (time.perf_counter() - started)


async def measure_embed(url: str, bare: BareEncode, args: argparse.Namespace) -> dict[str, Any]:
    texts = embed_texts(args.concurrency)
    best: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=600) as http:
        await embed_load(http, url, texts[:2], "together")  # warm-up
        for _ in range(args.rounds):
            for how in ("together", "sequential", "one_request"):
                value = await embed_load(http, url, texts, how)
                best[how] = max(best.get(how, 0.0), value)
            best["bare"] = max(best.get("bare", 0.0), bare.texts_per_second())
        best["batches"] = (await http.get(f"{url}/health")).json()["batches"]
    best["tokens_per_text"] = sum(len(r) for r in bare.rows) / len(bare.rows)
    return best


def embed_main(args: argparse.Namespace) -> dict[str, Any]:
    from proxy.worker.randmodel import build_random_encoder

    hidden, layers = args.hidden or 384, args.layers or 6
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        logs = Path(tmp)
        folder = build_random_encoder(logs / "encoder", hidden_size=hidden, layers=layers,
                                      heads=max(hidden // 64, 1))  # fmt: skip
        port = free_port()
        command = [*worker_command(folder, args, port), "--task", "embed"]
        worker = start_server(command, port, logs / "worker.log", "/health/readiness")
        try:
            bare = BareEncode(folder, embed_texts(args.concurrency))
            figures = asyncio.run(measure_embed(f"http://127.0.0.1:{port}", bare, args))
        finally:
            stop_server(worker)
    batched, sequential, bare = figures["together"], figures["sequential"], figures["bare"]
    print(f"\n{args.concurrency} concurrent embedding requests of one text "
          f"({figures['tokens_per_text']:.0f} tokens), hidden {hidden}, {layers} layers, "
          f"device {args.device}")  # fmt: skip
    print(f"  worker, batched            {batched:8.1f} texts/s")
    print(f"  worker, one at a time      {sequential:8.1f} texts/s  gain "
          f"{batched / sequential:.2f}x")  # fmt: skip
    print(f"  worker, all in one request {figures['one_request']:8.1f} texts/s")
    print(f"  bare forward, one batch    {bare:8.1f} texts/s  worker batched/bare "
          f"{batched / bare:.2f}x")  # fmt: skip
    print(f"  worker batch sizes (texts: passes): {figures['batches']}")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best counts)")
    parser.add_argument("--repeats", type=int, default=3, help="single requests per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, help="default 512 (384 with --embed)")
    parser.add_argument("--layers", type=int, help="default 8 (6 with --embed)")
    parser.add_argument("--no-serve", action="store_true", help="skip `transformers serve`")
    parser.add_argument("--embed", action="store_true", help="measure --task embed instead")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.embed:
        figures = embed_main(args)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
    args.hidden, args.layers = args.hidden or 512, args.layers or 8
    from proxy.worker.randmodel import build_random_model

    with (
        tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(tmp)
        heads = max(args.hidden // 64, 1)
        folder = build_random_model(logs / "model", hidden_size=args.hidden, layers=args.layers,
                                    heads=heads)  # fmt: skip
        targets = start_targets(folder, args, logs, stack)
        bare = BareGenerate(folder, args.tokens)
        figures: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
        figures.update(asyncio.run(measure(targets, bare, args)))
        figures["load_average_after"] = os.getloadavg()[0]
    report(figures, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

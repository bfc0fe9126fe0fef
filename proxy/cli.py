"""llm-proxy serve | check | schema."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from proxy.loader import ConfigError, LoadedConfig, load_file

DEFAULT_CONFIG = "proxy.yaml"


def config_path(flag: str | None) -> str:
    """--config, else $LLM_PROXY_CONFIG, else ./proxy.yaml."""
    return flag or os.environ.get("LLM_PROXY_CONFIG") or DEFAULT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-proxy", description="An OpenAI-compatible reverse proxy for LLMs."
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="policy file (default: $LLM_PROXY_CONFIG or ./proxy.yaml)")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    serve.add_argument("--workers", type=int, help="server processes (overrides server.workers)")
    check = commands.add_parser("check", help="validate a policy file and show its routes")
    check.add_argument("path", nargs="?", help="policy file (default as for serve)")
    commands.add_parser("schema", help="print the JSON Schema of proxy.yaml")
    worker = commands.add_parser(
        "worker", help="serve a HuggingFace transformers model (needs the [local] extra)"
    )
    worker.add_argument("--model", required=True, help="a local folder or a hub id")
    worker.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    worker.add_argument(
        "--task", choices=["generate", "embed"], default="generate",
        help="generate: chat completions (a causal LM); embed: /v1/embeddings (an encoder)",
    )  # fmt: skip
    worker.add_argument("--host", default="127.0.0.1")
    worker.add_argument("--port", type=int, default=9000)
    worker.add_argument("--max-batch-size", type=int, default=8)
    worker.add_argument("--max-queue", type=int, default=64)
    worker.add_argument("--api-key", help="require this bearer key (default: $WORKER_API_KEY)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return check(config_path(args.path))
    if args.command == "schema":
        from proxy.config import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "worker":
        worker = importlib.import_module("proxy.worker.cli")  # imports torch: only here
        return int(worker.run_worker(args))
    if args.command is None:
        args = build_parser().parse_args(["serve"])
    return serve(args)


def _load_or_report(path: str) -> LoadedConfig | None:
    try:
        return load_file(path)
    except ConfigError as exc:
        count = len(exc.problems)
        print(f"{path}: {count} problem{'s' if count > 1 else ''}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.render(path)}", file=sys.stderr)
        return None


def check(path: str) -> int:
    loaded = _load_or_report(path)
    if loaded is None:
        return 1
    config = loaded.config
    print(f"{path}: valid")
    for name, model in config.models.items():
        weighted = model.strategy == "weighted" and len(model.routes) > 1
        routes = ", ".join(
            f"{r.upstream}/{r.model or ('<matched>' if '*' in name else name)}"
            + (f" (weight {r.weight:g})" if weighted else "")
            for r in model.routes
        )
        print(f"  {name} [{model.strategy}]: {routes}")
    for key in config.keys:
        print(f"  key {key.name}: models {', '.join(key.models)}")
    if not config.keys:
        print("  no client keys: the proxy is open to anyone who can reach it")
    for overridden in loaded.overridden:
        print(f"  overridden by the environment: {overridden}")
    for warning in loaded.warnings:
        print(f"  warning: {warning}")
    return 0


def serve(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    loaded = _load_or_report(path)
    if loaded is None:
        return 1
    from proxy.api.server import run

    return run(loaded, path, host=args.host, port=args.port, workers=args.workers)

"""Where a target's CPU goes under load: py-spy samples it while wrk drives it.

    python bench/profile.py                                  # proxy-limits, streaming, c=16
    python bench/profile.py --target proxy-limits --mode json --seconds 20 --top 40

Prints the share of samples per package (by the innermost frame, as the profile in
docs/performance.md) and the functions with the most samples, own and inclusive. The target
runs on core 0 and nginx + wrk on core 1, as in bench/run.py. Needs py-spy (pip install
py-spy) with permission to read the target's memory (root, or ptrace allowed).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(REPO))

from bench.report import Outcome  # noqa: E402
from bench.run import LOAD_CORE, exclusive, log, measure, start_targets, start_upstream  # noqa: E402
from bench.targets import Context, registry  # noqa: E402

Counts = collections.Counter[str]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", default="proxy-limits")
    p.add_argument("--mode", choices=("json", "stream"), default="stream")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=30)
    return p.parse_args(argv)


def package_of(frame: str) -> str:
    """`function (path:line)` -> the package the file belongs to."""
    path = frame.rsplit("(", 1)[-1].rsplit(":", 1)[0]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].split(".", 1)[0]
    if path.startswith(str(REPO) + "/proxy/"):
        return "proxy (our code)"
    if "/lib/python3" in path:
        module = path.split("/lib/python3", 1)[1].split("/", 2)[1]
        return module.removesuffix(".py").lstrip("_")
    return "other"


def tally(raw: str) -> tuple[Counts, Counts, Counts, int]:
    """Samples per package (innermost frame), per function own and inclusive."""
    packages: Counts = collections.Counter()
    own: Counts = collections.Counter()
    inclusive: Counts = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        packages[package_of(frames[-1])] += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return packages, own, inclusive, total


def profile(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> str:
    target = registry(["uvicorn"])[args.target]
    stream = args.mode == "stream"
    outcome = Outcome(1, args.seconds, [args.connections], [stream], targets=[])
    ctx = Context(REPO, tmp, start_upstream(tmp, stack))
    live = start_targets([target], ctx, stack, outcome)
    if outcome.skipped:
        raise SystemExit(f"could not start: {outcome.skipped}")
    proc, url = live[target.name]
    assert proc is not None
    measure(url, target, stream, args.connections, 2.0)  # warm up
    out = tmp / "profile.txt"
    spy = [
        py_spy() or "py-spy", "record", "--pid", str(proc.popen.pid), "--rate", str(args.rate),
        "--duration", str(int(args.seconds)), "--format", "raw", "--output", str(out),
        "--nonblocking", "--full-filenames", "--function",
    ]  # fmt: skip
    load = threading.Thread(
        target=measure, args=(url, target, stream, args.connections, args.seconds + 1)
    )
    load.start()
    subprocess.run(spy, check=True, capture_output=True)
    load.join()
    return out.read_text()


def short(frame: str) -> str:
    """`function (/long/path/site-packages/pkg/mod.py:12)` -> `function (pkg/mod.py:12)`."""
    name, _, path = frame.partition(" (")
    for marker in ("site-packages/", str(REPO) + "/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path}"


def render(raw: str, top: int) -> str:
    packages, own, inclusive, total = tally(raw)
    own = collections.Counter({short(k): v for k, v in own.items()})
    inclusive = collections.Counter({short(k): v for k, v in inclusive.items()})
    lines = [f"{total} samples", "", "| package (innermost frame) | share |", "|---|---|"]
    lines += [f"| {name} | {100 * n / total:.1f}% |" for name, n in packages.most_common()]
    lines += ["", "| function (own samples) | share |", "|---|---|"]
    lines += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in own.most_common(top)]
    ours = [(k, v) for k, v in inclusive.most_common() if " (proxy/" in k]
    ours = ours[:top]
    lines += ["", "| our function (inclusive) | share |", "|---|---|"]
    lines += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in ours]
    return "\n".join(lines)


def py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (a virtualenv run without activating it)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if py_spy() is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    os.sched_setaffinity(0, {LOAD_CORE})
    with exclusive(), contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="llm-proxy-profile-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        log(f"profiling {args.target} ({args.mode}, c={args.connections}) ...")
        raw = profile(args, tmp, stack)
    print(render(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

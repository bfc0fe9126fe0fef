"""Interleaved comparison: is A faster or slower than B, on a machine whose speed drifts?

    python bench/interleaved.py                      # proxy-limits vs bare, 6 rounds x 3 s
    python bench/interleaved.py --pairs proxy-limits:bare,proxy-limits-redis:bare
    python bench/interleaved.py --pairs responses:proxy --modes json,stream --concurrency 16

This machine's speed moves by 2x within minutes, so A measured for a minute and then B for a
minute compares two machines. Here each pair is measured in short rounds, A and B one right
after the other (the order swapped every round), on the same core with the same wrk
connections; each round gives one ratio A/B (throughput) and one difference of p50 latency,
and the report gives their median and spread over the rounds. Drift that is slow next to a
round cancels out of each ratio. Each process's own CPU time per request is reported beside
it (from /proc): its ratio is what the throughput ratio would be on a core of their own, and it
holds when something else competes for the core.

The processes are the ones `bench/run.py` starts (same targets, same pinning: the target on
core 0, nginx and wrk on core 1); see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(REPO))

from bench.report import MODE_NAMES, Outcome  # noqa: E402
from bench.run import (  # noqa: E402
    LOAD_CORE,
    _interrupt,
    exclusive,
    log,
    measure,
    start_targets,
    start_upstream,
)
from bench.targets import Context, Target, registry  # noqa: E402
from bench.wrk import WrkResult  # noqa: E402

RESULTS = REPO / "bench" / "results"


@dataclass
class Comparison:
    """The rounds of one pair, in one mode, at one concurrency."""

    subject: str
    baseline: str
    stream: bool
    connections: int
    rounds: list[tuple[WrkResult, WrkResult]] = field(default_factory=list)  # (subject, base)
    cpu_us: list[tuple[float, float]] = field(default_factory=list)  # CPU per request, each

    @property
    def ratios(self) -> list[float]:
        return [s.rps / b.rps for s, b in self.rounds if b.rps > 0]

    @property
    def cpu_ratios(self) -> list[float]:
        """Baseline's CPU per request / subject's: the throughput ratio on a core of their
        own, whatever else runs on the machine (each process's own CPU time is counted)."""
        return [b / s for s, b in self.cpu_us if s > 0 and b > 0]

    @property
    def added_p50_ms(self) -> list[float]:
        return [s.p50_ms - b.p50_ms for s, b in self.rounds]

    @property
    def errors(self) -> int:
        return sum(s.errors + b.errors for s, b in self.rounds)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pairs", default="proxy-limits:bare", help="subject:baseline, comma list")
    p.add_argument("--rounds", type=int, default=6, help="rounds per point (default 6)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--concurrency", default="16,1", help="wrk connections (default 16,1)")
    p.add_argument("--modes", default="json,stream", help="json, stream or both (default)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target/mode")
    p.add_argument("--output", type=Path, default=RESULTS / "interleaved.md")
    args = p.parse_args(argv)
    args.pairs = [tuple(pair.split(":", 1)) for pair in args.pairs.split(",")]
    if bad := [pair for pair in args.pairs if len(pair) != 2]:
        p.error(f"a pair is subject:baseline, got {bad}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    modes = {"json": False, "stream": True}
    args.modes = [modes[m] for m in args.modes.split(",")]
    return args


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 for a target without a process)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(
    target: Target, url: str, pid: int | None, point: Comparison, duration: float
) -> tuple[WrkResult, float]:
    """One run, and the target's CPU microseconds per request over it."""
    before = cpu_seconds(pid)
    result = measure(url, target, point.stream, point.connections, duration)
    spent = cpu_seconds(pid) - before
    return result, spent * 1e6 / max(result.requests, 1)


def rounds(
    subject: Target,
    baseline: Target,
    live: dict[str, tuple[int | None, str]],
    point: Comparison,
    args: argparse.Namespace,
) -> None:
    """`args.rounds` runs of each, alternating which goes first."""
    for number in range(args.rounds):
        order = (subject, baseline) if number % 2 == 0 else (baseline, subject)
        results = {}
        for target in order:
            pid, url = live[target.name]
            results[target.name] = run_measured(target, url, pid, point, args.duration)
        pair = (results[subject.name][0], results[baseline.name][0])
        point.rounds.append(pair)
        point.cpu_us.append((results[subject.name][1], results[baseline.name][1]))
        ratio = pair[0].rps / max(pair[1].rps, 1)
        cpu = point.cpu_us[-1]
        log(
            f"  round {number + 1}/{args.rounds} {MODE_NAMES[point.stream]:13} "
            f"c={point.connections:<3} {subject.name} {pair[0].rps:8.0f} req/s "
            f"({cpu[0]:.0f} us CPU/req) vs {baseline.name} {pair[1].rps:8.0f} req/s "
            f"({cpu[1]:.0f} us) -> {ratio:.3f}x, CPU {cpu[1] / max(cpu[0], 1e-9):.3f}x"
        )


def compare(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> list[Comparison]:
    known = registry(["uvicorn"])
    names = list(dict.fromkeys(name for pair in args.pairs for name in pair))
    if unknown := [n for n in names if n not in known]:
        raise SystemExit(f"unknown target(s) {unknown}; known: {', '.join(known)}")
    outcome = Outcome(1, args.duration, args.concurrency, args.modes, targets=[])
    ctx = Context(REPO, tmp, start_upstream(tmp, stack))
    live = start_targets([known[n] for n in names], ctx, stack, outcome)
    if outcome.skipped:
        raise SystemExit(f"could not start: {outcome.skipped}")
    urls = {name: url for name, (_, url) in live.items()}
    pids = {name: (proc.popen.pid if proc else None, url) for name, (proc, url) in live.items()}
    for name in names:
        for stream in args.modes:
            measure(urls[name], known[name], stream, 16, args.warmup)
    points = []
    for subject, baseline in args.pairs:
        for stream in args.modes:
            for connections in args.concurrency:
                point = Comparison(subject, baseline, stream, connections)
                rounds(known[subject], known[baseline], pids, point, args)
                points.append(point)
    return points


def spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return (
        f"**{statistics.median(values):.{digits}f}** "
        f"(IQR {quartiles[0]:.{digits}f}-{quartiles[2]:.{digits}f}, "
        f"range {min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def render(points: list[Comparison], args: argparse.Namespace) -> str:
    lines = [
        "# Interleaved comparison",
        "",
        f"{args.rounds} rounds of {args.duration:g} s per point, subject and baseline back to "
        f"back, order swapped each round; target on core 0, nginx and wrk on core "
        f"{LOAD_CORE}; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| subject / baseline | mode | c | throughput ratio, median (spread) "
        "| CPU per request, baseline / subject | p50 added vs baseline, ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in points:
        lines.append(
            f"| {point.subject} / {point.baseline} | {MODE_NAMES[point.stream]} "
            f"| {point.connections} | {spread(point.ratios)} | {spread(point.cpu_ratios)} "
            f"| {spread(point.added_p50_ms, 3)} | {point.errors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores: the target on core 0, nginx and wrk on core 1")
    os.sched_setaffinity(0, {LOAD_CORE})
    try:
        with exclusive(), contextlib.ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            points = compare(args, tmp, stack)
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    report = render(points, args)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    raw = [{**asdict(point), "ratios": point.ratios} for point in points]
    args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

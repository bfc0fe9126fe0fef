"""The ledger of a chaos run: every request accounted for, the faults injected, the events,
and the verdict (nothing lost, every event went as it should)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos_spec import DOORS, Result

# Statuses a valid request of the run may get, through any door (docs/semantics.md, Statuses):
# anything else is a bug, unless the run itself explains it (a stored response lost with Redis).
EXPECTED_ERRORS = frozenset({429, 502, 503, 504})
OUTCOMES = ("ok", "error", "inband", "cancelled", "lost")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


@dataclass
class Event:
    at: float  # seconds since the load started
    what: str
    ok: bool = True


@dataclass
class Ledger:
    results: list[Result]
    faults: dict[str, Counter[str]]
    events: list[Event] = field(default_factory=list)
    duration: float = 0.0
    workers: int = 0
    seed: int = 0
    replicas: int = 1
    unhandled_in_log: int = 0
    log_counts: dict[str, int] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)  # the replica checks' figures

    def by_outcome(self, outcome: str) -> list[Result]:
        return [r for r in self.results if r.outcome == outcome]

    @property
    def lost(self) -> list[Result]:
        return self.by_outcome("lost")

    @property
    def unexpected(self) -> list[Result]:
        return [
            r
            for r in self.by_outcome("error")
            if r.status not in EXPECTED_ERRORS and r.excused is None
        ]

    def by_door(self) -> dict[str, dict[str, int]]:
        """Per door: requests sent and each outcome."""
        table = {}
        for door in DOORS:
            results = [r for r in self.results if r.spec.door == door]
            counts = Counter(r.outcome for r in results)
            table[door] = {"sent": len(results), **{o: counts[o] for o in OUTCOMES}}
        return table

    @property
    def passed(self) -> bool:
        return (
            not self.lost
            and not self.unexpected
            and all(e.ok for e in self.events)
            and self.unhandled_in_log == 0
        )

    def doors(self, ok: list[Result]) -> dict[str, Any]:
        """What the summary says of the doors: outcomes per door, stored responses continued,
        the embeddings' cache results, errors the run explains."""
        return {
            "by_door": self.by_door(),
            "continued_ok": sum(1 for r in ok if r.spec.previous is not None),
            "embedding_cache": dict(
                Counter(str(r.cache) for r in ok if r.spec.door == "embeddings")
            ),
            "excused": dict(Counter(r.excused for r in self.results if r.excused)),
        }

    def summary(self) -> dict[str, Any]:
        answered = [r for r in self.results if r.outcome in ("ok", "error", "inband")]
        ok = self.by_outcome("ok")
        errors = self.by_outcome("error")
        ttft = [r.ttft for r in ok if r.spec.stream and r.ttft is not None]
        faults_total = sum(sum(c.values()) for c in self.faults.values())
        return {
            "seconds": round(self.duration, 1),
            "workers": self.workers,
            "seed": self.seed,
            "replicas": self.replicas,
            "sent": len(self.results),
            "by_client": dict(Counter(r.spec.client for r in self.results)),
            "by_replica": dict(sorted(Counter(r.spec.replica for r in self.results).items())),
            "streams": sum(r.spec.stream for r in self.results),
            **self.doors(ok),
            "ok": len(ok),
            "failed_over": sum(1 for r in ok if (r.attempts or 0) > 1),
            "cache_hits": sum(1 for r in ok if r.cache == "hit"),
            "errors_by_status": dict(sorted(Counter(str(r.status) for r in errors).items())),
            "errors_by_code": dict(
                sorted(Counter(f"{r.status} {r.error}" for r in errors).items())
            ),
            "inband_stream_errors": len(self.by_outcome("inband")),
            "inband_by_code": dict(Counter(str(r.error) for r in self.by_outcome("inband"))),
            "client_hang_ups": len(self.by_outcome("cancelled")),
            "lost": len(self.lost),
            "unexpected_statuses": len(self.unexpected),
            "latency_answered": {
                q: percentile([r.seconds for r in answered], v)
                for q, v in (("p50", 0.5), ("p99", 0.99))
            },
            "latency_ok": {
                q: percentile([r.seconds for r in ok], v) for q, v in (("p50", 0.5), ("p99", 0.99))
            },
            "ttft_ok_streams": {q: percentile(ttft, v) for q, v in (("p50", 0.5), ("p99", 0.99))},
            "faults_total": faults_total,
            "faults": {up: dict(c.most_common()) for up, c in self.faults.items()},
            "events": [{"at": round(e.at, 1), "what": e.what, "ok": e.ok} for e in self.events],
            "replica_checks": self.checks,
            "unhandled_errors_in_log": self.unhandled_in_log,
            "proxy_log": self.log_counts,
            "passed": self.passed,
        }

    def render(self) -> str:
        s = self.summary()
        lines = [
            f"chaos ledger: {s['seconds']} s of load, {s['workers']} workers, "
            f"{s['replicas']} replicas, seed {s['seed']}",
            f"  requests sent          {s['sent']:>6}   (by client {s['by_client']}, "
            f"{s['streams']} streams; by replica {s['by_replica']})",
            f"  answered OK            {s['ok']:>6}   (failed over, x-llm-proxy-attempts > 1: "
            f"{s['failed_over']}; cache hits: {s['cache_hits']})",
            f"  errors (own envelope)  {sum(s['errors_by_status'].values()):>6}   by status "
            f"{s['errors_by_status']}",
            f"                                  by code {s['errors_by_code']}",
            f"  in-band stream errors  {s['inband_stream_errors']:>6}   (the format's error event: "
            f"{s['inband_by_code']})",
            f"  client hang-ups        {s['client_hang_ups']:>6}   (the client left mid-stream "
            "on purpose)",
            f"  LOST                   {s['lost']:>6}",
            f"  excused errors         {sum(s['excused'].values()):>6}   {s['excused']}",
            f"  unexpected statuses    {s['unexpected_statuses']:>6}",
            f"  latency, answered      p50 {_fmt(s['latency_answered']['p50'])}   "
            f"p99 {_fmt(s['latency_answered']['p99'])}",
            f"  latency, OK            p50 {_fmt(s['latency_ok']['p50'])}   "
            f"p99 {_fmt(s['latency_ok']['p99'])}",
            f"  first token, OK stream p50 {_fmt(s['ttft_ok_streams']['p50'])}   "
            f"p99 {_fmt(s['ttft_ok_streams']['p99'])}",
        ]
        lines += _door_lines(s)
        lines.append(f"  faults injected        {s['faults_total']:>6}")
        for upstream, faults in s["faults"].items():
            lines.append(f"    {upstream:<8} {', '.join(f'{k} x{v}' for k, v in faults.items())}")
        lines.append("  events")
        for e in s["events"]:
            lines.append(f"    {e['at']:>6.1f} s  {'ok  ' if e['ok'] else 'FAIL'}  {e['what']}")
        for name, figures in s["replica_checks"].items():
            lines.append(f"  {name}: {figures}")
        lines.append(f"  proxy log (all replicas): {s['proxy_log']}")
        lines.append(f"  unhandled errors in the proxy log: {s['unhandled_errors_in_log']}")
        for r in (self.lost + self.unexpected)[:20]:
            lines.append(
                f"  ! {r.outcome} #{r.spec.rid} {r.spec.door} {r.spec.client} {r.spec.model} "
                f"stream={r.spec.stream} status={r.status} after {r.seconds:.2f}s: {r.detail}"
            )
        lines.append("PASSED" if s["passed"] else "FAILED")
        return "\n".join(lines)


def _door_lines(s: dict[str, Any]) -> list[str]:
    """The ledger's table of outcomes per door."""
    lines = ["  per door                 sent     ok  error inband hangup   lost"]
    for door, row in s["by_door"].items():
        figures = "".join(f"{row[k]:>7}" for k in ("sent", *OUTCOMES))
        lines.append(f"    {door:<20}{figures}")
    lines.append(
        f"    stored responses continued OK: {s['continued_ok']}; embeddings by cache "
        f"result: {s['embedding_cache']}"
    )
    return lines

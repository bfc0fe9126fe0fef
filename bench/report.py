"""Markdown report: medians of the runs, each figure next to its ratio to a named baseline."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.targets import Target
from bench.wrk import WrkResult

LATENCY_REFERENCE = "direct"  # added latency is measured against this target
MODE_NAMES = {False: "non-streaming", True: "streaming"}

Key = tuple[str, bool, int]  # (target, stream?, connections)


@dataclass
class Outcome:
    runs: int
    duration: float
    concurrencies: list[int]
    modes: list[bool]
    targets: list[Target]  # the targets that were measured, in column order
    setup: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why
    points: dict[Key, list[WrkResult]] = field(default_factory=dict)  # one result per run
    startup_s: dict[str, list[float]] = field(default_factory=dict)
    rss_kib: dict[str, int] = field(default_factory=dict)
    imports_s: dict[str, float | str] = field(default_factory=dict)  # module -> s or error
    import_repeats: int = 0


def median(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "n/a"


def _rps(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _paired(a: list[WrkResult], b: list[WrkResult], attr: str, ratio: bool) -> float:
    """Median over runs of a/b (ratio) or a-b, each pair measured in the same run."""
    pairs = [(getattr(x, attr), getattr(y, attr)) for x, y in zip(a, b, strict=True)]
    if ratio:
        return median(x / y if y else math.nan for x, y in pairs)
    return median(x - y for x, y in pairs)


def _flag(results: list[WrkResult]) -> str:
    return " ⚠" if any(r.errors for r in results) else ""


def throughput_table(o: Outcome, stream: bool) -> list[str]:
    names = {t.name for t in o.targets}
    header = ["c"]
    for t in o.targets:
        header += [f"{t.name} req/s", "p50 ms", "p99 ms"]
        if t.baseline in names:
            header.append(f"{t.name}/{t.baseline}")
    rows = []
    for c in o.concurrencies:
        row = [str(c)]
        for t in o.targets:
            res = o.points[(t.name, stream, c)]
            row += [
                _rps(median(r.rps for r in res)) + _flag(res),
                _ms(median(r.p50_ms for r in res)),
                _ms(median(r.p99_ms for r in res)),
            ]
            if t.baseline in names:
                row.append(_ratio(_paired(res, o.points[(t.baseline, stream, c)], "rps", True)))
        rows.append(row)
    return _table(header, rows)


def latency_table(o: Outcome, stream: bool) -> list[str]:
    others = [t for t in o.targets if t.name != LATENCY_REFERENCE]
    if not others or LATENCY_REFERENCE not in {t.name for t in o.targets}:
        return []
    header = ["c"] + [f"{t.name} {q}" for t in others for q in ("+p50 ms", "+p99 ms")]
    rows = []
    for c in o.concurrencies:
        ref = o.points[(LATENCY_REFERENCE, stream, c)]
        row = [str(c)]
        for t in others:
            res = o.points[(t.name, stream, c)]
            row += [_ms(_paired(res, ref, q, False)) for q in ("p50_ms", "p99_ms")]
        rows.append(row)
    intro = f"Added latency vs `{LATENCY_REFERENCE}` (target - {LATENCY_REFERENCE}, same run):"
    return [intro, "", *_table(header, rows)]


def process_table(o: Outcome) -> list[str]:
    launched = [t for t in o.targets if t.name in o.startup_s]
    if not launched:
        return []
    header = ["target", "start-up to ready s", "RSS after run MiB", "baseline", "start-up", "RSS"]
    rows = []
    for t in launched:
        up = median(o.startup_s[t.name])
        rss = o.rss_kib.get(t.name, 0) / 1024
        if t.baseline in o.startup_s:
            base = t.baseline
            up_ratio = up / median(o.startup_s[base])
            rss_ratio = rss / (o.rss_kib[base] / 1024) if o.rss_kib.get(base) else math.nan
        else:
            base, up_ratio, rss_ratio = "-", math.nan, math.nan
        rows.append([t.name, f"{up:.2f}", f"{rss:.1f}", base, _ratio(up_ratio), _ratio(rss_ratio)])
    note = (
        f"Start-up: spawn to first 200 on the ready URL, median of {o.runs} spawn(s). "
        "RSS: VmRSS of the process tree after the last run. Last two columns: ratio to baseline."
    )
    return ["## Processes", "", note, "", *_table(header, rows)]


def import_section(o: Outcome) -> list[str]:
    if not o.imports_s:
        return []
    base = next(iter(o.imports_s.values()))
    rows = []
    for module, value in o.imports_s.items():
        if isinstance(value, str):
            rows.append([f"`import {module}`", value, "n/a"])
        else:
            ratio = value / base if isinstance(base, float) and base > 0 else math.nan
            rows.append([f"`import {module}`", f"{value * 1000:.0f}", _ratio(ratio)])
    first = next(iter(o.imports_s))
    note = (
        "Wall time of `python -c 'import X'` minus `python -c pass`, "
        f"median of {o.import_repeats} each; ratio to `import {first}`."
    )
    return ["## Import time", "", note, "", *_table(["module", "ms", "ratio"], rows)]


def error_notes(o: Outcome) -> list[str]:
    notes = []
    for (name, stream, c), results in o.points.items():
        for i, r in enumerate(results, 1):
            if r.errors:
                notes.append(
                    f"- ⚠ {name} {MODE_NAMES[stream]} c={c} run {i}: {r.non_2xx} non-2xx "
                    f"responses, {r.socket_errors} socket errors of {r.requests} requests"
                )
    return ["## Errors", "", *notes, ""] if notes else []


def render(o: Outcome) -> str:
    lines = ["# llm-proxy benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in o.setup]
    lines += [
        "",
        f"Each figure is the median of {o.runs} run(s) of {o.duration:g} s. A ratio column "
        "`a/b` is a's req/s over b's, computed within each run, then the median.",
        "",
    ]
    for stream in o.modes:
        lines += [f"## {MODE_NAMES[stream]}", ""]
        lines += throughput_table(o, stream)
        lines += latency_table(o, stream)
    lines += process_table(o)
    lines += import_section(o)
    lines += error_notes(o)
    if o.skipped:
        lines += ["## Skipped", ""]
        lines += [f"- **{name}**: {why}" for name, why in o.skipped.items()]
        lines.append("")
    return "\n".join(lines)

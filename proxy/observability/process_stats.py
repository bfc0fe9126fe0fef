"""What the running process holds, for /health: a leak shows as a figure that keeps growing
under steady load (bench/soak.py samples it)."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import threading
from pathlib import Path
from typing import TypedDict

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcessStats(TypedDict):
    asyncio_tasks: int | None  # None outside a running event loop
    open_fds: int | None  # None where /proc/self/fd does not exist (macOS)
    rss_bytes: int
    threads: int


def process_stats() -> ProcessStats:
    return {
        "asyncio_tasks": _asyncio_tasks(),
        "open_fds": _open_fds(),
        "rss_bytes": _rss_bytes(),
        "threads": threading.active_count(),
    }


def _asyncio_tasks() -> int | None:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing the directory
    except OSError:
        return None


def _rss_bytes() -> int:
    """The resident set now; without /proc, the peak (ru_maxrss) is the best there is."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB here

"""Process figures for /health: sane numbers, and the task count follows the tasks."""

from __future__ import annotations

import asyncio
import sys

import pytest

from proxy.observability.process_stats import process_stats


async def test_figures_are_sane_ints() -> None:
    stats = process_stats()
    assert set(stats) == {"asyncio_tasks", "open_fds", "rss_bytes", "threads"}
    assert isinstance(stats["asyncio_tasks"], int) and stats["asyncio_tasks"] >= 1  # this test
    assert isinstance(stats["rss_bytes"], int) and 10 * 2**20 < stats["rss_bytes"] < 16 * 2**30
    assert isinstance(stats["threads"], int) and stats["threads"] >= 1
    if sys.platform == "linux":
        assert isinstance(stats["open_fds"], int) and stats["open_fds"] >= 3


async def test_the_task_count_follows_the_tasks() -> None:
    before = process_stats()["asyncio_tasks"]
    assert before is not None
    release = asyncio.Event()
    tasks = [asyncio.create_task(release.wait()) for _ in range(5)]
    assert process_stats()["asyncio_tasks"] == before + 5
    release.set()
    await asyncio.gather(*tasks)
    assert process_stats()["asyncio_tasks"] == before


@pytest.mark.skipif(sys.platform != "linux", reason="counts /proc/self/fd")
def test_the_fd_count_follows_the_files() -> None:
    before = process_stats()["open_fds"]
    assert before is not None
    with open(__file__, "rb"), open(__file__, "rb"):
        assert process_stats()["open_fds"] == before + 2
    assert process_stats()["open_fds"] == before


def test_outside_an_event_loop_there_is_no_task_count() -> None:
    assert process_stats()["asyncio_tasks"] is None

"""A reload error is about the file as it was: once the file holds the policy that is serving
again (the usual fix for a bad edit: put the old file back), /health stops reporting it.

Restoring the serving content applies nothing (the policy is the same), so the reloader must
clear the error itself; otherwise the error would stay until some other edit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import RunningProxy

from .test_reload import (
    health,
    reload_policy,
    reloads,
    route_of,
    sdk,
    wait_for_reload,
    write_policy,
)

StartProxy = Callable[..., RunningProxy]


def test_restoring_the_serving_file_clears_the_reload_error(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    running = start_proxy(reload_policy(fake_openai.base_url, "v1-id"))
    path = running.config_path
    serving = path.read_bytes()
    policy_before = health(running)["policy"]

    bad = reload_policy(fake_openai.base_url, "v2-id")
    bad["models"]["keep"]["strategy"] = "fastest-please"
    started = time.time()
    write_policy(path, bad)
    failed = wait_for_reload(running, "error", after=started)
    assert any("models.keep.strategy" in line for line in failed["errors"]), failed
    ok_before = reloads(running, "ok")

    restored = time.time()
    path.write_bytes(serving)  # the editor's undo: byte for byte what is serving
    last = wait_for_reload(running, "ok", after=restored)
    assert last["errors"] == []
    running.wait_for_log("the last reload error is cleared")
    assert reloads(running, "ok") == ok_before + 1

    policy = health(running)["policy"]
    assert policy["version"] == policy_before["version"]
    assert policy["loaded_at"] == policy_before["loaded_at"]  # nothing was applied again
    with sdk(running) as client:
        assert route_of(client) == "fake/v1-id"


def test_rewriting_the_serving_file_without_an_error_reports_nothing(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    """The same content written again (a touch, a ConfigMap resync) is not a reload."""
    running = start_proxy(reload_policy(fake_openai.base_url, "v1-id"))
    path = running.config_path
    path.write_bytes(path.read_bytes())
    time.sleep(0.5)  # past the watcher's debounce: the write above is a change of its own
    # A marker edit after it: once that one is applied, the first write has been seen too.
    started = time.time()
    write_policy(path, reload_policy(fake_openai.base_url, "v2-id"))
    wait_for_reload(running, "ok", after=started)
    assert reloads(running, "ok") == 1
    assert "reload error is cleared" not in running.log()

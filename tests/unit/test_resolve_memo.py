"""The memo behind `Policy.resolve` holds client text: a name that resolves to nothing is never
kept, and names a pattern took are kept up to a bound in bytes, however long they are.
Memory is measured with tracemalloc around the calls."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from proxy.loader import load_text
from proxy.policy import Policy, compile_policy

POLICY = """\
upstreams:
  a: {type: openai, base_url: "http://a/v1"}
models:
  gpt-4o: {routes: [{upstream: a}]}
  "openai/*": {routes: [{upstream: a}]}
"""
KiB, MiB = 1024, 1024 * 1024


@pytest.fixture
def policy() -> Policy:
    return compile_policy(load_text(POLICY, env={}))


def names(prefix: str, count: int, length: int) -> Iterator[str]:
    """Distinct names, made one at a time (the generator holds none of them)."""
    for i in range(count):
        head = f"{prefix}{i}-"
        yield head + "z" * (length - len(head))


def retained(policy: Policy, asked: Iterator[str]) -> int:
    """Bytes still allocated after resolving every name in `asked` (and dropping them)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in asked:
            policy.resolve(name)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_unknown_names_are_never_remembered(policy: Policy) -> None:
    kept = retained(policy, names("no-such-model-", 2000, 2 * KiB))  # 4 MiB of names
    assert kept < 64 * KiB
    assert policy.resolve("no-such-model-0-zz") is None


def test_names_taken_by_a_pattern_are_remembered_within_a_bound_in_bytes(
    policy: Policy,
) -> None:
    kept = retained(policy, names("openai/", 4000, 1 * KiB))  # 3.9 MiB of names
    assert kept < 3 * MiB  # the 1 MiB bound counts names; a pattern's matched part is a copy


def test_resolution_is_the_same_whether_remembered_or_not(policy: Policy) -> None:
    for name in names("openai/", 3000, 1 * KiB):  # fills the memo past its bound
        resolved = policy.resolve(name)
        assert resolved is not None and resolved.matched == name.removeprefix("openai/")
    for _ in range(2):
        exact = policy.resolve("gpt-4o")
        assert exact is not None and exact.policy.name == "gpt-4o" and exact.matched is None
        pattern = policy.resolve("openai/o3")
        assert pattern is not None and pattern.policy.name == "openai/*"
        assert pattern.matched == "o3"
        assert policy.resolve("o3") is None

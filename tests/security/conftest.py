"""Fixtures of the security tests: a canary listener the proxy must never contact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import Canary


@pytest.fixture
def canary() -> Iterator[Canary]:
    with Canary() as listener:
        yield listener

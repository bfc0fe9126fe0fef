"""A body fuzzer for POST /v1/chat/completions.

Every answer must be a success (a completion, or an event stream that ends with [DONE] after
every choice finished or an in-band error) or a 4xx in the OpenAI error envelope: never a 5xx,
never a hang (the client gives up after ANSWER_TIMEOUT), never a stack trace in the body.

Bounded for CI: about 20-30 s in all on a loaded 2-core machine. FUZZ_SCALE=10 makes every
fuzzer run ten times the examples; FUZZ_SHRINK=1 lets Hypothesis shrink a failure (slow
against a real server). No example database is written (database=None); in CI the run is
derandomized, elsewhere every run draws new examples.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("hypothesis")

from fakes.proxy_harness import RunningProxy
from hypothesis import given
from hypothesis import strategies as st

from . import strategies as s
from .checks import ANSWER_TIMEOUT, CONTENT_TYPES, Tally, check_chat_answer, fuzz_settings
from .conftest import FUZZ_KEY

pytestmark = pytest.mark.timeout(180)

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def http(fuzz_proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_proxy.url, timeout=ANSWER_TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    tally = Tally.new()
    yield tally
    print(f"\nchat body fuzz: {tally.summary()}")


def post(
    http: httpx.Client,
    tally: Tally,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    headers = {"Authorization": f"Bearer {FUZZ_KEY}", **(headers or {})}
    if content_type:
        headers["content-type"] = content_type
    started = time.monotonic()
    try:
        resp = http.post(CHAT, content=body, headers=headers)
    except httpx.TimeoutException:
        raise AssertionError(f"no answer within {ANSWER_TIMEOUT}s for {body[:300]!r}") from None
    except httpx.TransportError as exc:
        if tally.known_bug(body):
            return
        raise AssertionError(f"connection failed ({exc!r}) for {body[:300]!r}") from None
    tally.statuses[str(resp.status_code)] += 1
    if resp.status_code >= 500 and tally.known_bug(body):
        return
    try:
        check_chat_answer(resp.status_code, dict(resp.headers), resp.content)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nsent {body[:500]!r}\nafter {time.monotonic() - started:.2f}s"
        ) from None


@fuzz_settings(150)
@given(body=s.wrong_bodies)
def test_wrong_types_and_values(http: httpx.Client, tally: Tally, body: bytes) -> None:
    post(http, tally, body)


@fuzz_settings(150)
@given(body=s.near_valid, tier=st.sampled_from(["free", "paid", ""]))
def test_near_valid_bodies(http: httpx.Client, tally: Tally, body: bytes, tier: str) -> None:
    post(http, tally, body, headers={"x-tier": tier, "cache-control": "no-cache"} if tier else {})


@fuzz_settings(100)
@given(
    body=st.one_of(s.mutated(), s.random_bytes, s.invalid_utf8_in_strings()),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_broken_bytes(http: httpx.Client, tally: Tally, body: bytes, content_type: str) -> None:
    post(http, tally, body, content_type)


@fuzz_settings(60)
@given(body=st.one_of(s.duplicate_keys(), s.odd_numbers()))
def test_duplicate_keys_and_odd_numbers(http: httpx.Client, tally: Tally, body: bytes) -> None:
    post(http, tally, body)


@fuzz_settings(30)
@given(body=st.one_of(s.deep(), s.huge()))
def test_deep_and_huge(http: httpx.Client, tally: Tally, body: bytes) -> None:
    post(http, tally, body)


# ---- the bugs the fuzzers found, pinned ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","messages":[{"role":"user","content":"a\xc0\xafb"}]}',
        b'{"model":"m","messages":[{"role":"user","content":"\xed\xa0\x80"}]}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"meta":"\xff"}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1e999}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":-1e999,"stream":true}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"1":'
        + b"9" * 5000
        + b"}}",
    ],
    ids=["overlong", "surrogate", "unknown-field-ff", "1e999", "-1e999-stream", "huge-int"],
)
def test_strings_and_numbers_msgspec_refuses_are_400(http: httpx.Client, body: bytes) -> None:
    resp = http.post(
        CHAT,
        content=body,
        headers={
            "Authorization": f"Bearer {FUZZ_KEY}",
            "content-type": "application/json",
        },
    )
    assert resp.status_code == 400, resp.text
    check_chat_answer(resp.status_code, dict(resp.headers), resp.content)

"""Request validation names the offending field; errors render OpenAI's envelope."""

from __future__ import annotations

import msgspec
import pytest

from proxy.errors import InvalidRequestError, RateLimitError
from proxy.wire import decode_chat_head

MSG = b'[{"role":"user","content":"hi"}]'


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"messages":' + MSG + b"}", "model"),
        (b'{"model":1,"messages":' + MSG + b"}", "model"),
        (b'{"model":"m","messages":[]}', "messages"),
        (b'{"model":"m","messages":"hi"}', "messages"),
        (b'{"model":"m","messages":[{"content":"x"}]}', "messages[0].role"),
        (b'{"model":"m","messages":[{"role":"robot"}]}', "messages[0].role"),
        (b'{"model":"m","messages":' + MSG + b',"n":0}', "n"),
        (b'{"model":"m","messages":' + MSG + b',"stream":"yes"}', "stream"),
        (
            b'{"model":"m","messages":' + MSG + b',"stream_options":{"include_usage":true}}',
            "stream_options",
        ),
    ],
)
def test_bad_requests_name_the_field(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_chat_head(body)
    assert caught.value.param == param
    assert caught.value.status == 400


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'{"model": "m",'])
def test_not_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        decode_chat_head(body)


def test_unknown_fields_are_accepted() -> None:
    head = decode_chat_head(b'{"model":"m","messages":' + MSG + b',"future_field":{"a":1}}')
    assert head.model == "m"


def test_error_envelope_and_retry_headers() -> None:
    error = RateLimitError("slow down", retry_after=1.2)
    body = msgspec.json.decode(error.body())
    assert body == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert error.response_headers() == {"retry-after": "2", "retry-after-ms": "1200"}

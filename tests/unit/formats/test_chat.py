"""The chat door: bodies sent upstream, replies rewritten for the client (public model name,
usage, malformed replies), stream chunks."""

from __future__ import annotations

import msgspec
import pytest

from proxy.errors import InvalidRequestError, UpstreamError
from proxy.formats.chat import ChunkRewriter, rewrite_completion
from proxy.upstreams.http import error_from_status, retry_after
from proxy.wire import decode_chat_head, top_level, upstream_body


def test_completion_gets_the_public_model_and_keeps_everything_else() -> None:
    reply = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"up-1","choices":[],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"extra":{"k":[1]}}'
    )
    body, usage = rewrite_completion(reply, "public", "up")
    data = msgspec.json.decode(body)
    assert data["model"] == "public" and data["extra"] == {"k": [1]}
    assert usage["completion_tokens"] == 4


@pytest.mark.parametrize("reply", [b"<html>", b"[]", b'{"id":"x"}'])
def test_malformed_reply_is_an_upstream_error(reply: bytes) -> None:
    with pytest.raises(UpstreamError):
        rewrite_completion(reply, "public", "up")


def test_body_passes_through_untouched_when_model_is_the_same() -> None:
    body = b'{"model":"m", "messages":[{"role":"user","content":"x"}], "x_future": 1.5e300}'
    assert upstream_body(top_level(body), decode_chat_head(body), "m", body=body) is body


def test_values_the_proxy_does_not_read_pass_as_written() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"x"}],"x":1.5E2,"y":[1, 2]}'
    sent = upstream_body(top_level(body), decode_chat_head(body), "up", body=body)
    assert sent == b'{"model":"up","messages":[{"role":"user","content":"x"}],"x":1.5E2,"y":[1, 2]}'


@pytest.mark.parametrize("value", [b"1e999", b"-1e999", b"9" * 5000, b'"\xff"'])
def test_values_no_reader_can_hold_are_the_client_s_400_even_where_unread(value: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        top_level(b'{"model":"m","x_unread":' + value + b"}")


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"a","messages":[],"model":"b"}',
        b'{"model":"a", "m\\u006fdel":"a","messages":[]}',
        b'{ "model" : "a" , "messages" : [] , "model" : "a" }',
    ],
)
def test_a_top_level_key_given_twice_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        top_level(body)
    assert caught.value.param == "model"


def test_keys_repeated_below_the_top_level_are_the_client_s_business() -> None:
    body = b'{"model":"a","metadata":{"k":1,"k":2},"x\\\\":"}"}'
    assert list(top_level(body)) == ["model", "metadata", "x\\"]


def test_body_rewrites_only_model_and_asks_for_stream_usage() -> None:
    body = (
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,'
        b'"x_future":{"a":[1,2]}}'
    )
    data = msgspec.json.decode(upstream_body(top_level(body), decode_chat_head(body), "up-model"))
    assert data["model"] == "up-model"
    assert data["stream_options"] == {"include_usage": True}
    assert data["x_future"] == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("status", "kind", "client_status"),
    [
        (400, "UpstreamRejectedError", 400),
        (422, "UpstreamRejectedError", 400),
        (401, "UpstreamAuthError", 502),
        (403, "UpstreamAuthError", 502),
        (404, "UpstreamError", 502),
        (429, "RateLimitError", 429),
        (500, "UpstreamError", 502),
        (503, "UpstreamError", 502),
    ],
)
def test_upstream_statuses_map_to_client_errors(status: int, kind: str, client_status: int) -> None:
    body = b'{"error":{"message":"Incorrect API key provided: sk-upstr****1234","code":"x"}}'
    error = error_from_status("up", status, body, {})
    assert type(error).__name__ == kind and error.status == client_status
    if status in (401, 403):
        assert "sk-" not in error.message


def test_retry_after_prefers_milliseconds() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) is None
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def _rewriter(client_wants_usage: bool = False) -> ChunkRewriter:
    from proxy.accounting import RequestRecord
    from proxy.observability.metrics import Metrics
    from proxy.relay import OpenStreams, StreamContext

    context = StreamContext(
        public_model="public/model",
        upstream="up",
        max_seconds=60,
        record=RequestRecord("r", 0.0),
        metrics=Metrics(),
        open_streams=OpenStreams(),
        on_end=lambda _: None,
    )
    return ChunkRewriter(context, client_wants_usage, choices=1)


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"up-1",'
        b'"choices":[{"index":0,"delta":{"content":"\\"model\\":\\"up-1\\""}}]}',
        b'{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-1", '
        b'"choices": [{"index": 0, "delta": {"content": "hi"}}]}',
        b'{"id":"c","meta":{"model":"other"},"model":"up-1","choices":[]}',
    ],
)
def test_chunk_model_is_replaced_and_nothing_else(chunk: bytes) -> None:
    rewrite = _rewriter()
    out = rewrite(chunk)
    assert out is not None
    original, rewritten = msgspec.json.decode(chunk), msgspec.json.decode(out)
    assert rewritten.pop("model") == "public/model"
    original.pop("model")
    assert rewritten == original


def test_finish_reasons_and_usage_are_noted_and_usage_chunk_dropped_unless_asked() -> None:
    finish = b'{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
    usage = b'{"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}'
    quiet, asked = _rewriter(), _rewriter(client_wants_usage=True)
    for rewrite in (quiet, asked):
        rewrite(finish)
        assert rewrite.complete
    assert quiet(usage) is None
    assert msgspec.json.decode(asked(usage) or b"")["usage"]["completion_tokens"] == 7
    assert quiet.context.record.completion_tokens == 7


@pytest.mark.parametrize("chunk", [b"not json", b'{"error":{"message":"boom"}}'])
def test_bad_or_error_chunks_raise(chunk: bytes) -> None:
    with pytest.raises(UpstreamError):
        _rewriter()(chunk)


def test_a_read_of_several_chunks_is_rewritten_like_each_on_its_own() -> None:
    first = b'{"id":"c","model":"up-1","choices":[{"index":0,"delta":{"content":"a"}}]}'
    last = b'{"id":"c","model":"up-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
    together, alone = _rewriter(), _rewriter()
    out, failure = together.batch([first, last])
    assert failure is None and together.complete
    assert out == [alone(first), alone(last)]


def test_an_event_holding_two_json_values_is_not_json_even_in_a_batch() -> None:
    good = b'{"id":"c","model":"up-1","choices":[{"index":0,"delta":{"content":"a"}}]}'
    rewrite = _rewriter()
    out, failure = rewrite.batch([good, good + b"," + good])
    assert len(out) == 1 and isinstance(failure, UpstreamError)
    assert "not JSON" in failure.message

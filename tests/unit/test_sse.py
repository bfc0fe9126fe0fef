"""The SSE decoder accepts every framing the OpenAI SDK accepts."""

from __future__ import annotations

from proxy.upstreams.sse import SSEDecoder


def decode(*chunks: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    events = [e for c in chunks for e in decoder.feed(c)]
    return events + decoder.flush()


def test_plain_events() -> None:
    assert decode(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [b'{"a":1}', b"[DONE]"]


def test_no_space_crlf_cr_and_comments() -> None:
    assert decode(b'data:{"a":1}\r\n\r\n: keep-alive\r\rdata: 2\r\r') == [b'{"a":1}', b"2"]


def test_event_split_anywhere_including_inside_crlf() -> None:
    raw = b'data: {"x": "yes"}\r\n\r\ndata: 2\r\n\r\n'
    for cut in range(len(raw) + 1):
        assert decode(raw[:cut], raw[cut:]) == [b'{"x": "yes"}', b"2"], cut


def test_multi_line_data_is_joined_with_newline_and_other_fields_ignored() -> None:
    assert decode(b"event: x\nid: 3\ndata: a\ndata: b\n\n") == [b"a\nb"]


def test_last_event_without_blank_line_is_flushed() -> None:
    assert decode(b'data: {"end":true}') == [b'{"end":true}']


def test_very_long_line_has_no_cap() -> None:
    big = b"x" * 3_000_000
    assert decode(b"data: " + big[:1000], big[1000:] + b"\n\n") == [big]

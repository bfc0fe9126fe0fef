"""Hypothesis strategies for chat-completion bodies that no sane client sends: wrong types,
huge strings, deep nesting, invalid UTF-8, duplicate keys, NaN and Infinity, random bytes,
truncated JSON, unicode edge cases. Every strategy produces the raw body bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from .conftest import MAX_BODY_BYTES

MODELS = ["m", "cached", "same", "pattern/x", "rule-anything", "nope", "", "M"]
ROLES = ["system", "developer", "user", "assistant", "tool", "function"]

UNICODE_EDGES = [
    "\x00",
    "\ufeff",
    "\u202e",
    "\u200b",
    "\u2028",
    "\u2029",
    "e\u0301",
    "\U0001f600",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\uffff",
    "\ufffe",
    "\U0010ffff",
    "\ud800",
    "\udfff",
    "\U000e0001",
    "\x7f",
    "\x1b[31m",
    "Ω≈ç√",
    "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594",
    "\t\n\r",
    '"',
    "\\",
    "</script>",
]

# Bytes that are not valid UTF-8 (or are, only through a lenient decoder)
INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xf0\x28\x8c\xbc",
    b"\x80",
]

edge_text = st.sampled_from(UNICODE_EDGES)
text = st.one_of(st.text(max_size=40), edge_text, st.lists(edge_text, max_size=4).map("".join))

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
json_value = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=12,
)

model = st.one_of(
    st.sampled_from(MODELS), text, st.builds(lambda t: "pattern/" + t, text), json_value
)
role = st.one_of(st.sampled_from(ROLES), text, json_value)
part = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["text", "image_url", "input_audio"]), json_value)},
    optional={"text": st.one_of(text, json_value), "image_url": json_value},
)
content = st.one_of(text, st.lists(part, max_size=3), json_value)
message = st.one_of(
    st.fixed_dictionaries(
        {"role": role},
        optional={
            "content": content,
            "name": json_value,
            "tool_calls": json_value,
            "tool_call_id": json_value,
        },
    ),
    json_value,
)
messages = st.one_of(
    st.lists(message, min_size=1, max_size=5), st.lists(message, max_size=80), json_value
)

KNOWN_FIELDS: dict[str, Any] = {
    "stream": st.one_of(st.booleans(), json_value),
    "stream_options": st.one_of(
        st.fixed_dictionaries({}, optional={"include_usage": st.one_of(st.booleans(), json_value)}),
        json_value,
    ),
    "n": st.one_of(st.integers(min_value=-3, max_value=200), json_value),
    "temperature": st.one_of(st.floats(allow_nan=True, allow_infinity=True), json_value),
    "seed": st.one_of(st.integers(), json_value),
    "max_tokens": st.one_of(st.integers(), json_value),
    "max_completion_tokens": st.one_of(st.integers(), json_value),
    "tools": st.one_of(st.lists(json_value, max_size=3), json_value),
    "tool_choice": json_value,
    "response_format": json_value,
    "user": json_value,
    "metadata": json_value,
    "store": json_value,
    "logit_bias": json_value,
}


@st.composite
def chat_dict(draw: st.DrawFn) -> dict[Any, Any]:
    body = draw(
        st.fixed_dictionaries({"model": model, "messages": messages}, optional=KNOWN_FIELDS)
    )
    body.update(draw(st.dictionaries(text, json_value, max_size=3)))
    if draw(st.booleans()):  # a field left out entirely
        body.pop(draw(st.sampled_from(["model", "messages"])), None)
    return body


def encode(body: Any, ascii_only: bool) -> bytes:
    """JSON with NaN/Infinity as Python writes them (not JSON), lone surrogates kept."""
    return json.dumps(body, ensure_ascii=ascii_only, allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )


wrong_bodies = st.builds(encode, chat_dict(), st.booleans())

VALID = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
GOOD_MODELS = ["m", "cached", "same", "pattern/x", "pattern/a/b", "rule-x"]


@st.composite
def near_valid_dict(draw: st.DrawFn) -> dict[Any, Any]:
    """A body the proxy serves, with one or two fields odd: most of these reach the upstream,
    the cache, the rules and the stream relay."""
    body: dict[Any, Any] = {
        "model": draw(st.sampled_from(GOOD_MODELS)),
        "messages": [{"role": draw(st.sampled_from(ROLES)), "content": draw(text)}],
        "stream": draw(st.booleans()),
    }
    if body["stream"] and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    if draw(st.booleans()):
        body["temperature"] = 0
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.one_of(st.sampled_from(sorted(KNOWN_FIELDS)), text))
        body[name] = draw(KNOWN_FIELDS.get(name, json_value))
    return body


near_valid = st.builds(encode, near_valid_dict(), st.booleans())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body, then damaged at the byte level."""
    body = dict(VALID)
    body["stream"] = draw(st.booleans())
    raw = json.dumps(body).encode()
    kind = draw(
        st.sampled_from(
            ["truncate", "insert", "replace", "bom", "utf16", "utf32", "trailing", "whitespace"]
        )
    )
    at = draw(st.integers(min_value=0, max_value=len(raw)))
    if kind == "truncate":
        return raw[:at]
    if kind in ("insert", "replace"):
        junk = draw(st.one_of(st.sampled_from(INVALID_UTF8), st.binary(min_size=1, max_size=8)))
        return raw[:at] + junk + raw[at + (len(junk) if kind == "replace" else 0) :]
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind in ("utf16", "utf32"):
        return raw.decode().encode(kind.replace("utf", "utf-"))
    if kind == "trailing":
        return raw + draw(st.sampled_from([b"x", b"{}", b",", b"\x00", b"]", b" garbage"]))
    return b" \t\r\n" * draw(st.integers(0, 3)) + raw + b"\n" * draw(st.integers(0, 3))


@st.composite
def invalid_utf8_in_strings(draw: st.DrawFn) -> bytes:
    where = draw(st.sampled_from(["content", "model", "role", "key", "unknown"]))
    junk = draw(st.sampled_from(INVALID_UTF8))
    parts = {
        "content": b'{"model":"m","messages":[{"role":"user","content":"a%sb"}]}',
        "model": b'{"model":"m%s","messages":[{"role":"user","content":"x"}]}',
        "role": b'{"model":"m","messages":[{"role":"us%ser","content":"x"}]}',
        "key": b'{"model":"m","messages":[{"role":"user","content":"x"}],"k%s":1}',
        "unknown": b'{"model":"m","messages":[{"role":"user","content":"x"}],"u":"%s"}',
    }
    return parts[where] % junk


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    """Keys repeated (and escaped spellings of them): the proxy and the upstream must read
    the same value."""
    name = draw(st.sampled_from(["model", "messages", "stream", "n", "stream_options"]))
    spelled = draw(st.sampled_from([name, name.replace("e", "\\u0065", 1), name]))
    value = draw(json_value)
    first = json.dumps(VALID)[:-1]
    extra = f',"{spelled}":{json.dumps(value, allow_nan=True)}'
    return (
        draw(st.sampled_from([first + extra + "}", "{" + extra[1:] + "," + first[1:] + "}"]))
    ).encode("utf-8", "surrogatepass")


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.one_of(st.integers(1, 600), st.integers(600, 150_000)))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    field = draw(st.sampled_from([b"metadata", b"messages", b"tools", b"model"]))
    nested = opener * depth + b"1" + closer * depth
    return (
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"' + field + b'":' + nested + b"}"
    )


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    """Long strings around the body limit, in one field or many messages."""
    near_limit = st.integers(MAX_BODY_BYTES - 200, MAX_BODY_BYTES + 200)
    size = draw(st.one_of(st.integers(0, 1024), near_limit, st.integers(0, 2 * MAX_BODY_BYTES)))
    ch = draw(st.sampled_from(["x", "é", "\U0001f600", "\\", '"']))
    where = draw(st.sampled_from(["content", "model", "key", "messages"]))
    if where == "messages":
        count = max(1, size // 40)
        body: dict[str, Any] = {
            "model": "m",
            "messages": [{"role": "user", "content": "y"}] * count,
        }
    else:
        long = ch * (size // max(1, len(ch.encode())))
        content = long if where == "content" else "x"
        body = {
            "model": long if where == "model" else "m",
            "messages": [{"role": "user", "content": content}],
        }
        if where == "key":
            body[long] = 1
    return json.dumps(body, ensure_ascii=False).encode()


numbers = st.sampled_from(
    [
        b"NaN",
        b"-NaN",
        b"Infinity",
        b"-Infinity",
        b"1e999",
        b"-1e999",
        b"1" * 5000,
        b"-0",
        b"0.0e-999",
        b"1.5",
        b'"1"',
        b"01",
        b"+1",
        b".5",
        b"0x10",
        b"1_000",
        b"true",
        b"null",
    ]
)


@st.composite
def odd_numbers(draw: st.DrawFn) -> bytes:
    field = draw(
        st.sampled_from([b"temperature", b"n", b"seed", b"max_tokens", b"top_p", b"stream"])
    )
    return (
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"'
        + field
        + b'":'
        + draw(numbers)
        + b"}"
    )


random_bytes = st.one_of(
    st.binary(max_size=512), st.binary(min_size=1, max_size=8).map(lambda b: b * 1000)
)

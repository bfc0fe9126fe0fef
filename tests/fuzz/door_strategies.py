"""Hypothesis strategies for the bodies of the other doors: the Responses API, Anthropic's
Messages API (and count_tokens), embeddings and the admin API's key bodies. Each door has wrong
bodies (every field of any type or value, known fields and unknown ones, some left out) and
near-valid ones (a body the proxy serves, one or two fields odd), as raw bytes."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .strategies import INVALID_UTF8, ROLES, encode, json_value, text

MODELS = ["m", "cached", "same", "native", "claude", "pattern/x", "rule-anything", "nope", ""]
GOOD_MODELS = ["m", "cached", "same", "native", "claude", "pattern/x", "rule-x"]
model = st.one_of(st.sampled_from(MODELS), text, json_value)


def _kind(*names: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(names), text, json_value)


def _any_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, json_value)


@st.composite
def _with_unknowns(draw: st.DrawFn, body: dict[Any, Any], required: list[str]) -> bytes:
    body.update(draw(st.dictionaries(text, json_value, max_size=2)))
    if required and draw(st.integers(0, 4)) == 0:  # a required field left out
        body.pop(draw(st.sampled_from(required)), None)
    return encode(body, draw(st.booleans()))


# ---- the Responses API --------------------------------------------------------------------------

response_part = st.fixed_dictionaries(
    {"type": _kind("input_text", "output_text", "input_image", "input_file", "refusal")},
    optional={"text": _any_of(text), "image_url": json_value, "file_id": json_value},
)
input_item = st.one_of(
    st.fixed_dictionaries(
        {"type": _kind("message", "function_call", "function_call_output", "reasoning")},
        optional={
            "role": _kind(*ROLES),
            "content": st.one_of(text, st.lists(response_part, max_size=3), json_value),
            "call_id": _any_of(text),
            "name": _any_of(text),
            "arguments": _any_of(text),
            "output": _any_of(text),
            "id": _any_of(text),
        },
    ),
    st.fixed_dictionaries({"role": _kind(*ROLES), "content": _any_of(text)}),
    json_value,
)
response_tool = st.fixed_dictionaries(
    {"type": _kind("function", "web_search", "file_search", "custom", "mcp")},
    optional={"name": _any_of(text), "parameters": json_value, "strict": json_value},
)
RESPONSES_FIELDS: dict[str, Any] = {
    "stream": _any_of(st.booleans()),
    "instructions": _any_of(text),
    "tools": _any_of(st.lists(response_tool, max_size=3)),
    "tool_choice": st.one_of(
        _kind("auto", "none", "required"),
        st.fixed_dictionaries(
            {"type": _kind("function", "allowed_tools", "web_search")},
            optional={"name": _any_of(text), "mode": json_value, "tools": json_value},
        ),
    ),
    "max_output_tokens": _any_of(st.integers(-5, 2**40)),
    "temperature": _any_of(st.floats(allow_nan=True, allow_infinity=True)),
    "text": _any_of(
        st.fixed_dictionaries(
            {},
            optional={
                "format": _any_of(
                    st.fixed_dictionaries(
                        {"type": _kind("text", "json_object", "json_schema")},
                        optional={"name": json_value, "schema": json_value},
                    )
                ),
                "verbosity": json_value,
            },
        )
    ),
    "reasoning": _any_of(st.fixed_dictionaries({}, optional={"effort": json_value})),
    "previous_response_id": st.one_of(st.sampled_from(["resp_x", "resp_robust"]), text),
    "store": _any_of(st.booleans()),
    "parallel_tool_calls": json_value,
    "include": json_value,
    "background": json_value,
    "metadata": json_value,
}
response_input = st.one_of(text, st.lists(input_item, max_size=4), json_value)


@st.composite
def responses_bodies(draw: st.DrawFn) -> bytes:
    body = draw(
        st.fixed_dictionaries({"model": model, "input": response_input}, optional=RESPONSES_FIELDS)
    )
    return draw(_with_unknowns(body, ["model", "input"]))


@st.composite
def near_valid_responses(draw: st.DrawFn) -> bytes:
    words = draw(text)
    part = {"type": "input_text", "text": words}
    inputs = [
        words,
        [{"role": "user", "content": words}],
        [{"type": "message", "role": "user", "content": [part]}],
    ]
    body: dict[Any, Any] = {
        "model": draw(st.sampled_from(GOOD_MODELS)),
        "input": draw(st.sampled_from(inputs)),
        "stream": draw(st.booleans()),
    }
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.one_of(st.sampled_from(sorted(RESPONSES_FIELDS)), text))
        body[name] = draw(RESPONSES_FIELDS.get(name, json_value))
    return encode(body, draw(st.booleans()))


# ---- Anthropic's Messages API -------------------------------------------------------------------

block = st.fixed_dictionaries(
    {"type": _kind("text", "image", "tool_use", "tool_result", "thinking", "document")},
    optional={
        "text": _any_of(text),
        "source": json_value,
        "id": _any_of(text),
        "name": _any_of(text),
        "input": json_value,
        "tool_use_id": _any_of(text),
        "content": st.one_of(text, st.lists(json_value, max_size=2), json_value),
        "is_error": json_value,
        "cache_control": json_value,
    },
)
anthropic_message = st.one_of(
    st.fixed_dictionaries(
        {"role": _kind("user", "assistant", "system")},
        optional={"content": st.one_of(text, st.lists(block, max_size=3), json_value)},
    ),
    json_value,
)
MESSAGES_FIELDS: dict[str, Any] = {
    "max_tokens": _any_of(st.integers(-5, 2**40)),
    "system": st.one_of(text, st.lists(block, max_size=2), json_value),
    "stream": _any_of(st.booleans()),
    "temperature": _any_of(st.floats(allow_nan=True, allow_infinity=True)),
    "top_k": json_value,
    "stop_sequences": _any_of(st.lists(text, max_size=3)),
    "tools": _any_of(
        st.lists(
            st.fixed_dictionaries(
                {"name": _any_of(text)},
                optional={"input_schema": json_value, "description": json_value, "type": text},
            ),
            max_size=2,
        )
    ),
    "tool_choice": _any_of(
        st.fixed_dictionaries(
            {"type": _kind("auto", "any", "tool", "none")},
            optional={"name": _any_of(text), "disable_parallel_tool_use": json_value},
        )
    ),
    "metadata": json_value,
    "thinking": json_value,
}
anthropic_messages = st.one_of(st.lists(anthropic_message, min_size=1, max_size=4), json_value)


@st.composite
def messages_bodies(draw: st.DrawFn) -> bytes:
    body = draw(
        st.fixed_dictionaries(
            {"model": model, "messages": anthropic_messages}, optional=MESSAGES_FIELDS
        )
    )
    return draw(_with_unknowns(body, ["model", "messages", "max_tokens"]))


@st.composite
def near_valid_messages(draw: st.DrawFn) -> bytes:
    words = draw(text)
    content = draw(st.sampled_from([words, [{"type": "text", "text": words}]]))
    body: dict[Any, Any] = {
        "model": draw(st.sampled_from(GOOD_MODELS)),
        "max_tokens": 64,
        "messages": [{"role": "user", "content": content}],
        "stream": draw(st.booleans()),
    }
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.one_of(st.sampled_from(sorted(MESSAGES_FIELDS)), text))
        body[name] = draw(MESSAGES_FIELDS.get(name, json_value))
    return encode(body, draw(st.booleans()))


# ---- embeddings ---------------------------------------------------------------------------------

token_ids = st.lists(st.integers(-(2**40), 2**70), max_size=5)
embedding_input = st.one_of(
    text,
    st.lists(text, max_size=5),
    token_ids,
    st.lists(token_ids, max_size=3),
    st.sampled_from(["", [], [[]], [""], [1, "a"], [[1], "a"]]),
    json_value,
)
EMBEDDINGS_FIELDS: dict[str, Any] = {
    "encoding_format": _kind("float", "base64", "int8"),
    "dimensions": _any_of(st.integers(-5, 2**40)),
    "user": json_value,
}


@st.composite
def embeddings_bodies(draw: st.DrawFn) -> bytes:
    body = draw(
        st.fixed_dictionaries(
            {"model": st.one_of(st.sampled_from(GOOD_MODELS), model), "input": embedding_input},
            optional=EMBEDDINGS_FIELDS,
        )
    )
    return draw(_with_unknowns(body, ["model", "input"]))


@st.composite
def near_valid_embeddings(draw: st.DrawFn) -> bytes:
    """Inputs the proxy embeds (some repeated, so that the per-input cache answers them), the
    model of a route that embeds, one field odd."""
    words = st.sampled_from(["alpha", "beta", "gamma", "delta"])
    inputs = st.one_of(words, st.lists(words, min_size=1, max_size=4), st.lists(st.integers(0, 9)))
    body: dict[Any, Any] = {
        "model": draw(st.sampled_from(["m", "cached", "same", "pattern/x"])),
        "input": draw(inputs),
    }
    name = draw(st.one_of(st.sampled_from(sorted(EMBEDDINGS_FIELDS)), text))
    body[name] = draw(EMBEDDINGS_FIELDS.get(name, json_value))
    return encode(body, draw(st.booleans()))


# ---- the admin API's key bodies -----------------------------------------------------------------

KEY_NAMES = ["k-1", "fuzz", "a" * 65, "-x", "ok.name_1", "x y", "é", "K"]
KEY_FIELDS: dict[str, Any] = {
    "name": st.one_of(st.sampled_from(KEY_NAMES), text, json_value),
    "models": _any_of(st.lists(st.one_of(st.sampled_from(GOOD_MODELS), text), max_size=3)),
    "limits": _any_of(
        st.fixed_dictionaries(
            {},
            optional={
                "requests": _kind("10/second", "1/minute; 5/hour", "x/y", "0/second", "5"),
                "tokens": _kind("1000/minute", "-1/second"),
                "burst": _any_of(st.integers(-3, 2**40)),
                "concurrency": _any_of(st.integers(-3, 2**40)),
            },
        )
    ),
    "budget": _any_of(
        st.fixed_dictionaries(
            {},
            optional={
                "usd": _any_of(st.floats(allow_nan=True, allow_infinity=True)),
                "period": _kind("day", "week", "month", "year"),
            },
        )
    ),
    "expires_at": _kind("2030-01-01", "2030-01-01T00:00:00Z", "1999-01-01", "soon", "2030-13-45"),
    "metadata": _any_of(st.dictionaries(text, st.one_of(text, json_value), max_size=40)),
}


@st.composite
def admin_key_bodies(draw: st.DrawFn) -> bytes:
    body = draw(st.fixed_dictionaries({}, optional=KEY_FIELDS))
    return draw(_with_unknowns(body, []))


# ---- the console's sign-in ----------------------------------------------------------------------

session_bodies = st.one_of(
    st.builds(lambda key, ascii_only: encode({"key": key}, ascii_only), json_value, st.booleans()),
    st.sampled_from(INVALID_UTF8).map(lambda junk: b'{"key":"a' + junk + b'"}'),
    st.builds(encode, st.dictionaries(text, json_value, max_size=3), st.booleans()),
)

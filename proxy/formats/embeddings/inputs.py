"""A request's `input`: a string, a list of strings, one array of token ids or a list of such
arrays, made into one list of inputs (texts, or rows of token ids), with the proxy's token
estimate for each.

A token id is an integer in [0, 2^32) (TEI's and the tokenizers' u32); JSON allows it to be
written 5.0, which is read as 5 (and sent upstream as 5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proxy.errors import InvalidRequestError

MAX_INPUTS = 2048  # OpenAI's own bound on the inputs of one request
MAX_TOKEN_ID = 2**32 - 1
BYTES_PER_TOKEN = 4

Input = str | list[int]


def read_inputs(value: Any) -> list[Input]:
    """The inputs one by one, or a 400 naming `input` (or the item at fault)."""
    if isinstance(value, str):
        return [_text(value, "input")]
    if not isinstance(value, list) or not value:
        raise _bad(
            "`input` must be a non-empty string, array of strings, array of token ids or "
            "array of token-id arrays.",
            "input",
        )
    if len(value) > MAX_INPUTS:
        raise _bad(f"`input` may hold at most {MAX_INPUTS} items.", "input")
    first = value[0]
    if _is_token(first):
        return [_tokens(value, "input")]
    if isinstance(first, str):
        return [_text(item, f"input[{i}]") for i, item in enumerate(value)]
    if isinstance(first, list):
        return [_tokens(item, f"input[{i}]") for i, item in enumerate(value)]
    raise _bad("`input` must hold strings, token ids or token-id arrays.", "input")


def estimate_tokens(item: Input) -> int:
    """A text's UTF-8 bytes / 4, rounded up; one token per id."""
    if isinstance(item, str):
        return -(-len(item.encode()) // BYTES_PER_TOKEN)
    return len(item)


def estimate_all(items: Iterable[Input]) -> int:
    return sum(estimate_tokens(item) for item in items)


def floats_as_ids(value: Any) -> bool:
    """Were token ids written as floats (5.0)? Call only on a value read_inputs accepted."""
    if isinstance(value, str) or isinstance(value[0], str):
        return False
    rows = value if isinstance(value[0], list) else [value]
    return any(isinstance(item, float) for row in rows for item in row)


def _is_token(item: Any) -> bool:
    if isinstance(item, float):
        return item.is_integer() and 0 <= item <= MAX_TOKEN_ID
    return isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= MAX_TOKEN_ID


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad("`input` mixes strings with other values; use one kind.", param)
    if not value:
        raise _bad("An input string must not be empty.", param)
    return value


def _tokens(row: Any, param: str) -> list[int]:
    if not isinstance(row, list) or not row or not all(_is_token(t) for t in row):
        raise _bad("A token-id array must be non-empty and hold only integers in [0, 2^32).", param)
    if any(isinstance(t, float) for t in row):
        return [int(t) for t in row]
    return row


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)

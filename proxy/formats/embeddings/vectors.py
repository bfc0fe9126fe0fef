"""One embedding as raw JSON in either of OpenAI's forms, and the conversion between them:
`float` is a JSON array of numbers, `base64` a JSON string holding the vector as
little-endian float32 (what OpenAI sends, and what the official SDKs ask for by default).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence

import msgspec

from proxy.formats.embeddings.wire import EncodingFormat

_encode = msgspec.json.Encoder().encode
_floats = msgspec.json.Decoder(list[float])
_text = msgspec.json.Decoder(str)
FLOAT32 = 4


Vector = bytes | msgspec.Raw  # one embedding's JSON


class VectorError(ValueError):
    """A vector that is neither a list of numbers nor valid base64 float32."""


def form_of(raw: Vector) -> EncodingFormat:
    first = memoryview(raw)[:1].tobytes()
    if first == b"[":
        return "float"
    if first == b'"':
        return "base64"
    raise VectorError("an embedding must be a list of numbers or a base64 string")


def as_form(raw: Vector, wanted: EncodingFormat) -> msgspec.Raw:
    """The vector in the form asked for, untouched when it is already in that form."""
    if form_of(raw) == wanted:
        return raw if isinstance(raw, msgspec.Raw) else msgspec.Raw(raw)
    if wanted == "base64":
        return msgspec.Raw(_encode(to_base64(floats_of(raw))))
    return msgspec.Raw(_encode(from_base64(text_of(raw))))


def floats_of(raw: Vector) -> list[float]:
    try:
        return _floats.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise VectorError("an embedding list holds values that are not numbers") from None


def text_of(raw: Vector) -> str:
    try:
        return _text.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise VectorError("an embedding is not a JSON string") from None


def to_base64(values: Sequence[float]) -> str:
    try:
        packed = struct.pack(f"<{len(values)}f", *values)
    except (struct.error, OverflowError):
        raise VectorError("an embedding value does not fit a float32") from None
    return base64.b64encode(packed).decode("ascii")


def from_base64(text: str) -> list[float]:
    try:
        packed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VectorError("an embedding is not valid base64") from None
    if len(packed) % FLOAT32:
        raise VectorError("a base64 embedding is not a whole number of float32 values")
    return list(struct.unpack(f"<{len(packed) // FLOAT32}f", packed))

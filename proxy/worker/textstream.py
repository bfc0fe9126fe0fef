"""Token ids in, text out: incremental detokenisation and OpenAI's stop-string semantics.

The stop string itself is never released: up to `max(len(stop)) - 1` trailing characters are
held back until they cannot be the start of a stop string, so a stop string split across two
tokens is still caught and never reaches the client, as OpenAI-compatible servers behave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DecodeStep = Callable[[int], str | None]


def decoder_for(tokenizer: Any) -> Callable[[], DecodeStep]:
    """A factory of per-request incremental decoders for `tokenizer` (special tokens skipped)."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None:
        from tokenizers.decoders import DecodeStream

        def rust_stream() -> DecodeStep:
            stream = DecodeStream(skip_special_tokens=True)
            return lambda token: stream.step(backend, token)

        return rust_stream

    def python_stream() -> DecodeStep:
        return PrefixDecoder(lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True))).step

    return python_stream


class PrefixDecoder:
    """For tokenizers without a Rust backend: decode everything, release what is new and whole
    (a trailing U+FFFD is an incomplete UTF-8 sequence: wait for the next token)."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._sent = 0

    def step(self, token: int) -> str | None:
        self._ids.append(token)
        text = self._decode(self._ids)
        if text.endswith("\ufffd") or len(text) <= self._sent:
            return None
        piece, self._sent = text[self._sent :], len(text)
        return piece


class TextAssembler:
    """Feeds one token at a time; says what text may be released and whether a stop string
    has been reached (the text before it is released, the rest is dropped)."""

    __slots__ = ("_decode", "_held", "_hold", "_stop", "text")

    def __init__(self, decode: DecodeStep, stop: tuple[str, ...] = ()) -> None:
        self._decode = decode
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._held = ""
        self.text = ""  # everything released so far

    def feed(self, token: int) -> tuple[str, bool]:
        piece = self._decode(token)
        if piece:
            self._held += piece
        if self._stop:
            cut = self._first_stop()
            if cut is not None:
                released = self._release(cut)
                self._held = ""  # the stop string and whatever followed it are dropped
                return released, True
        return self._release(max(len(self._held) - self._hold, 0)), False

    def flush(self) -> str:
        return self._release(len(self._held))

    def _first_stop(self) -> int | None:
        found = [i for i in (self._held.find(s) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def _release(self, upto: int) -> str:
        out = self._held[:upto]
        self._held = "" if upto >= len(self._held) else self._held[upto:]
        self.text += out
        return out

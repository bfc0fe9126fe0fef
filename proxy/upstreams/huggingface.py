"""HuggingFace upstreams: the Inference Providers router and TGI's /v1 (`api: chat`), the
classic task API (`api: text-generation`, which also embeds through its feature-extraction
pipeline), a TGI server's /generate (`api: tgi`) and a TEI server's /embed (`api: tei`,
embeddings only; hf_embed).

Translation is pure (hf_chat, hf_textgen, chat_templates); this module only sends the
payload and hands the reply, or each network read of a stream, to the translation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from urllib.parse import quote

import aiohttp
from loguru import logger

from proxy.config import HF_DEFAULT_BASE_URLS, HuggingFaceUpstreamConfig
from proxy.errors import InvalidRequestError, UpstreamError
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.chat_templates import ChatTemplate
from proxy.upstreams.hf_chat import ChatTranslation
from proxy.upstreams.hf_common import StreamTranslator, Translation
from proxy.upstreams.hf_embed import EMBEDDERS
from proxy.upstreams.hf_errors import hf_error
from proxy.upstreams.hf_textgen import TextGenTranslation
from proxy.upstreams.http import client_timeout, new_session, read_events, translated_errors


class _ChatMode:
    """OpenAI-compatible: {base_url}/chat/completions."""

    def __init__(self, name: str, config: HuggingFaceUpstreamConfig, base_url: str) -> None:
        self._name = name
        self._url = f"{base_url}/chat/completions"

    def translate(self, call: UpstreamCall, stream: bool) -> tuple[str, Translation]:
        return self._url, ChatTranslation(self._name, call.body, model=call.model)


class _ClassicMode:
    """The classic task API: {base_url}/models/{model}; `stream` in the body picks SSE."""

    def __init__(self, name: str, config: HuggingFaceUpstreamConfig, base_url: str) -> None:
        self._name = name
        self._base = f"{base_url}/models/"
        self._template = ChatTemplate.from_config(config.chat_template)

    def translate(self, call: UpstreamCall, stream: bool) -> tuple[str, Translation]:
        if any(part in ("", ".", "..") for part in call.model.split("/")):
            # the model id goes into the URL path: no traversal out of /models/
            raise InvalidRequestError(f"Invalid model id '{call.model}'.", param="model")
        url = self._base + quote(call.model, safe="/:@")
        translation = TextGenTranslation(
            self._name,
            call.body,
            self._template,
            model=call.model,
            stream_field=True if stream else None,
        )
        return url, translation


class _TGIMode:
    """A TGI server: {base_url}/generate and {base_url}/generate_stream."""

    def __init__(self, name: str, config: HuggingFaceUpstreamConfig, base_url: str) -> None:
        self._name = name
        self._urls = {False: f"{base_url}/generate", True: f"{base_url}/generate_stream"}
        self._template = ChatTemplate.from_config(config.chat_template)

    def translate(self, call: UpstreamCall, stream: bool) -> tuple[str, Translation]:
        translation = TextGenTranslation(self._name, call.body, self._template, model=call.model)
        return self._urls[stream], translation


_Mode = _ChatMode | _ClassicMode | _TGIMode
MODES: dict[str, Callable[[str, HuggingFaceUpstreamConfig, str], _Mode]] = {
    "chat": _ChatMode,
    "text-generation": _ClassicMode,
    "tgi": _TGIMode,
}


class HuggingFaceUpstream:
    def __init__(
        self,
        name: str,
        config: HuggingFaceUpstreamConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.config = config
        base_url = (config.base_url or HF_DEFAULT_BASE_URLS.get(config.api, "")).rstrip("/")
        mode, embedder = MODES.get(config.api), EMBEDDERS.get(config.api)
        self._mode = mode(name, config, base_url) if mode is not None else None
        self._embedder = embedder(base_url) if embedder is not None else None
        self.generates = self._mode is not None  # TEI only embeds
        self.native_apis = frozenset({"embeddings"} if self._embedder else ())
        self._session = session or new_session(config.max_connections)
        self._headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        if config.wait_for_model:
            self._headers["x-wait-for-model"] = "true"

    async def start(self) -> None:
        return None

    async def complete(self, call: UpstreamCall) -> bytes:
        url, translation = self._translate(call, stream=False)
        loop = asyncio.get_running_loop()
        with translated_errors(self.name):
            async with asyncio.timeout_at(loop.time() + call.timeouts.total):
                async with self._post(url, translation.payload, call) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise hf_error(self.name, response.status, body, response.headers)
                    return translation.completion(body, response.headers)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        url, translation = self._translate(call, stream=True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with translated_errors(self.name):
            async with asyncio.timeout_at(started + call.timeouts.first_token):
                response = await self._post(url, translation.payload, call)
            try:
                if response.status != 200:
                    body = await self._read(response, started, call)
                    raise hf_error(self.name, response.status, body, response.headers)
                translator = translation.stream()
                if not response.content_type.startswith("text/event-stream"):
                    # a backend that cannot stream answers with one JSON generation
                    body = await self._read(response, started, call)
                    yield translator.replay(body, response.headers)
                    return
                batches = _translated(read_events(response, call.timeouts, started), translator)
                async with contextlib.aclosing(batches) as chunks:
                    async for batch in chunks:
                        yield batch
            finally:
                response.close()

    def _translate(self, call: UpstreamCall, stream: bool) -> tuple[str, Translation]:
        """Before any network call: a request this mode cannot honour is a 400 here."""
        if self._mode is None:
            raise UpstreamError(f"The upstream '{self.name}' only embeds (api: tei).")
        url, translation = self._mode.translate(call, stream)
        if translation.ignored:
            logger.debug(
                "upstream {}: fields not used by HF api '{}': {}",
                self.name,
                self.config.api,
                ", ".join(translation.ignored),
            )
        return url, translation

    async def _read(
        self, response: aiohttp.ClientResponse, started: float, call: UpstreamCall
    ) -> bytes:
        deadline = started + min(call.timeouts.first_token, call.timeouts.total)
        async with asyncio.timeout_at(deadline):
            return await response.read()

    def _post(
        self, url: str, payload: bytes, call: UpstreamCall
    ) -> aiohttp.client._RequestContextManager:
        headers = self._headers
        if call.request_id:
            headers = {**headers, "X-Request-Id": call.request_id}
        return self._session.post(
            url, data=payload, headers=headers, timeout=client_timeout(call.timeouts)
        )

    async def embed(self, call: UpstreamCall) -> bytes:
        embedder = self._embedder
        if embedder is None:
            raise UpstreamError(f"The upstream '{self.name}' cannot embed.")
        translation = embedder.translate(call)  # a request it cannot take: a 400, no call
        loop = asyncio.get_running_loop()
        with translated_errors(self.name):
            async with asyncio.timeout_at(loop.time() + call.timeouts.total):
                async with self._post(translation.url, translation.payload, call) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise embedder.error(self.name, response.status, body, response.headers)
                    return translation.reply(body, response.headers, self.name)

    async def close(self) -> None:
        await self._session.close()


async def _translated(
    reads: AsyncIterator[list[bytes]], translator: StreamTranslator
) -> AsyncGenerator[list[bytes], None]:
    """Chunks per network read; an upstream failure is raised after the chunks that came
    before it in the same read have been handed on."""
    try:
        async for events in reads:
            chunks = translator.feed(events)
            if chunks:
                yield chunks
            if translator.failure is not None:
                raise translator.failure
            if translator.done:
                break
    finally:
        await reads.aclose()  # type: ignore[attr-defined]
    tail = translator.end()
    if tail:
        yield tail

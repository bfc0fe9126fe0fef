"""The Anthropic Messages API front door: `POST /v1/messages` and
`POST /v1/messages/count_tokens`.

| module | its one job |
|---|---|
| `door.py` | decoding, Anthropic's error envelope and `request-id`, stream framing |
| `request.py` | one request through the pipeline: native or translated call, answer, relay, cache |
| `wire.py` | the Messages API's wire types, and what is read of chat replies |
| `blocks.py` | the body decoded, content blocks typed, the token estimate |
| `translate.py` | a Messages request as the canonical chat body |
| `reply.py` | a chat.completion as a message; a native message relabelled |
| `encoder.py` | chat chunks as Anthropic stream events |
| `native.py` | an Anthropic route's events relayed (relabelled, usage noted) |
| `replay.py` | a native stream folded into its message; a message replayed as events |
| `events.py` | SSE frames with their `event:` line; the error envelope and `error` event |
| `count.py` | count_tokens: the upstream's count or the proxy's estimate |
| `inprocess.py` | `Gateway.messages` with typed results |
"""

from proxy.formats.messages.door import MESSAGES, MessagesDoor

__all__ = ["MESSAGES", "MessagesDoor"]

"""The OpenAI Responses API front door: POST /v1/responses through the shared pipeline
(passed through to upstreams that speak it, translated to chat completions for the others),
and the stored responses behind previous_response_id and GET/DELETE /v1/responses/{id}."""

from proxy.formats.responses.door import RESPONSES, ResponsesDoor
from proxy.formats.responses.store import ResponseStore, build_store, store_settings

__all__ = ["RESPONSES", "ResponseStore", "ResponsesDoor", "build_store", "store_settings"]

"""The headers of a server-sent event stream to the client (the framing of the events is each
front door's own: proxy/formats)."""

from __future__ import annotations

EVENT_STREAM = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

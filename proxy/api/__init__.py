"""The HTTP shell over the gateway: Litestar app, handlers, SSE writer, errors."""

"""What a supervising proxy and the worker process it spawns agree on: environment variables,
the readiness header and exit codes. Imported by both sides, so it imports nothing."""

from __future__ import annotations

API_KEY_ENV = "WORKER_API_KEY"  # the worker's bearer key, kept off its command line
PARENT_ENV = "LLM_PROXY_WORKER_PARENT"  # the supervisor's pid: exit when it is gone
# A random value per spawn: readiness echoes it in TOKEN_HEADER, so a supervisor never takes
# another process listening on the same port for its own child.
TOKEN_ENV = "LLM_PROXY_WORKER_TOKEN"
TOKEN_HEADER = "x-llm-proxy-worker-token"
EXIT_PORT_IN_USE = 3  # the port was taken by another process before the worker could listen
TASKS = ("generate", "embed")

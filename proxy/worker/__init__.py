"""The local transformers worker (`llm-proxy worker`): its own small OpenAI-compatible server
over one model, batched and streamed. Importing this package imports nothing heavy; torch and
transformers load with `proxy.worker.model` and the batching backends."""

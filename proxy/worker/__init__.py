"""The local transformers worker (`llm-proxy worker`): its own small OpenAI-compatible server
over one model, batched (chat completions, streamed, from a causal LM; or embeddings from an
encoder). Importing this package imports nothing heavy; torch and transformers load with
`proxy.worker.model`, `proxy.worker.encoder` and the batching backends."""

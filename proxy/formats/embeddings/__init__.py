"""`POST /v1/embeddings`: OpenAI's embeddings API through the one pipeline, with a cache that
keeps each input's vector on its own."""

from proxy.formats.embeddings.door import EMBEDDINGS, EmbeddingsDoor
from proxy.formats.embeddings.request import EmbeddingsRequest

__all__ = ["EMBEDDINGS", "EmbeddingsDoor", "EmbeddingsRequest"]

from worker.tiny import tiny_encoder, tiny_model

__all__ = ["tiny_encoder", "tiny_model"]

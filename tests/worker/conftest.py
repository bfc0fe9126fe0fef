from worker.tiny import tiny_model

__all__ = ["tiny_model"]

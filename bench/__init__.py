"""llm-proxy benchmark harness: `python bench/run.py` (see README.md)."""

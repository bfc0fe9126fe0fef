"""Logs, metrics and (later) traces."""

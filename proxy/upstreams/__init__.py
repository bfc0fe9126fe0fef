"""Upstream adapters: one module per kind of upstream, chosen from a registry."""

"""Choosing and ordering the routes that may serve a request."""

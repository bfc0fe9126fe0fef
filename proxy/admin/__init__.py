"""Operators' backend: runtime client keys, the usage ledger, the audit trail and the admin API.

On only when `admin.key` is set. Keys live in a store (SQLite by default, PostgreSQL for
replicas) and are held in memory by the key registry, so a request never waits on the
database; every settled request becomes a ledger row, written in batches off the request path.
"""

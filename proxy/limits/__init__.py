"""Request, token and concurrency limits, budgets and spend (memory or Redis storage)."""

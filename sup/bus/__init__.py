"""Cross-request (and, with Redis, cross-process) coordination: rate limits, events."""

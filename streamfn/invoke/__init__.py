"""Invoking functions, shared by both paths: the invoker (concurrency limits, throttling)
and destinations (where records of decided events go)."""

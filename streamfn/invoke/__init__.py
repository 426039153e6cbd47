"""Invoking functions: the invoker (limits), the async queue (durable path), destinations."""

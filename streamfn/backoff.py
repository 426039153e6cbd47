"""The one backoff formula both paths use: exponential, capped.

Retries of async events (AWS: 1 minute, then 2), their throttles (1 s growing to 5
minutes), stream batches' retries and throttles and destination retries all take their
n-th delay from :func:`exponential`. It is a plain function of the retry number, so a
decision stays pure and survives a restart: the number is stored with the work, not held
in a retry loop. The waits through a state-store outage are the one retry loop held in
memory (a call is retried until the store is back, nothing to store), so they use
tenacity's ``wait_exponential`` in :mod:`streamfn.state.outage` instead.
"""

from __future__ import annotations

__all__ = ["exponential"]


def exponential(n: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """The delay before retry ``n`` (0 for the first): ``min(cap, base * factor**n)``.
    ``n`` below 0 counts as 0; huge ``n`` saturate at ``cap`` without overflow."""
    n = max(0, min(n, 64))
    return min(cap, base * factor**n)

"""How fast a compiled filter pattern matches pre-decoded events, on one thread.

Run from the repository root::

    python bench/filtering.py [--events N] [--repeat R]

A 5-field pattern (exact, prefix, numeric range, exists, anything-but; four of them one
level down, as in a Kinesis ``data`` body) is matched against N decoded events built so
that about half match. The floor is a hand-written function doing the same five checks
inline, timed in the same run: the ratio says how close the compiled closures get to what
plain Python can do. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamfn.filtering import EventPattern, compile_filters

PATTERN: dict[str, Any] = {
    "eventSource": ["aws:kinesis"],
    "data": {
        "region": [{"prefix": "eu-"}],
        "amount": [{"numeric": [">", 100, "<=", 5000]}],
        "customer": [{"exists": True}],
        "status": [{"anything-but": ["cancelled", "test"]}],
    },
}

PASS = 0.87  # each field passes this often: 0.87 ** 5 ~ half the events match


def build_events(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ok = rng.random
    events: list[dict[str, Any]] = []
    for i in range(count):
        data: dict[str, Any] = {
            "orderId": f"o-{i}",
            "region": rng.choice(("eu-west-1", "eu-central-1") if ok() < PASS else ("us-east-1",)),
            "amount": rng.uniform(100.01, 5000) if ok() < PASS else rng.choice((50, 9000)),
            "status": rng.choice(("new", "paid", "shipped") if ok() < PASS else ("cancelled",)),
        }
        if ok() < PASS:
            data["customer"] = f"c-{i % 977}"
        events.append(
            {
                "eventSource": "aws:kinesis" if ok() < PASS else "aws:sqs",
                "partitionKey": str(i % 64),
                "data": data,
            }
        )
    return events


_EXCLUDED = frozenset({"cancelled", "test"})


def floor(event: dict[str, Any]) -> bool:
    """The five checks written inline: no arrays, no general cases."""
    if event.get("eventSource") != "aws:kinesis":
        return False
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    region = data.get("region")
    if not (isinstance(region, str) and region.startswith("eu-")):
        return False
    amount = data.get("amount")
    if not (isinstance(amount, int | float) and 100 < amount <= 5000):
        return False
    if "customer" not in data or "status" not in data:
        return False
    return data["status"] not in _EXCLUDED


def best_rate(
    match: Callable[[Any], bool], events: list[dict[str, Any]], repeat: int
) -> tuple[float, int]:
    best = float("inf")
    matched = 0
    for _ in range(repeat):
        start = time.perf_counter()
        matched = sum(map(match, events))
        best = min(best, time.perf_counter() - start)
    return len(events) / best, matched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to match")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    started = time.perf_counter()
    events = build_events(args.events, args.seed)
    pattern = EventPattern.parse(PATTERN)
    predicate = compile_filters([PATTERN])
    assert predicate is not None
    print(f"built {len(events):,} events in {time.perf_counter() - started:.1f} s")
    print(f"pattern: {pattern.source}")

    gc.collect()
    gc.disable()  # matching allocates next to nothing; keep collections out of the timings
    try:
        floor_rate, floor_matched = best_rate(floor, events, args.repeat)
        rows = [
            ("hand-written floor", floor_rate, floor_matched),
            ("EventPattern.matches", *best_rate(pattern.matches, events, args.repeat)),
            ("compile_filters([...])", *best_rate(predicate, events, args.repeat)),
        ]
    finally:
        gc.enable()

    print(f"{'matcher':<24}{'matches/s':>14}{'vs floor':>10}{'matched':>12}")
    for name, rate, matched in rows:
        print(f"{name:<24}{rate:>14,.0f}{rate / floor_rate:>9.2f}x{matched:>12,}")
    if any(matched != floor_matched for _, _, matched in rows):
        print("WARNING: the matchers disagree on how many events match")


if __name__ == "__main__":
    main()

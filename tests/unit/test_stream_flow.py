"""Flow control of a stream mapping, on its own: hold, stall, pause after a long stall, resume."""

from __future__ import annotations

import pytest

from streamfn.errors import ConfigError
from streamfn.streams.flow import Change, Fetch, FlowPolicy, FlowState, Stall
from streamfn.types import TopicPartition

P0, P1, P2 = (TopicPartition("orders", n) for n in range(3))
ALL = (P0, P1, P2)


def flow(**changes: float) -> FlowState:
    rules = {"max_pending": 10, "max_pending_bytes": 1_000, "pause_after": 30.0, **changes}
    return FlowPolicy(**rules).state()  # type: ignore[arg-type]


def test_with_room_everywhere_every_partition_is_fetched() -> None:
    state = flow()
    assert state.update({P0: 3, P1: 0, P2: 9}, buffered_bytes=100) == Change((), False, False)
    assert state.next_fetch(0.0, ALL) == Fetch(only=None)


def test_a_partition_at_max_pending_is_left_out_of_fetches_not_paused() -> None:
    state = flow()
    state.update({P0: 10, P1: 0, P2: 0}, buffered_bytes=0)
    assert state.held == {P0}
    assert state.next_fetch(0.0, ALL) == Fetch(only=(P1, P2))
    assert state.paused == frozenset()


def test_a_held_partition_below_the_limit_again_widens_the_fetch() -> None:
    state = flow()
    state.update({P0: 10, P1: 0}, buffered_bytes=0)
    assert not state.update({P0: 12, P1: 1}, buffered_bytes=0).widen  # still held
    change = state.update({P0: 9, P1: 1}, buffered_bytes=0)
    assert change.widen and not change.stalled
    assert state.next_fetch(0.0, (P0, P1)) == Fetch(only=None)


def test_every_partition_held_stalls_until_pause_after() -> None:
    state = flow()
    assert state.update({P0: 10, P1: 11}, buffered_bytes=0).stalled
    assert state.next_fetch(100.0, (P0, P1)) == Stall(until=130.0)
    assert state.next_fetch(129.9, (P0, P1)) == Stall(until=130.0)  # counted from its start


def test_the_byte_budget_stalls_every_partition() -> None:
    state = flow()
    assert state.update({P0: 1, P1: 1}, buffered_bytes=1_000).stalled
    state = flow()
    state.started(600)  # in flight counts too
    assert state.update({P0: 1}, buffered_bytes=400).stalled
    state.ended(600)
    assert not state.update({P0: 1}, buffered_bytes=400).stalled
    assert (state.in_flight, state.in_flight_bytes) == (0, 0)


def test_a_long_stall_pauses_every_partition_once_and_fetching_goes_on() -> None:
    state = flow()
    state.update({P0: 10, P1: 10}, buffered_bytes=0)
    assert isinstance(state.next_fetch(0.0, (P0, P1)), Stall)
    assert state.next_fetch(30.0, (P0, P1)) == Fetch(only=None, pause=(P0, P1))
    assert state.next_fetch(31.0, (P0, P1)) == Fetch(only=None)  # already paused
    assert state.paused == {P0, P1}


def test_the_end_of_a_stall_resumes_the_paused_partitions() -> None:
    state = flow()
    state.update({P0: 10, P1: 10}, buffered_bytes=0)
    state.next_fetch(0.0, (P0, P1))
    state.next_fetch(30.0, (P0, P1))
    assert state.update({P0: 10, P1: 10}, buffered_bytes=0).resume == ()  # still stalled
    change = state.update({P0: 10, P1: 4}, buffered_bytes=0)
    assert change == Change(resume=(P0, P1), widen=True, stalled=False)
    assert state.paused == frozenset()
    assert state.next_fetch(31.0, (P0, P1)) == Fetch(only=(P1,))  # P0 still held


def test_a_new_stall_counts_pause_after_from_its_own_start() -> None:
    state = flow()
    state.update({P0: 10}, buffered_bytes=0)
    state.next_fetch(0.0, (P0,))
    state.update({P0: 0}, buffered_bytes=0)
    state.next_fetch(20.0, (P0,))
    state.update({P0: 10}, buffered_bytes=0)
    assert state.next_fetch(40.0, (P0,)) == Stall(until=70.0)


def test_no_partitions_is_not_a_stall() -> None:
    state = flow()
    assert not state.update({}, buffered_bytes=10_000).stalled
    assert state.next_fetch(0.0, ()) == Fetch(only=None)


def test_forgotten_partitions_are_neither_held_nor_paused() -> None:
    state = flow()
    state.update({P0: 10, P1: 10}, buffered_bytes=0)
    state.next_fetch(0.0, (P0, P1))
    state.next_fetch(30.0, (P0, P1))
    state.forget([P0])
    assert state.paused == {P1} and state.held == {P1}


@pytest.mark.parametrize(
    ("field", "value"), [("max_pending", 0), ("max_pending_bytes", 0), ("pause_after", -1)]
)
def test_policy_rejects_out_of_range_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        FlowPolicy(**{field: value})  # type: ignore[arg-type]

"""The public test kit: a fake clock, an in-memory source context, a gated runtime,
connector conformance.

For connector authors::

    from streamfn.testing import FakeClock, check_event_source

    async def test_my_source_conforms(tmp_path):
        await check_event_source(lambda: MySource(config), produce=make_two_events,
                                 expected=2, root=tmp_path)

:func:`check_event_source` runs a source twice against an in-memory engine and checks what
every event source must do: its events are JSON, each has its own idempotency key, it
stops promptly when cancelled, and a restart from its checkpoints does not emit again what
it already emitted.
"""

from __future__ import annotations

from streamfn.testing.clock import FakeClock
from streamfn.testing.events import MemoryEngine, check_event_source
from streamfn.testing.runtime import GatedRuntime
from streamfn.testing.streams import check_stream_source

__all__ = ["FakeClock", "GatedRuntime", "MemoryEngine", "check_event_source", "check_stream_source"]

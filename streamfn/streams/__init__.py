"""The stream path: event-source mappings over partitioned, ordered sources (Kafka, ...).

A connector's :class:`~streamfn.streams.contract.StreamSource` does the I/O and its
:class:`~streamfn.streams.contract.StreamFormat` the wire format; the driver
(:mod:`streamfn.streams.driver`) fetches, filters, batches (:mod:`~streamfn.streams.batching`),
runs batches (:mod:`~streamfn.streams.runner`) under the retry rules
(:mod:`~streamfn.streams.retry`), keeps its memory budgets (:mod:`~streamfn.streams.flow`)
and commits the offset watermark (:mod:`~streamfn.streams.offsets`) at the cadence of
:mod:`~streamfn.streams.commit`. Everything but the driver and the runner is pure, and
nothing here knows a connector's wire format.
"""

"""The stream path: event-source mappings over partitioned, ordered sources (Kafka, ...).

A connector's :class:`~streamfn.streams.contract.StreamSource` does the I/O; the driver
(:mod:`streamfn.streams.driver`) fetches, filters, batches (:mod:`~streamfn.streams.batching`),
runs batches (:mod:`~streamfn.streams.runner`) under the retry rules
(:mod:`~streamfn.streams.retry`) and commits the offset watermark
(:mod:`~streamfn.streams.offsets`). Everything but the driver and the runner is pure.
"""

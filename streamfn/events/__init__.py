"""The async path: event sources and the durable async queue, as AWS's asynchronous invocation.

An :class:`~streamfn.events.contract.EventSource` emits events; the emit step filters them,
derives their idempotency key (:mod:`~streamfn.events.keys`) and queues them durably; the
dispatcher (:mod:`~streamfn.events.dispatcher`) runs them under the retry rules
(:mod:`~streamfn.events.retry`) and writes destination records
(:mod:`~streamfn.events.records`).
"""

"""The async path: event sources and the durable async queue, as AWS's asynchronous invocation.

- :mod:`~streamfn.events.contract`: what an event source is given and must do;
- :mod:`~streamfn.events.mapping`: the emit step (filter → idempotency key
  (:mod:`~streamfn.events.keys`) → enqueue with the source's checkpoint);
- :mod:`~streamfn.state.intake`: the queue's way in (group-committed enqueues; wakes the
  dispatcher);
- :mod:`~streamfn.events.lifecycle`: the pure state machine of one queued event, with the
  retry rules of :mod:`~streamfn.events.retry` and the destination records of
  :mod:`~streamfn.events.records`;
- :mod:`~streamfn.events.dispatcher`: leases events and executes the lifecycle's plans
  (I/O only), writing decisions through :mod:`~streamfn.events.decisions` (group commit);
- :mod:`~streamfn.events.outbox`: delivers the destination records those decisions wrote.
"""

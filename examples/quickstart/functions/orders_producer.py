"""Fires on a schedule and produces a few JSON orders to the Kafka topic "orders".

`streamfn run --embedded-kafka` puts its broker's address in STREAMFN_EMBEDDED_KAFKA; against
another cluster, set KAFKA_BOOTSTRAP_SERVERS. An async handler runs on the engine's event loop,
so it uses aiokafka's async producer.
"""

import json
import os
import random
import uuid

from aiokafka import AIOKafkaProducer

CUSTOMERS = ["alice", "bob", "carol", "dave"]


async def handler(event, context):
    servers = os.environ.get("STREAMFN_EMBEDDED_KAFKA") or os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for _ in range(5):
            customer = random.choice(CUSTOMERS)
            order = {
                "order_id": uuid.uuid4().hex[:8],
                "customer": customer,
                "status": random.choice(["paid", "paid", "paid", "cancelled"]),
                # now and then an order the consumer cannot read, to show the failure path
                "amount": "n/a" if random.random() < 0.05 else round(random.uniform(5, 120), 2),
            }
            # Keyed by customer: one customer's orders stay in one partition, in order.
            value = json.dumps(order).encode()
            await producer.send(topic="orders", key=customer.encode(), value=value)
        await producer.flush()
    finally:
        await producer.stop()
    return {"produced": 5}

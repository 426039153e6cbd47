"""Send demo orders to Kafka: ``python examples/compose/produce.py [--count N] [--poison]``.

Each order is JSON ``{"order_id", "customer", "amount", "status"}`` keyed by customer, so one
customer's orders stay in order on one partition. Prints the total of the amounts sent, to
compare with the running total the ``orders`` function prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import uuid

from aiokafka import AIOKafkaProducer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--topic", default=os.environ.get("TOPIC", "orders"))
    parser.add_argument("--count", type=int, default=int(os.environ.get("COUNT", "100")))
    parser.add_argument("--seed", type=int, default=None, help="for a repeatable run")
    parser.add_argument(
        "--poison", action="store_true", help="also send one record that is not JSON"
    )
    return parser.parse_args()


async def produce(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all")
    await producer.start()
    total = 0.0
    try:
        for _ in range(args.count):
            customer = f"customer-{rng.randrange(10)}"
            amount = round(rng.uniform(1, 200), 2)
            order = {
                "order_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "customer": customer,
                "amount": amount,
                "status": rng.choice(["paid", "paid", "paid", "pending"]),
            }
            await producer.send(args.topic, json.dumps(order).encode(), key=customer.encode())
            total += amount
        if args.poison:
            await producer.send(args.topic, b"not json", key=b"customer-poison")
        await producer.flush()
    finally:
        await producer.stop()
    print(f"sent {args.count} orders to {args.topic!r}, total {total:.2f}")


if __name__ == "__main__":
    asyncio.run(produce(parse_args()))

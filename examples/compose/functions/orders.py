"""Sums the amounts of the JSON orders in each Kafka batch.

An ordinary self-managed-Kafka Lambda handler: values arrive base64-encoded, grouped under
"topic-partition". A record that is not an order with a numeric "amount" is reported in
batchItemFailures, so after the configured retries it lands in the failure destination
while the rest of its batch counts as done.
"""

import base64
import json

# Warm environments are reused, so this grows across invocations of one environment.
running_total = 0.0


def handler(event, context):
    global running_total
    batch_total = 0.0
    orders = 0
    failures = []
    for records in event["records"].values():
        for record in records:
            try:
                order = json.loads(base64.b64decode(record["value"]))
                amount = float(order["amount"])
            except (KeyError, TypeError, ValueError):
                identifier = {
                    "partition": f"{record['topic']}-{record['partition']}",
                    "offset": record["offset"],
                }
                failures.append({"itemIdentifier": identifier})
                continue
            batch_total += amount
            orders += 1
    running_total += batch_total
    print(
        f"{orders} orders, batch total {batch_total:.2f}, running total {running_total:.2f}"
        + (f", {len(failures)} undecodable" if failures else "")
    )
    return {"batchItemFailures": failures}

"""Consumes the "orders" topic (a Kafka event-source mapping) and sums the paid amounts.

An ordinary self-managed-Kafka Lambda handler: records arrive grouped by "topic-partition",
their values base64-encoded. The mapping's filter drops cancelled orders before they get
here. An order whose amount is not a number is reported as a batch item failure: streamfn
commits the records before it, retries from it, and after the retries writes a failure
record to failed-orders/.
"""

import base64
import json


def handler(event, context):
    total, count, failures = 0.0, 0, []
    for partition, records in event["records"].items():
        for record in records:
            order = json.loads(base64.b64decode(record["value"]))
            if not isinstance(order["amount"], (int, float)):
                where = {"partition": partition, "offset": record["offset"]}
                failures.append({"itemIdentifier": where})
                break  # later records of this partition are redelivered with it
            total += order["amount"]
            count += 1
    unreadable = f"; {len(failures)} unreadable" if failures else ""
    print(f"{count} paid order(s), {total:.2f} in total{unreadable}")
    return {"batchItemFailures": failures}

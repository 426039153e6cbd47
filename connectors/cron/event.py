"""The event a scheduled function receives: EventBridge's "Scheduled Event", in AWS's shape.

::

    {"version": "0", "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
     "detail-type": "Scheduled Event", "source": "aws.events",
     "account": "123456789012", "time": "2019-03-01T01:23:45Z", "region": "us-east-2",
     "resources": ["arn:aws:events:us-east-2:123456789012:rule/my-schedule"], "detail": {}}

``time`` is the tick's *scheduled* time, not the time it was delivered. That way a redelivered
or caught-up tick carries the same ``time``, and the handler can deduplicate on it together
with ``id``.
"""

from __future__ import annotations

from datetime import UTC, datetime

DEFAULT_REGION = "local"
DEFAULT_ACCOUNT = "000000000000"


def schedule_arn(name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    """``arn:aws:events:REGION:ACCOUNT:rule/NAME``: the rule ARN listed in ``resources``."""
    return f"arn:aws:events:{region}:{account}:rule/{name}"


def scheduled_event(
    *,
    event_id: str,
    time: datetime,
    rule_arn: str,
    region: str = DEFAULT_REGION,
    account: str = DEFAULT_ACCOUNT,
) -> dict[str, object]:
    """Build the Scheduled Event for the tick scheduled at ``time`` (aware, any zone).

    ``time`` is written in UTC to the second, with a ``Z`` suffix, as AWS writes it. Raises
    ValueError if ``time`` is naive."""
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"time must be timezone-aware, got {time!r}")
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }

"""Fires on a schedule (an EventBridge "Scheduled Event")."""


def handler(event, context):
    print(f"heartbeat at {event['time']} ({event['detail-type']} from {event['source']})")
    return {"ok": True}

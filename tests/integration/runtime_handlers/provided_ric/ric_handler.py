import os


def handler(event, context):
    print("from awslambdaric")
    return {
        "event": event,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "pid": os.getpid(),
    }


def fail(event, context):
    raise ValueError("bad input")

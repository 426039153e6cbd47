"""Logging in the JSON log format (AWS_LAMBDA_LOG_FORMAT=JSON, AWS_LAMBDA_LOG_LEVEL)."""

import logging

logger = logging.getLogger()


def handler(event, context):
    logger.debug("debug")
    logger.info("info")
    logging.getLogger("my.logger").warning("hello %s", "x", extra={"custom": "extra-field"})
    logger.info({"a": 1})
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logger.exception("boom")
    print("plain print")
    if event.get("fail"):
        raise ValueError("bad")
    return {}

"""AWS's logging sample (python-logging.md) and print(), in the Text log format."""

import logging
import sys

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    print("printed\twith a tab")
    print("to stderr", file=sys.stderr)
    logger.info("info %s", event["n"])
    logger.debug("below the level")
    logger.warning("warned")
    logger.error("failed")
    logging.basicConfig(level=logging.DEBUG, format="%(message)s")  # a no-op, as on Lambda
    logger.debug("still below the level")
    logging.getLogger("my.module").info("from a child logger")
    return {"ok": True}

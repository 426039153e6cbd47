"""AWS Lambda Powertools' Logger: one JSON object per line, with the X-Ray trace id."""

import os

from aws_lambda_powertools import Logger

logger = Logger(service="orders")


@logger.inject_lambda_context
def handler(event, context):
    logger.info("hello powertools", extra={"n": event.get("n")})
    return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}

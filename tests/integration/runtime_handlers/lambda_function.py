"""The file and function names of AWS's console template."""

import os


def lambda_handler(event, context):
    return {"module": __name__, "handler": os.environ["_HANDLER"]}

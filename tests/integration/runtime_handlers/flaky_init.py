"""Imports while the file named by FAIL_MARKER does not exist."""

import os

if os.path.exists(os.environ["FAIL_MARKER"]):
    raise RuntimeError("init failed on purpose")


def handler(event, context):
    return "ok"

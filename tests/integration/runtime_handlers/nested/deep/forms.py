"""A handler in a nested package: ``nested.deep.forms.fn`` or ``nested/deep/forms.fn``."""

import os


def fn(event, context):
    return {"module": __name__, "handler": os.environ["_HANDLER"]}

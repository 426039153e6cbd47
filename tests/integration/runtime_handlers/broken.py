raise KeyError("configuration missing")


def handler(event, context):
    return None

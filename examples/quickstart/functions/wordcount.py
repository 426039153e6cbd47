"""Counts the words of each text file dropped into inbox/ and writes out/<name>.json.

An ordinary S3-triggered Lambda handler: the object key arrives URL-encoded.
"""

import json
from collections import Counter
from pathlib import Path
from urllib.parse import unquote_plus

HERE = Path(__file__).resolve().parent.parent
INBOX = HERE / "inbox"
OUT = HERE / "out"


def handler(event, context):
    record = event["Records"][0]
    key = unquote_plus(record["s3"]["object"]["key"])
    text = (INBOX / key).read_text(encoding="utf-8")
    words = Counter(word.lower().strip(".,;:!?\"'()") for word in text.split())
    words.pop("", None)
    result = {
        "key": key,
        "eTag": record["s3"]["object"]["eTag"],
        "words": sum(words.values()),
        "top": words.most_common(5),
        "requestId": context.aws_request_id,
    }
    target = OUT / f"{key}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{key}: {result['words']} words -> {target.relative_to(HERE)}")
    return result

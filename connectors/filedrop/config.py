"""``type = "filedrop"``: a directory standing in for an S3 bucket."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from streamfn.config import SourceConfig, check_path


class FiledropConfig(SourceConfig, tag="filedrop", frozen=True, kw_only=True):
    path: Annotated[str, Meta(min_length=1)]
    """The watched directory (recursive); relative to the config file."""
    bucket: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None = None
    """``s3.bucket.name`` in events; default: the directory's name."""
    prefix: str = ""
    suffix: str = ""
    """S3 notification rule filters on the object key."""
    stable_for: Annotated[float, Meta(ge=0, le=3_600)] = 1.0
    """A file is taken once nobody has written it for this many seconds (or at once when
    it is renamed into place)."""
    rescan_interval: Annotated[float, Meta(gt=0, le=86_400)] = 60.0
    """A full walk of the directory every so often, in case a notification was missed."""

    def __post_init__(self) -> None:
        check_path("path", self.path)

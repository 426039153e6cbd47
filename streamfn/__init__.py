"""streamfn: AWS Lambda and its event-source mappings, on your own machines.

Importing streamfn does nothing but define names: no environment reads, no plugin scans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EventPattern", "__version__"]

if TYPE_CHECKING:
    from streamfn.filtering import EventPattern


def __getattr__(name: str) -> Any:
    if name == "EventPattern":
        from streamfn.filtering import EventPattern

        return EventPattern
    raise AttributeError(f"module 'streamfn' has no attribute {name!r}")

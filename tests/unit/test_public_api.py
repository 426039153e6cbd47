"""What `import streamfn` offers, and what it does not do."""

from __future__ import annotations

import subprocess
import sys


def test_event_pattern_is_public() -> None:
    from streamfn import EventPattern
    from streamfn.errors import InvalidPatternError

    pattern = EventPattern.parse('{"source": ["aws.events"]}')
    assert pattern.matches({"source": "aws.events"})
    assert not pattern.matches({"source": "other"})
    assert issubclass(InvalidPatternError, ValueError)


def test_importing_streamfn_loads_no_plugins_and_no_backends() -> None:
    code = (
        "import sys, streamfn, streamfn.config, streamfn.engine; "
        "print(sorted(m for m in sys.modules if m.startswith(('connectors', 'aiokafka'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

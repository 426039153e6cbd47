"""Limits applied in a new environment, each checked in a throwaway interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_a_tmpfs_a_file_cannot_outgrow_ephemeral_storage(tmp_path: Path) -> None:
    out = run(
        f"""
        import errno
        from streamfn.runtime.process import limits
        limits.limit_storage({str(tmp_path)!r}, 1, tmpfs=False)
        try:
            with open({str(tmp_path / "big")!r}, "wb") as f:
                f.write(b"x" * (2 * 1024 * 1024))
        except OSError as exc:
            print(errno.errorcode[exc.errno])
        """
    )
    assert out == "EFBIG"


def test_memory_size_bounds_the_address_space() -> None:
    out = run(
        """
        from streamfn.runtime.process import limits
        limits.limit_memory(128)
        try:
            block = bytearray(256 * 1024 * 1024)
        except MemoryError:
            print("MemoryError")
        small = bytearray(32 * 1024 * 1024)
        print(len(small))
        """
    )
    assert out.splitlines() == ["MemoryError", str(32 * 1024 * 1024)]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_file_descriptors_are_capped_at_1024() -> None:
    out = run(
        """
        import resource
        from streamfn.runtime.process import limits
        limits.limit_files()
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    assert int(out) <= 1024
